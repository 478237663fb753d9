//! `fedadam`, `fedyogi`, `fedadagrad`: adaptive server optimizers (Reddi et al., 2021,
//! "Adaptive Federated Optimization", Algorithm 2), one implementation with the variant as
//! an enum.
//!
//! With `Δ̄ = Σᵢ wᵢ·Δᵢ` (normalised weights), per coordinate:
//!
//! ```text
//! m ← β1·m + (1 − β1)·Δ̄
//! adagrad: v ← v + Δ̄²
//! adam:    v ← β2·v + (1 − β2)·Δ̄²
//! yogi:    v ← v − (1 − β2)·Δ̄²·sign(v − Δ̄²)
//! delta = η·m / (√v + τ)
//! ```
//!
//! `m` starts at 0 and `v` at τ² (the paper's `v₋₁ ≥ τ²`); no bias correction, as in the
//! paper. `beta2` is accepted but unused by `fedadagrad`.

use cgfed_core::{
    config::PluginTable, Aggregated, Aggregator, ClientUpdate, Factory, Param, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

use crate::clip::{self, ClipNorm};
use crate::host::{HostRound, Weighting};
use crate::params;
use crate::state::SlotState;

const SLOTS: &[&str] = &["m", "v"];

/// Which second-moment rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `v ← v + Δ̄²` (`fedadagrad`).
    Adagrad,
    /// `v ← β2·v + (1 − β2)·Δ̄²` (`fedadam`).
    Adam,
    /// `v ← v − (1 − β2)·Δ̄²·sign(v − Δ̄²)` (`fedyogi`).
    Yogi,
}

impl Variant {
    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Adagrad => "fedadagrad",
            Variant::Adam => "fedadam",
            Variant::Yogi => "fedyogi",
        }
    }

    /// One step of the second moment `v` for mean delta `d`.
    fn second_moment(self, v: f64, d: f64, beta2: f64) -> f64 {
        let d2 = d * d;
        match self {
            Variant::Adagrad => v + d2,
            Variant::Adam => beta2 * v + (1.0 - beta2) * d2,
            Variant::Yogi => {
                let s = v - d2;
                let sign = if s > 0.0 {
                    1.0
                } else if s < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                v - (1.0 - beta2) * d2 * sign
            }
        }
    }
}

/// Config of the adaptive server optimizers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Server learning rate η (positive; default 0.01).
    #[serde(default = "default_lr")]
    pub server_lr: f64,
    /// First-moment decay β1 in `[0, 1)` (default 0.9).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Second-moment decay β2 in `[0, 1)` (default 0.99; unused by `fedadagrad`).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adaptivity τ (positive; default 1e-3): `v` starts at τ², the step divides by `√v + τ`.
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Client weighting (default by examples).
    #[serde(default)]
    pub weighting: Weighting,
    /// Optional norm clipping.
    #[serde(default)]
    pub clip_norm: Option<ClipNorm>,
}

fn default_lr() -> f64 {
    0.01
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.99
}
fn default_tau() -> f64 {
    1e-3
}

/// FedAdam / FedYogi / FedAdagrad.
#[derive(Debug, Clone)]
pub struct FedAdaptive {
    variant: Variant,
    cfg: AdaptiveConfig,
    state: Option<SlotState>,
}

impl FedAdaptive {
    /// An optimizer of `variant` with this (already validated) config and fresh moments.
    pub fn new(variant: Variant, cfg: AdaptiveConfig) -> Self {
        Self {
            variant,
            cfg,
            state: None,
        }
    }
}

impl Aggregator for FedAdaptive {
    fn name(&self) -> &str {
        self.variant.name()
    }

    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        _global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated> {
        let name = self.variant.name();
        let round = HostRound::read(name, updates, ctx, self.cfg.clip_norm)?;
        let mean = round.weighted_sum(&self.cfg.weighting.weights(updates)?);
        let c = &self.cfg;
        let tau = c.tau;
        let s = SlotState::ensure(&mut self.state, &ctx.layout, &[0.0, (tau * tau) as f32])?;
        let (m, v) = s.slots.split_at_mut(1);
        let delta: Vec<f32> = m[0]
            .iter_mut()
            .zip(v[0].iter_mut())
            .zip(&mean)
            .map(|((m, v), &d)| {
                let d = d as f64;
                *m = (c.beta1 * *m as f64 + (1.0 - c.beta1) * d) as f32;
                *v = self.variant.second_moment(*v as f64, d, c.beta2) as f32;
                (c.server_lr * *m as f64 / ((*v as f64).max(0.0).sqrt() + tau)) as f32
            })
            .collect();
        s.steps += 1;
        round.finish(&delta, ctx)
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        let beta2 = match self.variant {
            Variant::Adagrad => String::new(),
            _ => format!(", beta2 {:?}", c.beta2),
        };
        format!(
            "{} (server_lr {:?}, beta1 {:?}{beta2}, tau {:?}, weighting {}{})",
            self.variant.name(),
            c.server_lr,
            c.beta1,
            c.tau,
            c.weighting.as_str(),
            clip::describe(c.clip_norm)
        )
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        SlotState::save(self.variant.name(), SLOTS, self.state.as_ref())
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        SlotState::restore(&mut self.state, self.variant.name(), SLOTS, bytes)
    }
}

fn build(variant: Variant, table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    let cfg: AdaptiveConfig = table.parse()?;
    params::positive(table, "server_lr", cfg.server_lr)?;
    params::below(table, "beta1", cfg.beta1, 1.0)?;
    params::below(table, "beta2", cfg.beta2, 1.0)?;
    params::positive(table, "tau", cfg.tau)?;
    Ok(Box::new(FedAdaptive::new(variant, cfg)))
}

fn build_adam(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    build(Variant::Adam, table)
}
fn build_yogi(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    build(Variant::Yogi, table)
}
fn build_adagrad(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    build(Variant::Adagrad, table)
}

const SERVER_LR: Param = Param {
    key: "server_lr",
    default: "0.01",
    help: "server learning rate η, positive",
};
const BETA1: Param = Param {
    key: "beta1",
    default: "0.9",
    help: "first-moment decay β1, in [0, 1)",
};
const TAU: Param = Param {
    key: "tau",
    default: "0.001",
    help: "adaptivity τ, positive: v starts at τ², steps divide by √v + τ",
};

/// Register one variant: name, summary, help of `beta2`, factory.
macro_rules! register {
    ($name:literal, $summary:literal, $beta2:literal, $build:ident) => {
        cgfed_core::inventory::submit! {
            Plugin {
                name: $name,
                summary: $summary,
                params: &[
                    SERVER_LR,
                    BETA1,
                    Param { key: "beta2", default: "0.99", help: $beta2 },
                    TAU,
                    params::WEIGHTING,
                    clip::PARAM,
                ],
                factory: Factory::Aggregator($build),
            }
        }
    };
}

register!(
    "fedadam",
    "adaptive server optimizer FedAdam (Reddi et al. 2021): v = β2·v + (1−β2)·Δ̄²",
    "second-moment decay β2, in [0, 1)",
    build_adam
);
register!(
    "fedyogi",
    "adaptive server optimizer FedYogi (Reddi et al. 2021): v = v − (1−β2)·Δ̄²·sign(v − Δ̄²)",
    "second-moment rate β2, in [0, 1)",
    build_yogi
);
register!(
    "fedadagrad",
    "adaptive server optimizer FedAdagrad (Reddi et al. 2021): v = v + Δ̄²",
    "accepted for symmetry with fedadam; unused by fedadagrad",
    build_adagrad
);
