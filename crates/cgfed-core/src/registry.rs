//! The plugin registry.
//!
//! Every plugin registers a [`Plugin`] with `inventory::submit!`: its name, a one-line
//! summary, and a factory from its TOML table. Lookups are by kind and name; an unknown
//! name is an error listing the registered ones, a name registered twice is an error.
//!
//! ```ignore
//! cgfed_core::inventory::submit! {
//!     cgfed_core::Plugin {
//!         name: "kbit",
//!         summary: "block-wise absmax quantization to 1..8 bits",
//!         params: &[
//!             cgfed_core::Param { key: "bits", default: "8", help: "bits per value, 1..=8" },
//!         ],
//!         factory: cgfed_core::Factory::Compressor(build_kbit),
//!     }
//! }
//! ```
//!
//! `params` documents the plugin's own keys for `cgfed list`; every default is a TOML value
//! the factory accepts (a test builds each plugin from them), or `-` for "no default".
//!
//! # The linker pitfall
//!
//! Rust drops crates nothing references, and their registrations vanish silently. Binaries
//! and tests that need plugins write `use cgfed_plugins as _;` (the umbrella crate does
//! `extern crate X as _;` for every plugin).

use crate::aggregator::Aggregator;
use crate::compressor::GradientCompressor;
use crate::config::PluginTable;
use crate::error::{Error, Result};
use crate::trainer::{Trainer, TrainerInit};

/// Builds a compressor from its table.
pub type CompressorFactory = fn(&PluginTable) -> Result<Box<dyn GradientCompressor>>;
/// Builds an aggregator from its table.
pub type AggregatorFactory = fn(&PluginTable) -> Result<Box<dyn Aggregator>>;
/// Builds a trainer from its table and the model/LoRA tables.
pub type TrainerFactory = fn(&TrainerInit<'_>) -> Result<Box<dyn Trainer>>;

/// A plugin's factory, which also says its kind.
#[derive(Clone, Copy)]
pub enum Factory {
    /// A [`GradientCompressor`].
    Compressor(CompressorFactory),
    /// An [`Aggregator`].
    Aggregator(AggregatorFactory),
    /// A [`Trainer`].
    Trainer(TrainerFactory),
}

impl Factory {
    /// `compressor`, `aggregator` or `trainer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Factory::Compressor(_) => "compressor",
            Factory::Aggregator(_) => "aggregator",
            Factory::Trainer(_) => "trainer",
        }
    }
}

/// One documented key of a plugin's table.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The key, e.g. `ratio`.
    pub key: &'static str,
    /// Its default as a TOML value (`0.01`, `"tensor"`, `false`), or `-` when it has none.
    pub default: &'static str,
    /// One line saying what it does and which values are accepted.
    pub help: &'static str,
}

/// One registered plugin.
pub struct Plugin {
    /// Name used in config files (`kind = "..."` or `name = "..."`).
    pub name: &'static str,
    /// One line for `cgfed list`.
    pub summary: &'static str,
    /// The plugin's own keys with their defaults (wrapper keys such as `error_feedback` are
    /// documented once, in [`crate::wrappers`]).
    pub params: &'static [Param],
    /// The factory.
    pub factory: Factory,
}

impl Plugin {
    /// `compressor`, `aggregator` or `trainer`.
    pub fn kind(&self) -> &'static str {
        self.factory.kind()
    }
}

inventory::collect!(Plugin);

/// Every registered plugin, sorted by kind then name.
pub fn plugins() -> Vec<&'static Plugin> {
    let mut all: Vec<&'static Plugin> = inventory::iter::<Plugin>.into_iter().collect();
    all.sort_by(|a, b| (a.kind(), a.name).cmp(&(b.kind(), b.name)));
    all
}

/// Sorted names registered for `kind`.
pub fn names(kind: &str) -> Vec<String> {
    let mut v: Vec<String> = plugins()
        .into_iter()
        .filter(|p| p.kind() == kind)
        .map(|p| p.name.to_string())
        .collect();
    v.dedup();
    v
}

/// Error if any kind has a name registered twice.
pub fn check_unique() -> Result<()> {
    let all = plugins();
    for w in all.windows(2) {
        if w[0].kind() == w[1].kind() && w[0].name == w[1].name {
            return Err(duplicate(w[0], w[1]));
        }
    }
    Ok(())
}

fn duplicate(a: &Plugin, b: &Plugin) -> Error {
    Error::DuplicatePlugin {
        kind: a.kind(),
        name: a.name.to_string(),
        first: a.summary.to_string(),
        second: b.summary.to_string(),
    }
}

/// The plugin of `kind` called `name`.
pub fn find(kind: &'static str, name: &str) -> Result<&'static Plugin> {
    let mut hits = plugins()
        .into_iter()
        .filter(|p| p.kind() == kind && p.name == name);
    match (hits.next(), hits.next()) {
        (Some(p), None) => Ok(p),
        (Some(a), Some(b)) => Err(duplicate(a, b)),
        (None, _) => Err(Error::UnknownPlugin {
            kind,
            name: name.to_string(),
            registered: names(kind),
        }),
    }
}

fn with_key(table: &PluginTable, e: Error) -> Error {
    match e {
        e @ (Error::UnknownPlugin { .. } | Error::DuplicatePlugin { .. }) => {
            Error::config(format!("{}.{}", table.key, table.name_key), e.to_string())
        }
        e => e,
    }
}

/// Build the compressor named by `table` with the wrappers its keys ask for
/// (`error_feedback`, `warmup_rounds`, `dense_fallback`, `values`; see [`crate::wrappers`]).
pub fn build_compressor(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    crate::wrappers::build_compressor(table)
}

/// Build the compressor named by `table` alone: every key goes to its factory.
pub fn build_plain_compressor(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    match find("compressor", &table.name)
        .map_err(|e| with_key(table, e))?
        .factory
    {
        Factory::Compressor(f) => f(table),
        _ => unreachable!("find filters by kind"),
    }
}

/// Build the aggregator named by `table`.
pub fn build_aggregator(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    match find("aggregator", &table.name)
        .map_err(|e| with_key(table, e))?
        .factory
    {
        Factory::Aggregator(f) => f(table),
        _ => unreachable!("find filters by kind"),
    }
}

/// Build the trainer named by `init.trainer`.
pub fn build_trainer(init: &TrainerInit<'_>) -> Result<Box<dyn Trainer>> {
    match find("trainer", &init.trainer.name)
        .map_err(|e| with_key(init.trainer, e))?
        .factory
    {
        Factory::Trainer(f) => f(init),
        _ => unreachable!("find filters by kind"),
    }
}
