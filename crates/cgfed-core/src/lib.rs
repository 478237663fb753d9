//! # cgfed-core
//!
//! The vocabulary of cgfed, a framework for communication-efficient federated fine-tuning
//! of LLaMA-family models. This crate owns:
//!
//! - [`Update`] (ordered named tensors) and [`Layout`] (their names and shapes);
//! - [`Payload`] (the exact bytes on the wire) and its header, with a bounds-checked
//!   [`wire::ByteReader`] for decoders;
//! - the three plugin traits: [`GradientCompressor`], [`Aggregator`], [`Trainer`];
//! - explicit per-client compressor state ([`ClientState`]) and the round context ([`RoundCtx`]);
//! - the plugin [`registry`] (via `inventory`) and config helpers ([`PluginTable`]);
//! - reconstruction [`metrics`] (`snr_db`, `snr_paper`, `cosine`, `rel_err`);
//! - the built-in `none` compressor (dense f32), and with the `testkit` feature a
//!   conformance suite every compressor plugin runs.
//!
//! Core never depends on a plugin, the model, the data or the runner.
//!
//! ```
//! use cgfed_core::{registry, PluginTable};
//! let none = registry::build_compressor(&PluginTable::named("compressor", "none")).unwrap();
//! assert_eq!(none.name(), "none");
//! let err = registry::build_compressor(&PluginTable::named("compressor", "nope")).err().unwrap();
//! assert!(err.to_string().contains("registered: "));
//! ```

pub mod aggregator;
pub mod builtin;
pub mod compressor;
pub mod config;
pub mod context;
pub mod error;
pub mod metrics;
pub mod payload;
pub mod registry;
pub mod staged;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tokenizer;
pub mod trainer;
pub mod update;
pub mod wire;
pub mod wrappers;

pub use aggregator::{Aggregated, Aggregator, ClientUpdate};
pub use compressor::{GradientCompressor, HookReport};
pub use config::PluginTable;
pub use context::{Phase, RoundCtx};
pub use error::{Error, Result};
pub use payload::Payload;
pub use registry::{Factory, Param, Plugin};
pub use staged::{Staged, Structure};
pub use state::ClientState;
pub use tokenizer::TextTokenizer;
pub use trainer::{
    EvalOutcome, Example, LocalOutcome, Score, ScoreRequest, TrainCtx, Trainer, TrainerInit,
};
pub use update::{Layout, TensorSpec, Update};

/// Re-exported so plugins use the same candle as the core.
pub use candle_core;
/// Re-exported so plugins register with the same `inventory` version as the core.
pub use inventory;
/// Re-exported so plugin factories name the same `toml` types.
pub use toml;
