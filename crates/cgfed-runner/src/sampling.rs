//! Seeded client sampling.

use cgfed_core::context::mix_seed;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Stream number that separates client sampling from other uses of the experiment seed.
const SAMPLING_STREAM: u64 = 0x5A3F_11E5;

/// `k` distinct clients out of `n`, sorted; a pure function of `(seed, round)`.
///
/// # Panics
/// If `k > n` (the config validation rules this out).
pub fn sample_clients(n: usize, k: usize, seed: u64, round: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, round as u64, SAMPLING_STREAM]));
    let mut picked = rand::seq::index::sample(&mut rng, n, k).into_vec();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_sorted_deterministic_and_varying() {
        let a = sample_clients(10, 4, 7, 3);
        assert_eq!(a.len(), 4);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&c| c < 10));
        assert_eq!(a, sample_clients(10, 4, 7, 3));
        let rounds: Vec<Vec<usize>> = (0..8).map(|r| sample_clients(10, 4, 7, r)).collect();
        assert!(rounds.iter().any(|r| r != &a), "sampling ignores the round");
        assert_eq!(sample_clients(5, 5, 1, 0), vec![0, 1, 2, 3, 4]);
    }
}
