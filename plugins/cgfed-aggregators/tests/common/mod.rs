//! Helpers shared by the aggregator tests: building aggregators from TOML keys, client
//! updates from flat values, running one round.
#![allow(dead_code)]

use cgfed_aggregators as _;
use cgfed_core::candle_core::Device;
use cgfed_core::testkit;
use cgfed_core::{
    registry, toml, Aggregated, Aggregator, ClientUpdate, Layout, PluginTable, Result, TensorSpec,
    Update,
};

/// Every registered aggregator of this crate, by name.
pub const ALL: &[&str] = &[
    "fedavg",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "median",
    "trimmed-mean",
    "krum",
];

/// The `[aggregator]` table of `name` with `keys` (TOML values written as text).
pub fn table(name: &str, keys: &[(&str, &str)]) -> PluginTable {
    let mut t = PluginTable::named("aggregator", name);
    for (k, v) in keys {
        let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .expect("test TOML")
            .remove("v")
            .expect("v");
        t.params.insert(k.to_string(), v);
    }
    t
}

/// Build `name` with `keys`, panicking on a config error.
pub fn build(name: &str, keys: &[(&str, &str)]) -> Box<dyn Aggregator> {
    registry::build_aggregator(&table(name, keys))
        .unwrap_or_else(|e| panic!("{name} {keys:?}: {e}"))
}

/// The config error of `name` with `keys`, as text.
pub fn config_error(name: &str, keys: &[(&str, &str)]) -> String {
    match registry::build_aggregator(&table(name, keys)) {
        Ok(_) => panic!("{name} accepted {keys:?}"),
        Err(e) => e.to_string(),
    }
}

/// A one-tensor layout `w` of `n` elements.
pub fn vector(n: usize) -> Layout {
    Layout::new(vec![TensorSpec {
        name: "w".into(),
        shape: vec![n],
    }])
    .expect("layout")
}

/// Client `id` with delta `values` (flat, layout order) and `n` examples.
pub fn client(layout: &Layout, id: usize, values: &[f32], n: usize) -> ClientUpdate {
    ClientUpdate {
        client: id,
        update: Update::from_flat(layout, values, &Device::Cpu).expect("values fit the layout"),
        num_examples: n,
        train_loss: 0.0,
    }
}

/// Clients with ids 0.. and one example each.
pub fn clients(layout: &Layout, values: &[Vec<f32>]) -> Vec<ClientUpdate> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| client(layout, i, v, 1))
        .collect()
}

/// One round from a zero global state.
pub fn try_round(
    agg: &mut dyn Aggregator,
    layout: &Layout,
    updates: &[ClientUpdate],
) -> Result<Aggregated> {
    let global = Update::zeros(layout, &Device::Cpu).expect("zeros");
    agg.aggregate(updates, &global, &testkit::ctx(layout, 0, 0, 0))
}

/// One round from a zero global state; the delta as flat values and the metrics.
pub fn round(agg: &mut dyn Aggregator, layout: &Layout, updates: &[ClientUpdate]) -> Aggregated {
    try_round(agg, layout, updates).unwrap_or_else(|e| panic!("{}: {e}", agg.name()))
}

/// Flat host values.
pub fn flat(u: &Update) -> Vec<f32> {
    u.to_flat().expect("host")
}

/// `|a − b| ≤ tol·max(1, |b|)` for every element.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "element {i}: got {g}, want {w}"
        );
    }
}

/// L2 norm in f64.
pub fn norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
}

/// L2 distance in f64.
pub fn dist(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt()
}
