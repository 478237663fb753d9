//! The [`Aggregator`] trait and what it aggregates.

use std::collections::BTreeMap;

use crate::context::RoundCtx;
use crate::error::Result;
use crate::update::Update;

/// One client's decoded contribution to a round.
#[derive(Debug, Clone)]
pub struct ClientUpdate {
    /// Client index.
    pub client: usize,
    /// The decoded update (delta of every trainable tensor).
    pub update: Update,
    /// Number of training examples the client used (FedAvg's weight).
    pub num_examples: usize,
    /// The client's mean local training loss.
    pub train_loss: f64,
}

/// What an aggregator produced for one round.
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// The global delta (layout `ctx.layout`): `global += delta`.
    pub delta: Update,
    /// Changes to frozen base weights that the trainable state cannot express, e.g. the
    /// exact LoRA product's residual `Σᵢ wᵢ·BᵢAᵢ − B̄Ā` per adapted module (tensor name:
    /// the module path, shape `[out, in]`, in units of `B·A`, before the LoRA scale).
    /// Applied with [`Trainer::merge_into_base`](crate::Trainer::merge_into_base).
    pub base_residual: Option<Update>,
    /// Bytes the server sends each client to transmit `base_residual` (its cheapest exact
    /// form, e.g. stacked factors); counted as downlink by the runner. 0 without a residual.
    pub base_residual_bytes: usize,
    /// Scalar diagnostics for the round's metrics line (e.g. how many updates were clipped,
    /// which clients Krum selected), under the aggregator's own key names.
    pub metrics: BTreeMap<String, f64>,
}

impl Aggregated {
    /// A plain delta, no residual, no metrics.
    pub fn delta(delta: Update) -> Self {
        Self {
            delta,
            base_residual: None,
            base_residual_bytes: 0,
            metrics: BTreeMap::new(),
        }
    }

    /// Add one diagnostic.
    pub fn with_metric(mut self, key: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(key.into(), value);
        self
    }
}

impl From<Update> for Aggregated {
    fn from(delta: Update) -> Self {
        Self::delta(delta)
    }
}

/// Combines decoded client updates into one global delta.
///
/// # Design
///
/// One required method, [`aggregate`](Self::aggregate). It sees the global trainable state
/// the clients started from (`global`; e.g. the LoRA factors, for aggregating their product)
/// and the decoded deltas. Stateful aggregators (server momentum, FedAdam) keep their state
/// in `self` and expose it through [`save_state`](Self::save_state) /
/// [`load_state`](Self::load_state) so runs can be checkpointed; stateless ones keep the
/// provided defaults.
///
/// # Shapes
///
/// `global` and every `updates[i].update` have the layout `ctx.layout`; the delta must have
/// it too. `updates` is never empty (the runner skips a round with no valid update), but an
/// aggregator must return an error, not panic, when it is.
pub trait Aggregator: Send {
    /// Registered name.
    fn name(&self) -> &str;

    /// The global delta for this round.
    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated>;

    /// A one-line description for logs and the summary (name and the keys that matter).
    /// Default: the name.
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// Serialised server-side state, for checkpoints. Default: stateless (empty).
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restore state saved by [`save_state`](Self::save_state). Default: nothing to restore.
    fn load_state(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}
