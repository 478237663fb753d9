//! `kbit`: block-wise absmax quantization to `bits` bits per element (1..=8).
//!
//! Each tensor is cut into blocks of `block_size` consecutive elements (the last block
//! of a tensor may be shorter; blocks never span two tensors). A block with absmax
//! `a = max|x|` is quantized onto the `2^bits` levels spread uniformly over `[−a, a]`:
//! with `L = 2^bits − 1`, code `q ∈ 0..=L` decodes to
//!
//! ```text
//! x̂ = c_q · a,   c_q = (2q − L) / L      (c_0 = −1, c_L = +1, c_{L−q} = −c_q)
//! ```
//!
//! so 1 bit sends `±a`, 8 bits send 256 levels, and the grid is symmetric (there is no
//! zero level; a zero element of a non-zero block decodes to `+a/L`). `rounding =
//! "nearest"` picks the nearest level (ties upwards); `"stochastic"` picks one of the two
//! neighbouring levels with the probabilities that make `E[x̂] = x`: one uniform u32 per
//! element from ChaCha8 seeded with `ctx.rng_seed(mix_seed([stream_of("kbit"), tensor
//! index]))`, its top 24 bits compared with the fractional position between the levels
//! (exact to 2^-24 of a step, the resolution of the f32 arithmetic). A zero block has
//! scale 0, every code equal to `2^(bits−1)`, and decodes to zeros.
//!
//! Cost: one pass for the absmax and one for the codes per block, in f32 (f64 for blocks
//! whose absmax is below ~1e-36), written so that the loops vectorize; 8-bit codes are
//! plain bytes, other widths are packed eight codes at a time.
//!
//! # Wire format
//!
//! After the header ([`Payload::builder`]`("kbit")`), for every tensor `t` of the layout in
//! order, with `n_t` elements and `m_t = ceil(n_t / block_size)` blocks:
//!
//! | bytes | field |
//! |---|---|
//! | `4·m_t` | block scales: the absmax of each block, f32 little-endian, finite, ≥ 0 (−0 rejected) |
//! | `ceil(n_t·bits / 8)` | the `n_t` codes, `bits` bits each, least significant bit first, zero padding bits up to a whole byte; `bits = 8`: one byte per code |
//!
//! Payload length (exact):
//!
//! ```text
//! len = (2 + 4) + Σ_t [ 4·ceil(n_t / block_size) + ceil(n_t·bits / 8) ]
//! ```
//!
//! (`2 + 4`: version byte, name length, `kbit`.) An empty layout is the header alone. The
//! decoder rejects truncation, trailing bytes, NaN, infinite or negative scales, non-zero
//! padding bits, and a zero-scale block whose codes are not all `2^(bits−1)`.

use cgfed_core::config::{ensure, PluginTable};
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::{
    ClientState, Error, Factory, GradientCompressor, Layout, Param, Payload, Plugin, Result,
    RoundCtx, Update,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::common::{
    absmax, floor_small, pack_codes, packed_bytes, read_scales, round_up, round_up_f64,
    unpack_codes, RAND_CHUNK,
};

/// Registered name, also the payload header name.
pub const NAME: &str = "kbit";

/// How a value is mapped onto the two levels around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// The nearest level (ties to the upper one). Deterministic.
    #[default]
    Nearest,
    /// The lower or upper neighbour with probabilities that make the decode unbiased.
    Stochastic,
}

fn default_bits() -> u32 {
    8
}

fn default_block_size() -> usize {
    64
}

/// Config of `kbit` (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbitConfig {
    /// Bits per code, 1..=8. Default 8.
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// Elements per block (one f32 scale each), ≥ 1. Default 64.
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// `"nearest"` (default) or `"stochastic"`.
    #[serde(default)]
    pub rounding: Rounding,
}

impl Default for KbitConfig {
    fn default() -> Self {
        Self {
            bits: default_bits(),
            block_size: default_block_size(),
            rounding: Rounding::default(),
        }
    }
}

impl KbitConfig {
    /// Check the ranges; errors name `key.bits` / `key.block_size` (`key` is the table's
    /// path, e.g. `compressor` or `compressor.values`).
    pub fn validate(&self, key: &str) -> Result<()> {
        ensure(
            (1..=8).contains(&self.bits),
            format!("{key}.bits"),
            format!("must be an integer in 1..=8, got {}", self.bits),
        )?;
        ensure(
            self.block_size >= 1,
            format!("{key}.block_size"),
            "must be an integer >= 1 (elements per block, one f32 scale each), got 0",
        )
    }
}

/// The block-wise absmax quantizer (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Kbit {
    bits: u32,
    block: usize,
    rounding: Rounding,
}

impl Kbit {
    /// A quantizer from a config, validated (errors name `kbit.<key>`).
    pub fn new(cfg: KbitConfig) -> Result<Self> {
        Self::from_config(cfg, NAME)
    }

    fn from_config(cfg: KbitConfig, key: &str) -> Result<Self> {
        cfg.validate(key)?;
        Ok(Self {
            bits: cfg.bits,
            block: cfg.block_size,
            rounding: cfg.rounding,
        })
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Elements per block.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// The rounding mode.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Exact payload length for `layout` (header included), per the module docs.
    pub fn payload_len(&self, layout: &Layout) -> usize {
        Payload::header_len(NAME)
            + layout
                .specs()
                .iter()
                .map(|s| {
                    let n = s.numel();
                    4 * n.div_ceil(self.block) + (n * self.bits as usize).div_ceil(8)
                })
                .sum::<usize>()
    }

    /// `L = 2^bits − 1`, the largest code.
    fn max_code(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// The code every element of a zero block carries.
    fn zero_code(&self) -> u8 {
        (1u32 << (self.bits - 1)) as u8
    }

    /// Scales (appended to `scales`) and one-byte codes (written to `codes`, one per
    /// element of `x`) of one tensor.
    fn quantize(
        &self,
        x: &[f32],
        mut rng: Option<&mut ChaCha8Rng>,
        scales: &mut Vec<f32>,
        codes: &mut [u8],
    ) {
        let l = self.max_code();
        let half = l as f64 / 2.0;
        let zero = self.zero_code();
        let mut rnd = [0u32; RAND_CHUNK];
        for (block, out) in x.chunks(self.block).zip(codes.chunks_mut(self.block)) {
            let a = absmax(block);
            scales.push(a);
            if a == 0.0 {
                out.fill(zero);
                continue;
            }
            // t = (x/a + 1)·L/2 in [0, L], in f32 while L/(2a) is a normal f32 (a above
            // ~1e-36), else in f64. f32 puts a code off by at most ~1e-5 of a step (only
            // at an exact tie for nearest; a bias of that size for stochastic rounding, the
            // resolution of the f32 decode itself).
            let k = half / a as f64;
            let kf = k as f32;
            let fast = kf.is_normal();
            let (hf, lf) = (half as f32, l as f32);
            match rng.as_deref_mut() {
                None if fast => {
                    for (o, &v) in out.iter_mut().zip(block) {
                        let t = (v * kf + hf).max(0.0).min(lf);
                        *o = floor_small(t + 0.5).1 as u8;
                    }
                }
                None => {
                    for (o, &v) in out.iter_mut().zip(block) {
                        let t = v as f64 * k + half;
                        *o = ((t + 0.5) as u32).min(l) as u8;
                    }
                }
                Some(rng) => {
                    let chunks = block.chunks(RAND_CHUNK).zip(out.chunks_mut(RAND_CHUNK));
                    for (vals, out) in chunks {
                        let r = &mut rnd[..vals.len()];
                        rng.fill(r);
                        let it = out.iter_mut().zip(vals).zip(r.iter());
                        if fast {
                            for ((o, &v), &u) in it {
                                let t = (v * kf + hf).max(0.0).min(lf);
                                let (lo_f, lo) = floor_small(t);
                                *o = (lo + round_up(u, t - lo_f) as i32) as u8;
                            }
                        } else {
                            for ((o, &v), &u) in it {
                                let t = (v as f64 * k + half).clamp(0.0, half * 2.0);
                                let lo = t as u32;
                                *o = (lo + round_up_f64(u, t - lo as f64) as u32).min(l) as u8;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `c_q` for every code (entries above `L` unused).
    fn level_table(&self) -> [f32; 256] {
        let l = self.max_code() as i64;
        let mut t = [0f32; 256];
        for (q, c) in t.iter_mut().enumerate().take(l as usize + 1) {
            *c = ((2 * q as i64 - l) as f64 / l as f64) as f32;
        }
        t
    }
}

impl GradientCompressor for Kbit {
    fn name(&self) -> &str {
        NAME
    }

    fn describe(&self) -> String {
        let r = match self.rounding {
            Rounding::Nearest => "nearest",
            Rounding::Stochastic => "stochastic",
        };
        format!("kbit({} bits, block {}, {r})", self.bits, self.block)
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(NAME)?;
        p.reserve(self.payload_len(&ctx.layout) - Payload::header_len(NAME));
        let (mut scales, mut codes, mut packed) = (Vec::new(), Vec::new(), Vec::new());
        update.for_each_host(|i, _, x| {
            let mut rng = (self.rounding == Rounding::Stochastic).then(|| {
                ChaCha8Rng::seed_from_u64(ctx.rng_seed(mix_seed(&[stream_of(NAME), i as u64])))
            });
            scales.clear();
            codes.clear();
            codes.resize(x.len(), 0);
            self.quantize(x, rng.as_mut(), &mut scales, &mut codes);
            p.put_f32s(&scales);
            if self.bits == 8 {
                p.put_bytes(&codes);
            } else {
                packed.clear();
                pack_codes(&codes, self.bits, &mut packed);
                p.put_bytes(&packed);
            }
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(NAME)?;
        let table = self.level_table();
        let zero = self.zero_code();
        let mut unpacked = Vec::new();
        let mut parts = Vec::with_capacity(ctx.layout.len());
        for spec in ctx.layout.specs() {
            let n = spec.numel();
            let scales = read_scales(&mut r, n.div_ceil(self.block), "scale", &spec.name)?;
            let bytes = r.bytes(packed_bytes(n, self.bits)?)?;
            let codes: &[u8] = if self.bits == 8 {
                bytes
            } else {
                unpack_codes(bytes, n, self.bits, &mut unpacked)?;
                &unpacked
            };
            let mut out = Vec::with_capacity(n);
            for (b, (block, &s)) in codes.chunks(self.block).zip(&scales).enumerate() {
                if s == 0.0 {
                    if block.iter().any(|&q| q != zero) {
                        return Err(Error::malformed(format!(
                            "block {b} of tensor `{}` has scale 0 but codes other than {zero}",
                            spec.name
                        )));
                    }
                    out.resize(out.len() + block.len(), 0.0);
                } else {
                    out.extend(block.iter().map(|&q| table[q as usize] * s));
                }
            }
            parts.push(out);
        }
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: KbitConfig = table.parse()?;
    Ok(Box::new(Kbit::from_config(cfg, &table.key)?))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "block-wise absmax quantization to 1..8 bits per element (+ one f32 scale per block)",
        params: &[
            Param { key: "bits", default: "8", help: "bits per element, 1..=8 (2^bits levels over [-absmax, absmax])" },
            Param { key: "block_size", default: "64", help: "elements per block (one f32 absmax scale each), >= 1; blocks run within each tensor" },
            Param { key: "rounding", default: "\"nearest\"", help: "\"nearest\" or \"stochastic\" (unbiased)" },
        ],
        factory: Factory::Compressor(build),
    }
}
