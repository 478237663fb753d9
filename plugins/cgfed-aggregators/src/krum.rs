//! `krum` and multi-Krum (Blanchard, El Mhamdi, Guerraoui & Stainer, 2017, "Machine Learning
//! with Adversaries: Byzantine Tolerant Gradient Descent").
//!
//! With n updates and at most f Byzantine ones, `score(i) = Σ ‖Δᵢ − Δⱼ‖²` over the
//! `n − f − 2` updates `j ≠ i` nearest to `Δᵢ`; lower is better, ties go to the lower
//! position. Krum (`multi = 1`) returns the best-scored update, multi-Krum the uniform mean
//! of the `m` best (m capped at n). When `n − f − 2 < 1` the score uses 1 neighbour and the
//! metric `krum_underdetermined` is 1; a single update is returned as is. Metrics:
//! `krum_selected` (how many updates were averaged), `krum_best_client` (the client index
//! of the best score), `krum_underdetermined` (0 or 1).

use cgfed_core::{
    config::PluginTable, Aggregated, Aggregator, ClientUpdate, Factory, Param, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

use crate::clip::{self, ClipNorm};
use crate::host::HostRound;
use crate::params;

/// Config of `krum`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KrumConfig {
    /// Assumed number of Byzantine clients f (default 1).
    #[serde(default = "one")]
    pub byzantine: usize,
    /// Updates averaged, m ≥ 1 (default 1 = Krum; m > 1 = multi-Krum).
    #[serde(default = "one")]
    pub multi: usize,
    /// Optional norm clipping.
    #[serde(default)]
    pub clip_norm: Option<ClipNorm>,
}

fn one() -> usize {
    1
}

/// Krum / multi-Krum.
#[derive(Debug, Clone)]
pub struct Krum {
    cfg: KrumConfig,
}

/// The outcome of scoring one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Every update's score, in input order.
    pub scores: Vec<f64>,
    /// Positions of the selected updates, best first.
    pub selected: Vec<usize>,
    /// True when `n − f − 2 < 1` and one neighbour was used.
    pub underdetermined: bool,
}

impl Krum {
    /// A Krum with this (already validated) config.
    pub fn new(cfg: KrumConfig) -> Self {
        Self { cfg }
    }

    /// Score `values` (flat updates) and pick the `multi` best.
    pub fn select(&self, values: &[Vec<f32>]) -> Selection {
        let n = values.len();
        let wanted = n as i64 - self.cfg.byzantine as i64 - 2;
        let underdetermined = n >= 2 && wanted < 1;
        let neighbours = (wanted.max(1) as usize).min(n.saturating_sub(1));
        let mut dist = vec![vec![0f64; n]; n];
        for i in 0..n {
            for j in i + 1..n {
                let d: f64 = values[i]
                    .iter()
                    .zip(&values[j])
                    .map(|(&a, &b)| {
                        let e = a as f64 - b as f64;
                        e * e
                    })
                    .sum();
                dist[i][j] = d;
                dist[j][i] = d;
            }
        }
        let scores: Vec<f64> = (0..n)
            .map(|i| {
                let mut others: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| dist[i][j]).collect();
                others.sort_by(f64::total_cmp);
                others[..neighbours].iter().sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        order.truncate(self.cfg.multi.min(n));
        Selection {
            scores,
            selected: order,
            underdetermined,
        }
    }
}

impl Aggregator for Krum {
    fn name(&self) -> &str {
        "krum"
    }

    fn aggregate(
        &mut self,
        updates: &[ClientUpdate],
        _global: &Update,
        ctx: &RoundCtx,
    ) -> Result<Aggregated> {
        let round = HostRound::read("krum", updates, ctx, self.cfg.clip_norm)?;
        let sel = self.select(&round.values);
        let mut weights = vec![0.0; round.len()];
        for &i in &sel.selected {
            weights[i] = 1.0 / sel.selected.len() as f64;
        }
        let out = round.weighted_sum(&weights);
        Ok(round
            .finish(&out, ctx)?
            .with_metric("krum_selected", sel.selected.len() as f64)
            .with_metric("krum_best_client", updates[sel.selected[0]].client as f64)
            .with_metric(
                "krum_underdetermined",
                if sel.underdetermined { 1.0 } else { 0.0 },
            ))
    }

    fn describe(&self) -> String {
        let name = if self.cfg.multi > 1 {
            "multi-krum"
        } else {
            "krum"
        };
        format!(
            "{name} (byzantine {}, multi {}{})",
            self.cfg.byzantine,
            self.cfg.multi,
            clip::describe(self.cfg.clip_norm)
        )
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn Aggregator>> {
    let cfg: KrumConfig = table.parse()?;
    cgfed_core::config::ensure(
        cfg.multi >= 1,
        params::key(table, "multi"),
        format!("got {}; expected an integer ≥ 1 (1 = Krum)", cfg.multi),
    )?;
    Ok(Box::new(Krum::new(cfg)))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "krum",
        summary: "Krum / multi-Krum: the update(s) closest to their n−f−2 nearest neighbours (Blanchard et al. 2017)",
        params: &[
            Param { key: "byzantine", default: "1", help: "assumed number of Byzantine clients f, integer ≥ 0" },
            Param { key: "multi", default: "1", help: "updates averaged, integer ≥ 1 (1 = Krum, > 1 = multi-Krum; capped at n)" },
            clip::PARAM,
        ],
        factory: Factory::Aggregator(build),
    }
}
