//! Coordinate-wise robust aggregators (Yin, Chen, Ramchandran & Bartlett, 2018,
//! "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"):
//!
//! - `median`: per coordinate, the median of the n client values (mean of the two middle
//!   values for even n);
//! - `trimmed-mean`: per coordinate, drop the `k = ⌊β·n⌋` largest and `k` smallest values
//!   and average the rest. Since `β < 0.5`, `n − 2k ≥ 1` always; the guard that would clamp
//!   `k` to `⌊(n − 1)/2⌋` is kept and reported as `trimmed_mean_clamped` (0 or 1).
//!
//! Both are unweighted (a client's example count is its own claim, which a Byzantine
//! client can inflate).

use cgfed_core::{
    config::PluginTable, Aggregated, Aggregator, ClientUpdate, Factory, Param, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

use crate::clip::{self, ClipNorm};
use crate::host::{median_of, HostRound};
use crate::params;

/// Apply `f` to the n client values of every coordinate (in client order, in a scratch
/// buffer `f` may reorder).
fn per_coordinate(round: &HostRound, mut f: impl FnMut(&mut [f64]) -> f64) -> Vec<f32> {
    let numel = round.values.first().map_or(0, Vec::len);
    let mut column = vec![0f64; round.len()];
    (0..numel)
        .map(|j| {
            for (c, x) in column.iter_mut().zip(&round.values) {
                *c = x[j] as f64;
            }
            f(&mut column) as f32
        })
        .collect()
}

/// Config of `median`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedianConfig {
    /// Optional norm clipping.
    #[serde(default)]
    pub clip_norm: Option<ClipNorm>,
}

/// Coordinate-wise median.
#[derive(Debug, Clone, Default)]
pub struct Median {
    cfg: MedianConfig,
}

impl Median {
    /// A median aggregator with this config.
    pub fn new(cfg: MedianConfig) -> Self {
        Self { cfg }
    }
}

impl Aggregator for Median {
    fn name(&self) -> &str {
        "median"
    }

    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        _global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated> {
        let round = HostRound::read("median", updates, ctx, self.cfg.clip_norm)?;
        round.finish(&per_coordinate(&round, median_of), ctx)
    }

    fn describe(&self) -> String {
        let clip = clip::describe(self.cfg.clip_norm);
        match clip.strip_prefix(", ") {
            Some(c) => format!("median ({c})"),
            None => "median".into(),
        }
    }
}

/// Config of `trimmed-mean`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrimmedMeanConfig {
    /// Fraction trimmed from each side, in `[0, 0.5)` (default 0.1).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Optional norm clipping.
    #[serde(default)]
    pub clip_norm: Option<ClipNorm>,
}

fn default_beta() -> f64 {
    0.1
}

/// Coordinate-wise β-trimmed mean.
#[derive(Debug, Clone)]
pub struct TrimmedMean {
    cfg: TrimmedMeanConfig,
}

impl TrimmedMean {
    /// A trimmed mean with this (already validated) config.
    pub fn new(cfg: TrimmedMeanConfig) -> Self {
        Self { cfg }
    }

    /// Values trimmed from each side for `n` clients, and whether the clamp to
    /// `⌊(n − 1)/2⌋` applied. (The `1e-9` absorbs representation error, e.g. `0.29·100`.)
    pub fn trim(&self, n: usize) -> (usize, bool) {
        let k = (self.cfg.beta * n as f64 + 1e-9).floor() as usize;
        let max = n.saturating_sub(1) / 2;
        (k.min(max), k > max)
    }
}

impl Aggregator for TrimmedMean {
    fn name(&self) -> &str {
        "trimmed-mean"
    }

    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        _global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated> {
        let round = HostRound::read("trimmed-mean", updates, ctx, self.cfg.clip_norm)?;
        let (k, clamped) = self.trim(round.len());
        let out = per_coordinate(&round, |col| {
            col.sort_by(f64::total_cmp);
            let kept = &col[k..col.len() - k];
            kept.iter().sum::<f64>() / kept.len() as f64
        });
        Ok(round
            .finish(&out, ctx)?
            .with_metric("trimmed_mean_clamped", if clamped { 1.0 } else { 0.0 }))
    }

    fn describe(&self) -> String {
        format!(
            "trimmed-mean (beta {:?}{})",
            self.cfg.beta,
            clip::describe(self.cfg.clip_norm)
        )
    }
}

fn build_median(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    Ok(Box::new(Median::new(table.parse()?)))
}

fn build_trimmed(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    let cfg: TrimmedMeanConfig = table.parse()?;
    params::below(table, "beta", cfg.beta, 0.5)?;
    Ok(Box::new(TrimmedMean::new(cfg)))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "median",
        summary: "coordinate-wise median of client deltas, unweighted (Yin et al. 2018)",
        params: &[clip::PARAM],
        factory: Factory::Aggregator(build_median),
    }
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "trimmed-mean",
        summary: "coordinate-wise mean after dropping the ⌊β·n⌋ largest and smallest values (Yin et al. 2018)",
        params: &[
            Param { key: "beta", default: "0.1", help: "fraction trimmed from each side, in [0, 0.5)" },
            clip::PARAM,
        ],
        factory: Factory::Aggregator(build_trimmed),
    }
}
