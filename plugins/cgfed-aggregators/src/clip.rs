//! Norm clipping of client updates before aggregation, shared by every aggregator
//! (key `clip_norm`).
//!
//! `clip_norm = 1.0` scales every update with `‖Δᵢ‖₂ > 1.0` down to norm 1.0;
//! `clip_norm = "median"` uses the median of this round's update norms as the bound
//! (adaptive, no tuning). Without the key nothing is clipped. The `clipped` metric counts the
//! updates scaled down.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::host::{median_of, norm};

/// The `clip_norm` key: a fixed positive bound or the round's median norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClipNorm {
    /// Clip to this L2 norm (positive, finite).
    Fixed(f64),
    /// Clip to the median of this round's update norms.
    Median,
}

/// The accepted values, for error messages.
const EXPECTED: &str = "a positive finite number or the string \"median\"";

impl<'de> Deserialize<'de> for ClipNorm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ClipNorm;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ClipNorm, E> {
                if v.is_finite() && v > 0.0 {
                    Ok(ClipNorm::Fixed(v))
                } else {
                    Err(E::custom(format!("got {v}; expected {EXPECTED}")))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ClipNorm, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClipNorm, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClipNorm, E> {
                if v == "median" {
                    Ok(ClipNorm::Median)
                } else {
                    Err(E::custom(format!("got \"{v}\"; expected {EXPECTED}")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for ClipNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClipNorm::Fixed(c) => write!(f, "{c:?}"),
            ClipNorm::Median => f.write_str("median"),
        }
    }
}

impl ClipNorm {
    /// The bound for updates with these norms.
    pub fn bound(self, norms: &[f64]) -> f64 {
        match self {
            ClipNorm::Fixed(c) => c,
            ClipNorm::Median => median_of(&mut norms.to_vec()),
        }
    }

    /// Scale every update whose L2 norm exceeds the bound down to the bound; returns how
    /// many were scaled.
    pub fn apply(self, updates: &mut [Vec<f32>]) -> usize {
        let norms: Vec<f64> = updates.iter().map(|u| norm(u)).collect();
        let bound = self.bound(&norms);
        let mut clipped = 0;
        for (u, &n) in updates.iter_mut().zip(&norms) {
            if n > bound {
                let s = bound / n;
                u.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
                clipped += 1;
            }
        }
        clipped
    }
}

/// `, clip <bound>` for [`describe`](cgfed_core::Aggregator::describe) strings, or nothing.
pub fn describe(clip: Option<ClipNorm>) -> String {
    clip.map(|c| format!(", clip {c}")).unwrap_or_default()
}

/// The `params` entry documenting `clip_norm` (shared by every aggregator's registration).
pub const PARAM: cgfed_core::Param = cgfed_core::Param {
    key: "clip_norm",
    default: "-",
    help: "clip each client update to this L2 norm before aggregating: a positive number, or \
           \"median\" (this round's median update norm); default: no clipping",
};
