//! The plugin registry.
//!
//! Every plugin registers a [`Plugin`] with `inventory::submit!`: its name, a one-line
//! summary, and a factory from its TOML table. Lookups are by kind and name; an unknown
//! name is an error listing the registered ones, a name registered twice is an error.
//!
//! ```ignore
//! cgfed_core::inventory::submit! {
//!     cgfed_core::Plugin {
//!         name: "fp16",
//!         summary: "IEEE half precision, 2 bytes per element",
//!         factory: cgfed_core::Factory::Compressor(build_fp16),
//!     }
//! }
//! ```
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

/// One registered plugin.
pub struct Plugin {
    /// Name used in config files (`name = "..."`).
    pub name: &'static str,
    /// One line for `cgfed list`.
    pub summary: &'static str,
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
            Error::config(format!("{}.name", table.key), e.to_string())
        }
        e => e,
    }
}

/// Build the compressor named by `table`.
pub fn build_compressor(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
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
