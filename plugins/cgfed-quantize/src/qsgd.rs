//! `qsgd`: QSGD (Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient
//! Quantization and Encoding", NeurIPS 2017), stochastic and unbiased.
//!
//! Each tensor is cut into buckets of `bucket_size` consecutive elements (the last bucket
//! of a tensor may be shorter). A bucket `v` with norm `‖v‖` (`norm = "l2"`, the paper's,
//! or `"max"`) and `s = levels` sends, for every element, the signed level
//!
//! ```text
//! ℓ_i = sign(v_i) · ξ_i,   ξ_i ∈ {⌊r_i⌋, ⌊r_i⌋ + 1} with P(⌊r_i⌋ + 1) = r_i − ⌊r_i⌋,   r_i = s·|v_i| / ‖v‖
//! ```
//!
//! and decodes to `x̂_i = ℓ_i · ‖v‖ / s`, so `E[x̂] = v`. The L2 norm is summed in f64
//! and sent as the f32 rounded *up* from it (capped at `f32::MAX`, which is still ≥ every
//! `|v_i|`), so every `r_i ≤ s` and the decode is unbiased for the norm that was sent.
//! Each element takes one uniform u32 from ChaCha8 seeded with
//! `ctx.rng_seed(mix_seed([stream_of("qsgd"), tensor index]))`, so client and server runs
//! are reproducible and a composed first stage draws independent numbers; its top 24
//! bits are compared with `r_i − ⌊r_i⌋`, and `r_i` is computed in f32 (f64 for buckets
//! whose norm is below ~1e-34), so `E[x̂]` matches `v` to f32 precision. A zero bucket has
//! norm 0 and every level 0.
//!
//! # Wire format
//!
//! After the header ([`Payload::builder`]`("qsgd")`), for every tensor `t` of the layout in
//! order, with `n_t` elements, `m_t = ceil(n_t / bucket_size)` buckets and
//! `w = width_for(2s)` bits per code (`⌊log2(2s)⌋ + 1`: 2 for `s = 1`, 8 for `s = 127`,
//! 16 for `s = 32767`):
//!
//! | bytes | field |
//! |---|---|
//! | `4·m_t` | bucket norms, f32 little-endian, finite, ≥ 0 (−0 rejected) |
//! | `ceil(n_t·w / 8)` | the `n_t` codes `ℓ_i + s ∈ 0..=2s`, `w` bits each, least significant bit first, zero padding bits up to a whole byte |
//!
//! Payload length (exact):
//!
//! ```text
//! len = (2 + 4) + Σ_t [ 4·ceil(n_t / bucket_size) + ceil(n_t·width_for(2s) / 8) ]
//! ```
//!
//! An empty layout is the header alone. The decoder rejects truncation, trailing bytes,
//! NaN, infinite or negative norms, codes above `2s`, non-zero padding bits, and a
//! zero-norm bucket with a non-zero level.

use cgfed_core::config::{ensure, PluginTable};
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::wire::bits::width_for;
use cgfed_core::{
    ClientState, Error, Factory, GradientCompressor, Layout, Param, Payload, Plugin, Result,
    RoundCtx, Update,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::common::{
    absmax, floor_small, pack_codes, packed_bytes, read_scales, round_up, round_up_f64, sum_sq,
    unpack_codes, Code, RAND_CHUNK,
};

/// Registered name, also the payload header name.
pub const NAME: &str = "qsgd";

/// Largest accepted `levels` (codes up to `2s` then fit in 16 bits).
pub const MAX_LEVELS: u32 = 32767;

/// The per-bucket norm levels are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Euclidean norm (the paper's choice).
    #[default]
    L2,
    /// Largest absolute value (smaller variance, the levels span the bucket's range).
    Max,
}

fn default_levels() -> u32 {
    127
}

fn default_bucket_size() -> usize {
    512
}

/// Config of `qsgd` (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QsgdConfig {
    /// Quantization levels `s`, 1..=32767. Default 127 (8-bit codes).
    #[serde(default = "default_levels")]
    pub levels: u32,
    /// Elements per bucket (one f32 norm each), ≥ 1. Default 512.
    #[serde(default = "default_bucket_size")]
    pub bucket_size: usize,
    /// `"l2"` (default) or `"max"`.
    #[serde(default)]
    pub norm: Norm,
}

impl Default for QsgdConfig {
    fn default() -> Self {
        Self {
            levels: default_levels(),
            bucket_size: default_bucket_size(),
            norm: Norm::default(),
        }
    }
}

impl QsgdConfig {
    /// Check the ranges; errors name `key.levels` / `key.bucket_size`.
    pub fn validate(&self, key: &str) -> Result<()> {
        ensure(
            (1..=MAX_LEVELS).contains(&self.levels),
            format!("{key}.levels"),
            format!(
                "must be an integer in 1..={MAX_LEVELS} (levels s per sign), got {}",
                self.levels
            ),
        )?;
        ensure(
            self.bucket_size >= 1,
            format!("{key}.bucket_size"),
            "must be an integer >= 1 (elements per bucket, one f32 norm each), got 0",
        )
    }
}

/// The QSGD quantizer (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Qsgd {
    levels: u32,
    bucket: usize,
    norm: Norm,
    width: u32,
}

impl Qsgd {
    /// A quantizer from a config, validated (errors name `qsgd.<key>`).
    pub fn new(cfg: QsgdConfig) -> Result<Self> {
        Self::from_config(cfg, NAME)
    }

    fn from_config(cfg: QsgdConfig, key: &str) -> Result<Self> {
        cfg.validate(key)?;
        Ok(Self {
            levels: cfg.levels,
            bucket: cfg.bucket_size,
            norm: cfg.norm,
            width: width_for(2 * cfg.levels as u64),
        })
    }

    /// Levels `s`.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// Elements per bucket.
    pub fn bucket_size(&self) -> usize {
        self.bucket
    }

    /// The bucket norm.
    pub fn norm(&self) -> Norm {
        self.norm
    }

    /// Bits per code, `width_for(2s)`.
    pub fn code_width(&self) -> u32 {
        self.width
    }

    /// Exact payload length for `layout` (header included), per the module docs.
    pub fn payload_len(&self, layout: &Layout) -> usize {
        Payload::header_len(NAME)
            + layout
                .specs()
                .iter()
                .map(|s| {
                    let n = s.numel();
                    4 * n.div_ceil(self.bucket) + (n * self.width as usize).div_ceil(8)
                })
                .sum::<usize>()
    }

    /// The norm sent for a bucket: ≥ every `|v_i|`, finite.
    fn bucket_norm(&self, v: &[f32]) -> f32 {
        match self.norm {
            Norm::Max => absmax(v),
            Norm::L2 => round_up_f32(sum_sq(v).sqrt()),
        }
    }

    /// Norms (appended to `norms`) and codes `ℓ + s` (written to `codes`, one per element
    /// of `x`) of one tensor.
    fn quantize<T: Code>(
        &self,
        x: &[f32],
        rng: &mut ChaCha8Rng,
        norms: &mut Vec<f32>,
        codes: &mut [T],
    ) {
        let s = self.levels as i32;
        let zero = T::from_u64(s as u64);
        let mut rnd = [0u32; RAND_CHUNK];
        let code = |v: f32, xi: i32| T::from_u64((if v < 0.0 { s - xi } else { s + xi }) as u64);
        for (bucket, out) in x.chunks(self.bucket).zip(codes.chunks_mut(self.bucket)) {
            let norm = self.bucket_norm(bucket);
            norms.push(norm);
            if norm == 0.0 {
                out.fill(zero);
                continue;
            }
            // r = s·|v|/norm ≤ s (clamped against rounding), in f32 while s/norm is a
            // normal f32 (norm above ~1e-34), else in f64. f32 keeps E[ℓ] = r to within
            // 2^-23 relative, the resolution of the f32 decode itself.
            let inv = self.levels as f64 / norm as f64;
            let invf = inv as f32;
            let fast = invf.is_normal();
            for (vals, out) in bucket.chunks(RAND_CHUNK).zip(out.chunks_mut(RAND_CHUNK)) {
                let r = &mut rnd[..vals.len()];
                rng.fill(r);
                let it = out.iter_mut().zip(vals).zip(r.iter());
                if fast {
                    let sf = s as f32;
                    for ((o, &v), &u) in it {
                        let t = (v.abs() * invf).min(sf);
                        let (lo_f, lo) = floor_small(t);
                        *o = code(v, lo + round_up(u, t - lo_f) as i32);
                    }
                } else {
                    let sf = s as f64;
                    for ((o, &v), &u) in it {
                        let t = (v.abs() as f64 * inv).min(sf);
                        let lo = t as i32;
                        *o = code(v, lo + round_up_f64(u, t - lo as f64) as i32);
                    }
                }
            }
        }
    }

    /// Decode one tensor's codes against its norms.
    fn dequantize<T: Code>(&self, codes: &[T], norms: &[f32], tensor: &str) -> Result<Vec<f32>> {
        let s = self.levels as u64;
        let mut out = Vec::with_capacity(codes.len());
        for (b, (bucket, &norm)) in codes.chunks(self.bucket).zip(norms).enumerate() {
            if norm == 0.0 {
                if bucket.iter().any(|&c| c.into() != s) {
                    return Err(Error::malformed(format!(
                        "bucket {b} of tensor `{tensor}` has norm 0 but a non-zero level"
                    )));
                }
                out.resize(out.len() + bucket.len(), 0.0);
                continue;
            }
            let max = bucket.iter().fold(0u64, |m, &c| m.max(c.into()));
            if max > 2 * s {
                return Err(Error::malformed(format!(
                    "code {max} in bucket {b} of tensor `{tensor}` is above 2·levels = {}",
                    2 * s
                )));
            }
            let si = s as i32;
            if norm <= f32::MAX / 2.0 {
                // |ℓ|·(norm/s) rounds to at most ~norm·(1 + 2^-23): finite.
                let step = (norm as f64 / s as f64) as f32;
                out.extend(bucket.iter().map(|&c| (c.into() as i32 - si) as f32 * step));
            } else {
                // Near f32::MAX: f64 keeps |x̂| ≤ norm exactly.
                let step = norm as f64 / s as f64;
                out.extend(
                    bucket
                        .iter()
                        .map(|&c| ((c.into() as i32 - si) as f64 * step) as f32),
                );
            }
        }
        Ok(out)
    }
}

/// The smallest f32 ≥ `v` (for finite `v ≥ 0`), capped at `f32::MAX`.
fn round_up_f32(v: f64) -> f32 {
    let f = v as f32;
    let f = if (f as f64) < v {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f
    };
    f.min(f32::MAX)
}

impl GradientCompressor for Qsgd {
    fn name(&self) -> &str {
        NAME
    }

    fn describe(&self) -> String {
        let n = match self.norm {
            Norm::L2 => "l2",
            Norm::Max => "max",
        };
        format!("qsgd({} levels, bucket {}, {n})", self.levels, self.bucket)
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(NAME)?;
        p.reserve(self.payload_len(&ctx.layout) - Payload::header_len(NAME));
        let (mut norms, mut packed) = (Vec::new(), Vec::new());
        let (mut small, mut wide) = (Vec::<u8>::new(), Vec::<u16>::new());
        update.for_each_host(|i, _, x| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(ctx.rng_seed(mix_seed(&[stream_of(NAME), i as u64])));
            norms.clear();
            packed.clear();
            if self.width <= 8 {
                small.clear();
                small.resize(x.len(), 0);
                self.quantize(x, &mut rng, &mut norms, &mut small);
                if self.width < 8 {
                    pack_codes(&small, self.width, &mut packed);
                }
            } else {
                wide.clear();
                wide.resize(x.len(), 0);
                self.quantize(x, &mut rng, &mut norms, &mut wide);
                pack_codes(&wide, self.width, &mut packed);
            }
            p.put_f32s(&norms);
            p.put_bytes(if self.width == 8 { &small } else { &packed });
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(NAME)?;
        let (mut small, mut wide) = (Vec::<u8>::new(), Vec::<u16>::new());
        let mut parts = Vec::with_capacity(ctx.layout.len());
        for spec in ctx.layout.specs() {
            let n = spec.numel();
            let norms = read_scales(&mut r, n.div_ceil(self.bucket), "norm", &spec.name)?;
            let bytes = r.bytes(packed_bytes(n, self.width)?)?;
            let out = if self.width == 8 {
                self.dequantize(bytes, &norms, &spec.name)?
            } else if self.width < 8 {
                unpack_codes(bytes, n, self.width, &mut small)?;
                self.dequantize(&small, &norms, &spec.name)?
            } else {
                unpack_codes(bytes, n, self.width, &mut wide)?;
                self.dequantize(&wide, &norms, &spec.name)?
            };
            parts.push(out);
        }
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: QsgdConfig = table.parse()?;
    Ok(Box::new(Qsgd::from_config(cfg, &table.key)?))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "QSGD: unbiased stochastic quantization to s levels per bucket norm (Alistarh et al. 2017)",
        params: &[
            Param { key: "levels", default: "127", help: "levels s per sign, 1..=32767; codes take width_for(2s) bits" },
            Param { key: "bucket_size", default: "512", help: "elements per bucket (one f32 norm each), >= 1; buckets run within each tensor" },
            Param { key: "norm", default: "\"l2\"", help: "bucket norm: \"l2\" (the paper's) or \"max\"" },
        ],
        factory: Factory::Compressor(build),
    }
}

#[cfg(test)]
mod tests {
    use super::round_up_f32;

    #[test]
    fn round_up_is_an_upper_bound() {
        for v in [
            0.0,
            1.0,
            0.1,
            1e-40,
            3.0e38,
            3.4028235e38,
            1e39,
            2f64.sqrt(),
        ] {
            let f = round_up_f32(v);
            assert!(f.is_finite());
            assert!(f as f64 >= v.min(f32::MAX as f64), "{v} -> {f}");
        }
        assert_eq!(round_up_f32(0.5), 0.5);
        assert_eq!(round_up_f32(1e39), f32::MAX);
    }
}
