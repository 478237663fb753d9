//! Config checks and `params` entries shared by several aggregators.

use cgfed_core::config::{ensure, join_key};
use cgfed_core::{Param, PluginTable, Result};

/// The `params` entry documenting `weighting`.
pub const WEIGHTING: Param = Param {
    key: "weighting",
    default: "\"examples\"",
    help: "\"examples\" (weighted by each client's example count) or \"uniform\"",
};

/// `<table>.<key>` (e.g. `aggregator.server_lr`).
pub fn key(table: &PluginTable, key: &str) -> String {
    join_key(&table.key, key)
}

/// `v` must be positive and finite.
pub fn positive(table: &PluginTable, name: &str, v: f64) -> Result<()> {
    ensure(
        v.is_finite() && v > 0.0,
        key(table, name),
        format!("got {v}; expected a positive finite number"),
    )
}

/// `v` must lie in `[0, hi)`.
pub fn below(table: &PluginTable, name: &str, v: f64, hi: f64) -> Result<()> {
    ensure(
        (0.0..hi).contains(&v),
        key(table, name),
        format!("got {v}; expected a value in [0, {hi})"),
    )
}
