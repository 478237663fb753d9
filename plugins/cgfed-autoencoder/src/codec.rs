//! The autoencoder as a codec: update → normalised inputs → latent (rounded to the wire
//! precision) → decoder → per-block gain, and the body layout on the wire.
//!
//! # Body (after the payload header `cgfedllm`)
//!
//! 1. **Flags**: one bit per tensor in layout order (LSB first, zero-padded to a byte):
//!    1 = the tensor is sent by the fallback compressor.
//! 2. **Latent and scales**, for the tensors not flagged:
//!    - chunked presets (default, pca): for each such tensor, for each of its chunks: the
//!      chunk's scale (f32 LE) then its `latent` values;
//!    - paper preset: the latent of the whole packed image (64·H/64·W/64 values; absent
//!      when every tensor is flagged), then one scale (f32 LE) per tensor not flagged.
//!
//!    A latent row (one chunk's `latent` values, or the whole image latent) is either
//!    its values as f16, bf16 or f32 LE (`latent_dtype`), every one finite; or, with
//!    `latent_bits = k`, an f32 scale `s` then the row's k-bit codes, bit-packed LSB first
//!    and zero-padded to a byte: code `i` stands for `s·(2i/(2^k−1) − 1)` (k ≥ 2, `s` =
//!    the row's max |z|), or `±s` with `s` = mean |z| (k = 1).
//! 3. **Fallback**: when any tensor is flagged, the rest of the body is the fallback
//!    compressor's whole payload (its own header included) for the layout made of the
//!    flagged tensors alone.
//!
//! A tensor's reconstruction is `scale × decoder output` (chunk by chunk, or the tensor's
//! block of the decoded image), where the scale is the least-squares gain (`lsq`) or the
//! input normalisation (`norm`, see [`crate::config::ScaleMode`]).

use cgfed_core::candle_core::{DType, Device, Tensor};
use cgfed_core::payload::PayloadBuilder;
use cgfed_core::wire::ByteReader;
use cgfed_core::{Error, Layout, Result};

use crate::config::{Arch, LatentDtype, ScaleMode};
use crate::geometry::{Chunking, Packing};
use crate::nets::Net;

/// Latent channels of the paper preset (its latent is 64 × H/64 × W/64).
const IMAGE_LATENT_CHANNELS: usize = 64;

/// A trained (or initialised) autoencoder with its wire settings.
#[derive(Debug)]
pub struct Codec {
    /// The architecture.
    pub arch: Arch,
    /// Wire precision of the latent.
    pub dtype: LatentDtype,
    /// `latent_bits`: quantise each latent row to this many bits (overrides `dtype`).
    pub bits: Option<u32>,
    /// The net.
    pub net: Net,
    /// Rows of the position embeddings (0: none), i.e. the chunk count it is tied to.
    pub positions: usize,
    /// Where it runs.
    pub device: Device,
}

/// What the client computes before deciding on fallbacks: latent, scales and the
/// reconstruction the server will get, per tensor.
#[derive(Debug, Clone)]
pub struct Recon {
    /// Chunked: per tensor, its chunks' latents concatenated. Paper: one entry, the image's.
    /// The values the receiver will decode (rounded or dequantised).
    pub latent: Vec<Vec<f32>>,
    /// With `latent_bits`: the codes, laid out like `latent`.
    pub codes: Vec<Vec<u32>>,
    /// With `latent_bits`: one scale per latent row (per chunk, or one for the image).
    pub latent_scales: Vec<Vec<f32>>,
    /// Per tensor: one scale per chunk (chunked) or one (paper).
    pub scales: Vec<Vec<f32>>,
    /// Per tensor: the decoded values.
    pub xhat: Vec<Vec<f32>>,
}

/// Training inputs made from one update: normalised items, row-major, and their
/// positions (chunk index; 0 for images).
#[derive(Debug, Clone, Default)]
pub struct Items {
    /// `n × item_len` values.
    pub values: Vec<f32>,
    /// One position per item.
    pub positions: Vec<u32>,
}

impl Codec {
    /// Elements of one net input (a chunk, or the packed image).
    pub fn item_len(&self, layout: &Layout) -> Result<usize> {
        Ok(if self.arch.preset.chunked() {
            self.arch.chunk
        } else {
            let p = Packing::new(layout)?;
            p.h * p.w
        })
    }

    /// The shape of a batch of `n` items.
    pub fn batch_shape(&self, n: usize, layout: &Layout) -> Result<Vec<usize>> {
        Ok(if self.arch.preset.chunked() {
            vec![n, self.arch.chunk]
        } else {
            let p = Packing::new(layout)?;
            vec![n, 1, p.h, p.w]
        })
    }

    fn check_layout(&self, layout: &Layout) -> Result<()> {
        if self.positions > 0 {
            let total = Chunking::new(layout, self.arch.chunk).total;
            if total != self.positions {
                return Err(Error::LayoutMismatch(format!(
                    "this autoencoder's position embeddings cover {} chunks, the update has {total} \
                     (it was trained on another model or LoRA configuration)",
                    self.positions
                )));
            }
        }
        Ok(())
    }

    /// Normalised net inputs of an update (`parts`: one vector per tensor of `layout`), plus
    /// each item's normalisation factor (chunk RMS, or per tensor max |x| for the image).
    pub fn items(&self, parts: &[Vec<f32>], layout: &Layout) -> Result<(Items, Vec<f32>)> {
        self.check_layout(layout)?;
        if self.arch.preset.chunked() {
            let ch = Chunking::new(layout, self.arch.chunk);
            let c = self.arch.chunk;
            let mut items = Items {
                values: vec![0.0; ch.total * c],
                positions: (0..ch.total as u32).collect(),
            };
            let mut norms = Vec::with_capacity(ch.total);
            for (t, x) in parts.iter().enumerate() {
                let first = ch.tensors[t].0;
                for (j, block) in x.chunks(c).enumerate() {
                    let rms = (block.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
                        / block.len() as f64)
                        .sqrt() as f32;
                    let inv = if rms > 0.0 && rms.is_finite() {
                        1.0 / rms
                    } else {
                        0.0
                    };
                    let row = &mut items.values[(first + j) * c..][..block.len()];
                    for (o, v) in row.iter_mut().zip(block) {
                        *o = v * inv;
                    }
                    norms.push(rms);
                }
            }
            Ok((items, norms))
        } else {
            let p = Packing::new(layout)?;
            let mut image = vec![0.0; p.h * p.w];
            let mut norms = Vec::with_capacity(parts.len());
            for (t, x) in parts.iter().enumerate() {
                let m = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let inv = if m > 0.0 && m.is_finite() {
                    1.0 / m
                } else {
                    0.0
                };
                p.put(t, x, inv, &mut image);
                norms.push(m);
            }
            Ok((
                Items {
                    values: image,
                    positions: vec![0],
                },
                norms,
            ))
        }
    }

    fn tensor(&self, values: &[f32], shape: Vec<usize>) -> Result<Tensor> {
        Ok(Tensor::from_slice(values, shape, &Device::Cpu)?.to_device(&self.device)?)
    }

    fn positions(&self, pos: &[u32]) -> Result<Tensor> {
        Ok(Tensor::from_slice(pos, pos.len(), &Device::Cpu)?.to_device(&self.device)?)
    }

    /// Run the net on a batch of items: the (wire-rounded) latents and the decoder outputs.
    pub fn run(&self, items: &Items, layout: &Layout) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = items.positions.len();
        let x = self.tensor(&items.values, self.batch_shape(n, layout)?)?;
        let pos = self.positions(&items.positions)?;
        let z = self.net.encode(&x, &pos)?;
        let zshape = z.dims().to_vec();
        let zq = self.wire_latent(&host(&z)?, n).0;
        let d = self.net.decode(&self.tensor(&zq, zshape)?, &pos)?;
        Ok((zq, host(&d)?))
    }

    /// What the receiver will see of `n` latent rows: the values (rounded to `dtype`, or
    /// dequantised), and with `latent_bits` each row's codes and scale.
    pub fn wire_latent(&self, z: &[f32], n: usize) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
        let Some(k) = self.bits else {
            return (
                z.iter().map(|v| self.dtype.round(*v)).collect(),
                Vec::new(),
                Vec::new(),
            );
        };
        let row = z.len() / n.max(1);
        let (mut vals, mut codes, mut scales) = (
            Vec::with_capacity(z.len()),
            Vec::with_capacity(z.len()),
            Vec::with_capacity(n),
        );
        for r in z.chunks(row.max(1)) {
            let s = if k == 1 {
                (r.iter().map(|v| f64::from(v.abs())).sum::<f64>() / r.len() as f64) as f32
            } else {
                r.iter().fold(0.0f32, |a, v| a.max(v.abs()))
            };
            let s = if s.is_finite() { s } else { 0.0 };
            scales.push(s);
            for v in r {
                let c = quantize(*v, s, k);
                codes.push(c);
                vals.push(dequantize(c, s, k));
            }
        }
        (vals, codes, scales)
    }

    /// Bytes of one latent row of `n` values on the wire.
    pub fn row_bytes(&self, n: usize) -> usize {
        match self.bits {
            Some(k) => 4 + (n * k as usize).div_ceil(8),
            None => n * self.dtype.bytes(),
        }
    }

    /// The client's view: latent, scales and reconstruction of every tensor.
    pub fn reconstruct(&self, parts: &[Vec<f32>], layout: &Layout) -> Result<Recon> {
        let (items, norms) = self.items(parts, layout)?;
        let (z, d) = self.run(&items, layout)?;
        if self.arch.preset.chunked() {
            let ch = Chunking::new(layout, self.arch.chunk);
            let (c, l) = (self.arch.chunk, self.arch.latent);
            let (_, codes, lscales) = self.wire_latent(&z, ch.total);
            let mut out = Recon {
                latent: Vec::new(),
                codes: Vec::new(),
                latent_scales: Vec::new(),
                scales: Vec::new(),
                xhat: Vec::new(),
            };
            for (t, x) in parts.iter().enumerate() {
                let first = ch.tensors[t].0;
                let k = ch.chunks_of(t);
                out.latent.push(z[first * l..(first + k) * l].to_vec());
                if self.bits.is_some() {
                    out.codes.push(codes[first * l..(first + k) * l].to_vec());
                    out.latent_scales.push(lscales[first..first + k].to_vec());
                }
                let mut scales = Vec::with_capacity(k);
                let mut xhat = Vec::with_capacity(x.len());
                for (j, block) in x.chunks(c).enumerate() {
                    let dj = &d[(first + j) * c..][..block.len()];
                    let s = self.scale(block, dj, norms[first + j]);
                    scales.push(s);
                    xhat.extend(dj.iter().map(|v| v * s));
                }
                out.scales.push(scales);
                out.xhat.push(xhat);
            }
            Ok(out)
        } else {
            let p = Packing::new(layout)?;
            let (_, codes, lscales) = self.wire_latent(&z, 1);
            let mut out = Recon {
                latent: vec![z],
                codes: vec![codes],
                latent_scales: vec![lscales],
                scales: Vec::new(),
                xhat: Vec::new(),
            };
            for (t, x) in parts.iter().enumerate() {
                let dt = p.get(t, &d);
                let s = self.scale(x, &dt, norms[t]);
                out.scales.push(vec![s]);
                out.xhat.push(dt.iter().map(|v| v * s).collect());
            }
            Ok(out)
        }
    }

    /// The block's scale: least-squares gain of `d` for `x`, or the normalisation `norm`.
    fn scale(&self, x: &[f32], d: &[f32], norm: f32) -> f32 {
        match self.arch.scale {
            ScaleMode::Norm => norm,
            ScaleMode::Lsq => {
                let (mut xd, mut dd) = (0.0f64, 0.0f64);
                for (a, b) in x.iter().zip(d) {
                    xd += f64::from(*a) * f64::from(*b);
                    dd += f64::from(*b) * f64::from(*b);
                }
                let g = if dd > 0.0 { xd / dd } else { 0.0 };
                if g.is_finite() && g.abs() < f64::from(f32::MAX) {
                    g as f32
                } else {
                    0.0
                }
            }
        }
    }

    /// Latent values of the whole packed image (paper preset).
    fn image_latent_len(&self, layout: &Layout) -> Result<usize> {
        let p = Packing::new(layout)?;
        Ok(IMAGE_LATENT_CHANNELS * (p.h / 64) * (p.w / 64))
    }

    /// Bytes of part 2 of the body for these flags: (latent bytes, scale bytes).
    pub fn body_sizes(&self, layout: &Layout, flags: &[bool]) -> Result<(usize, usize)> {
        let kept: Vec<usize> = (0..flags.len()).filter(|&t| !flags[t]).collect();
        if self.arch.preset.chunked() {
            let ch = Chunking::new(layout, self.arch.chunk);
            let chunks: usize = kept.iter().map(|&t| ch.chunks_of(t)).sum();
            Ok((chunks * self.row_bytes(self.arch.latent), chunks * 4))
        } else if kept.is_empty() {
            Ok((0, 0))
        } else {
            Ok((
                self.row_bytes(self.image_latent_len(layout)?),
                kept.len() * 4,
            ))
        }
    }

    fn put_row(&self, out: &mut PayloadBuilder, v: &[f32], codes: &[u32], scale: Option<f32>) {
        match (self.bits, scale) {
            (Some(k), Some(s)) => {
                out.put_f32s(&[s]);
                let mut w = out.bit_writer();
                for c in codes {
                    w.put(*c, k);
                }
                w.finish();
            }
            _ => self.put_latent(out, v),
        }
    }

    fn read_row(&self, r: &mut ByteReader<'_>, n: usize) -> Result<Vec<f32>> {
        let Some(k) = self.bits else {
            return self.read_latent(r, n);
        };
        let s = r.f32s(1)?[0];
        let mut bits = r.bits(n, k)?;
        let codes = bits.take_all()?;
        bits.finish()?;
        Ok(codes.into_iter().map(|c| dequantize(c, s, k)).collect())
    }

    fn put_latent(&self, out: &mut PayloadBuilder, v: &[f32]) {
        match self.dtype {
            LatentDtype::F16 => out.put_f16s(v),
            LatentDtype::Bf16 => out.put_bf16s(v),
            LatentDtype::F32 => out.put_f32s(v),
        }
    }

    fn read_latent(&self, r: &mut ByteReader<'_>, n: usize) -> Result<Vec<f32>> {
        match self.dtype {
            LatentDtype::F16 => r.f16s(n),
            LatentDtype::Bf16 => r.bf16s(n),
            LatentDtype::F32 => r.f32s(n),
        }
    }

    /// Write part 2 of the body (see the module docs).
    pub fn write(&self, recon: &Recon, flags: &[bool], out: &mut PayloadBuilder) {
        if self.arch.preset.chunked() {
            let l = self.arch.latent;
            for t in (0..flags.len()).filter(|&t| !flags[t]) {
                for (j, s) in recon.scales[t].iter().enumerate() {
                    out.put_f32s(&[*s]);
                    let codes = recon
                        .codes
                        .get(t)
                        .map_or(&[][..], |c| &c[j * l..(j + 1) * l]);
                    let ls = recon.latent_scales.get(t).map(|v| v[j]);
                    self.put_row(out, &recon.latent[t][j * l..(j + 1) * l], codes, ls);
                }
            }
        } else if flags.iter().any(|f| !f) {
            let ls = recon.latent_scales.first().and_then(|v| v.first().copied());
            let codes = recon.codes.first().map_or(&[][..], |c| &c[..]);
            self.put_row(out, &recon.latent[0], codes, ls);
            for t in (0..flags.len()).filter(|&t| !flags[t]) {
                out.put_f32s(&recon.scales[t]);
            }
        }
    }

    /// Read part 2 of the body and decode it: per tensor its values, `None` when flagged.
    ///
    /// # Errors
    /// Truncation or non-finite values ([`Error::MalformedPayload`]), a layout the
    /// autoencoder does not fit, a decode that overflows.
    pub fn read(
        &self,
        r: &mut ByteReader<'_>,
        layout: &Layout,
        flags: &[bool],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        self.check_layout(layout)?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; flags.len()];
        let kept: Vec<usize> = (0..flags.len()).filter(|&t| !flags[t]).collect();
        if kept.is_empty() {
            return Ok(out);
        }
        if self.arch.preset.chunked() {
            let ch = Chunking::new(layout, self.arch.chunk);
            let (c, l) = (self.arch.chunk, self.arch.latent);
            let total: usize = kept.iter().map(|&t| ch.chunks_of(t)).sum();
            // Bound the reads by the bytes present before allocating.
            let need = total * (4 + self.row_bytes(l));
            if r.remaining() < need {
                return Err(Error::malformed(format!(
                    "cgfedllm: {} bytes left, {need} needed for {total} chunks",
                    r.remaining()
                )));
            }
            let mut z = Vec::with_capacity(total * l);
            let mut scales = Vec::with_capacity(total);
            let mut pos = Vec::with_capacity(total);
            for &t in &kept {
                for j in 0..ch.chunks_of(t) {
                    scales.push(r.f32s(1)?[0]);
                    z.extend(self.read_row(r, l)?);
                    pos.push((ch.tensors[t].0 + j) as u32);
                }
            }
            let d = host(
                &self
                    .net
                    .decode(&self.tensor(&z, vec![total, l])?, &self.positions(&pos)?)?,
            )?;
            let mut k = 0;
            for &t in &kept {
                let n = ch.tensors[t].1;
                let mut v = Vec::with_capacity(n);
                for j in 0..ch.chunks_of(t) {
                    let len = c.min(n - j * c);
                    v.extend(d[k * c..k * c + len].iter().map(|x| x * scales[k]));
                    k += 1;
                }
                out[t] = Some(finite(v)?);
            }
        } else {
            let p = Packing::new(layout)?;
            let zl = self.image_latent_len(layout)?;
            let need = self.row_bytes(zl) + 4 * kept.len();
            if r.remaining() < need {
                return Err(Error::malformed(format!(
                    "cgfedllm: {} bytes left, {need} needed for the latent and scales",
                    r.remaining()
                )));
            }
            let z = self.read_row(r, zl)?;
            let scales = r.f32s(kept.len())?;
            let zt = self.tensor(&z, vec![1, IMAGE_LATENT_CHANNELS, p.h / 64, p.w / 64])?;
            let d = host(&self.net.decode(&zt, &self.positions(&[0])?)?)?;
            for (&t, s) in kept.iter().zip(scales) {
                out[t] = Some(finite(p.get(t, &d).into_iter().map(|v| v * s).collect())?);
            }
        }
        Ok(out)
    }
}

/// The k-bit code of `v` for scale `s` (see the module docs).
pub fn quantize(v: f32, s: f32, k: u32) -> u32 {
    if k == 1 {
        return u32::from(v >= 0.0);
    }
    let levels = ((1u32 << k) - 1) as f32;
    if s <= 0.0 {
        return (levels / 2.0).round() as u32;
    }
    let i = ((v / s + 1.0) * levels / 2.0).round();
    i.clamp(0.0, levels) as u32
}

/// The value code `c` stands for (see the module docs).
pub fn dequantize(c: u32, s: f32, k: u32) -> f32 {
    if k == 1 {
        return if c == 1 { s } else { -s };
    }
    let levels = ((1u32 << k) - 1) as f32;
    s * (2.0 * c as f32 / levels - 1.0)
}

fn finite(v: Vec<f32>) -> Result<Vec<f32>> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(Error::malformed(
            "cgfedllm: the decoded values overflow (scale or latent out of range)",
        ))
    }
}

/// A tensor's values as one host f32 vector.
pub fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}
