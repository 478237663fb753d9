//! TGAP (Temporal-ensemble Gradient-Aware Pre-training): the snapshot store, the
//! autoencoder's training loop, and the held-out report.
//!
//! The runner's calibration rounds are dense federated rounds on D1; every client's delta
//! after every local step, of every round, is [`observe`](cgfed_core::GradientCompressor::observe)d
//! and kept here (the temporal ensemble). `fit` holds out the snapshots of the latest
//! `tgap.heldout_rounds` rounds, trains on the rest (MSE on normalised inputs, Adam) and
//! measures the whole codec (latent rounded to the wire precision, scales as sent) on the
//! held-out snapshots next to three predictors that ignore the input: zero, the mean
//! training snapshot, and the mean snapshot with the codec's own per-block least-squares
//! gains (the side information alone).

use std::collections::BTreeMap;

use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use cgfed_core::candle_core::{Device, Tensor};
use cgfed_core::metrics::Reconstruction;
use cgfed_core::{Layout, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::{Codec, Items};
use crate::geometry::Chunking;
use crate::nets::Net;

/// One observed update.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Round it came from.
    pub round: usize,
    /// One vector per tensor.
    pub parts: Vec<Vec<f32>>,
}

/// The temporal ensemble, thinned evenly once it outgrows `max`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStore {
    /// Kept snapshots, in observation order.
    pub snaps: Vec<Snapshot>,
    max: usize,
    stride: usize,
    seen: usize,
}

impl SnapshotStore {
    /// An empty store keeping at most `max` snapshots.
    pub fn new(max: usize) -> Self {
        Self {
            snaps: Vec::new(),
            max,
            stride: 1,
            seen: 0,
        }
    }

    /// Offer a snapshot (kept if it falls on the current stride).
    pub fn push(&mut self, s: Snapshot) {
        if self.seen.is_multiple_of(self.stride) {
            self.snaps.push(s);
            if self.snaps.len() > self.max {
                let mut i = 0;
                self.snaps.retain(|_| {
                    i += 1;
                    (i - 1) % 2 == 0
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    /// Snapshots offered so far.
    pub fn seen(&self) -> usize {
        self.seen
    }
}

/// Write snapshots to a safetensors file: tensor `NNNNN` is snapshot N flattened, the
/// metadata holds each one's round (`rounds`, comma-separated) and the layout (`layout`,
/// `name:d0xd1;…`).
///
/// # Errors
/// I/O errors.
pub fn save_snapshots(path: &std::path::Path, snaps: &[Snapshot], layout: &Layout) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let data: Vec<Vec<u8>> = snaps
        .iter()
        .map(|s| {
            s.parts
                .concat()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let n = layout.numel();
    let views = data
        .iter()
        .enumerate()
        .map(|(i, b)| {
            TensorView::new(Dtype::F32, vec![n], b)
                .map(|v| (format!("{i:05}"), v))
                .map_err(|e| cgfed_core::Error::Other(format!("snapshot view: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let rounds: Vec<String> = snaps.iter().map(|s| s.round.to_string()).collect();
    let lay: Vec<String> = layout
        .specs()
        .iter()
        .map(|s| {
            let dims: Vec<String> = s.shape.iter().map(|d| d.to_string()).collect();
            format!("{}:{}", s.name, dims.join("x"))
        })
        .collect();
    let meta = std::collections::HashMap::from([
        ("rounds".to_string(), rounds.join(",")),
        ("layout".to_string(), lay.join(";")),
    ]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| cgfed_core::Error::Other(format!("safetensors: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| cgfed_core::Error::io(path, e))
}

/// Read snapshots written by [`save_snapshots`]: the layout and the snapshots.
///
/// # Errors
/// I/O errors or a file not written by [`save_snapshots`].
pub fn load_snapshots(path: &std::path::Path) -> Result<(Layout, Vec<Snapshot>)> {
    let bad = |m: String| cgfed_core::Error::InvalidInput(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| cgfed_core::Error::io(path, e))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let specs = meta
        .get("layout")
        .ok_or_else(|| bad("no layout".into()))?
        .split(';')
        .map(|s| {
            let (name, dims) = s
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("layout entry {s}")))?;
            let shape = dims
                .split('x')
                .map(|d| d.parse::<usize>().map_err(|e| bad(e.to_string())))
                .collect::<Result<Vec<usize>>>()?;
            Ok(cgfed_core::TensorSpec {
                name: name.to_string(),
                shape,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let layout = Layout::new(specs)?;
    let rounds: Vec<usize> = meta
        .get("rounds")
        .ok_or_else(|| bad("no rounds".into()))?
        .split(',')
        .map(|r| {
            r.parse()
                .map_err(|e: std::num::ParseIntError| bad(e.to_string()))
        })
        .collect::<Result<_>>()?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut snaps = Vec::with_capacity(rounds.len());
    for (i, round) in rounds.into_iter().enumerate() {
        let view = st
            .tensor(&format!("{i:05}"))
            .map_err(|e| bad(e.to_string()))?;
        let flat: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut parts = Vec::with_capacity(layout.len());
        let mut off = 0;
        for s in layout.specs() {
            let n = s.numel();
            parts.push(
                flat.get(off..off + n)
                    .ok_or_else(|| bad("short snapshot".into()))?
                    .to_vec(),
            );
            off += n;
        }
        snaps.push(Snapshot { round, parts });
    }
    Ok((layout, snaps))
}

/// Start the default preset's linear path from chunk-PCA of `items` (TGAP's first step).
///
/// # Errors
/// Tensor errors.
pub fn init_linear(codec: &mut Codec, items: &Items, seed: u64) -> Result<()> {
    if let Net::Mlp(m) = &codec.net {
        if items.positions.is_empty() {
            return Ok(());
        }
        let mut pca =
            crate::nets::PcaAe::new(codec.arch.chunk, codec.arch.latent, seed, &codec.device)?;
        pca.fit(&items.values, codec.arch.chunk, seed)?;
        m.set_linear(&pca.w)?;
    }
    Ok(())
}

/// Adam on the net's weights for `iterations` steps over random batches of `items`;
/// returns the loss of each step. Chunk-PCA is fitted in closed form instead.
pub fn train(
    codec: &mut Codec,
    items: &Items,
    layout: &Layout,
    iterations: usize,
    batch: usize,
    lr: f64,
    seed: u64,
) -> Result<Vec<f64>> {
    let item_len = codec.item_len(layout)?;
    let n = items.positions.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    if let Net::Pca(p) = &mut codec.net {
        p.fit(&items.values, item_len, seed)?;
        return Ok(Vec::new());
    }
    let mut opt = AdamW::new(
        codec.net.vars(),
        ParamsAdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cgfed_core::context::mix_seed(&[seed, 0x7CA9]));
    let b = batch.min(n);
    let mut losses = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let idx: Vec<usize> = (0..b).map(|_| rng.random_range(0..n)).collect();
        let (x, pos) = gather(items, &idx, item_len);
        let x = Tensor::from_vec(x, codec.batch_shape(b, layout)?, &Device::Cpu)?
            .to_device(&codec.device)?;
        let pos = Tensor::from_vec(pos, b, &Device::Cpu)?.to_device(&codec.device)?;
        let mut z = codec.net.encode(&x, &pos)?;
        if codec.bits.is_some() {
            // Straight-through estimator: decode the quantised latent, pass gradients to z.
            let (zq, _, _) = codec.wire_latent(&crate::codec::host(&z)?, b);
            let zq = Tensor::from_vec(zq, z.dims(), &Device::Cpu)?.to_device(&codec.device)?;
            z = (&z + (zq - &z)?.detach())?;
        }
        let y = codec.net.decode(&z, &pos)?;
        let loss = (y - &x)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
        losses.push(f64::from(loss.to_scalar::<f32>()?));
    }
    Ok(losses)
}

fn gather(items: &Items, idx: &[usize], len: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(idx.len() * len);
    let mut pos = Vec::with_capacity(idx.len());
    for &i in idx {
        x.extend_from_slice(&items.values[i * len..(i + 1) * len]);
        pos.push(items.positions[i]);
    }
    (x, pos)
}

/// Mean squared error of the net (no wire rounding) on `items`, in batches.
pub fn mse(codec: &Codec, items: &Items, layout: &Layout) -> Result<f64> {
    let len = codec.item_len(layout)?;
    let n = items.positions.len();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let step = (1 << 20) / len.max(1) + 1;
    for start in (0..n).step_by(step) {
        let idx: Vec<usize> = (start..(start + step).min(n)).collect();
        let (x, pos) = gather(items, &idx, len);
        let xt = Tensor::from_vec(x, codec.batch_shape(idx.len(), layout)?, &Device::Cpu)?
            .to_device(&codec.device)?;
        let pt = Tensor::from_vec(pos, idx.len(), &Device::Cpu)?.to_device(&codec.device)?;
        let y = codec.net.decode(&codec.net.encode(&xt, &pt)?, &pt)?;
        let e = (y - &xt)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
        sum += f64::from(e);
        count += idx.len() * len;
    }
    Ok(sum / count.max(1) as f64)
}

/// Every training item of a set of snapshots (zero chunks skipped: they carry nothing).
pub fn items_of(codec: &Codec, snaps: &[&Snapshot], layout: &Layout) -> Result<Items> {
    let len = codec.item_len(layout)?;
    let mut all = Items::default();
    for s in snaps {
        let (items, norms) = codec.items(&s.parts, layout)?;
        if codec.arch.preset.chunked() {
            for (k, &norm) in norms.iter().enumerate() {
                if norm > 0.0 {
                    all.values
                        .extend_from_slice(&items.values[k * len..(k + 1) * len]);
                    all.positions.push(items.positions[k]);
                }
            }
        } else if norms.iter().any(|&m| m > 0.0) {
            all.values.extend(items.values);
            all.positions.push(0);
        }
    }
    Ok(all)
}

/// Mean of the finite measurements.
#[derive(Debug, Default)]
struct MeanQuality {
    snr_db: Vec<f64>,
    snr_paper: Vec<f64>,
    cosine: Vec<f64>,
    rel_err: Vec<f64>,
}

impl MeanQuality {
    fn add(&mut self, q: &Reconstruction) {
        for (v, x) in [
            (&mut self.snr_db, q.snr_db),
            (&mut self.snr_paper, q.snr_paper),
            (&mut self.cosine, q.cosine),
            (&mut self.rel_err, q.rel_err),
        ] {
            if x.is_finite() {
                v.push(x);
            }
        }
    }

    fn report(&self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        for (name, v) in [
            ("snr_db", &self.snr_db),
            ("snr_paper", &self.snr_paper),
            ("cosine", &self.cosine),
            ("rel_err", &self.rel_err),
        ] {
            let m = mean(v);
            if m.is_finite() {
                out.insert(format!("{prefix}_{name}"), m);
            }
        }
    }
}

/// Held-out (and a sample of training) quality of the codec and of the input-blind
/// predictors, as `tgap_*` metrics.
pub fn evaluate(
    codec: &Codec,
    train: &[&Snapshot],
    heldout: &[&Snapshot],
    layout: &Layout,
    out: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let flat = |s: &Snapshot| s.parts.concat();
    let n = layout.numel();
    let mut mean = vec![0.0f64; n];
    for s in train {
        for (m, v) in mean.iter_mut().zip(flat(s)) {
            *m += f64::from(v);
        }
    }
    let mean: Vec<f32> = mean
        .iter()
        .map(|m| (m / train.len().max(1) as f64) as f32)
        .collect();
    let blocks = block_ranges(codec, layout);
    let (mut ae, mut zero, mut avg, mut avg_gain) = Default::default();
    let measure =
        |set: &mut MeanQuality, x: &[f32], y: &[f32]| set.add(&Reconstruction::measure(x, y));
    for s in heldout {
        let x = flat(s);
        let r = codec.reconstruct(&s.parts, layout)?;
        measure(&mut ae, &x, &r.xhat.concat());
        measure(&mut zero, &x, &vec![0.0; n]);
        measure(&mut avg, &x, &mean);
        let mut g = vec![0.0f32; n];
        for &(a, b) in &blocks {
            let (xd, dd) = x[a..b]
                .iter()
                .zip(&mean[a..b])
                .fold((0.0f64, 0.0f64), |(p, q), (u, v)| {
                    (p + f64::from(*u) * f64::from(*v), q + f64::from(*v).powi(2))
                });
            let gain = if dd > 0.0 { (xd / dd) as f32 } else { 0.0 };
            for (o, v) in g[a..b].iter_mut().zip(&mean[a..b]) {
                *o = gain * v;
            }
        }
        measure(&mut avg_gain, &x, &g);
    }
    ae.report("tgap_heldout", out);
    zero.report("tgap_zero", out);
    avg.report("tgap_mean", out);
    avg_gain.report("tgap_mean_gain", out);
    // The codec on (up to 16 of) its own training snapshots: the gap to held-out is overfitting.
    let mut fit = MeanQuality::default();
    let step = train.len().div_ceil(16).max(1);
    for s in train.iter().step_by(step) {
        let r = codec.reconstruct(&s.parts, layout)?;
        measure(&mut fit, &flat(s), &r.xhat.concat());
    }
    fit.report("tgap_train", out);
    Ok(())
}

/// The codec's scale blocks as flat element ranges: chunks, or whole tensors (paper).
fn block_ranges(codec: &Codec, layout: &Layout) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    let chunking = codec
        .arch
        .preset
        .chunked()
        .then(|| Chunking::new(layout, codec.arch.chunk));
    for (t, spec) in layout.specs().iter().enumerate() {
        let n = spec.numel();
        match &chunking {
            Some(ch) => {
                for j in 0..ch.chunks_of(t) {
                    let a = off + j * ch.chunk;
                    out.push((a, (a + ch.chunk).min(off + n)));
                }
            }
            None => out.push((off, off + n)),
        }
        off += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_thins_evenly() {
        let mut s = SnapshotStore::new(4);
        for r in 0..16 {
            s.push(Snapshot {
                round: r,
                parts: vec![],
            });
        }
        let rounds: Vec<usize> = s.snaps.iter().map(|s| s.round).collect();
        assert!(s.snaps.len() <= 4, "{rounds:?}");
        assert!(rounds
            .windows(2)
            .all(|w| w[1] - w[0] == rounds[1] - rounds[0]));
        assert_eq!(s.seen(), 16);
    }
}
