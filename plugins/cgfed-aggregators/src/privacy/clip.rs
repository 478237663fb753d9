//! Client-level clipping: bound the global L2 norm of a whole update (all tensors together).

use cgfed_core::{Error, Result, Update};

use super::map_values;
use crate::host::norm;

/// Relative safety margin of the clipping factor. Scaling in f64 and rounding each value to
/// f32 can lengthen the vector by up to 2⁻²⁴ relative; shrinking the factor by 2⁻²⁰ keeps
/// the stored norm at or below `max_norm`, as the sensitivity bound requires.
const CLIP_MARGIN: f64 = 1.0 / (1u64 << 20) as f64;

/// The global L2 norm `‖Δ‖₂ = √(Σ over every tensor and element of x²)`, accumulated in f64.
///
/// # Errors
/// [`Error::InvalidInput`] naming the tensor when a value is NaN or infinite.
pub fn l2_norm(update: &Update) -> Result<f64> {
    update.check_finite()?;
    let mut sum = 0.0f64;
    update.for_each_host(|_, _, values| {
        sum += norm(values).powi(2);
        Ok(())
    })?;
    Ok(sum.sqrt())
}

/// Clip `update` to global L2 norm at most `max_norm` (the DP-FedAvg clipping bound `S`):
/// `Δ · min(1, S/‖Δ‖₂)`. Returns the clipped update and the norm before clipping.
///
/// An update already within the bound is returned unchanged (same tensors, bit for bit).
/// A longer one is scaled in f64 and stored as f32 on the same device with the same layout;
/// its norm is then within about 1e-6 relative below `S`, never above (the factor is
/// shrunk by 2⁻²⁰ to absorb f32 rounding). Unlike the aggregators' `clip_norm`
/// ([`crate::clip`]), this is a hard bound, as a DP sensitivity must be.
///
/// # Errors
/// [`Error::InvalidInput`] when `max_norm` is not finite and > 0, or the update holds a NaN
/// or an infinity.
pub fn clip_update(update: &Update, max_norm: f64) -> Result<(Update, f64)> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::InvalidInput(format!(
            "clipping bound must be a finite number > 0, got {max_norm}"
        )));
    }
    let norm = l2_norm(update)?;
    if norm <= max_norm {
        return Ok((update.clone(), norm));
    }
    let factor = max_norm / norm * (1.0 - CLIP_MARGIN);
    Ok((map_values(update, |v| (v as f64 * factor) as f32)?, norm))
}
