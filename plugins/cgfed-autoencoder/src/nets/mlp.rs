//! The default: a chunked autoencoder with a linear path and a nonlinear residual branch.
//!
//! Encoder `z = Lₑx + W₂·gelu(W₁x + b₁ + Pₑ[pos]) + b₂`, decoder
//! `x̂ = L_d z + W₄·gelu(W₃z + b₃ + P_d[pos]) + b₄`: the linear maps `Lₑ`, `L_d` start as
//! chunk-PCA of the training chunks (set by TGAP before Adam) and the branch's output
//! layers start at zero, so training starts from the PCA codec and can only move where
//! the data pays; one hidden layer each way, a **linear output head** (no Tanh: updates
//! are not bounded), optional learned per-position embeddings `Pₑ, P_d` (which tensor, and
//! where in it, a chunk comes from). `hidden = 0` drops the branch (a linear AE trained by
//! Adam from PCA). Inputs are chunks divided by their RMS.

use cgfed_core::candle_core::{Device, Tensor};
use cgfed_core::Result;

use super::{init_rng, linear, Params};

/// The chunked MLP autoencoder.
#[derive(Debug)]
pub struct MlpAe {
    /// Its weights.
    pub params: Params,
    positions: bool,
    branch: bool,
}

impl MlpAe {
    /// A freshly initialised net for `chunk`-element chunks, `latent` values per chunk,
    /// `hidden` units, and `positions` embeddings rows (0: none).
    pub fn new(
        chunk: usize,
        latent: usize,
        hidden: usize,
        positions: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = init_rng(seed);
        let mut p = Params::default();
        let fan = |n: usize| 1.0 / (n as f64).sqrt();
        p.uniform("enc/lin", &[latent, chunk], fan(chunk), &mut rng, device)?;
        p.uniform("dec/lin", &[chunk, latent], fan(latent), &mut rng, device)?;
        if hidden > 0 {
            p.uniform("enc/w1", &[hidden, chunk], fan(chunk), &mut rng, device)?;
            p.uniform("enc/b1", &[hidden], fan(chunk), &mut rng, device)?;
            p.constant("enc/w2", &[latent, hidden], 0.0, device)?;
            p.constant("enc/b2", &[latent], 0.0, device)?;
            p.uniform("dec/w3", &[hidden, latent], fan(latent), &mut rng, device)?;
            p.uniform("dec/b3", &[hidden], fan(latent), &mut rng, device)?;
            p.constant("dec/w4", &[chunk, hidden], 0.0, device)?;
            p.constant("dec/b4", &[chunk], 0.0, device)?;
        }
        if positions > 0 && hidden > 0 {
            p.constant("enc/pos", &[positions, hidden], 0.0, device)?;
            p.constant("dec/pos", &[positions, hidden], 0.0, device)?;
        }
        Ok(Self {
            params: p,
            positions: positions > 0 && hidden > 0,
            branch: hidden > 0,
        })
    }

    /// Set the linear path to the PCA directions `w` (`latent × chunk`, orthonormal rows):
    /// `Lₑ = w`, `L_d = wᵀ`.
    pub fn set_linear(&self, w: &Tensor) -> Result<()> {
        self.params.set("enc/lin", w)?;
        self.params.set("dec/lin", &w.t()?.contiguous()?)?;
        Ok(())
    }

    fn hidden(&self, x: &Tensor, w: &str, b: &str, emb: &str, pos: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let mut h = linear(x, p.get(w), p.get(b))?;
        if self.positions {
            h = (h + p.get(emb).index_select(pos, 0)?)?;
        }
        Ok(h.gelu()?)
    }

    /// Latents of `x` (`batch × chunk`), positions `pos` (`batch`, u32).
    pub fn encode(&self, x: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let lin = x.matmul(&self.params.get("enc/lin").t()?)?;
        if !self.branch {
            return Ok(lin);
        }
        let h = self.hidden(x, "enc/w1", "enc/b1", "enc/pos", pos)?;
        Ok((lin + linear(&h, self.params.get("enc/w2"), self.params.get("enc/b2"))?)?)
    }

    /// Chunks from latents `z` (`batch × latent`).
    pub fn decode(&self, z: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let lin = z.matmul(&self.params.get("dec/lin").t()?)?;
        if !self.branch {
            return Ok(lin);
        }
        let h = self.hidden(z, "dec/w3", "dec/b3", "dec/pos", pos)?;
        Ok((lin + linear(&h, self.params.get("dec/w4"), self.params.get("dec/b4"))?)?)
    }
}
