//! `approx-topk`: DGC-style sampled-threshold top-k (Lin et al., *Deep Gradient
//! Compression*, ICLR 2018).
//!
//! Per tensor (`scope = "tensor"`) or over the whole update (`scope = "update"`), with
//! `k = k(n)` as for [`crate::topk`] ([`keep_count`]):
//!
//! 1. **sample**: `s(n) = min(n, max(⌈sample_ratio·n⌉, 1000))` elements. When `s(n) = n`
//!    every element is used; otherwise the range `0..n` (the flat layout order in scope
//!    `update`) is cut into `s` equal strata and one uniformly random element is drawn in
//!    each (a stratified random sample: every element has the same chance, with less
//!    variance than independent draws and a nearly sequential memory access). The draws
//!    come from `ChaCha8` seeded with `ctx.rng_seed(mix_seed([stream_of("approx-topk"),
//!    i]))` for tensor `i` (scope `update`: `ctx.rng_seed(stream_of("approx-topk"))`);
//! 2. **threshold**: `thr` = the `k_s`-th largest `|x|` of the sample,
//!    `k_s = min(s, max(1, ⌈k·s/n⌉))`;
//! 3. **keep** every element with `|x| ≥ thr`, in one pass. At least one element is kept
//!    (the sampled elements at or above `thr`); the count varies around `k`;
//! 4. **hierarchical step**: if that keeps more than `cap(k) = max(k, ⌊max_overshoot·k⌋)`
//!    elements, keep exactly `k` among them, the `k` largest `|x|` with ties to the lower
//!    index (which is then the exact top-k of the tensor, computed as by `topk`).
//!
//! So the kept count `c` of a tensor (of the update in scope `update`) satisfies
//! `1 ≤ c ≤ cap(k)`, which the decoder checks. [`ApproxTopK::kept`] reads it back from a
//! payload. On Gaussian-like data with the defaults the count stays within a few percent
//! of `k` (the sample's `k_s ≈ 1678` for a 4096×4096 tensor gives a relative spread of
//! about `1/√k_s ≈ 2.4 %`).
//!
//! # Wire format
//!
//! Header `approx-topk` (13 bytes), then exactly the body of [`crate::topk`]:
//!
//! | bytes | field |
//! |---|---|
//! | `I(S_i, n_i)` per tensor `i`, layout order | kept positions as a [`cgfed_core::wire::indices`] set (count included); an empty set (scope `update` only) is one byte |
//! | `4·C` | the kept values, little-endian f32, layout order, positions increasing (`C = Σ|S_i|`) |
//!
//! Exact length: `13 + Σ_i I(S_i, n_i) + 4·C`, with `I(S, n)` =
//! [`crate::index_set_len`]`(S, n)`. As a first stage the values are the
//! second compressor's body instead (header `approx-topk+<second>`).
//!
//! The decoder rejects index sets that `read_indices` rejects, a tensor with elements that
//! keeps none or more than `cap(k(n_i))` (scope `tensor`), a total outside
//! `1..=cap(k(N))` (scope `update`), non-finite values and trailing bytes.

use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::payload::PayloadBuilder;
use cgfed_core::wire::ByteReader;
use cgfed_core::{
    config::PluginTable, ClientState, Error, Factory, GradientCompressor, Layout, Param, Payload,
    Plugin, Result, RoundCtx, Staged, Structure, Update,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::common::{self, keep_count, Scope, Sets};
use crate::select::{self, Parts, UpdateParts};

/// Registered name.
pub const NAME: &str = "approx-topk";

/// Smallest sample (or the whole tensor when it is smaller).
pub const MIN_SAMPLES: usize = 1000;

fn default_ratio() -> f64 {
    0.01
}

fn default_sample_ratio() -> f64 {
    0.01
}

fn default_max_overshoot() -> f64 {
    1.3
}

/// Config of `approx-topk`.
///
/// ```toml
/// [compressor]
/// kind = "approx-topk"
/// ratio = 0.01          # target fraction kept, in (0, 1]
/// sample_ratio = 0.01   # fraction sampled to estimate the threshold, in (0, 1]
/// max_overshoot = 1.3   # keep exactly k when the threshold keeps more than 1.3·k
/// scope = "tensor"      # or "update"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxTopKConfig {
    /// Target fraction kept, in `(0, 1]` (default 0.01).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Fraction of the elements sampled for the threshold, in `(0, 1]` (default 0.01;
    /// at least [`MIN_SAMPLES`] elements, or all of a smaller tensor).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// When the threshold keeps more than `max_overshoot·k`, exactly `k` are kept;
    /// finite, at least 1 (default 1.3).
    #[serde(default = "default_max_overshoot")]
    pub max_overshoot: f64,
    /// `tensor` (default) or `update`.
    #[serde(default)]
    pub scope: Scope,
}

impl Default for ApproxTopKConfig {
    fn default() -> Self {
        Self {
            ratio: default_ratio(),
            sample_ratio: default_sample_ratio(),
            max_overshoot: default_max_overshoot(),
            scope: Scope::Tensor,
        }
    }
}

impl ApproxTopKConfig {
    /// Check the values; errors name `<key>.ratio`, `<key>.sample_ratio` or
    /// `<key>.max_overshoot`.
    pub fn validate(&self, key: &str) -> Result<()> {
        common::check_ratio(self.ratio, format!("{key}.ratio"))?;
        common::check_ratio(self.sample_ratio, format!("{key}.sample_ratio"))?;
        cgfed_core::config::ensure(
            self.max_overshoot.is_finite() && self.max_overshoot >= 1.0,
            format!("{key}.max_overshoot"),
            format!(
                "must be a finite factor of at least 1.0, got {}",
                self.max_overshoot
            ),
        )
    }

    /// Target count `k(n)` (see [`keep_count`]).
    pub fn keep(&self, n: usize) -> usize {
        keep_count(self.ratio, None, n)
    }

    /// Most elements kept for a target `k`: `max(k, ⌊max_overshoot·k⌋)`.
    pub fn cap(&self, k: usize) -> usize {
        let c = (self.max_overshoot * k as f64).floor();
        if c >= usize::MAX as f64 {
            usize::MAX
        } else {
            (c as usize).max(k)
        }
    }

    /// Sample size for `n` elements: `min(n, max(⌈sample_ratio·n⌉, 1000))`.
    pub fn sample_size(&self, n: usize) -> usize {
        keep_count(self.sample_ratio, None, n).max(MIN_SAMPLES.min(n))
    }
}

/// DGC-style approximate top-k; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ApproxTopK {
    cfg: ApproxTopKConfig,
}

impl ApproxTopK {
    /// An `approx-topk` compressor from a config (validated; errors name
    /// `compressor.<key>`).
    pub fn new(cfg: ApproxTopKConfig) -> Result<Self> {
        cfg.validate("compressor")?;
        Ok(Self { cfg })
    }

    /// The config it was built with.
    pub fn config(&self) -> &ApproxTopKConfig {
        &self.cfg
    }

    /// Kept count of every tensor (layout order) of a payload of this compressor, alone
    /// (header `approx-topk`) or as the first stage of a composition (`approx-topk+…`).
    ///
    /// # Errors
    /// [`Error::MalformedPayload`] when the header names another compressor or the index
    /// sets are invalid.
    pub fn kept_counts(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Vec<usize>> {
        let mut h = ByteReader::new(payload.as_bytes());
        let _version = h.u8()?;
        let len = h.u8()? as usize;
        let name = String::from_utf8_lossy(h.bytes(len)?).into_owned();
        if name != NAME && !name.starts_with("approx-topk+") {
            return Err(Error::malformed(format!(
                "payload is for compressor \"{name}\", expected \"{NAME}\" or \"{NAME}+…\""
            )));
        }
        let mut r = payload.open(&name)?;
        let s = self.read_structure(&mut r, ctx)?;
        Ok(s.data::<Sets>()?.counts())
    }

    /// Total kept count of a payload (see [`kept_counts`](Self::kept_counts)).
    ///
    /// # Errors
    /// As [`kept_counts`](Self::kept_counts).
    pub fn kept(&self, payload: &Payload, ctx: &RoundCtx) -> Result<usize> {
        Ok(self.kept_counts(payload, ctx)?.iter().sum())
    }

    /// Steps 1–4 of the module docs over `parts` (one tensor, or the whole update) with a
    /// target `k` and sampling seed `seed`.
    fn sets<P: Parts + ?Sized>(&self, parts: &P, k: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
        let lens = parts.lens();
        select::check_lens(&lens)?;
        let total: usize = lens.iter().sum();
        if total == 0 || k == 0 {
            return Ok(vec![Vec::new(); lens.len()]);
        }
        let s = self.cfg.sample_size(total);
        let mut keys = if s >= total {
            let mut all = Vec::with_capacity(total);
            parts.visit(&mut |_, x| {
                all.extend(x.iter().map(|&v| select::key(v)));
                Ok(())
            })?;
            all
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let positions = select::stratified(total, s, |_, span| rng.random_range(0..span));
            select::sample_keys(parts, &positions)?
        };
        let m = keys.len();
        if m == 0 {
            return Err(Error::Other("approx-topk drew an empty sample".into()));
        }
        let ks = ((k as u128 * m as u128).div_ceil(total as u128) as usize).clamp(1, m);
        let (_, &mut thr, _) = keys.select_nth_unstable(m - ks);
        drop(keys);
        let cap = self.cfg.cap(k);
        match select::gather_ge(parts, thr, cap)? {
            Some(c) => Ok(c.into_sets()),
            None => select::top_k(parts, k),
        }
    }

    fn select(&self, update: &Update, ctx: &RoundCtx) -> Result<Sets> {
        let stream = stream_of(NAME);
        match self.cfg.scope {
            Scope::Tensor => {
                let mut sets = Vec::with_capacity(update.len());
                update.for_each_host(|i, _, x| {
                    let seed = ctx.rng_seed(mix_seed(&[stream, i as u64]));
                    let k = self.cfg.keep(x.len());
                    let mut one = self.sets(&[x][..], k, seed)?;
                    sets.push(one.pop().unwrap_or_default());
                    Ok(())
                })?;
                Ok(Sets(sets))
            }
            Scope::Update => {
                let k = self.cfg.keep(update.numel());
                Ok(Sets(self.sets(
                    &UpdateParts(update),
                    k,
                    ctx.rng_seed(stream),
                )?))
            }
        }
    }

    /// Check the kept counts of `sets` against the limits of the module docs.
    fn check_counts(&self, layout: &Layout, sets: &Sets) -> Result<()> {
        match self.cfg.scope {
            Scope::Tensor => {
                for (spec, set) in layout.specs().iter().zip(&sets.0) {
                    let n = spec.numel();
                    let cap = self.cfg.cap(self.cfg.keep(n));
                    if n > 0 && (set.is_empty() || set.len() > cap) {
                        return Err(Error::malformed(format!(
                            "tensor `{}` keeps {} elements, approx-topk keeps 1..={cap} of {n}",
                            spec.name,
                            set.len()
                        )));
                    }
                }
            }
            Scope::Update => {
                let n = layout.numel();
                let cap = self.cfg.cap(self.cfg.keep(n));
                let sum: usize = sets.0.iter().map(Vec::len).sum();
                if (n > 0 && sum == 0) || sum > cap {
                    return Err(Error::malformed(format!(
                        "index sets keep {sum} elements, approx-topk keeps 1..={cap} of {n}"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Staged for ApproxTopK {
    fn split(
        &self,
        update: &Update,
        _state: &mut ClientState,
        ctx: &RoundCtx,
        out: &mut PayloadBuilder,
    ) -> Result<Update> {
        let host = select::host_update(update)?;
        let sets = self.select(&host, ctx)?;
        common::write_sets(out, host.layout(), &sets)?;
        common::gather_values(&host, &sets)
    }

    fn read_structure(&self, r: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure> {
        let layout = &ctx.layout;
        // Read set by set, checking the running total before reading further.
        let mut sets = Vec::with_capacity(layout.len());
        let total_cap = self.cfg.cap(self.cfg.keep(layout.numel()));
        let mut sum = 0usize;
        for spec in layout.specs() {
            let set = cgfed_core::wire::indices::read_indices(r, spec.numel())?;
            sum += set.len();
            if self.cfg.scope == Scope::Update && sum > total_cap {
                return Err(Error::malformed(format!(
                    "index sets up to `{}` keep {sum} elements, approx-topk keeps at most {total_cap}",
                    spec.name
                )));
            }
            sets.push(set);
        }
        let sets = Sets(sets);
        self.check_counts(layout, &sets)?;
        let vl = common::values_layout(layout, &sets)?;
        Ok(Structure::new(vl, sets))
    }

    fn join(&self, structure: &Structure, values: &Update, ctx: &RoundCtx) -> Result<Update> {
        let sets: &Sets = structure.data()?;
        common::join_sparse(
            &ctx.layout,
            sets,
            &structure.values_layout,
            values,
            &ctx.device,
            |_| None,
        )
    }
}

impl GradientCompressor for ApproxTopK {
    fn name(&self) -> &str {
        NAME
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        cgfed_core::staged::compress_f32(self, NAME, update, state, ctx)
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        cgfed_core::staged::decompress_f32(self, NAME, payload, ctx)
    }

    fn as_staged(&self) -> Option<&dyn Staged> {
        Some(self)
    }

    fn describe(&self) -> String {
        format!(
            "approx-topk (ratio {} per {}, sample {}, overshoot {})",
            self.cfg.ratio,
            self.cfg.scope.as_str(),
            self.cfg.sample_ratio,
            self.cfg.max_overshoot
        )
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: ApproxTopKConfig = table.parse()?;
    cfg.validate(&table.key)?;
    Ok(Box::new(ApproxTopK { cfg }))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "DGC-style top-k: threshold from a random sample, exact k when it overshoots",
        params: &[
            Param { key: "ratio", default: "0.01", help: "target fraction kept, in (0, 1]; k(n) = min(n, max(1, ceil(ratio*n)))" },
            Param { key: "sample_ratio", default: "0.01", help: "fraction sampled for the threshold, in (0, 1]; at least 1000 elements (or all)" },
            Param { key: "max_overshoot", default: "1.3", help: "keep exactly k when the threshold keeps more than max_overshoot*k; finite, >= 1" },
            Param { key: "scope", default: "\"tensor\"", help: "\"tensor\": per tensor; \"update\": one threshold and k(N) for the whole update" },
        ],
        factory: Factory::Compressor(build),
    }
}
