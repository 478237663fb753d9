//! The default: a chunked MLP autoencoder.
//!
//! Encoder `z = W₂·gelu(W₁x + b₁ + Pₑ[pos]) + b₂`, decoder
//! `x̂ = W₄·gelu(W₃z + b₃ + P_d[pos]) + b₄`: one hidden layer each way, a **linear output
//! head** (no Tanh: updates are not bounded), and optional learned per-position embeddings
//! `Pₑ, P_d` (which tensor, and where in it, a chunk comes from). Inputs are chunks divided
//! by their RMS.

use cgfed_core::candle_core::{Device, Tensor};
use cgfed_core::Result;

use super::{init_rng, linear, Params};

/// The chunked MLP autoencoder.
#[derive(Debug)]
pub struct MlpAe {
    /// Its weights.
    pub params: Params,
    positions: bool,
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
        p.uniform("enc/w1", &[hidden, chunk], fan(chunk), &mut rng, device)?;
        p.uniform("enc/b1", &[hidden], fan(chunk), &mut rng, device)?;
        p.uniform("enc/w2", &[latent, hidden], fan(hidden), &mut rng, device)?;
        p.uniform("enc/b2", &[latent], fan(hidden), &mut rng, device)?;
        p.uniform("dec/w3", &[hidden, latent], fan(latent), &mut rng, device)?;
        p.uniform("dec/b3", &[hidden], fan(latent), &mut rng, device)?;
        p.uniform("dec/w4", &[chunk, hidden], fan(hidden), &mut rng, device)?;
        p.uniform("dec/b4", &[chunk], fan(hidden), &mut rng, device)?;
        if positions > 0 {
            p.constant("enc/pos", &[positions, hidden], 0.0, device)?;
            p.constant("dec/pos", &[positions, hidden], 0.0, device)?;
        }
        Ok(Self {
            params: p,
            positions: positions > 0,
        })
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
        let h = self.hidden(x, "enc/w1", "enc/b1", "enc/pos", pos)?;
        Ok(linear(
            &h,
            self.params.get("enc/w2"),
            self.params.get("enc/b2"),
        )?)
    }

    /// Chunks from latents `z` (`batch × latent`).
    pub fn decode(&self, z: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let h = self.hidden(z, "dec/w3", "dec/b3", "dec/pos", pos)?;
        Ok(linear(
            &h,
            self.params.get("dec/w4"),
            self.params.get("dec/b4"),
        )?)
    }
}
