//! [`ClientState`]: a compressor's memory for one client (error-feedback residuals, warm
//! starts), kept by the runner — not hidden inside the compressor — so it can be saved in
//! checkpoints and kept across rounds in which the client is not sampled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Plain, serialisable per-client memory of a compressor.
///
/// Keys are chosen by the compressor (e.g. `"residual/layers.0.q_proj.lora_A"`).
/// A fresh client starts with [`ClientState::default`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    /// Named f32 buffers (residuals, warm-start matrices).
    pub buffers: BTreeMap<String, Vec<f32>>,
    /// Named counters (rounds seen, steps).
    pub counters: BTreeMap<String, u64>,
}

impl ClientState {
    /// True when nothing has been stored.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty() && self.counters.is_empty()
    }

    /// Bytes held in buffers (for memory reporting).
    pub fn buffer_bytes(&self) -> usize {
        self.buffers.values().map(|b| 4 * b.len()).sum()
    }
}
