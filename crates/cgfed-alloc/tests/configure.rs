//! `configure` sets mimalloc's purge delay to "never" (mimalloc v3's default: 1000 ms).

#[test]
fn configure_turns_purging_off() {
    assert_eq!(
        cgfed_alloc::purge_delay(),
        1000,
        "not mimalloc v3's default purge delay: check the option id"
    );
    cgfed_alloc::configure();
    assert_eq!(cgfed_alloc::purge_delay(), -1);
    // Allocation still works with the tuned allocator.
    let v = vec![1u8; 64 << 20];
    assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
}
