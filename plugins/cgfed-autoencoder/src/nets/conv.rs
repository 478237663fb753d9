//! The paper's "ResNet" autoencoder on the packed image (`1 × H × W`, H and W multiples
//! of 64).
//!
//! Encoder: a 3×3 stem conv (1 → 1 channel), six stride-2 stages of 3×3 conv + norm + ReLU
//! (channels 1 → 2 → 4 → 8 → 16 → 32 → 64), three residual blocks (conv-norm-ReLU-conv-norm
//! plus the input; the last without the closing ReLU, so the latent is signed). Latent:
//! 64 × H/64 × W/64, exactly 1/64 of the input elements. Decoder: three residual blocks,
//! six stride-2 4×4 transposed convs (64 → 32 → … → 2 → 1; norm + ReLU except the last),
//! a 7×7 conv and Tanh. Inputs are divided tensor by tensor by their max |x| (so they fit
//! Tanh's range).
//!
//! The paper's BatchNorm is evaluated here with each sample's own per-channel statistics
//! (instance normalisation with a learned affine): a client encodes a batch of one image,
//! and batch statistics of a training batch would not be what it sees.

use cgfed_core::candle_core::{Device, Tensor, D};
use cgfed_core::Result;

use super::{init_rng, Params};

/// Channels after the stem and after each of the six stages.
const CHANNELS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Residual blocks on each side.
const RES_BLOCKS: usize = 3;

/// The conv autoencoder.
#[derive(Debug)]
pub struct ConvAe {
    /// Its weights.
    pub params: Params,
}

impl ConvAe {
    /// A freshly initialised net.
    pub fn new(seed: u64, device: &Device) -> Result<Self> {
        let mut rng = init_rng(seed);
        let mut p = Params::default();
        let conv = |p: &mut Params,
                    rng: &mut rand_chacha::ChaCha8Rng,
                    name: &str,
                    cout: usize,
                    cin: usize,
                    k: usize|
         -> Result<()> {
            let bound = 1.0 / ((cin * k * k) as f64).sqrt();
            p.uniform(&format!("{name}/w"), &[cout, cin, k, k], bound, rng, device)?;
            p.uniform(&format!("{name}/b"), &[cout], bound, rng, device)?;
            Ok(())
        };
        let norm = |p: &mut Params, name: &str, c: usize| -> Result<()> {
            p.constant(&format!("{name}/gamma"), &[c], 1.0, device)?;
            p.constant(&format!("{name}/beta"), &[c], 0.0, device)?;
            Ok(())
        };
        conv(&mut p, &mut rng, "enc/stem", 1, 1, 3)?;
        for s in 0..6 {
            conv(
                &mut p,
                &mut rng,
                &format!("enc/down{s}"),
                CHANNELS[s + 1],
                CHANNELS[s],
                3,
            )?;
            norm(&mut p, &format!("enc/down{s}/norm"), CHANNELS[s + 1])?;
        }
        for side in ["enc", "dec"] {
            for r in 0..RES_BLOCKS {
                for c in 0..2 {
                    conv(
                        &mut p,
                        &mut rng,
                        &format!("{side}/res{r}/conv{c}"),
                        64,
                        64,
                        3,
                    )?;
                    norm(&mut p, &format!("{side}/res{r}/norm{c}"), 64)?;
                }
            }
        }
        for s in (0..6).rev() {
            // Transposed conv kernels are (c_in, c_out, k, k).
            let (cin, cout) = (CHANNELS[s + 1], CHANNELS[s]);
            let bound = 1.0 / ((cout * 16) as f64).sqrt();
            p.uniform(
                &format!("dec/up{s}/w"),
                &[cin, cout, 4, 4],
                bound,
                &mut rng,
                device,
            )?;
            p.uniform(&format!("dec/up{s}/b"), &[cout], bound, &mut rng, device)?;
            if s > 0 {
                norm(&mut p, &format!("dec/up{s}/norm"), cout)?;
            }
        }
        conv(&mut p, &mut rng, "dec/head", 1, 1, 7)?;
        Ok(Self { params: p })
    }

    fn bias(&self, x: Tensor, name: &str) -> Result<Tensor> {
        let b = self.params.get(&format!("{name}/b"));
        Ok(x.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?)
    }

    fn conv(&self, x: &Tensor, name: &str, pad: usize, stride: usize) -> Result<Tensor> {
        let w = self.params.get(&format!("{name}/w"));
        self.bias(x.conv2d(w, pad, stride, 1, 1)?, name)
    }

    /// Per-sample, per-channel normalisation with the learned affine `name`.
    fn norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let flat = x.reshape((b, c, h * w))?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        let g = self
            .params
            .get(&format!("{name}/gamma"))
            .reshape((1, c, 1))?;
        let beta = self
            .params
            .get(&format!("{name}/beta"))
            .reshape((1, c, 1))?;
        Ok(normed
            .broadcast_mul(&g)?
            .broadcast_add(&beta)?
            .reshape((b, c, h, w))?)
    }

    fn residual(&self, x: &Tensor, name: &str, last_relu: bool) -> Result<Tensor> {
        let h = self.conv(x, &format!("{name}/conv0"), 1, 1)?;
        let h = self.norm(&h, &format!("{name}/norm0"))?.relu()?;
        let h = self.conv(&h, &format!("{name}/conv1"), 1, 1)?;
        let h = (self.norm(&h, &format!("{name}/norm1"))? + x)?;
        Ok(if last_relu { h.relu()? } else { h })
    }

    /// Latent (`batch × 64 × H/64 × W/64`) of images `x` (`batch × 1 × H × W`).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv(x, "enc/stem", 1, 1)?;
        for s in 0..6 {
            h = self.conv(&h, &format!("enc/down{s}"), 1, 2)?;
            h = self.norm(&h, &format!("enc/down{s}/norm"))?.relu()?;
        }
        for r in 0..RES_BLOCKS {
            h = self.residual(&h, &format!("enc/res{r}"), r + 1 < RES_BLOCKS)?;
        }
        Ok(h)
    }

    /// Images from latents.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = z.clone();
        for r in 0..RES_BLOCKS {
            h = self.residual(&h, &format!("dec/res{r}"), true)?;
        }
        for s in (0..6).rev() {
            let w = self.params.get(&format!("dec/up{s}/w"));
            h = self.bias(h.conv_transpose2d(w, 1, 0, 2, 1)?, &format!("dec/up{s}"))?;
            if s > 0 {
                h = self.norm(&h, &format!("dec/up{s}/norm"))?.relu()?;
            }
        }
        Ok(self.conv(&h, "dec/head", 3, 1)?.tanh()?)
    }
}
