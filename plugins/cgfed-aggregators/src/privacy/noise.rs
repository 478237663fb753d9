//! The Gaussian mechanism's noise: i.i.d. `N(0, std²)` on every element of an update.

use cgfed_core::{Error, Result, Update};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

use super::map_values;

/// `update + z` with `z` i.i.d. `N(0, std²)` per element, drawn from a ChaCha20 stream
/// seeded with `seed` (e.g. `cgfed_core::context::mix_seed(&[seed, round, client, stream])`).
///
/// Deterministic: the same update, `std` and `seed` give the same result on every machine.
/// Elements take their noise in the update's canonical order (tensors by name, then
/// row-major), one f64 standard normal each, scaled and added in f64 and rounded to f32.
/// The result has the input's layout and device (its dtype is f32).
///
/// `std = 0` returns the update unchanged.
///
/// # Errors
/// [`Error::InvalidInput`] when `std` is not finite and ≥ 0, or the update holds a NaN or
/// an infinity.
pub fn add_gaussian_noise(update: &Update, std: f64, seed: u64) -> Result<Update> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(Error::InvalidInput(format!(
            "noise standard deviation must be a finite number >= 0, got {std}"
        )));
    }
    update.check_finite()?;
    if std == 0.0 {
        return Ok(update.clone());
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    map_values(update, |v| {
        let z: f64 = rng.sample(StandardNormal);
        (v as f64 + std * z) as f32
    })
}
