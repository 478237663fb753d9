//! The [`Aggregator`] trait and what it aggregates.

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

/// Combines decoded client updates into one global delta.
///
/// # Design
///
/// One required method, [`aggregate`](Self::aggregate). Stateful aggregators (server
/// momentum, FedAdam) keep their state in `self` and expose it through
/// [`save_state`](Self::save_state) / [`load_state`](Self::load_state) so runs can be
/// checkpointed; stateless ones keep the provided defaults.
///
/// # Shapes
///
/// Every `updates[i].update` has the layout `ctx.layout`; the result must have it too.
/// `updates` is never empty (the runner skips a round with no valid update).
pub trait Aggregator: Send {
    /// Registered name.
    fn name(&self) -> &str;

    /// The global delta for this round.
    fn aggregate(&mut self, updates: &[ClientUpdate], ctx: &RoundCtx) -> Result<Update>;

    /// Serialised server-side state, for checkpoints. Default: stateless (empty).
    fn save_state(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restore state saved by [`save_state`](Self::save_state). Default: nothing to restore.
    fn load_state(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}
