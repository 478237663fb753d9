//! Deterministic random initialisation.
//!
//! candle's `randn`/`rand` are not seedable, so values are drawn on the host from a
//! [`ChaCha8Rng`] and uploaded with `Tensor::from_vec`. Every tensor gets its own stream,
//! seeded from the experiment seed and the tensor's name ([`tensor_seed`]), so a tensor's
//! initial values do not depend on which other tensors exist or in which order they are
//! created (adding a LoRA target does not change the others' initial values).

use candle_core::{DType, Device, Tensor};
use cgfed_core::context::mix_seed;
use cgfed_core::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seed of the random stream for the tensor called `name`.
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a: stable across platforms and Rust versions (unlike `DefaultHasher`).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix_seed(&[seed, h])
}

/// A tensor of shape `shape` with independent `N(0, std²)` values (Box–Muller).
pub fn normal(
    seed: u64,
    name: &str,
    shape: &[usize],
    std: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(tensor_seed(seed, name));
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // u1 in (0, 1] so the log is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        values.push(std * r * c);
        values.push(std * r * s);
    }
    values.truncate(n);
    host_tensor(values, shape, dtype, device)
}

/// A tensor of shape `shape` with independent `U(-bound, bound)` values.
pub fn uniform(
    seed: u64,
    name: &str,
    shape: &[usize],
    bound: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(tensor_seed(seed, name));
    let values = (0..n)
        .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
        .collect();
    host_tensor(values, shape, dtype, device)
}

/// Upload host `f64` values as a tensor of `dtype` (rounded once, on the host for f32).
pub fn host_tensor(
    values: Vec<f64>,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = match dtype {
        DType::F64 => Tensor::from_vec(values, shape, device)?,
        DType::F32 => {
            let v: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
            Tensor::from_vec(v, shape, device)?
        }
        other => Tensor::from_vec(values, shape, device)?.to_dtype(other)?,
    };
    Ok(t)
}
