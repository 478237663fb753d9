//! TGAP's data split: calibration rounds (the compressor's
//! [`calibration_rounds`](cgfed_core::GradientCompressor::calibration_rounds)) train on D1,
//! a seeded share of each client's examples, and the training rounds on the rest (D2).
//!
//! The split is asked of the compressor
//! ([`calibration_split`](cgfed_core::GradientCompressor::calibration_split)); without one
//! every round uses all of a client's data. `summary.json` says what each phase trained on
//! ([`CalibrationSummary`]), so a variant that calibrated on D1 is never silently compared
//! with one that did not.

use cgfed_core::context::mix_seed;
use cgfed_core::{Error, Example, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Stream number of the D1/D2 split (distinct from sampling and faults).
const SPLIT_STREAM: u64 = 0x76A9_0D12;

/// What the calibration phase used and cost, in `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSummary {
    /// Dense calibration rounds run (0 when a saved calibration was loaded).
    pub rounds: usize,
    /// The share of each client's examples in D1 (`None`: no split).
    pub split: Option<f64>,
    /// D1 examples over all clients (calibration rounds trained on these).
    pub d1_examples: usize,
    /// D2 examples over all clients (training rounds trained on these).
    pub d2_examples: usize,
    /// Uplink bytes of the calibration rounds (dense updates; included in the totals).
    pub uplink_bytes: usize,
    /// Downlink bytes of the calibration rounds (included in the totals).
    pub downlink_bytes: usize,
    /// What the compressor's fit reported (held-out SNR, cosine… of the fitted codec).
    #[serde(default)]
    pub fit: std::collections::BTreeMap<String, f64>,
}

/// Every client's examples, by client index.
pub type Shards = Vec<Vec<Example>>;

/// Split every client's examples into (D1, D2): a seeded `fraction` of each client's
/// examples, at least one and leaving at least one, goes to D1.
///
/// # Errors
/// `fraction` outside (0, 1), or a client with fewer than two examples.
pub fn split_clients(
    clients: &[Vec<Example>],
    fraction: f64,
    seed: u64,
) -> Result<(Shards, Shards)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::InvalidInput(format!(
            "the calibration split must be in (0, 1), got {fraction}"
        )));
    }
    let mut d1 = Vec::with_capacity(clients.len());
    let mut d2 = Vec::with_capacity(clients.len());
    for (c, data) in clients.iter().enumerate() {
        let n = data.len();
        if n < 2 {
            return Err(Error::InvalidInput(format!(
                "client {c} has {n} example(s); the calibration split (D1/D2) needs at least 2 \
                 per client"
            )));
        }
        let k = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
        let mut idx: Vec<usize> = (0..n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, c as u64, SPLIT_STREAM]));
        idx.shuffle(&mut rng);
        let (a, b) = idx.split_at(k);
        let mut a = a.to_vec();
        let mut b = b.to_vec();
        // Keep each part in the client's original order.
        a.sort_unstable();
        b.sort_unstable();
        d1.push(a.iter().map(|&i| data[i].clone()).collect());
        d2.push(b.iter().map(|&i| data[i].clone()).collect());
    }
    Ok((d1, d2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(i: u32) -> Example {
        Example {
            tokens: vec![i, i + 1],
            loss_start: 1,
        }
    }

    #[test]
    fn disjoint_covering_seeded_and_sized() {
        let clients: Vec<Vec<Example>> = (0..3)
            .map(|c| (0..10).map(|i| ex(c * 100 + i)).collect())
            .collect();
        let (d1, d2) = split_clients(&clients, 0.3, 7).unwrap();
        for c in 0..3 {
            assert_eq!(d1[c].len(), 3);
            assert_eq!(d2[c].len(), 7);
            let mut all: Vec<u32> = d1[c].iter().chain(&d2[c]).map(|e| e.tokens[0]).collect();
            all.sort_unstable();
            let want: Vec<u32> = clients[c].iter().map(|e| e.tokens[0]).collect();
            assert_eq!(all, want, "client {c}: D1 and D2 must partition its data");
        }
        let again = split_clients(&clients, 0.3, 7).unwrap();
        assert_eq!(d1, again.0);
        let other = split_clients(&clients, 0.3, 8).unwrap();
        assert_ne!(d1, other.0, "the split ignores the seed");
        let tiny = vec![vec![ex(1), ex(2)]];
        let (a, b) = split_clients(&tiny, 0.01, 0).unwrap();
        assert_eq!((a[0].len(), b[0].len()), (1, 1));
        assert!(split_clients(&[vec![ex(1)]], 0.3, 0).is_err());
        assert!(split_clients(&clients, 1.0, 0).is_err());
        assert!(split_clients(&clients, 0.0, 0).is_err());
    }
}
