//! Chunk-PCA: the linear autoencoder `z = W·x`, `x̂ = Wᵀ·z` whose rows are the top
//! `latent` principal directions of the normalised TGAP chunks (uncentred: updates are
//! zero-mean by symmetry, and the mean predictor is reported separately). Fitted by
//! orthogonal iteration on the chunks' second-moment matrix.

use cgfed_core::candle_core::{DType, Device, Tensor};
use cgfed_core::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// The linear autoencoder.
#[derive(Debug)]
pub struct PcaAe {
    /// `latent × chunk`, orthonormal rows.
    pub w: Tensor,
}

/// Orthogonal-iteration steps of [`PcaAe::fit`].
const ITERATIONS: usize = 150;

impl PcaAe {
    /// A net with random orthonormal rows (what a run starts from before `fit`).
    pub fn new(chunk: usize, latent: usize, seed: u64, device: &Device) -> Result<Self> {
        let q = random_orthonormal(chunk, latent, seed);
        Ok(Self {
            w: Tensor::from_vec(q, (latent, chunk), device)?,
        })
    }

    /// Fit the top `latent` directions of `items` (`n × chunk`, row-major).
    ///
    /// # Errors
    /// No items, or a tensor error.
    pub fn fit(&mut self, items: &[f32], chunk: usize, seed: u64) -> Result<()> {
        let n = items.len() / chunk;
        if n == 0 {
            return Err(Error::InvalidInput(
                "chunk-PCA needs at least one chunk".into(),
            ));
        }
        let device = self.w.device().clone();
        let latent = self.w.dim(0)?;
        let x = Tensor::from_slice(items, (n, chunk), &Device::Cpu)?.to_dtype(DType::F64)?;
        let s = x.t()?.matmul(&x)?; // chunk × chunk
        let mut q = random_orthonormal(chunk, latent, seed)
            .into_iter()
            .map(f64::from)
            .collect::<Vec<f64>>();
        for _ in 0..ITERATIONS {
            let qt = Tensor::from_vec(q, (latent, chunk), &Device::Cpu)?;
            let y = qt.matmul(&s)?; // rows: (S·q_i)ᵀ
            q = y.flatten_all()?.to_vec1::<f64>()?;
            gram_schmidt(&mut q, latent, chunk);
        }
        let q32: Vec<f32> = q.iter().map(|&v| v as f32).collect();
        self.w = Tensor::from_vec(q32, (latent, chunk), &device)?;
        Ok(())
    }

    /// `x·Wᵀ`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w.t()?)?)
    }

    /// `z·W`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.matmul(&self.w)?)
    }
}

fn random_orthonormal(chunk: usize, latent: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(cgfed_core::context::mix_seed(&[seed, 0x9CA0]));
    let mut q: Vec<f64> = (0..chunk * latent)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    gram_schmidt(&mut q, latent, chunk);
    q.iter().map(|&v| v as f32).collect()
}

/// Orthonormalise the `rows` rows (of length `len`) of `q` in place (modified
/// Gram–Schmidt, twice for stability); a vanishing row becomes a unit basis vector.
fn gram_schmidt(q: &mut [f64], rows: usize, len: usize) {
    for _pass in 0..2 {
        for i in 0..rows {
            for j in 0..i {
                let dot: f64 = (0..len).map(|k| q[i * len + k] * q[j * len + k]).sum();
                for k in 0..len {
                    q[i * len + k] -= dot * q[j * len + k];
                }
            }
            let norm = (0..len).map(|k| q[i * len + k].powi(2)).sum::<f64>().sqrt();
            if norm > 1e-12 {
                for k in 0..len {
                    q[i * len + k] /= norm;
                }
            } else {
                for k in 0..len {
                    q[i * len + k] = f64::from(u8::from(k == i % len));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_planted_subspace() {
        // Chunks of 16 living (up to small noise) in the span of e0 and e5.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut items = Vec::new();
        for _ in 0..400 {
            let a: f64 = StandardNormal.sample(&mut rng);
            let b: f64 = StandardNormal.sample(&mut rng);
            for k in 0..16 {
                let noise: f64 = StandardNormal.sample(&mut rng);
                let v = match k {
                    0 => 3.0 * a,
                    5 => 2.0 * b,
                    _ => 0.01 * noise,
                };
                items.push(v as f32);
            }
        }
        let mut p = PcaAe::new(16, 2, 0, &Device::Cpu).unwrap();
        p.fit(&items, 16, 0).unwrap();
        let w = p.w.to_vec2::<f32>().unwrap();
        let energy = |k: usize| w.iter().map(|r| r[k].powi(2)).sum::<f32>();
        assert!(energy(0) > 0.99 && energy(5) > 0.99, "{w:?}");
        let x = Tensor::from_slice(&items[..16], (1, 16), &Device::Cpu).unwrap();
        let y = p
            .decode(&p.encode(&x).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((y[0][0] - items[0]).abs() < 0.05);
    }
}
