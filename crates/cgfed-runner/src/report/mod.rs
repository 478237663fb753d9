//! Comparison reports over finished runs: one row per run (quality, bytes, time, rounds to
//! a target loss), as a terminal table, a Markdown report with plots (SVG and PNG) and a
//! JSON file.
//!
//! A run directory holds `summary.json` ([`RunSummary`]) and `metrics.jsonl` (one
//! [`RoundMetrics`] per line). [`RunRecord::load`] reads both, [`build`] turns a list of
//! records into a [`Report`], [`write`](fn@write) writes `report.md`, `report.json` and the plots,
//! and [`terminal_table`] / [`markdown_table`] render the rows.
//!
//! The target loss of "rounds to target" is either given ([`ReportOptions::target_eval_loss`])
//! or the final eval loss of the reference run times `1 + target_within`. Round numbers are
//! those of `metrics.jsonl` (calibration rounds included); the loss before the first round
//! (`summary.initial_eval_loss`) is round 0 and never counts as reaching the target.
//!
//! ```no_run
//! # fn main() -> cgfed_core::Result<()> {
//! use cgfed_runner::report::{self, ReportOptions, RunRecord};
//! let records = vec![
//!     RunRecord::load("none", "runs/tiny".as_ref())?,
//!     RunRecord::load("topk", "runs/tiny-compressed".as_ref())?,
//! ];
//! let report = report::build(&records, &ReportOptions::default())?;
//! print!("{}", report::terminal_table(&report));
//! report::write(&report, &records, "runs/compare".as_ref())?;
//! # Ok(()) }
//! ```

mod plot;
mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cgfed_core::{Error, Phase, Result};
use serde::{Deserialize, Serialize};

use crate::metrics::{finite_mean, read_rounds, read_summary, RoundMetrics, RunSummary};

pub use table::{human_bytes, markdown_table, terminal_table, thousands};

/// Accuracy keys in the order a single "accuracy" column or plot prefers them.
const ACCURACY_PREFERENCE: [&str; 3] = ["acc_cloze_norm", "acc_cloze", "acc_letter"];

/// One finished run: its label in the report, where it lives, and what it wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run's name in tables and legends (a variant: `none`, `topk-1%`, …).
    pub label: String,
    /// The run directory.
    pub dir: PathBuf,
    /// `summary.json`.
    pub summary: RunSummary,
    /// `metrics.jsonl`, sorted by round (a round written twice keeps its last line).
    pub rounds: Vec<RoundMetrics>,
}

impl RunRecord {
    /// Read `summary.json` and `metrics.jsonl` of the finished run in `dir`.
    ///
    /// Errors name the file: a directory without `summary.json` is "not a finished run",
    /// a line of `metrics.jsonl` that is not a round's metrics is reported with its line
    /// number.
    pub fn load(label: impl Into<String>, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Other(format!(
                "{}: no such run directory",
                dir.display()
            )));
        }
        let summary_path = dir.join("summary.json");
        if !summary_path.is_file() {
            return Err(Error::Other(format!(
                "{}: not a finished run (no summary.json); run or resume it first",
                summary_path.display()
            )));
        }
        let summary = read_summary(&summary_path)?;
        // A round written twice keeps its last line.
        let by_round: BTreeMap<usize, RoundMetrics> =
            read_rounds(&dir.join("metrics.jsonl"), None)?
                .into_iter()
                .map(|m| (m.round, m))
                .collect();
        Ok(Self {
            label: label.into(),
            dir: dir.to_path_buf(),
            summary,
            rounds: by_round.into_values().collect(),
        })
    }
}

/// How [`build`] chooses the target loss and names the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// The report's title (first line of `report.md`).
    pub title: String,
    /// An absolute target eval loss; when `None` the target follows from the reference.
    pub target_eval_loss: Option<f64>,
    /// Label of the reference run (`vs ref`, and the target when none is given); `None`
    /// is the first record.
    pub reference: Option<String>,
    /// Relative slack over the reference's final eval loss for the target, e.g. `0.02`
    /// (the default) for "within 2 %".
    pub target_within: f64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            title: "cgfed comparison".into(),
            target_eval_loss: None,
            reference: None,
            target_within: 0.02,
        }
    }
}

/// The comparison: one [`ReportRow`] per run, in the order of the records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The title.
    pub title: String,
    /// Label of the reference run.
    pub reference: String,
    /// The eval loss a run must reach for `rounds_to_target` (`None` when the reference's
    /// final loss is not finite and no target was given).
    pub target_eval_loss: Option<f64>,
    /// How the target was chosen, in words.
    pub target_rule: String,
    /// One row per run.
    pub rows: Vec<ReportRow>,
}

/// Mean time per round, in milliseconds, of each part of a round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeSplit {
    /// Local training, summed over the round's clients.
    pub train: f64,
    /// Compression, summed over clients.
    pub encode: f64,
    /// Server decoding, summed over clients.
    pub decode: f64,
    /// Aggregation and the global update.
    pub aggregate: f64,
    /// Evaluation.
    pub eval: f64,
}

/// One run in a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The run's label.
    pub variant: String,
    /// The compressor as it describes itself (`summary.compressor`).
    pub compressor: String,
    /// Training rounds (phase `train`).
    pub rounds: usize,
    /// Calibration rounds (phase `calibration`) before them.
    pub calibration_rounds: usize,
    /// Held-out loss before the first round.
    pub initial_eval_loss: f64,
    /// Held-out loss after the last round.
    pub final_eval_loss: f64,
    /// Lowest held-out loss seen.
    pub best_eval_loss: f64,
    /// Relative change of the final eval loss against the reference run's (`+0.017` is
    /// 1.7 % worse); `None` where it is not finite.
    pub vs_reference: Option<f64>,
    /// Multiple-choice accuracy after the last round (`acc_cloze`, …; empty without it).
    pub accuracy: BTreeMap<String, f64>,
    /// Total uplink bytes (client payloads).
    pub total_uplink_bytes: usize,
    /// Total downlink bytes (server broadcasts and artifacts).
    pub total_downlink_bytes: usize,
    /// Total dense f32 size of the updates over total uplink (`summary.ratio`).
    pub ratio: f64,
    /// Mean over rounds of the round's mean SNR in dB (`None`: every reconstruction exact).
    pub mean_snr_db: Option<f64>,
    /// Mean over rounds of the round's mean cosine similarity (finite values only).
    pub mean_cosine: Option<f64>,
    /// The first round (numbered as in `metrics.jsonl`) whose eval loss is at or below the
    /// target; `None` if none is.
    pub rounds_to_target: Option<usize>,
    /// Cumulative uplink bytes at that round.
    pub uplink_to_target: Option<usize>,
    /// Mean time per round of each part, over all rounds.
    pub time_ms: TimeSplit,
    /// Wall-clock time of the whole run in seconds.
    pub wall_s: f64,
}

impl ReportRow {
    /// Every round of the run, calibration included.
    pub fn total_rounds(&self) -> usize {
        self.rounds + self.calibration_rounds
    }

    /// Seconds per round: the mean per-round time split summed (train, encode, decode,
    /// aggregate, eval; `None` without rounds). Set-up and the initial evaluation, which a
    /// comparison shares between variants, are not in it.
    pub fn seconds_per_round(&self) -> Option<f64> {
        let t = &self.time_ms;
        (self.total_rounds() > 0)
            .then(|| (t.train + t.encode + t.decode + t.aggregate + t.eval) / 1e3)
    }
}

/// Build the report of `records` (in their order) under `opts`.
///
/// Fails on an empty list, on two records with the same label, on a `reference` that is
/// no record's label, and on a non-finite target or negative `target_within`.
pub fn build(records: &[RunRecord], opts: &ReportOptions) -> Result<Report> {
    if records.is_empty() {
        return Err(Error::InvalidInput(
            "a report needs at least one run".into(),
        ));
    }
    for (i, r) in records.iter().enumerate() {
        if records[..i].iter().any(|o| o.label == r.label) {
            return Err(Error::InvalidInput(format!(
                "two runs are labelled `{}`; labels must be unique",
                r.label
            )));
        }
    }
    let reference = match &opts.reference {
        Some(label) => records.iter().find(|r| &r.label == label).ok_or_else(|| {
            Error::InvalidInput(format!(
                "reference `{label}` is not one of the runs: {}",
                labels(records)
            ))
        })?,
        None => &records[0],
    };
    let ref_final = reference.summary.final_eval_loss;

    let (target, target_rule) = match opts.target_eval_loss {
        Some(t) if !t.is_finite() => {
            return Err(Error::InvalidInput(format!(
                "target eval loss must be finite, got {t}"
            )))
        }
        Some(t) => (Some(t), format!("eval loss ≤ {t:.4} (given)")),
        None => {
            let w = opts.target_within;
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "target_within must be a finite fraction ≥ 0, got {w}"
                )));
            }
            if ref_final.is_finite() {
                let t = ref_final * (1.0 + w);
                (
                    Some(t),
                    format!(
                        "eval loss ≤ {t:.4}: within {}% of the final eval loss of the reference `{}` ({ref_final:.4})",
                        trim_number(w * 100.0, 3),
                        reference.label
                    ),
                )
            } else {
                (
                    None,
                    format!(
                        "no target: the final eval loss of the reference `{}` is not finite",
                        reference.label
                    ),
                )
            }
        }
    };

    let rows = records.iter().map(|r| row(r, ref_final, target)).collect();
    Ok(Report {
        title: opts.title.clone(),
        reference: reference.label.clone(),
        target_eval_loss: target,
        target_rule,
        rows,
    })
}

fn labels(records: &[RunRecord]) -> String {
    records
        .iter()
        .map(|r| format!("`{}`", r.label))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(r: &RunRecord, ref_final: f64, target: Option<f64>) -> ReportRow {
    let s = &r.summary;
    let count = |p: Phase| r.rounds.iter().filter(|m| m.phase == p).count();
    let accuracy = if s.final_accuracy.is_empty() {
        r.rounds
            .iter()
            .rev()
            .find(|m| !m.accuracy.is_empty())
            .map(|m| m.accuracy.clone())
            .unwrap_or_default()
    } else {
        s.final_accuracy.clone()
    };
    let reached = target.and_then(|t| {
        r.rounds
            .iter()
            .find(|m| m.eval_loss.is_some_and(|l| l <= t))
    });
    let vs_reference = s.final_eval_loss / ref_final - 1.0;
    let n = r.rounds.len().max(1) as f64;
    let mean = |f: fn(&RoundMetrics) -> f64| r.rounds.iter().map(f).sum::<f64>() / n;
    ReportRow {
        variant: r.label.clone(),
        compressor: s.compressor.clone(),
        rounds: count(Phase::Train),
        calibration_rounds: count(Phase::Calibration),
        initial_eval_loss: s.initial_eval_loss,
        final_eval_loss: s.final_eval_loss,
        best_eval_loss: s.best_eval_loss,
        vs_reference: vs_reference.is_finite().then_some(vs_reference),
        accuracy,
        total_uplink_bytes: s.total_uplink_bytes,
        total_downlink_bytes: s.total_downlink_bytes,
        ratio: s.ratio,
        mean_snr_db: s.mean_snr_db,
        mean_cosine: finite_mean(r.rounds.iter().filter_map(|m| m.quality.cosine)),
        rounds_to_target: reached.map(|m| m.round),
        uplink_to_target: reached.map(|m| m.cum_uplink_bytes),
        time_ms: TimeSplit {
            train: mean(|m| m.time_train_ms),
            encode: mean(|m| m.time_encode_ms),
            decode: mean(|m| m.time_decode_ms),
            aggregate: mean(|m| m.time_aggregate_ms),
            eval: mean(|m| m.time_eval_ms),
        },
        wall_s: s.wall_s,
    }
}

/// The accuracy key a single column or plot shows: the first of `acc_cloze_norm`,
/// `acc_cloze`, `acc_letter` that occurs, else the first key in sorted order.
fn preferred_accuracy<'a>(keys: impl IntoIterator<Item = &'a String>) -> Option<String> {
    let keys: std::collections::BTreeSet<&String> = keys.into_iter().collect();
    ACCURACY_PREFERENCE
        .iter()
        .find(|k| keys.iter().any(|x| x.as_str() == **k))
        .map(|k| k.to_string())
        .or_else(|| keys.first().map(|k| k.to_string()))
}

/// `v` with at most `decimals` decimals and no trailing zeros (`2`, `1.5`).
fn trim_number(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Write `report.md`, `report.json` and the plots of `report` into `out_dir` (created if
/// needed) and return the paths written.
///
/// `records` must be the records the report was built from, in the same order (the plots
/// read their rounds). Plots come as SVG and PNG: `loss_vs_uplink`, `accuracy_vs_round`
/// (only when some run has accuracy) and `snr_vs_round` (only when some run is lossy).
pub fn write(report: &Report, records: &[RunRecord], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let same = report.rows.len() == records.len()
        && report
            .rows
            .iter()
            .zip(records)
            .all(|(row, rec)| row.variant == rec.label);
    if !same {
        return Err(Error::InvalidInput(format!(
            "the records ({}) are not the ones the report was built from",
            labels(records)
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let plots = plot::write_plots(report, records, out_dir)?;

    let md_path = out_dir.join("report.md");
    write_file(&md_path, markdown_report(report, &plots).as_bytes())?;
    let json_path = out_dir.join("report.json");
    let mut json = serde_json::to_vec_pretty(report)
        .map_err(|e| Error::Other(format!("{}: {e}", json_path.display())))?;
    json.push(b'\n');
    write_file(&json_path, &json)?;

    let mut paths = vec![md_path, json_path];
    paths.extend(plots.into_iter().flat_map(|p| p.files));
    Ok(paths)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn markdown_report(report: &Report, plots: &[plot::Plot]) -> String {
    let mut md = format!("# {}\n\n", report.title);
    md.push_str(&format!(
        "{} run{}; reference `{}`. Target: {}.\n\n",
        report.rows.len(),
        if report.rows.len() == 1 { "" } else { "s" },
        report.reference,
        report.target_rule
    ));
    md.push_str(&markdown_table(report));
    md.push('\n');
    if !plots.is_empty() {
        md.push_str("## Plots\n\n");
        for p in plots {
            md.push_str(&format!(
                "![{}]({}.svg)\n\n*{}* ([PNG]({}.png))\n\n",
                p.title, p.stem, p.caption, p.stem
            ));
        }
    }
    md.push_str("## How to read it\n\n");
    let has_accuracy = report.rows.iter().any(|r| !r.accuracy.is_empty());
    for (col, what) in table::COLUMN_NOTES {
        if col == "acc_*" && !has_accuracy {
            continue;
        }
        md.push_str(&format!("- **{col}**: {what}\n"));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_preference_and_fallback() {
        let keys = ["acc_letter".to_string(), "acc_cloze".to_string()];
        assert_eq!(preferred_accuracy(&keys).as_deref(), Some("acc_cloze"));
        let keys = ["zeta".to_string(), "alpha".to_string()];
        assert_eq!(preferred_accuracy(&keys).as_deref(), Some("alpha"));
        assert_eq!(preferred_accuracy(&[]), None);
    }

    #[test]
    fn trims_numbers() {
        assert_eq!(trim_number(2.0, 3), "2");
        assert_eq!(trim_number(1.5, 3), "1.5");
        assert_eq!(trim_number(7.000000000000001, 3), "7");
        assert_eq!(trim_number(120.0, 0), "120");
    }
}
