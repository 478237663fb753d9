//! Fused attention softmax: scale, causal mask, optional key-padding bias and softmax over
//! the keys in one pass, with a hand-written backward.
//!
//! The composition `softmax(scores · s + mask)` runs an affine, a broadcast add and candle-nn's
//! softmax (`max`, `sub`, `exp`, `sum`, `div`) forward, and about a dozen passes backward
//! (`div`'s backward alone is `sqr`, `mul`, `div`, `neg`, and every broadcast is summed back).
//! The fused op makes one pass each way; its backward is
//! `dx = s · p ⊙ (g − Σ_j g_j p_j)`, needing only the probabilities it returned.
//!
//! Rows may stack several query heads that share one key/value head (grouped-query attention
//! without `repeat_kv` copies): a scores tensor `[b, kv_heads, rep · t, t]` holds `rep` query
//! heads per kv head, and row `r` is the query at position `r mod t`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, D};
use cgfed_core::{Error, Result};

use super::kernel::{par_rows, run_kernel, Kernel, Real};

/// Attention probabilities `softmax_j(scale · scores[.., r, j] + bias[b, j])` over the keys
/// `j ≤ r mod t` (causal), zero for `j > r mod t`.
///
/// `key_bias` is an additive per-key bias, e.g. a large negative number for padded keys; it is
/// not differentiated. Differentiable in `scores`. On the CPU with f32 or f64 this is a fused
/// custom op; elsewhere (CUDA, half precision) it is [`composed`].
///
/// # Shapes
/// `scores` `[b, g, rep · t, t]`, `key_bias` `[b, t]` → `[b, g, rep · t, t]`.
///
/// # Errors
/// [`Error::InvalidInput`] for other shapes, or when dtypes or devices differ.
pub fn causal_softmax(scores: &Tensor, scale: f64, key_bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, _, rows, t) = scores.dims4().map_err(|_| {
        Error::InvalidInput(format!(
            "causal_softmax: scores must be [batch, groups, rep * seq, seq], got {:?}",
            scores.dims()
        ))
    })?;
    if t == 0 || rows % t != 0 {
        return Err(Error::InvalidInput(format!(
            "causal_softmax: scores {:?} need a row count that is a multiple of the key count",
            scores.dims()
        )));
    }
    if let Some(bias) = key_bias {
        if bias.dims() != [b, t]
            || bias.dtype() != scores.dtype()
            || !bias.device().same_device(scores.device())
        {
            return Err(Error::InvalidInput(format!(
                "causal_softmax: key bias must be [{b}, {t}] {} on {:?}, got {:?} {} on {:?}",
                scores.dtype().as_str(),
                scores.device().location(),
                bias.dims(),
                bias.dtype().as_str(),
                bias.device().location()
            )));
        }
    }
    let fused = scores.device().is_cpu()
        && matches!(scores.dtype(), DType::F32 | DType::F64)
        && !key_bias.is_some_and(|k| k.track_op());
    if !fused {
        return composed(scores, scale, key_bias);
    }
    let op = CausalSoftmax { scale };
    let scores = scores.contiguous()?;
    Ok(match key_bias {
        None => scores.apply_op1(op)?,
        Some(bias) => scores.apply_op2(&bias.contiguous()?, op)?,
    })
}

/// The same function from differentiable candle ops (the fallback, and the tests' oracle).
///
/// # Shapes
/// As [`causal_softmax`].
///
/// # Errors
/// Candle errors on mismatched shapes.
pub fn composed(scores: &Tensor, scale: f64, key_bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, _, rows, t) = scores.dims4()?;
    let neg = if scores.dtype() == DType::F16 {
        -6.0e4
    } else {
        f32::NEG_INFINITY
    };
    let mask: Vec<f32> = (0..rows)
        .flat_map(|r| (0..t).map(move |j| if j <= r % t { 0.0 } else { neg }))
        .collect();
    let mask = Tensor::from_vec(mask, (rows, t), scores.device())?.to_dtype(scores.dtype())?;
    let mut x = (scores * scale)?.broadcast_add(&mask)?;
    if let Some(bias) = key_bias {
        x = x.broadcast_add(&bias.reshape((b, 1, 1, t))?)?;
    }
    Ok(candle_nn::ops::softmax(&x, candle_core::D::Minus1)?)
}

/// The custom op: `(scores[, key_bias]) → probabilities`.
struct CausalSoftmax {
    scale: f64,
}

impl CausalSoftmax {
    /// The forward kernel for a scores layout `[b, g, rows, t]`.
    fn kernel(&self, l: &Layout) -> candle_core::Result<Fwd> {
        let (_, g, rows, t) = l.shape().dims4()?;
        Ok(Fwd {
            scale: self.scale,
            t,
            rows_per_batch: g * rows,
        })
    }

    /// `dscores` from the probabilities `p` and their gradient `g`.
    fn backward(&self, p: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let bwd = Bwd {
            scale: self.scale,
            t: p.dim(D::Minus1)?,
        };
        p.apply_op2_no_bwd(&g.contiguous()?, &bwd)
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "cgfed-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((run_kernel(&self.kernel(l)?, &[(s, l)])?, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        Ok(Some(self.backward(p, g)?))
    }
}

impl CustomOp2 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "cgfed-causal-softmax-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = run_kernel(&self.kernel(l1)?, &[(s1, l1), (s2, l2)])?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _bias: &Tensor,
        p: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // `causal_softmax` only takes this path when the bias is untracked.
        if !x.track_op() {
            return Ok((None, None));
        }
        Ok((Some(self.backward(p, g)?), None))
    }
}

/// The forward kernel on contiguous scores `[n_rows, t]` (and a bias `[b, t]`), with
/// `rows_per_batch` rows per batch element.
struct Fwd {
    scale: f64,
    t: usize,
    rows_per_batch: usize,
}

impl Kernel for Fwd {
    const NAME: &'static str = "causal_softmax";
    const INPUTS: &'static [&'static str] = &["scores", "key bias"];

    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (x, bias, t) = (inputs[0], inputs.get(1), self.t);
        let scale = T::from_f64(self.scale);
        let mut y = vec![T::zero(); x.len()];
        par_rows(&mut y, t, |first, block| {
            for (i, out) in block.chunks_exact_mut(t).enumerate() {
                let r = first + i;
                let n = r % t + 1; // keys 0..n are visible
                let xs = &x[r * t..r * t + n];
                let out = &mut out[..n];
                match bias {
                    None => out.iter_mut().zip(xs).for_each(|(o, &v)| *o = v * scale),
                    Some(b) => {
                        let at = (r / self.rows_per_batch) * t;
                        out.iter_mut()
                            .zip(xs.iter().zip(&b[at..at + n]))
                            .for_each(|(o, (&v, &b))| *o = v * scale + b)
                    }
                }
                let max = out
                    .iter()
                    .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
                let mut sum = T::zero();
                for o in out.iter_mut() {
                    *o = (*o - max).exp();
                    sum += *o;
                }
                let inv = T::one() / sum;
                out.iter_mut().for_each(|o| *o *= inv);
            }
        });
        Ok(y)
    }
}

/// Backward op: `(p, g) → scale · p ⊙ (g − Σ_j g_j p_j)` row by row (`t` keys per row).
struct Bwd {
    scale: f64,
    t: usize,
}

impl Kernel for Bwd {
    const NAME: &'static str = "causal_softmax backward";
    const INPUTS: &'static [&'static str] = &["probabilities", "output gradient"];

    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (p, g, t) = (inputs[0], inputs[1], self.t);
        let scale = T::from_f64(self.scale);
        let mut dx = vec![T::zero(); p.len()];
        par_rows(&mut dx, t, |first, block| {
            for (i, out) in block.chunks_exact_mut(t).enumerate() {
                // Masked keys have p = 0 and get dx = 0: only the visible prefix is touched.
                let r = first + i;
                let n = r % t + 1;
                let (ps, gs) = (&p[r * t..r * t + n], &g[r * t..r * t + n]);
                let dot = ps
                    .iter()
                    .zip(gs)
                    .fold(T::zero(), |acc, (&p, &g)| acc + p * g);
                out[..n]
                    .iter_mut()
                    .zip(ps.iter().zip(gs))
                    .for_each(|(o, (&p, &g))| *o = scale * p * (g - dot));
            }
        });
        Ok(dx)
    }
}

impl CustomOp2 for Bwd {
    fn name(&self) -> &'static str {
        "cgfed-causal-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((run_kernel(self, &[(s1, l1), (s2, l2)])?, l1.shape().clone()))
    }
}
