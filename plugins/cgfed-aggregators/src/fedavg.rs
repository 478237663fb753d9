//! `fedavg`: the weighted mean of client deltas (McMahan et al., 2017).
//!
//! `Δ = Σᵢ wᵢ·Δᵢ / Σᵢ wᵢ` with `wᵢ` = the client's example count (default) or 1.
//! Accumulates in f32 on the updates' device, in client order (deterministic).

use cgfed_core::{
    config::PluginTable, Aggregator, ClientUpdate, Error, Factory, Plugin, Result, RoundCtx, Update,
};
use serde::Deserialize;

/// How client deltas are weighted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// By number of training examples (FedAvg's default).
    #[default]
    Examples,
    /// Every client counts the same.
    Uniform,
}

/// Config of `fedavg`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgConfig {
    /// `"examples"` (default) or `"uniform"`.
    #[serde(default)]
    pub weighting: Weighting,
}

/// Weighted averaging.
#[derive(Debug, Clone, Default)]
pub struct FedAvg {
    weighting: Weighting,
}

impl FedAvg {
    /// A FedAvg with the given weighting.
    pub fn new(weighting: Weighting) -> Self {
        Self { weighting }
    }
}

impl Aggregator for FedAvg {
    fn name(&self) -> &str {
        "fedavg"
    }

    fn aggregate(&mut self, updates: &[ClientUpdate], ctx: &RoundCtx) -> Result<Update> {
        let weights: Vec<f64> = updates
            .iter()
            .map(|u| match self.weighting {
                Weighting::Examples => u.num_examples as f64,
                Weighting::Uniform => 1.0,
            })
            .collect();
        let total: f64 = weights.iter().sum();
        if updates.is_empty() || total <= 0.0 {
            return Err(Error::InvalidInput(
                "fedavg needs at least one update with a positive weight".into(),
            ));
        }
        let mut acc = Update::zeros(&ctx.layout, &ctx.device)?;
        for (u, w) in updates.iter().zip(&weights) {
            acc = acc.add(&u.update.scale(w / total)?)?;
        }
        Ok(acc)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    let cfg: FedAvgConfig = table.parse()?;
    Ok(Box::new(FedAvg::new(cfg.weighting)))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "fedavg",
        summary: "weighted mean of client deltas (by example count, or uniform)",
        params: &[cgfed_core::Param {
            key: "weighting",
            default: "\"examples\"",
            help: "\"examples\" (weighted by each client's example count) or \"uniform\"",
        }],
        factory: Factory::Aggregator(build),
    }
}
