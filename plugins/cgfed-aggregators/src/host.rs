//! The host-f32 view of a round that every aggregator starts from: input checks, client
//! weights, norm clipping, the weighted mean, and turning a flat result back into an
//! [`Aggregated`] on the round's device.

use cgfed_core::{Aggregated, ClientUpdate, Error, Result, RoundCtx, Update};
use serde::Deserialize;

use crate::clip::ClipNorm;

/// How client deltas are weighted by the averaging aggregators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// By number of training examples (FedAvg's default).
    #[default]
    Examples,
    /// Every client counts the same.
    Uniform,
}

impl Weighting {
    /// The config spelling (`examples` / `uniform`).
    pub fn as_str(self) -> &'static str {
        match self {
            Weighting::Examples => "examples",
            Weighting::Uniform => "uniform",
        }
    }

    /// Normalised weights (summing to 1), one per update, in client order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no update or every weight is 0 (examples
    /// weighting with clients that report no examples).
    pub fn weights(self, updates: &[ClientUpdate]) -> Result<Vec<f64>> {
        let raw: Vec<f64> = updates
            .iter()
            .map(|u| match self {
                Weighting::Examples => u.num_examples as f64,
                Weighting::Uniform => 1.0,
            })
            .collect();
        let total: f64 = raw.iter().sum();
        if total <= 0.0 {
            return Err(Error::InvalidInput(format!(
                "{} updates and a total weight of 0 (weighting = \"{}\"); every client reported \
                 0 examples, use weighting = \"uniform\"",
                updates.len(),
                self.as_str()
            )));
        }
        Ok(raw.into_iter().map(|w| w / total).collect())
    }
}

/// A round's client deltas as flat host f32 vectors (canonical layout order), checked and
/// optionally clipped.
#[derive(Debug, Clone)]
pub struct HostRound {
    /// One flat vector per update, in the order of the updates.
    pub values: Vec<Vec<f32>>,
    /// How many updates clipping scaled down (`None` without clipping).
    pub clipped: Option<usize>,
}

impl HostRound {
    /// Read and check `updates` for aggregator `name`, then clip them if `clip` is set.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty list or a NaN/infinity (naming the client and
    /// the tensor); [`Error::LayoutMismatch`] for an update whose layout is not `ctx.layout`.
    pub fn read(
        name: &str,
        updates: &[ClientUpdate],
        ctx: &RoundCtx,
        clip: Option<ClipNorm>,
    ) -> Result<Self> {
        if updates.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{name} needs at least one client update; got none"
            )));
        }
        let mut values = Vec::with_capacity(updates.len());
        for u in updates {
            u.update.check_same_layout(&ctx.layout)?;
            values.push(finite_flat(&u.update, &format!("client {}", u.client))?);
        }
        let clipped = clip.map(|c| c.apply(&mut values));
        Ok(Self { values, clipped })
    }

    /// Number of updates.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there is no update (never, after [`read`](Self::read)).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `Σᵢ wᵢ·xᵢ` per coordinate, accumulated in f64 in client order.
    pub fn weighted_sum(&self, weights: &[f64]) -> Vec<f32> {
        let n = self.values.first().map_or(0, Vec::len);
        let mut acc = vec![0f64; n];
        for (x, &w) in self.values.iter().zip(weights) {
            for (a, &v) in acc.iter_mut().zip(x) {
                *a += w * v as f64;
            }
        }
        acc.into_iter().map(|a| a as f32).collect()
    }

    /// The aggregated delta `flat` on `ctx.device`, with the `clipped` metric when clipping
    /// is on.
    pub fn finish(&self, flat: &[f32], ctx: &RoundCtx) -> Result<Aggregated> {
        let mut out = Aggregated::delta(Update::from_flat(&ctx.layout, flat, &ctx.device)?);
        if let Some(c) = self.clipped {
            out = out.with_metric("clipped", c as f64);
        }
        Ok(out)
    }
}

/// `u` as flat host f32, or [`Error::InvalidInput`] naming `who` and the tensor holding the
/// first NaN or infinity.
pub fn finite_flat(u: &Update, who: &str) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(u.numel());
    u.for_each_host(|_, spec, v| {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "{who}: tensor `{}` holds a non-finite value ({}) at element {i}",
                spec.name, v[i]
            )));
        }
        out.extend_from_slice(v);
        Ok(())
    })?;
    Ok(out)
}

/// L2 norm in f64.
pub fn norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// Median of finite values (mean of the two middle ones for an even count); sorts `v`.
/// 0 for an empty slice.
pub fn median_of(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
