//! The process allocator of the cgfed binaries (the `cgfed` CLI, the training-step
//! benchmark): [mimalloc](https://github.com/microsoft/mimalloc), tuned for training steps.
//!
//! A training step allocates and frees the same large tensors every step (activations,
//! gradients, the `[rows, vocab]` logits). glibc's malloc returns such buffers to the OS and
//! page-faults them back in on the next step; mimalloc keeps freed memory for reuse, but by
//! default (mimalloc v3, the version libmimalloc-sys builds) still *purges* (decommits) it
//! 1 s after it is freed, and a big model's step is longer than that, so its biggest buffers
//! are still zero-filled by the kernel every step.
//! [`configure`] turns purging off (`purge_delay = -1`): the process keeps the memory it has
//! freed and reuses it. Measured on the 2-core benchmark machine (`cargo bench -p cgfed-model
//! --bench train_step`): SmolLM2-135M full fine-tuning 93 → 125 tokens/s with one thread
//! (the step spent 40 % of its time in the kernel's page zeroing), peak RSS +2 %.
//!
//! Linking this crate makes mimalloc the global allocator; call [`configure`] first thing in
//! `main`.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// mimalloc's `mi_option_purge_delay` (position 15 of `mi_option_t` in both the v2 and the v3
/// headers that libmimalloc-sys builds; the crate's Rust constants do not list it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to purge freed memory (see the [crate docs](crate)). Idempotent; any
/// time is fine, but the earlier the better.
pub fn configure() {
    // SAFETY: `mi_option_set` takes an option id and a value, touches no memory of ours, and
    // is safe to call at any time from any thread; the id is a valid `mi_option_t`.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

/// mimalloc's current purge delay in milliseconds (−1: never purge).
pub fn purge_delay() -> i64 {
    // SAFETY: as in `configure`: reads one option, valid id.
    #[allow(unsafe_code)]
    let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    v as i64
}
