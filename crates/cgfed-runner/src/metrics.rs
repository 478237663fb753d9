//! The per-round JSON line (`metrics.jsonl`) and the run summary (`summary.json`).
//!
//! Field names follow the project's metric vocabulary: `uplink_bytes`, `downlink_bytes`,
//! `dense_bytes`, `ratio`, `snr_db`, `snr_paper`, `cosine`, `rel_err`, `train_loss`,
//! `eval_loss`, `perplexity`, `time_*_ms`, `phase`, `rejected_updates`. An infinite SNR
//! (exact reconstruction) is written as `null`.

use std::collections::BTreeMap;

use std::path::Path;

use cgfed_core::{Error, Phase, Result};
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
    /// Mean local training loss (`null` when the client dropped out before training).
    pub train_loss: Option<f64>,
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
    /// What happened to the client this round.
    #[serde(default)]
    pub status: ClientStatus,
    /// Whether the client is one of the run's Byzantine clients (`[faults]`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub byzantine: bool,
}

impl ClientMetrics {
    /// A sampled client before anything happened: nothing sent yet, status `accepted`.
    pub fn new(client: usize, num_examples: usize, dense_bytes: usize, byzantine: bool) -> Self {
        Self {
            client,
            num_examples,
            train_loss: None,
            uplink_bytes: 0,
            dense_bytes,
            ratio: 0.0,
            quality: Quality::default(),
            nonzero: 0,
            rejected: false,
            status: ClientStatus::Accepted,
            byzantine,
        }
    }
}

/// What happened to a sampled client in a round (`status` in `metrics.jsonl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    /// Its update was decoded and aggregated.
    #[default]
    Accepted,
    /// It failed to encode, or the server rejected its payload.
    Rejected,
    /// It dropped out (`faults.dropout`): nothing sent.
    Dropped,
    /// A straggler that sent a partial update (`straggler_policy = "partial"`).
    Partial,
    /// A straggler that missed the deadline (`straggler_policy = "drop"`): nothing sent.
    Late,
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
    /// Whether the round was skipped (fewer valid updates than `federation.min_clients`).
    pub skipped: bool,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Sampled clients that dropped out (`[faults]`).
    #[serde(default)]
    pub dropped: usize,
    /// Sampled clients that straggled (partial or late).
    #[serde(default)]
    pub stragglers: usize,
    /// Sampled clients that are Byzantine.
    #[serde(default)]
    pub byzantine: usize,
    /// Cumulative client-level DP ε after this round (`[privacy]` with noise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
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

impl RoundMetrics {
    /// The line of round `round` (1-based) before anything happened in it.
    pub fn new(round: usize, phase: Phase, sampled: Vec<usize>, downlink_bytes: usize) -> Self {
        let clients = Vec::with_capacity(sampled.len());
        Self {
            round,
            phase,
            sampled,
            participants: 0,
            rejected_updates: 0,
            skipped: false,
            skip_reason: None,
            dropped: 0,
            stragglers: 0,
            byzantine: 0,
            epsilon: None,
            uplink_bytes: 0,
            downlink_bytes,
            cum_uplink_bytes: 0,
            cum_downlink_bytes: 0,
            dense_bytes: 0,
            ratio: 0.0,
            quality: Quality::default(),
            density: None,
            downlink: None,
            train_loss: None,
            eval_loss: None,
            perplexity: None,
            accuracy: BTreeMap::new(),
            time_train_ms: 0.0,
            time_encode_ms: 0.0,
            time_decode_ms: 0.0,
            time_aggregate_ms: 0.0,
            time_eval_ms: 0.0,
            extra: BTreeMap::new(),
            clients,
        }
    }
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
    /// Aggregator, as described by itself (name and keys).
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
    /// Sampled clients that dropped out, over the run.
    #[serde(default)]
    pub dropped_clients: usize,
    /// Straggling clients (partial or late), over the run.
    #[serde(default)]
    pub stragglers: usize,
    /// The run's Byzantine clients (`[faults]`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byzantine_clients: Vec<usize>,
    /// The `[faults]` in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<crate::faults::FaultsSection>,
    /// The differential-privacy guarantee of the run (`[privacy]`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<cgfed_aggregators::privacy::PrivacyReport>,
    /// What calibration (TGAP) trained on and cost, when the compressor calibrates or
    /// splits the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::calibration::CalibrationSummary>,
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

/// Read a run's `summary.json`.
///
/// # Errors
/// I/O errors and a file that is not a run summary, naming the file.
pub fn read_summary(path: &Path) -> Result<RunSummary> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: not a valid run summary: {e}", path.display())))
}

/// Read the rounds of a run's `metrics.jsonl`, in file order, blank lines skipped; with
/// `limit`, only the first `limit` rounds (the lines after them are not parsed, e.g. a
/// line a crash cut short).
///
/// # Errors
/// I/O errors and a line that is not a round's metrics, naming the file and line.
pub fn read_rounds(path: &Path, limit: Option<usize>) -> Result<Vec<RoundMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(limit.unwrap_or(usize::MAX))
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::Other(format!(
                    "{}:{}: not a round's metrics: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}
