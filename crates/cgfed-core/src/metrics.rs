//! Reconstruction-quality metrics between a true update `x` and its reconstruction `x̂`.
//!
//! All computed in f64 over the flattened values:
//!
//! - [`snr_db`] `= 10·log10(‖x‖² / ‖x − x̂‖²)`
//! - [`snr_paper`] `= ‖x‖² / (‖x − x̂‖²/n)` (the CG-FedLLM paper's definition)
//! - [`cosine`] `= ⟨x, x̂⟩ / (‖x‖·‖x̂‖)`
//! - [`rel_err`] `= ‖x − x̂‖/‖x‖`
//!
//! Exact reconstruction gives an infinite SNR (written `null` in JSON). A zero `x` gives
//! NaN for the ratios that divide by `‖x‖`.

fn sums(x: &[f32], y: &[f32]) -> (f64, f64, f64, f64) {
    assert_eq!(x.len(), y.len(), "metric inputs must have equal length");
    let (mut xx, mut yy, mut xy, mut ee) = (0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a as f64, b as f64);
        xx += a * a;
        yy += b * b;
        xy += a * b;
        ee += (a - b) * (a - b);
    }
    (xx, yy, xy, ee)
}

/// Signal-to-noise ratio in decibels: `10·log10(‖x‖² / ‖x − x̂‖²)`.
///
/// # Panics
/// If the slices differ in length (a programming error, not an input error).
pub fn snr_db(x: &[f32], x_hat: &[f32]) -> f64 {
    let (xx, _, _, ee) = sums(x, x_hat);
    10.0 * (xx / ee).log10()
}

/// The CG-FedLLM paper's SNR: `‖x‖² / (‖x − x̂‖²/n)` (a plain ratio, not dB).
///
/// # Panics
/// If the slices differ in length.
pub fn snr_paper(x: &[f32], x_hat: &[f32]) -> f64 {
    let (xx, _, _, ee) = sums(x, x_hat);
    xx / (ee / x.len() as f64)
}

/// Cosine similarity of `x` and `x̂`.
///
/// # Panics
/// If the slices differ in length.
pub fn cosine(x: &[f32], x_hat: &[f32]) -> f64 {
    let (xx, yy, xy, _) = sums(x, x_hat);
    xy / (xx.sqrt() * yy.sqrt())
}

/// Relative error `‖x − x̂‖/‖x‖`.
///
/// # Panics
/// If the slices differ in length.
pub fn rel_err(x: &[f32], x_hat: &[f32]) -> f64 {
    let (xx, _, _, ee) = sums(x, x_hat);
    (ee / xx).sqrt()
}

/// All four metrics at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconstruction {
    /// See [`snr_db`].
    pub snr_db: f64,
    /// See [`snr_paper`].
    pub snr_paper: f64,
    /// See [`cosine`].
    pub cosine: f64,
    /// See [`rel_err`].
    pub rel_err: f64,
}

impl Reconstruction {
    /// Compute every metric in one pass.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn measure(x: &[f32], x_hat: &[f32]) -> Self {
        let (xx, yy, xy, ee) = sums(x, x_hat);
        Self {
            snr_db: 10.0 * (xx / ee).log10(),
            snr_paper: xx / (ee / x.len() as f64),
            cosine: xy / (xx.sqrt() * yy.sqrt()),
            rel_err: (ee / xx).sqrt(),
        }
    }
}
