//! `sign`: scaled sign, one bit per element (signSGD with a scale; with
//! `error_feedback = true` it is EF-signSGD, Karimireddy et al. 2019).
//!
//! Each block (by default the whole tensor; `block_size = n` cuts each tensor into blocks
//! of `n` consecutive elements, the last one possibly shorter) sends its scale
//! `a = mean|x|` and one bit per element: set for a negative element. It decodes to
//! `x̂_i = −a` for a set bit and `+a` otherwise (zeros decode as `+a`). On Gaussian data
//! the relative error is `√(1 − 2/π) ≈ 0.60` per block; the scale is the one minimising
//! `‖x − a·sign(x)‖` for fixed signs. A zero block has scale 0, no set bits, and decodes to
//! zeros.
//!
//! # Wire format
//!
//! After the header ([`Payload::builder`]`("sign")`), for every tensor `t` of the layout in
//! order, with `n_t` elements and `m_t` blocks (`1` with the default `block_size`, else
//! `ceil(n_t / block_size)`; `0` for an empty tensor):
//!
//! | bytes | field |
//! |---|---|
//! | `4·m_t` | block scales `mean\|x\|`, f32 little-endian, finite, ≥ 0 (−0 rejected) |
//! | `ceil(n_t / 8)` | sign bits, element `j` in bit `j mod 8` of byte `⌊j/8⌋` (least significant bit first), 1 = negative, zero padding bits |
//!
//! Payload length (exact):
//!
//! ```text
//! len = (2 + 4) + Σ_t [ 4·m_t + ceil(n_t / 8) ]
//! ```
//!
//! An empty layout is the header alone. The decoder rejects truncation, trailing bytes,
//! NaN, infinite or negative scales, non-zero padding bits and set bits in a zero-scale
//! block.

use cgfed_core::config::{ensure, PluginTable};
use cgfed_core::{
    ClientState, Error, Factory, GradientCompressor, Layout, Param, Payload, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

use crate::common::{read_scales, sum_abs};

/// Registered name, also the payload header name.
pub const NAME: &str = "sign";

/// Config of `sign` (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignConfig {
    /// Elements per block (one f32 scale each), ≥ 1. Default: none, one scale per tensor.
    #[serde(default)]
    pub block_size: Option<usize>,
}

impl SignConfig {
    /// Check the ranges; errors name `key.block_size`.
    pub fn validate(&self, key: &str) -> Result<()> {
        ensure(
            self.block_size != Some(0),
            format!("{key}.block_size"),
            "must be an integer >= 1 (elements per block, one f32 scale each), got 0; \
             leave it out for one scale per tensor",
        )
    }
}

/// The scaled-sign compressor (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct Sign {
    block: Option<usize>,
}

impl Sign {
    /// A compressor from a config, validated (errors name `sign.<key>`).
    pub fn new(cfg: SignConfig) -> Result<Self> {
        Self::from_config(cfg, NAME)
    }

    fn from_config(cfg: SignConfig, key: &str) -> Result<Self> {
        cfg.validate(key)?;
        Ok(Self {
            block: cfg.block_size,
        })
    }

    /// Elements per block; `None`: the whole tensor.
    pub fn block_size(&self) -> Option<usize> {
        self.block
    }

    /// Block length for a tensor of `n` elements (≥ 1).
    fn block_for(&self, n: usize) -> usize {
        self.block.unwrap_or(n).max(1)
    }

    /// Exact payload length for `layout` (header included), per the module docs.
    pub fn payload_len(&self, layout: &Layout) -> usize {
        Payload::header_len(NAME)
            + layout
                .specs()
                .iter()
                .map(|s| {
                    let n = s.numel();
                    4 * n.div_ceil(self.block_for(n)) + n.div_ceil(8)
                })
                .sum::<usize>()
    }
}

/// Append the sign bits of `x` (1 = negative), 8 elements per byte, LSB first.
fn pack_signs(x: &[f32], out: &mut Vec<u8>) {
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        let mut b = 0u8;
        for (j, v) in c.iter().enumerate() {
            b |= ((*v < 0.0) as u8) << j;
        }
        out.push(b);
    }
    let rest = it.remainder();
    if !rest.is_empty() {
        let mut b = 0u8;
        for (j, v) in rest.iter().enumerate() {
            b |= ((*v < 0.0) as u8) << j;
        }
        out.push(b);
    }
}

/// Append `±scale` for elements `lo..hi` of a tensor whose sign bits are `bits`.
fn unpack_block(bits: &[u8], lo: usize, hi: usize, scale: f32, out: &mut Vec<f32>) {
    let pos = scale.to_bits();
    let value = |byte: u8, j: usize| f32::from_bits(pos | ((((byte >> j) & 1) as u32) << 31));
    if lo.is_multiple_of(8) {
        // Byte-aligned (every block of a per-tensor or multiple-of-8 block size): 8 at a time.
        let bytes = &bits[lo / 8..hi.div_ceil(8)];
        let full = (hi - lo) / 8;
        for &byte in &bytes[..full] {
            let v: [f32; 8] = std::array::from_fn(|j| value(byte, j));
            out.extend_from_slice(&v);
        }
        if let Some(&byte) = bytes.get(full) {
            out.extend((0..(hi - lo) % 8).map(|j| value(byte, j)));
        }
    } else {
        out.extend((lo..hi).map(|j| value(bits[j / 8], j % 8)));
    }
}

impl GradientCompressor for Sign {
    fn name(&self) -> &str {
        NAME
    }

    fn describe(&self) -> String {
        match self.block {
            Some(b) => format!("sign(block {b})"),
            None => "sign(per tensor)".to_string(),
        }
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(NAME)?;
        p.reserve(self.payload_len(&ctx.layout) - Payload::header_len(NAME));
        let (mut scales, mut bits) = (Vec::new(), Vec::new());
        update.for_each_host(|_, _, x| {
            scales.clear();
            bits.clear();
            // mean|x| ≤ max|x|: finite; +0 for a zero block.
            scales.extend(
                x.chunks(self.block_for(x.len()))
                    .map(|b| (sum_abs(b) / b.len() as f64) as f32),
            );
            pack_signs(x, &mut bits);
            p.put_f32s(&scales);
            p.put_bytes(&bits);
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(NAME)?;
        let mut parts = Vec::with_capacity(ctx.layout.len());
        for spec in ctx.layout.specs() {
            let n = spec.numel();
            let block = self.block_for(n);
            let scales = read_scales(&mut r, n.div_ceil(block), "scale", &spec.name)?;
            let bits = r.bytes(n.div_ceil(8))?;
            if n % 8 != 0 && bits.last().is_some_and(|&b| b >> (n % 8) != 0) {
                return Err(Error::malformed(format!(
                    "non-zero padding bits after the signs of tensor `{}`",
                    spec.name
                )));
            }
            let mut out = Vec::with_capacity(n);
            for (b, &s) in scales.iter().enumerate() {
                let lo = b * block;
                let hi = lo.saturating_add(block).min(n);
                let start = out.len();
                unpack_block(bits, lo, hi, s, &mut out);
                if s == 0.0 && out[start..].iter().any(|v| v.is_sign_negative()) {
                    return Err(Error::malformed(format!(
                        "block {b} of tensor `{}` has scale 0 but negative signs",
                        spec.name
                    )));
                }
            }
            parts.push(out);
        }
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: SignConfig = table.parse()?;
    Ok(Box::new(Sign::from_config(cfg, &table.key)?))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "scaled sign: 1 bit per element, ±mean|x| per block (signSGD / EF-signSGD)",
        params: &[
            Param { key: "block_size", default: "-", help: "elements per block (one f32 mean|x| scale each), >= 1; default: one scale per tensor" },
        ],
        factory: Factory::Compressor(build),
    }
}
