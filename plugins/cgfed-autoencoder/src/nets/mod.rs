//! The autoencoders: a chunked MLP (default), the paper's conv net, chunk-PCA.
//!
//! Every net maps a batch of normalised inputs to latents and back: chunked nets take
//! `(batch, chunk)` plus the chunks' positions, the conv net `(batch, 1, H, W)`. Weights
//! are `Var`s on the configured device, initialised from a seed (PyTorch's default uniform
//! ranges), named for safetensors.

mod conv;
mod mlp;
mod pca;

use std::collections::HashMap;

use cgfed_core::candle_core::{Device, Tensor, Var};
use cgfed_core::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use conv::ConvAe;
pub use mlp::MlpAe;
pub use pca::PcaAe;

/// One of the autoencoders.
#[derive(Debug)]
pub enum Net {
    /// Chunked MLP.
    Mlp(MlpAe),
    /// The paper's ResNet-style conv autoencoder.
    Conv(ConvAe),
    /// Chunk-PCA.
    Pca(PcaAe),
}

impl Net {
    /// Latent of a batch (`pos`: chunk positions, ignored by the conv net and PCA).
    pub fn encode(&self, x: &Tensor, pos: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Net::Mlp(n) => n.encode(x, pos)?,
            Net::Conv(n) => n.encode(x)?,
            Net::Pca(n) => n.encode(x)?,
        })
    }

    /// Reconstruction from a latent batch.
    pub fn decode(&self, z: &Tensor, pos: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Net::Mlp(n) => n.decode(z, pos)?,
            Net::Conv(n) => n.decode(z)?,
            Net::Pca(n) => n.decode(z)?,
        })
    }

    /// The trainable weights (empty for PCA, which is fitted in closed form).
    pub fn vars(&self) -> Vec<Var> {
        match self {
            Net::Mlp(n) => n.params.vars(),
            Net::Conv(n) => n.params.vars(),
            Net::Pca(_) => Vec::new(),
        }
    }

    /// Every weight by name (what is saved and shipped to clients).
    pub fn named(&self) -> Vec<(String, Tensor)> {
        match self {
            Net::Mlp(n) => n.params.named(),
            Net::Conv(n) => n.params.named(),
            Net::Pca(n) => vec![("pca/w".into(), n.w.clone())],
        }
    }

    /// Replace every weight from `map` (shapes must match).
    ///
    /// # Errors
    /// A missing, extra or mis-shaped tensor.
    pub fn load(&mut self, map: &HashMap<String, Tensor>) -> Result<()> {
        let names = self.named();
        if map.len() != names.len() {
            return Err(Error::InvalidInput(format!(
                "saved autoencoder has {} tensors, this architecture {}",
                map.len(),
                names.len()
            )));
        }
        for (name, t) in &names {
            let v = map.get(name).ok_or_else(|| {
                Error::InvalidInput(format!("saved autoencoder lacks tensor `{name}`"))
            })?;
            if v.dims() != t.dims() {
                return Err(Error::InvalidInput(format!(
                    "saved tensor `{name}` has shape {:?}, this architecture {:?}",
                    v.dims(),
                    t.dims()
                )));
            }
        }
        let get = |n: &str| {
            map[n]
                .to_device(&Device::Cpu)
                .and_then(|t| t.to_dtype(cgfed_core::candle_core::DType::F32))
        };
        match self {
            Net::Mlp(n) => n.params.load(&get)?,
            Net::Conv(n) => n.params.load(&get)?,
            Net::Pca(n) => n.w = get("pca/w")?.to_device(n.w.device())?,
        }
        Ok(())
    }

    /// Number of weights.
    pub fn num_params(&self) -> usize {
        self.named().iter().map(|(_, t)| t.elem_count()).sum()
    }
}

/// Named trainable weights.
#[derive(Debug, Default)]
pub struct Params {
    vars: Vec<(String, Var)>,
}

impl Params {
    /// A `shape` weight uniform in ±`bound`, from `rng`.
    pub fn uniform(
        &mut self,
        name: &str,
        shape: &[usize],
        bound: f64,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let b = bound as f32;
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-b..=b)).collect();
        self.push(name, Tensor::from_vec(v, shape, device)?)
    }

    /// A `shape` weight filled with `value`.
    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        self.push(name, Tensor::from_vec(vec![value; n], shape, device)?)
    }

    fn push(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(out)
    }

    /// The weight called `name`.
    ///
    /// # Panics
    /// On a name the net did not create (a bug).
    pub fn get(&self, name: &str) -> &Tensor {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .unwrap_or_else(|| panic!("no weight `{name}`"))
    }

    /// Overwrite the weight called `name` with `value` (same shape).
    ///
    /// # Errors
    /// A shape mismatch.
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let var = self
            .vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no weight `{name}`"));
        var.set(&value.to_device(var.device())?)?;
        Ok(())
    }

    fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    fn named(&self) -> Vec<(String, Tensor)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    fn load(
        &mut self,
        get: &dyn Fn(&str) -> cgfed_core::candle_core::Result<Tensor>,
    ) -> Result<()> {
        for (n, v) in &self.vars {
            v.set(&get(n)?.to_device(v.device())?)?;
        }
        Ok(())
    }
}

/// A seeded generator for a net's initialisation.
pub fn init_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(cgfed_core::context::mix_seed(&[seed, 0xAE11_0001]))
}

/// `x·Wᵀ + b` for `x` of shape `(batch, in)`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> cgfed_core::candle_core::Result<Tensor> {
    x.matmul(&w.t()?)?.broadcast_add(b)
}
