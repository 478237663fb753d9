//! Downlink compression: the server compresses each round's global delta before clients
//! see it, with its own server-side state (e.g. an error-feedback residual), and clients
//! hold the model those compressed deltas build.
//!
//! ```toml
//! [downlink]
//! kind = "topk"
//! ratio = 0.1
//! error_feedback = true     # the server keeps what did not get through
//! ```
//!
//! Without `[downlink]` every sampled client downloads the dense global state each round
//! (the default). With it:
//!
//! - after aggregating, the server sends `m = C(Δ)` (Δ = the aggregated delta; with
//!   `error_feedback` the server's residual is added first) and the global model advances
//!   by the decoded `D(m)`, so the model everyone evaluates and trains from is the one the
//!   compressed broadcasts build (DoubleSqueeze-style); the residual holds the rest;
//! - a client downloads what it missed: at its first round the dense global state, later
//!   every broadcast since it last took part, or the dense state if that is smaller. This is
//!   the `downlink_bytes` metric; the broadcast payload itself is `downlink.broadcast_bytes`.

use std::time::Instant;

use cgfed_core::metrics::Reconstruction;
use cgfed_core::{
    registry, ClientState, GradientCompressor, PluginTable, Result, RoundCtx, Update,
};
use serde::{Deserialize, Serialize};

use crate::metrics::Quality;

/// What the downlink did in one round (`downlink` in `metrics.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DownlinkMetrics {
    /// Length of this round's broadcast payload (once; clients pay it when they catch up).
    pub broadcast_bytes: usize,
    /// f32 size of the global delta.
    pub dense_bytes: usize,
    /// How well the decoded broadcast matches the aggregated delta.
    #[serde(flatten)]
    pub quality: Quality,
    /// Time to compress and decode the broadcast.
    pub time_ms: f64,
}

/// The server's downlink compressor and its bookkeeping.
pub struct Downlink {
    compressor: Box<dyn GradientCompressor>,
    /// The server's compressor state (e.g. the error-feedback residual).
    pub state: ClientState,
    /// Per client: the first round whose broadcast it has not received (`None`: never synced).
    pub last_sync: Vec<Option<usize>>,
    /// Per completed round: the broadcast's length in bytes (0 for a skipped round).
    pub broadcast: Vec<usize>,
}

impl std::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downlink")
            .field("compressor", &self.compressor.describe())
            .field("rounds", &self.broadcast.len())
            .finish()
    }
}

impl Downlink {
    /// Build from the `[downlink]` table (any compressor with its wrapper keys) for `clients`.
    ///
    /// # Errors
    /// Config errors of the compressor table.
    pub fn build(table: &PluginTable, clients: usize) -> Result<Self> {
        Ok(Self {
            compressor: registry::build_compressor(table)?,
            state: ClientState::default(),
            last_sync: vec![None; clients],
            broadcast: Vec::new(),
        })
    }

    /// The compressor's description.
    pub fn describe(&self) -> String {
        self.compressor.describe()
    }

    /// Bytes client `c` downloads at the start of round `round` to hold the global model:
    /// the dense state (`dense_state_bytes`) the first time, else the broadcasts it missed
    /// or the dense state, whichever is smaller. Marks the client as synced.
    pub fn sync_cost(&mut self, c: usize, round: usize, dense_state_bytes: usize) -> usize {
        let cost = match self.last_sync[c] {
            None => dense_state_bytes,
            Some(from) => {
                let missed: usize = self.broadcast[from.min(round)..round].iter().sum();
                missed.min(dense_state_bytes)
            }
        };
        self.last_sync[c] = Some(round);
        cost
    }

    /// Compress the round's aggregated `delta` (server context `ctx`); returns the decoded
    /// delta every client will apply, and the round's downlink metrics.
    ///
    /// # Errors
    /// A compressor error (the run stops: the server's own broadcast must encode).
    pub fn broadcast(
        &mut self,
        delta: &Update,
        ctx: &RoundCtx,
    ) -> Result<(Update, DownlinkMetrics)> {
        let t = Instant::now();
        let payload = self.compressor.compress(delta, &mut self.state, ctx)?;
        let decoded = self.compressor.decompress(&payload, ctx)?;
        decoded.check_finite()?;
        let q = Reconstruction::measure(&delta.to_flat()?, &decoded.to_flat()?);
        self.broadcast.push(payload.len());
        Ok((
            decoded,
            DownlinkMetrics {
                broadcast_bytes: payload.len(),
                dense_bytes: ctx.layout.dense_bytes(),
                quality: Quality::of(&q),
                time_ms: t.elapsed().as_secs_f64() * 1e3,
            },
        ))
    }

    /// Record a round without a broadcast (it was skipped: no valid update).
    pub fn skip(&mut self) {
        self.broadcast.push(0);
    }
}

/// The base-weight residuals of exact LoRA aggregation
/// ([`Aggregated::base_residual`](cgfed_core::Aggregated)) that clients must download to
/// hold the server's base model: a client pays, when sampled, every residual since it last
/// took part (each in the aggregator's cheapest exact form), or the dense f32 base weights
/// of the affected modules if that is smaller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResidualLog {
    /// Per completed round: the residual's wire size (0 when the round had none).
    pub bytes: Vec<usize>,
    /// Per client: the first round whose residual it has not received.
    pub synced: Vec<usize>,
    /// f32 size of the base weights the residuals touch (0 until the first residual).
    pub dense_bytes: usize,
}

impl ResidualLog {
    /// An empty log for `clients` clients.
    pub fn new(clients: usize) -> Self {
        Self {
            bytes: Vec::new(),
            synced: vec![0; clients],
            dense_bytes: 0,
        }
    }

    /// Record round `round`'s residual (`bytes` on the wire, `dense_bytes` as f32).
    pub fn record(&mut self, round: usize, bytes: usize, dense_bytes: usize) {
        if self.bytes.len() <= round {
            self.bytes.resize(round + 1, 0);
        }
        self.bytes[round] = bytes;
        self.dense_bytes = self.dense_bytes.max(dense_bytes);
    }

    /// Bytes client `c` downloads at the start of round `round`; marks it as synced.
    pub fn sync_cost(&mut self, c: usize, round: usize) -> usize {
        let end = round.min(self.bytes.len());
        let from = self.synced[c].min(end);
        let missed: usize = self.bytes[from..end].iter().sum();
        self.synced[c] = round;
        missed.min(self.dense_bytes)
    }
}
