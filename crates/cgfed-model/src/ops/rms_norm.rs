//! Fused RMSNorm with a hand-written backward.
//!
//! `y = x / sqrt(mean(x²) + eps) * w` over the last dimension, in one pass per row, where
//! [`candle_nn::ops::rms_norm_slow`] takes six elementwise/reduction ops forward and about
//! twice as many backward. candle-nn's own fused `rms_norm` has no backward; this one does:
//! for `x` always, for `w` only when `w` is tracked (a [`candle_core::Var`] or computed
//! from one), so a frozen norm weight costs nothing.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType, D};
use cgfed_core::{Error, Result};

/// RMSNorm over the last dimension: `y = x / sqrt(mean(x²) + eps) * w`.
///
/// Differentiable in `x` and `w`. On the CPU with f32 or f64 this is a fused custom op
/// (row statistics accumulated in f64); elsewhere (CUDA, half precision) it is
/// [`candle_nn::ops::rms_norm_slow`], which has the same values and gradients.
///
/// # Shapes
/// `x` `[..., d]`, `w` `[d]` → `[..., d]`.
///
/// # Errors
/// [`Error::InvalidInput`] when `w` is not `[d]`, or `x` and `w` differ in dtype or device.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if w.dims() != [d] {
        return Err(Error::InvalidInput(format!(
            "rms_norm weight has shape {:?}, expected [{d}] for input of shape {:?}",
            w.dims(),
            x.dims()
        )));
    }
    if x.dtype() != w.dtype() || !x.device().same_device(w.device()) {
        return Err(Error::InvalidInput(format!(
            "rms_norm input is {} on {:?}, weight is {} on {:?}",
            x.dtype().as_str(),
            x.device().location(),
            w.dtype().as_str(),
            w.device().location()
        )));
    }
    if !fused(x) {
        return Ok(candle_nn::ops::rms_norm_slow(x, w, eps)?);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, RmsNorm { eps: eps as f64 })?)
}

/// Whether the fused CPU kernels apply to `x` (CPU, f32 or f64).
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// The contiguous slice a layout views, or an error for a strided one.
fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("rms_norm: {what} must be contiguous"),
    }
}

/// `1 / sqrt(mean(row²) + eps)`, accumulated in f64.
fn inv_rms<T: WithDType>(row: &[T], eps: f64) -> T {
    let ss: f64 = row
        .iter()
        .map(|&v| {
            let v = v.to_f64();
            v * v
        })
        .sum();
    T::from_f64(1.0 / (ss / row.len() as f64 + eps).sqrt())
}

/// Forward op: `(x, w) → y`.
struct RmsNorm {
    eps: f64,
}

impl RmsNorm {
    fn fwd<T: WithDType>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let d = w.len();
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let r = inv_rms(row, self.eps);
            y.extend(row.iter().zip(w).map(|(&v, &wi)| v * r * wi));
        }
        y
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "cgfed-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                f32::to_cpu_storage_owned(self.fwd::<f32>(slice(s1, l1, "x")?, slice(s2, l2, "w")?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                f64::to_cpu_storage_owned(self.fwd::<f64>(slice(s1, l1, "x")?, slice(s2, l2, "w")?))
            }
            _ => candle_core::bail!(
                "rms_norm: unsupported dtypes {:?}/{:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let with_x = x.track_op();
        let with_w = w.track_op();
        if !with_x && !with_w {
            return Ok((None, None));
        }
        let g = g.contiguous()?;
        let bwd = RmsNormBwd {
            eps: self.eps,
            with_x,
            with_w,
        };
        // One buffer: `dx` (x's element count, when wanted) followed by `dw` (`d`, when wanted).
        let out = x.apply_op3_no_bwd(w, &g, &bwd)?;
        let n = if with_x { x.elem_count() } else { 0 };
        let dx = if with_x {
            Some(out.narrow(0, 0, n)?.reshape(x.shape())?)
        } else {
            None
        };
        let dw = if with_w {
            Some(out.narrow(0, n, w.elem_count())?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Backward op: `(x, w, dy) → [dx…, dw…]` (flat), each part only when asked for.
struct RmsNormBwd {
    eps: f64,
    with_x: bool,
    with_w: bool,
}

impl RmsNormBwd {
    /// With `r = 1/rms(x)`, `x̂ = x r`, `u = dy ⊙ w`:
    /// `dx = r (u − x̂ mean(u ⊙ x̂))`, `dw = Σ_rows dy ⊙ x̂`.
    fn run<T: WithDType>(&self, x: &[T], w: &[T], g: &[T]) -> Vec<T> {
        let d = w.len();
        let n = if self.with_x { x.len() } else { 0 };
        let mut out = Vec::with_capacity(n + if self.with_w { d } else { 0 });
        let mut dw = vec![0f64; if self.with_w { d } else { 0 }];
        for (row, gr) in x.chunks_exact(d).zip(g.chunks_exact(d)) {
            let r = inv_rms(row, self.eps);
            if self.with_x {
                // mean(u ⊙ x̂) = r/d · Σ dy w x
                let dot: f64 = row
                    .iter()
                    .zip(gr)
                    .zip(w)
                    .map(|((&v, &gi), &wi)| (v * gi * wi).to_f64())
                    .sum();
                let c = T::from_f64(dot / d as f64) * r * r;
                out.extend(
                    row.iter()
                        .zip(gr)
                        .zip(w)
                        .map(|((&v, &gi), &wi)| r * (gi * wi - v * c)),
                );
            }
            if self.with_w {
                for ((acc, &v), &gi) in dw.iter_mut().zip(row).zip(gr) {
                    *acc += (gi * v * r).to_f64();
                }
            }
        }
        out.extend(dw.into_iter().map(T::from_f64));
        out
    }
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "cgfed-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l2.shape().elem_count();
        let len = if self.with_x {
            l1.shape().elem_count()
        } else {
            0
        } + if self.with_w { d } else { 0 };
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                f32::to_cpu_storage_owned(self.run::<f32>(
                    slice(s1, l1, "x")?,
                    slice(s2, l2, "w")?,
                    slice(s3, l3, "dy")?,
                ))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                f64::to_cpu_storage_owned(self.run::<f64>(
                    slice(s1, l1, "x")?,
                    slice(s2, l2, "w")?,
                    slice(s3, l3, "dy")?,
                ))
            }
            _ => candle_core::bail!(
                "rms_norm backward: unsupported dtypes {:?}/{:?}/{:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, Shape::from(len)))
    }
}
