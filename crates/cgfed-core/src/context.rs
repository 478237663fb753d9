//! [`RoundCtx`]: what a plugin may know about the round it runs in.

use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::update::Layout;

/// Which phase of an experiment a round belongs to (the `phase` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Dense rounds whose updates a compressor observes before fitting (TGAP).
    Calibration,
    /// Ordinary federated rounds with compression.
    Train,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Calibration => "calibration",
            Phase::Train => "train",
        })
    }
}

/// The round a plugin call belongs to.
#[derive(Debug, Clone)]
pub struct RoundCtx {
    /// Round index, from 0.
    pub round: usize,
    /// The client this call is for; `None` for server-side calls (aggregation).
    pub client: Option<usize>,
    /// The experiment seed.
    pub seed: u64,
    /// Phase of the round.
    pub phase: Phase,
    /// Names and shapes of the update tensors (known to both ends of the wire).
    pub layout: Arc<Layout>,
    /// Device decoded tensors are placed on.
    pub device: Device,
}

impl RoundCtx {
    /// A deterministic 64-bit seed for random choices in this call, derived from the
    /// experiment seed, the round, the client and a `stream` number the plugin picks
    /// (so two random choices in one call are independent). Client and server get the
    /// same value for the same client, which is how shared-seed schemes (random-k) work.
    pub fn rng_seed(&self, stream: u64) -> u64 {
        let client = self.client.map_or(u64::MAX, |c| c as u64);
        mix_seed(&[self.seed, self.round as u64, client, stream])
    }
}

/// A stream number for [`RoundCtx::rng_seed`] derived from a name (FNV-1a), so that two
/// plugins composed in one call (random-k then QSGD) draw independent numbers.
pub fn stream_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64-style mixing of several words into one seed.
pub fn mix_seed(words: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &w in words {
        h ^= w.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 29;
    }
    h
}
