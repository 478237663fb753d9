//! The [`GradientCompressor`] trait.

use std::collections::BTreeMap;

use crate::context::RoundCtx;
use crate::error::Result;
use crate::payload::Payload;
use crate::staged::Staged;
use crate::state::ClientState;
use crate::update::Update;

/// What a lifecycle hook reports back to the runner.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookReport {
    /// Extra metrics for the round's JSON line (e.g. `ae_finetune_loss`).
    pub metrics: BTreeMap<String, f64>,
    /// Bytes every participating client must download because of this hook (e.g. a
    /// refreshed encoder); the runner counts it as downlink.
    pub broadcast_bytes: usize,
}

/// Turns an [`Update`] into the exact bytes a client sends, and back.
///
/// # Design
///
/// Two methods are required: [`compress`](Self::compress) and
/// [`decompress`](Self::decompress). Everything else is a provided no-op hook:
///
/// - calibration ([`calibration_rounds`](Self::calibration_rounds),
///   [`observe`](Self::observe), [`fit`](Self::fit)): a learned compressor (CG-FedLLM's
///   TGAP) asks for dense rounds, sees every client update of them, then fits itself;
/// - [`after_round`](Self::after_round): server-side adaptation between rounds (FAF);
/// - [`client_artifacts`](Self::client_artifacts): bytes every client must download before
///   it can compress (e.g. encoder weights), counted as downlink;
/// - [`as_staged`](Self::as_staged): a compressor whose payload is a structure plus dense
///   values (top-k, random-k, PowerSGD) returns its [`Staged`] side here, so the values can
///   be sent through a second compressor (composition, see [`crate::staged`]);
/// - [`describe`](Self::describe): a longer name for reports (wrappers add what they do).
///
/// Per-client memory (error-feedback residuals, warm starts) lives in the [`ClientState`]
/// passed to `compress`, never in `self`; prefix its keys with the compressor's name
/// (`powersgd/q/<tensor>`) because wrappers and stages share one state: the runner owns it, keeps it for clients that are
/// not sampled and checkpoints it. `compress` and `decompress` take `&self` so clients can
/// run in parallel.
///
/// # Wire rules
///
/// The payload starts with the header of [`Payload::builder`]; its length is the whole cost.
/// `decompress` validates every length, index and value and returns
/// [`crate::Error::MalformedPayload`] on anything wrong: it never panics and never allocates
/// from an unchecked length field. Decoded tensors follow `ctx.layout`.
pub trait GradientCompressor: Send + Sync {
    /// Registered name, also written in the payload header.
    fn name(&self) -> &str;

    /// Encode `update` (laid out as `ctx.layout`) for the wire.
    fn compress(&self, update: &Update, state: &mut ClientState, ctx: &RoundCtx)
        -> Result<Payload>;

    /// Decode a payload produced by [`compress`](Self::compress) with the same `ctx`.
    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update>;

    /// Number of dense calibration rounds wanted before compression starts. Default: 0.
    fn calibration_rounds(&self) -> usize {
        0
    }

    /// The share of each client's training examples set aside for calibration (TGAP's D1):
    /// calibration rounds train on that part only and the training rounds on the rest
    /// (D2). `None` (the default): no split, every round uses all of a client's data. A
    /// compressor loaded from a saved calibration keeps returning its fraction (with zero
    /// [`calibration_rounds`](Self::calibration_rounds)), so the run still trains on D2.
    fn calibration_split(&self) -> Option<f64> {
        None
    }

    /// See one dense client update during calibration. Default: ignore it.
    ///
    /// The runner calls it for the update each accepted client sent and, before it, for
    /// the client's delta after each earlier local step (the temporal ensemble), in step
    /// order, all with the same `ctx`.
    fn observe(&mut self, _update: &Update, _ctx: &RoundCtx) -> Result<()> {
        Ok(())
    }

    /// Fit after the calibration rounds. Default: nothing to fit.
    fn fit(&mut self) -> Result<HookReport> {
        Ok(HookReport::default())
    }

    /// Save what [`fit`](Self::fit) learned into `dir` (created if needed) so a later run
    /// can load it instead of calibrating; returns the files written. Default: an error
    /// (nothing to save).
    fn save_fitted(&self, _dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
        Err(crate::error::Error::InvalidInput(format!(
            "compressor `{}` has nothing fitted to save",
            self.name()
        )))
    }

    /// Write the compressor's own server-side state (what [`fit`](Self::fit) and
    /// [`after_round`](Self::after_round) changed, e.g. a fitted autoencoder) into `dir`,
    /// part of the run's checkpoint after every round, so that a resumed run continues
    /// exactly. Per-client state belongs in [`ClientState`] and is checkpointed by the
    /// runner. Default: nothing to save.
    fn save_checkpoint(&self, _dir: &std::path::Path) -> Result<()> {
        Ok(())
    }

    /// Restore what [`save_checkpoint`](Self::save_checkpoint) wrote into `dir` (a resumed
    /// run calls it once, before its first round). Default: nothing to restore.
    fn load_checkpoint(&mut self, _dir: &std::path::Path) -> Result<()> {
        Ok(())
    }

    /// Server-side adaptation after a round, given what arrived and how it decoded.
    /// Default: nothing.
    fn after_round(
        &mut self,
        _received: &[(Payload, Update)],
        _ctx: &RoundCtx,
    ) -> Result<HookReport> {
        Ok(HookReport::default())
    }

    /// Bytes every client must download before compressing (e.g. encoder weights).
    /// Default: none.
    fn client_artifacts(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// The first-stage side of a two-stage compressor, if it has one. Default: `None`.
    fn as_staged(&self) -> Option<&dyn Staged> {
        None
    }

    /// A description for reports and logs, e.g. `topk+kbit, error feedback`. Default: the name.
    fn describe(&self) -> String {
        self.name().to_string()
    }
}
