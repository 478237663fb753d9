//! `fedavgm`: FedAvg with server momentum (Hsu, Qi & Brown, 2019, "Measuring the Effects of
//! Non-Identical Data Distribution for Federated Visual Classification").
//!
//! `Δ̄ = Σᵢ wᵢ·Δᵢ` (normalised weights), `v ← β·v + Δ̄`, `delta = η·v`, with `v` starting at
//! 0. With `momentum = 0` and `server_lr = 1` it is `fedavg`.

use cgfed_core::{
    config::PluginTable, Aggregated, Aggregator, ClientUpdate, Factory, Param, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

use crate::clip::{self, ClipNorm};
use crate::host::{HostRound, Weighting};
use crate::params;
use crate::state::SlotState;

const NAME: &str = "fedavgm";
const SLOTS: &[&str] = &["v"];

/// Config of `fedavgm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgMConfig {
    /// Server learning rate η (positive; default 1.0).
    #[serde(default = "one")]
    pub server_lr: f64,
    /// Momentum β in `[0, 1)` (default 0.9).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Client weighting (default by examples).
    #[serde(default)]
    pub weighting: Weighting,
    /// Optional norm clipping.
    #[serde(default)]
    pub clip_norm: Option<ClipNorm>,
}

fn one() -> f64 {
    1.0
}

fn default_momentum() -> f64 {
    0.9
}

/// Server momentum over the weighted mean of client deltas.
#[derive(Debug, Clone)]
pub struct FedAvgM {
    cfg: FedAvgMConfig,
    state: Option<SlotState>,
}

impl FedAvgM {
    /// A FedAvgM with this (already validated) config and no momentum yet.
    pub fn new(cfg: FedAvgMConfig) -> Self {
        Self { cfg, state: None }
    }
}

impl Aggregator for FedAvgM {
    fn name(&self) -> &str {
        NAME
    }

    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        _global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated> {
        let round = HostRound::read(NAME, updates, ctx, self.cfg.clip_norm)?;
        let mean = round.weighted_sum(&self.cfg.weighting.weights(updates)?);
        let s = SlotState::ensure(&mut self.state, &ctx.layout, &[0.0])?;
        let (beta, lr) = (self.cfg.momentum, self.cfg.server_lr);
        let delta: Vec<f32> = s.slots[0]
            .iter_mut()
            .zip(&mean)
            .map(|(v, &d)| {
                *v = (beta * *v as f64 + d as f64) as f32;
                (lr * *v as f64) as f32
            })
            .collect();
        s.steps += 1;
        round.finish(&delta, ctx)
    }

    fn describe(&self) -> String {
        format!(
            "{NAME} (server_lr {:?}, momentum {:?}, weighting {}{})",
            self.cfg.server_lr,
            self.cfg.momentum,
            self.cfg.weighting.as_str(),
            clip::describe(self.cfg.clip_norm)
        )
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        SlotState::save(NAME, SLOTS, self.state.as_ref())
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        SlotState::restore(&mut self.state, NAME, SLOTS, bytes)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    let cfg: FedAvgMConfig = table.parse()?;
    params::positive(table, "server_lr", cfg.server_lr)?;
    params::below(table, "momentum", cfg.momentum, 1.0)?;
    Ok(Box::new(FedAvgM::new(cfg)))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "FedAvg with server momentum: v = momentum·v + mean delta, delta = server_lr·v (Hsu et al. 2019)",
        params: &[
            Param { key: "server_lr", default: "1.0", help: "server learning rate η, positive" },
            Param { key: "momentum", default: "0.9", help: "server momentum β, in [0, 1)" },
            params::WEIGHTING,
            clip::PARAM,
        ],
        factory: Factory::Aggregator(build),
    }
}
