//! `randk`: random-k with a shared seed, so only the values travel.
//!
//! Tensor `i` of `n_i` elements keeps `k_i = `[`keep_count`]`(n_i)` positions drawn
//! uniformly without replacement from `ChaCha8` seeded with
//! `ctx.rng_seed(mix_seed([stream_of("randk"), i]))`. Client and server derive the same
//! seed from the round context (experiment seed, round, client), so the positions are not
//! sent: the body is the kept values alone. The draw depends on `(n_i, k_i, seed)` only,
//! never on the data.
//!
//! Drawing `m = min(k, n − k)` distinct positions (the complement when `k > n/2`):
//! for `m ≤ 1024` by rejection into a sorted list, otherwise by rejection into a bitmap of
//! `n` bits read out in order; each candidate is `random_range(0..n)`. Both give a uniform
//! `k`-subset, already sorted (no sort pass).
//!
//! With `unbiased = true` the decoder multiplies tensor `i`'s values by `n_i/k_i` (as
//! f32), so `E[x̂] = x`; the wire still carries the raw values (so a second stage
//! quantizes the raw values). An input whose scaled values would overflow f32 is rejected
//! by `compress`, and a payload whose scaled values overflow is malformed.
//!
//! # Wire format
//!
//! Header `randk` (7 bytes), then:
//!
//! | bytes | field |
//! |---|---|
//! | `4·Σk_i` | the kept values, little-endian f32, tensor by tensor in layout order, positions increasing |
//!
//! Exact length: `7 + 4·Σ_i k_i`. The structure is empty, so as a first stage
//! (`values = { kind = "fp16" }`) the payload is header `randk+<second>` and the second
//! compressor's body for the values layout (one tensor `[k_i]` per tensor with elements,
//! same name): `randk+fp16` is `12 + 2·Σk_i` bytes. The decoder rejects a wrong length,
//! NaN or infinite values and (unbiased) values that overflow when scaled.

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

use crate::common::{self, keep_count, Sets};

/// Registered name.
pub const NAME: &str = "randk";

/// Up to this many draws, positions are collected in a sorted list instead of a bitmap.
const LIST_DRAWS: usize = 1024;

fn default_ratio() -> f64 {
    0.01
}

/// Config of `randk`.
///
/// ```toml
/// [compressor]
/// kind = "randk"
/// ratio = 0.01       # fraction kept per tensor, in (0, 1]
/// # k = 1000         # absolute count per tensor, overrides ratio
/// unbiased = false   # true: the decoder scales by n/k so that E[x̂] = x
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandKConfig {
    /// Fraction of each tensor kept, in `(0, 1]` (default 0.01).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Absolute number kept per tensor (at least 1, capped at the tensor size); overrides
    /// `ratio` when given.
    #[serde(default)]
    pub k: Option<usize>,
    /// Scale the decoded values by `n/k` so the estimate is unbiased (default false).
    #[serde(default)]
    pub unbiased: bool,
}

impl Default for RandKConfig {
    fn default() -> Self {
        Self {
            ratio: default_ratio(),
            k: None,
            unbiased: false,
        }
    }
}

impl RandKConfig {
    /// Check the values; errors name `<key>.ratio` or `<key>.k`.
    pub fn validate(&self, key: &str) -> Result<()> {
        common::check_ratio(self.ratio, format!("{key}.ratio"))?;
        if let Some(k) = self.k {
            cgfed_core::config::ensure(
                k >= 1,
                format!("{key}.k"),
                "must be at least 1 (or leave it out to use `ratio`)",
            )?;
        }
        Ok(())
    }

    /// Elements kept out of `n` (see [`keep_count`]).
    pub fn keep(&self, n: usize) -> usize {
        keep_count(self.ratio, self.k, n)
    }
}

/// Random-k compressor; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RandK {
    cfg: RandKConfig,
}

/// `k` distinct positions of `0..n`, uniformly at random, increasing.
pub fn draw_positions(n: usize, k: usize, rng: &mut impl Rng) -> Vec<u32> {
    if k == 0 || n == 0 {
        return Vec::new();
    }
    if k >= n {
        return (0..n as u32).collect();
    }
    let complement = 2 * k > n;
    let m = if complement { n - k } else { k };
    if !complement && m <= LIST_DRAWS {
        let mut out: Vec<u32> = Vec::with_capacity(m);
        while out.len() < m {
            let p = rng.random_range(0..n as u64) as u32;
            if let Err(at) = out.binary_search(&p) {
                out.insert(at, p);
            }
        }
        return out;
    }
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut chosen = 0;
    while chosen < m {
        let p = rng.random_range(0..n as u64) as usize;
        let (w, b) = (p / 64, p % 64);
        if let Some(word) = bits.get_mut(w) {
            if *word >> b & 1 == 0 {
                *word |= 1 << b;
                chosen += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(k);
    for (w, &word) in bits.iter().enumerate() {
        let mut x = if complement { !word } else { word };
        if complement && w == bits.len() - 1 && !n.is_multiple_of(64) {
            x &= (1u64 << (n % 64)) - 1;
        }
        while x != 0 {
            out.push((w * 64) as u32 + x.trailing_zeros());
            x &= x - 1;
        }
    }
    out
}

impl RandK {
    /// A `randk` compressor from a config (validated; errors name `compressor.<key>`).
    pub fn new(cfg: RandKConfig) -> Result<Self> {
        cfg.validate("compressor")?;
        Ok(Self { cfg })
    }

    /// The config it was built with.
    pub fn config(&self) -> &RandKConfig {
        &self.cfg
    }

    /// The kept positions of every tensor of `layout` in the round `ctx` (what both ends
    /// draw).
    pub fn positions(&self, layout: &Layout, ctx: &RoundCtx) -> Result<Vec<Vec<u32>>> {
        let stream = stream_of(NAME);
        layout
            .specs()
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let n = spec.numel();
                if n > u32::MAX as usize {
                    return Err(Error::InvalidInput(format!(
                        "tensor `{}` of {n} elements exceeds u32 positions",
                        spec.name
                    )));
                }
                let mut rng =
                    ChaCha8Rng::seed_from_u64(ctx.rng_seed(mix_seed(&[stream, i as u64])));
                Ok(draw_positions(n, self.cfg.keep(n), &mut rng))
            })
            .collect()
    }

    /// Decoder scale of tensor `i` of `layout`: `n_i/k_i` when unbiased.
    fn scale(&self, layout: &Layout, i: usize) -> Option<f32> {
        if !self.cfg.unbiased {
            return None;
        }
        let n = layout.specs().get(i)?.numel();
        let k = self.cfg.keep(n);
        (k > 0).then(|| (n as f64 / k as f64) as f32)
    }
}

impl Staged for RandK {
    fn split(
        &self,
        update: &Update,
        _state: &mut ClientState,
        ctx: &RoundCtx,
        _out: &mut PayloadBuilder,
    ) -> Result<Update> {
        let sets = Sets(self.positions(update.layout(), ctx)?);
        let values = common::gather_values(update, &sets)?;
        if self.cfg.unbiased {
            let layout = update.layout();
            let scales: Vec<f32> = (0..sets.0.len())
                .filter(|&i| !sets.0[i].is_empty())
                .map(|i| self.scale(layout, i).unwrap_or(1.0))
                .collect();
            values.for_each_host(|j, spec, v| {
                let s = scales.get(j).copied().unwrap_or(1.0);
                match v.iter().find(|x| !(**x * s).is_finite()) {
                    Some(x) => Err(Error::InvalidInput(format!(
                        "tensor `{}`: |x| = {:e} overflows f32 when scaled by n/k = {s}",
                        spec.name,
                        x.abs()
                    ))),
                    None => Ok(()),
                }
            })?;
        }
        Ok(values)
    }

    fn read_structure(&self, _r: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure> {
        let sets = Sets(self.positions(&ctx.layout, ctx)?);
        let vl = common::values_layout(&ctx.layout, &sets)?;
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
            |i| self.scale(&ctx.layout, i),
        )
    }
}

impl GradientCompressor for RandK {
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
        let kept = match self.cfg.k {
            Some(k) => format!("k {k}"),
            None => format!("ratio {}", self.cfg.ratio),
        };
        let ub = if self.cfg.unbiased { ", unbiased" } else { "" };
        format!("randk ({kept} per tensor{ub})")
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: RandKConfig = table.parse()?;
    cfg.validate(&table.key)?;
    Ok(Box::new(RandK { cfg }))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "random-k with a shared seed: positions drawn by both ends, only values sent",
        params: &[
            Param { key: "ratio", default: "0.01", help: "fraction of each tensor kept, in (0, 1]; k(n) = min(n, max(1, ceil(ratio*n)))" },
            Param { key: "k", default: "-", help: "absolute count kept per tensor, >= 1; overrides ratio" },
            Param { key: "unbiased", default: "false", help: "scale decoded values by n/k so that E[decoded] = x" },
        ],
        factory: Factory::Compressor(build),
    }
}
