//! `fedavg`: the weighted mean of client deltas (McMahan et al., 2017).
//!
//! `Δ = Σᵢ wᵢ·Δᵢ / Σᵢ wᵢ` with `wᵢ` = the client's example count (default) or 1,
//! accumulated in f64 in client order (deterministic).
//!
//! With `lora = "product"` the delta is the same FedIT mean of the factors and
//! [`Aggregated::base_residual`] carries the exact product's residual per adapted module
//! (see [`crate::lora`]); the metric `lora_fedit_rel_err` says how wrong FedIT alone would
//! have been.

use cgfed_core::{
    config::PluginTable, Aggregated, Aggregator, ClientUpdate, Error, Factory, Param, Plugin,
    Result, RoundCtx, Update,
};
use serde::Deserialize;

use crate::clip::{self, ClipNorm};
pub use crate::host::Weighting;
use crate::host::{finite_flat, HostRound};
use crate::lora::{lora_pairs, product_residual};
use crate::params;

/// How LoRA factors are aggregated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraMode {
    /// FedIT: average each factor separately (the plain mean).
    #[default]
    Factors,
    /// The FedIT mean plus the exact product's residual for the base weights.
    Product,
}

impl LoraMode {
    fn as_str(self) -> &'static str {
        match self {
            LoraMode::Factors => "factors",
            LoraMode::Product => "product",
        }
    }
}

/// Config of `fedavg`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgConfig {
    /// `"examples"` (default) or `"uniform"`.
    #[serde(default)]
    pub weighting: Weighting,
    /// `"factors"` (default) or `"product"`.
    #[serde(default)]
    pub lora: LoraMode,
    /// Optional norm clipping.
    #[serde(default)]
    pub clip_norm: Option<ClipNorm>,
}

/// Weighted averaging.
#[derive(Debug, Clone)]
pub struct FedAvg {
    cfg: FedAvgConfig,
    /// Dotted key of `lora`, for the error of a layout without LoRA pairs.
    lora_key: String,
}

impl Default for FedAvg {
    fn default() -> Self {
        Self::with_config(FedAvgConfig::default())
    }
}

impl FedAvg {
    /// A FedAvg with the given weighting (factor mode, no clipping).
    pub fn new(weighting: Weighting) -> Self {
        Self::with_config(FedAvgConfig {
            weighting,
            ..FedAvgConfig::default()
        })
    }

    /// A FedAvg with this config.
    pub fn with_config(cfg: FedAvgConfig) -> Self {
        Self {
            cfg,
            lora_key: "aggregator.lora".into(),
        }
    }
}

impl Aggregator for FedAvg {
    fn name(&self) -> &str {
        "fedavg"
    }

    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated> {
        let round = HostRound::read("fedavg", updates, ctx, self.cfg.clip_norm)?;
        let weights = self.cfg.weighting.weights(updates)?;
        let out = round.finish(&round.weighted_sum(&weights), ctx)?;
        if self.cfg.lora == LoraMode::Factors {
            return Ok(out);
        }
        let pairs = lora_pairs(&ctx.layout)?;
        if pairs.is_empty() {
            return Err(Error::config(
                &self.lora_key,
                "\"product\" needs LoRA pairs `<module>.lora_A` [r, in] / `<module>.lora_B` \
                 [out, r] in the trainable state, and this layout has none; use \"factors\"",
            ));
        }
        global.check_same_layout(&ctx.layout)?;
        let start = finite_flat(global, "global state")?;
        let res = product_residual(&pairs, &start, &round.values, &weights, ctx)?;
        Ok(Aggregated {
            base_residual: Some(res.update),
            base_residual_bytes: res.bytes,
            ..out
        }
        .with_metric("lora_fedit_rel_err", res.fedit_rel_err))
    }

    fn describe(&self) -> String {
        format!(
            "fedavg (weighting {}, lora {}{})",
            self.cfg.weighting.as_str(),
            self.cfg.lora.as_str(),
            clip::describe(self.cfg.clip_norm)
        )
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    let cfg: FedAvgConfig = table.parse()?;
    Ok(Box::new(FedAvg {
        cfg,
        lora_key: params::key(table, "lora"),
    }))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "fedavg",
        summary: "weighted mean of client deltas (by example count, or uniform); optional exact LoRA product",
        params: &[
            params::WEIGHTING,
            Param {
                key: "lora",
                default: "\"factors\"",
                help: "\"factors\" (FedIT: average A and B separately) or \"product\" (also send the \
                       base weights the exact residual Σwᵢ·BᵢAᵢ − B̄Ā, FedEx-LoRA)",
            },
            clip::PARAM,
        ],
        factory: Factory::Aggregator(build),
    }
}
