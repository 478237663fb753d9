//! Seeded, reproducible shuffling.
//!
//! The permutation depends only on the seed, the stream id and the length: ChaCha8 (whose
//! output `rand_chacha` keeps stable across versions), Fisher–Yates, and an unbiased bounded
//! draw written here, so a split does not change when `rand` changes its sampling code.

use cgfed_core::context::mix_seed;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Stream id of the held-out split shuffle (`"split"` in ASCII).
pub const SPLIT_STREAM: u64 = 0x0073_706c_6974;
/// Stream id of the IID partition shuffle (`"iid"` in ASCII).
pub const IID_STREAM: u64 = 0x0069_6964;

/// The generator for `stream` under the experiment `seed`:
/// ChaCha8 seeded with `mix_seed(&[seed, stream])`.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(&[seed, stream]))
}

/// Shuffle `items` in place (Fisher–Yates).
pub fn shuffle<T>(items: &mut [T], rng: &mut impl RngCore) {
    for i in (1..items.len()).rev() {
        // i < usize::MAX, and usize fits in u64 on every supported target
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A uniform draw from `0..n` (`n > 0`), without modulo bias (Lemire's method).
fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    debug_assert!(n > 0);
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<usize> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a, &mut rng(7, SPLIT_STREAM));
        shuffle(&mut b, &mut rng(7, SPLIT_STREAM));
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let mut c: Vec<usize> = (0..100).collect();
        shuffle(&mut c, &mut rng(7, IID_STREAM));
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = rng(1, 2);
        for n in [1u64, 2, 3, 7, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(below(&mut r, n) < n);
            }
        }
    }
}
