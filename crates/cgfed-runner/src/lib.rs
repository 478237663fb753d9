//! # cgfed-runner
//!
//! The federation engine: loads an experiment config ([`config`]), builds the trainer,
//! compressor and aggregator by name from the plugin registry, runs the round loop
//! ([`engine`]) with seeded client sampling and exact byte accounting, optional
//! [`downlink`] compression, simulated [`faults`] (Byzantine clients, drop-outs,
//! stragglers, a quorum), client-level differential [`privacy`], and writes one JSON line of [`metrics`] per round, a summary,
//! and after every round a [`checkpoint`] that lets an interrupted run resume exactly;
//! [`compare`] runs several variants of one experiment side by side and [`report`] compares
//! finished runs (tables, plots, rounds to a target loss).
//!
//! ```no_run
//! use cgfed_plugins as _; // link every plugin so the registry can find them
//! # fn main() -> cgfed_core::Result<()> {
//! let cfg = cgfed_runner::load_config("configs/tiny.toml".as_ref(), &["federation.rounds=2".into()])?;
//! let summary = cgfed_runner::run_experiment(&cfg, &mut cgfed_runner::Quiet)?;
//! println!("eval loss {:.3} -> {:.3}", summary.initial_eval_loss, summary.final_eval_loss);
//! # Ok(()) }
//! ```

pub mod accuracy;
pub mod calibration;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod downlink;
pub mod engine;
pub mod faults;
pub mod metrics;
pub mod privacy;
pub mod report;
pub mod sampling;

pub use accuracy::{mc_accuracy, AccuracyReport};
pub use calibration::CalibrationSummary;
pub use checkpoint::StateCheckpoint;
pub use compare::{load_comparison, CompareObserver, Comparison};
pub use config::{load_config, load_experiment, ExperimentConfig};
pub use downlink::{Downlink, DownlinkMetrics};
pub use engine::{
    flat_accuracy, run_experiment, run_status, Evaluation, Experiment, Observer, Quiet, RunInfo,
    RunStatus,
};
pub use faults::{Attack, FaultsSection, StragglerPolicy};
pub use metrics::{ClientMetrics, ClientStatus, Quality, RoundMetrics, RunSummary};
