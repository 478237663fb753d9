//! `topk`: exact top-k by magnitude.
//!
//! Keeps the `k` elements of largest `|x|`, ties broken by the lower index, either per
//! tensor (`scope = "tensor"`: a tensor of `n` elements keeps [`keep_count`]`(n)`) or over
//! the whole update (`scope = "update"`: `k(N)` of all `N` elements, ties to the lower
//! position in layout order; a tensor may keep none). The kept values travel exactly.
//!
//! The selection is exact whatever the data, in one pass over the update for typical
//! gradients: see `select.rs` (sample-estimated lower bound, candidate gather, exact
//! selection among the candidates, radix-select fallback).
//!
//! # Wire format
//!
//! Header `topk` (6 bytes), then:
//!
//! | bytes | field |
//! |---|---|
//! | `I(S_i, n_i)` per tensor `i`, layout order | kept positions `S_i` of tensor `i` (`n_i` elements) as a [`cgfed_core::wire::indices`] set: varint `count·4 + code`, then bitmap / delta-varint / Elias–Fano, whichever is smallest; an empty set (scope `update` only) is one byte |
//! | `4·K` | the kept values, little-endian f32, tensor by tensor in layout order, positions increasing (`K = Σ|S_i|`) |
//!
//! Exact length: `6 + Σ_i I(S_i, n_i) + 4·K`, where `I(S, n)` is
//! [`crate::index_set_len`]`(S, n)` (the total of [`cgfed_core::wire::indices::cheapest`], 1
//! for an empty set). In scope `tensor` `|S_i| = k(n_i)`; in scope `update`
//! `Σ|S_i| = k(N)`. For a 4096×4096 tensor at ratio 0.01 the positions cost about 8.6
//! bits each (Elias–Fano: `⌊log₂(n/k)⌋ + 1` bits plus `n/2^l` high bits over `k`) and the
//! whole payload 0.406 bits per element.
//!
//! As a first stage (`values = { kind = "bf16" }`) the payload is header `topk+<second>`,
//! the same index sets, then the second compressor's body for the values layout (one tensor
//! `[|S_i|]` per tensor that keeps elements, same name).
//!
//! The decoder rejects (as [`Error::MalformedPayload`]): an index set that
//! `read_indices` rejects (count above `n_i`, position out of range, unsorted or repeated
//! positions, wrong bitmap popcount, non-zero padding, truncation); in scope `tensor` a
//! count other than `k(n_i)`; in scope `update` counts whose running sum exceeds `k(N)` or
//! whose total differs from it; NaN or infinite values; trailing bytes.

use cgfed_core::payload::PayloadBuilder;
use cgfed_core::wire::ByteReader;
use cgfed_core::{
    config::PluginTable, ClientState, Error, Factory, GradientCompressor, Param, Payload, Plugin,
    Result, RoundCtx, Staged, Structure, Update,
};
use serde::Deserialize;

use crate::common::{self, keep_count, Scope, Sets};
use crate::select::{self, UpdateParts};

/// Registered name.
pub const NAME: &str = "topk";

fn default_ratio() -> f64 {
    0.01
}

/// Config of `topk`.
///
/// ```toml
/// [compressor]
/// kind = "topk"
/// ratio = 0.01       # fraction kept, in (0, 1]
/// # k = 1000         # absolute count per tensor (or per update), overrides ratio
/// scope = "tensor"   # or "update"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKConfig {
    /// Fraction of the elements kept, in `(0, 1]` (default 0.01).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Absolute number kept per tensor (scope `tensor`) or per update (scope `update`),
    /// at least 1; overrides `ratio` when given (capped at the element count).
    #[serde(default)]
    pub k: Option<usize>,
    /// `tensor` (default) or `update`.
    #[serde(default)]
    pub scope: Scope,
}

impl Default for TopKConfig {
    fn default() -> Self {
        Self {
            ratio: default_ratio(),
            k: None,
            scope: Scope::Tensor,
        }
    }
}

impl TopKConfig {
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

/// Exact top-k compressor; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TopK {
    cfg: TopKConfig,
}

impl TopK {
    /// A `topk` compressor from a config (validated; errors name `compressor.<key>`).
    pub fn new(cfg: TopKConfig) -> Result<Self> {
        cfg.validate("compressor")?;
        Ok(Self { cfg })
    }

    /// The config it was built with.
    pub fn config(&self) -> &TopKConfig {
        &self.cfg
    }

    /// The kept positions of every tensor of `update` (host f32, see `host_update`).
    fn select(&self, update: &Update) -> Result<Sets> {
        match self.cfg.scope {
            Scope::Tensor => {
                let mut sets = Vec::with_capacity(update.len());
                update.for_each_host(|_, _, x| {
                    let k = self.cfg.keep(x.len());
                    let mut one = select::top_k(&[x][..], k)?;
                    sets.push(one.pop().unwrap_or_default());
                    Ok(())
                })?;
                Ok(Sets(sets))
            }
            Scope::Update => {
                let k = self.cfg.keep(update.numel());
                Ok(Sets(select::top_k(&UpdateParts(update), k)?))
            }
        }
    }
}

impl Staged for TopK {
    fn split(
        &self,
        update: &Update,
        _state: &mut ClientState,
        _ctx: &RoundCtx,
        out: &mut PayloadBuilder,
    ) -> Result<Update> {
        let host = select::host_update(update)?;
        let sets = self.select(&host)?;
        common::write_sets(out, host.layout(), &sets)?;
        common::gather_values(&host, &sets)
    }

    fn read_structure(&self, r: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure> {
        let layout = &ctx.layout;
        let mut sets = Vec::with_capacity(layout.len());
        let total_k = self.cfg.keep(layout.numel());
        let mut sum = 0usize;
        for spec in layout.specs() {
            let n = spec.numel();
            let set = cgfed_core::wire::indices::read_indices(r, n)?;
            match self.cfg.scope {
                Scope::Tensor => {
                    let k = self.cfg.keep(n);
                    if set.len() != k {
                        return Err(Error::malformed(format!(
                            "tensor `{}` keeps {} elements, top-k of {n} keeps {k}",
                            spec.name,
                            set.len()
                        )));
                    }
                }
                Scope::Update => {
                    sum += set.len();
                    if sum > total_k {
                        return Err(Error::malformed(format!(
                            "index sets up to `{}` keep {sum} elements, the update keeps {total_k}",
                            spec.name
                        )));
                    }
                }
            }
            sets.push(set);
        }
        if self.cfg.scope == Scope::Update && sum != total_k {
            return Err(Error::malformed(format!(
                "index sets keep {sum} elements, the update keeps {total_k}"
            )));
        }
        let sets = Sets(sets);
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

impl GradientCompressor for TopK {
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
        format!("topk ({kept} per {})", self.cfg.scope.as_str())
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: TopKConfig = table.parse()?;
    cfg.validate(&table.key)?;
    Ok(Box::new(TopK { cfg }))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "exact top-k by |x| (ties to the lower index), per tensor or per update",
        params: &[
            Param { key: "ratio", default: "0.01", help: "fraction of elements kept, in (0, 1]; k(n) = min(n, max(1, ceil(ratio*n)))" },
            Param { key: "k", default: "-", help: "absolute count kept per tensor (or per update), >= 1; overrides ratio" },
            Param { key: "scope", default: "\"tensor\"", help: "\"tensor\": each tensor keeps k(n); \"update\": the whole update keeps k(N)" },
        ],
        factory: Factory::Compressor(build),
    }
}
