//! The per-round JSON line (`metrics.jsonl`) and the run summary (`summary.json`).
//!
//! Field names follow the project's metric vocabulary: `uplink_bytes`, `downlink_bytes`,
//! `dense_bytes`, `ratio`, `snr_db`, `snr_paper`, `cosine`, `rel_err`, `train_loss`,
//! `eval_loss`, `perplexity`, `time_*_ms`, `phase`, `rejected_updates`. An infinite SNR
//! (exact reconstruction) is written as `null`.

use std::collections::BTreeMap;

use cgfed_core::Phase;
use serde::{Deserialize, Serialize};

/// Reconstruction quality of a decoded update against the true one (see
/// [`cgfed_core::metrics`]); `None` (`null` in JSON) where the value is not finite, e.g. the
/// infinite SNR of an exact reconstruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// SNR in dB, `10·log10(‖x‖²/‖x−x̂‖²)`.
    pub snr_db: Option<f64>,
    /// The paper's SNR, `‖x‖²/(‖x−x̂‖²/n)`.
    pub snr_paper: Option<f64>,
    /// Cosine similarity of `x` and `x̂`.
    pub cosine: Option<f64>,
    /// `‖x−x̂‖/‖x‖`.
    pub rel_err: Option<f64>,
}

impl Quality {
    /// The finite parts of one measurement.
    pub fn of(q: &cgfed_core::metrics::Reconstruction) -> Self {
        Self {
            snr_db: finite(q.snr_db),
            snr_paper: finite(q.snr_paper),
            cosine: finite(q.cosine),
            rel_err: finite(q.rel_err),
        }
    }

    /// Means of the finite values of several measurements.
    pub fn mean(qs: &[cgfed_core::metrics::Reconstruction]) -> Self {
        Self {
            snr_db: finite_mean(qs.iter().map(|q| q.snr_db)),
            snr_paper: finite_mean(qs.iter().map(|q| q.snr_paper)),
            cosine: finite_mean(qs.iter().map(|q| q.cosine)),
            rel_err: finite_mean(qs.iter().map(|q| q.rel_err)),
        }
    }
}

/// One client's part of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMetrics {
    /// Client index.
    pub client: usize,
    /// Training examples the client holds.
    pub num_examples: usize,
    /// Mean local training loss.
    pub train_loss: f64,
    /// Length of the client's payload.
    pub uplink_bytes: usize,
    /// f32 size of its update.
    pub dense_bytes: usize,
    /// `dense_bytes / uplink_bytes`.
    pub ratio: f64,
    /// How well the server's decode matches the true update.
    #[serde(flatten)]
    pub quality: Quality,
    /// Non-zero elements in the decoded update (the actual k of a sparsifier).
    #[serde(default)]
    pub nonzero: usize,
    /// Whether the server rejected the payload.
    pub rejected: bool,
}

/// One JSON line per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// 1-based index of the completed round.
    pub round: usize,
    /// `calibration` or `train`.
    pub phase: Phase,
    /// Sampled clients, sorted.
    pub sampled: Vec<usize>,
    /// Valid updates aggregated.
    pub participants: usize,
    /// Payloads rejected (failed to encode or to decode).
    pub rejected_updates: usize,
    /// Whether the round was skipped (no valid update).
    pub skipped: bool,
    /// Sum of the payload lengths sent by clients this round.
    pub uplink_bytes: usize,
    /// Bytes sent by the server this round (global state × clients, plus artifacts).
    pub downlink_bytes: usize,
    /// Uplink so far, this round included.
    pub cum_uplink_bytes: usize,
    /// Downlink so far, this round included.
    pub cum_downlink_bytes: usize,
    /// f32 size of the same updates.
    pub dense_bytes: usize,
    /// `dense_bytes / uplink_bytes`.
    pub ratio: f64,
    /// Means over clients of their [`Quality`] (finite values only).
    #[serde(flatten)]
    pub quality: Quality,
    /// Mean over accepted clients of the share of non-zero decoded elements.
    #[serde(default)]
    pub density: Option<f64>,
    /// The downlink broadcast of this round, when `[downlink]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downlink: Option<crate::downlink::DownlinkMetrics>,
    /// Example-weighted mean of the clients' training losses.
    pub train_loss: Option<f64>,
    /// Held-out loss per target token after this round, when evaluated.
    pub eval_loss: Option<f64>,
    /// `exp(eval_loss)`.
    pub perplexity: Option<f64>,
    /// Multiple-choice accuracy after the last round (`acc_cloze`, …); empty otherwise.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub accuracy: std::collections::BTreeMap<String, f64>,
    /// Local training time summed over clients.
    pub time_train_ms: f64,
    /// Compression time summed over clients.
    pub time_encode_ms: f64,
    /// Server decoding time summed over clients.
    pub time_decode_ms: f64,
    /// Aggregation and update time.
    pub time_aggregate_ms: f64,
    /// Evaluation time.
    pub time_eval_ms: f64,
    /// Extra metrics reported by plugin hooks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
    /// Per-client details.
    pub clients: Vec<ClientMetrics>,
}

/// `summary.json`, written at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Multiple-choice accuracy before the first round (`acc_cloze`, …; empty without
    /// multiple-choice evaluation items).
    #[serde(default)]
    pub initial_accuracy: std::collections::BTreeMap<String, f64>,
    /// Multiple-choice accuracy after the last round.
    #[serde(default)]
    pub final_accuracy: std::collections::BTreeMap<String, f64>,
    /// The final accuracy reports, with per-category breakdowns.
    #[serde(default)]
    pub accuracy_reports: Vec<crate::accuracy::AccuracyReport>,
    /// `experiment.name`.
    pub name: String,
    /// `experiment.seed`.
    pub seed: u64,
    /// Rounds run.
    pub rounds: usize,
    /// Trainer description (model size, trainable parameters).
    pub trainer: String,
    /// Compressor, as described by itself (wrappers included, e.g. `topk, error feedback`).
    pub compressor: String,
    /// The downlink compressor, when `[downlink]` is configured.
    #[serde(default)]
    pub downlink_compressor: Option<String>,
    /// Aggregator name.
    pub aggregator: String,
    /// Elements in one update.
    pub update_numel: usize,
    /// Held-out loss before the first round.
    pub initial_eval_loss: f64,
    /// Held-out loss after the last round.
    pub final_eval_loss: f64,
    /// Lowest held-out loss seen.
    pub best_eval_loss: f64,
    /// `exp(final_eval_loss)`.
    pub final_perplexity: f64,
    /// Total uplink bytes.
    pub total_uplink_bytes: usize,
    /// Total downlink bytes.
    pub total_downlink_bytes: usize,
    /// Total f32 size of all updates sent.
    pub total_dense_bytes: usize,
    /// `total_dense_bytes / total_uplink_bytes`.
    pub ratio: f64,
    /// Mean over rounds of the mean SNR in dB (`null` when every reconstruction was exact).
    pub mean_snr_db: Option<f64>,
    /// Payloads rejected over the run.
    pub rejected_updates: usize,
    /// Rounds skipped for lack of valid updates.
    pub skipped_rounds: usize,
    /// Wall-clock time of the run in seconds.
    pub wall_s: f64,
    /// Where the final adapter was saved (PEFT layout), if the trainer has an adapter format.
    pub adapter_dir: Option<String>,
}

/// Mean of the finite values, `None` if there are none.
pub fn finite_mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        if v.is_finite() {
            sum += v;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

/// `Some(v)` when `v` is finite.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}
