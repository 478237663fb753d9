//! Fused RMSNorm with a hand-written backward.
//!
//! `y = x / sqrt(mean(x²) + eps) * w` over the last dimension, in one pass per row, where
//! [`candle_nn::ops::rms_norm_slow`] takes six elementwise/reduction ops forward and about
//! twice as many backward. candle-nn's own fused `rms_norm` has no backward; this one does:
//! for `x` always, for `w` only when `w` is tracked (a [`candle_core::Var`] or computed
//! from one), so a frozen norm weight costs nothing.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType, D};
use cgfed_core::{Error, Result};

use super::kernel::{par_rows, run_kernel, Kernel, Real};

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

impl Kernel for RmsNorm {
    const NAME: &'static str = "rms_norm";
    const INPUTS: &'static [&'static str] = &["x", "w"];

    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (x, w) = (inputs[0], inputs[1]);
        let d = w.len();
        let mut y = vec![T::zero(); x.len()];
        par_rows(&mut y, d, |first, block| {
            let xs = &x[first * d..first * d + block.len()];
            for (out, row) in block.chunks_exact_mut(d).zip(xs.chunks_exact(d)) {
                let r = inv_rms(row, self.eps);
                for ((o, &v), &wi) in out.iter_mut().zip(row).zip(w) {
                    *o = v * r * wi;
                }
            }
        });
        Ok(y)
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
        let y = run_kernel(self, &[(s1, l1), (s2, l2)])?;
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

impl Kernel for RmsNormBwd {
    const NAME: &'static str = "rms_norm backward";
    const INPUTS: &'static [&'static str] = &["x", "w", "output gradient"];

    /// With `r = 1/rms(x)`, `x̂ = x r`, `u = dy ⊙ w`:
    /// `dx = r (u − x̂ mean(u ⊙ x̂))`, `dw = Σ_rows dy ⊙ x̂`.
    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (x, w, g) = (inputs[0], inputs[1], inputs[2]);
        let d = w.len();
        let n = if self.with_x { x.len() } else { 0 };
        let mut out = vec![T::zero(); n + if self.with_w { d } else { 0 }];
        let (dx, dw_out) = out.split_at_mut(n);
        // Rows `first..first + rows` of dx (when wanted) and their partial dw (when wanted).
        let rows = |first: usize, rows: usize, dx: Option<&mut [T]>| -> Vec<f64> {
            let mut dw = vec![0f64; if self.with_w { d } else { 0 }];
            let xs = &x[first * d..(first + rows) * d];
            let gs = &g[first * d..(first + rows) * d];
            let mut dx_rows = dx.map(|b| b.chunks_exact_mut(d));
            for (row, gr) in xs.chunks_exact(d).zip(gs.chunks_exact(d)) {
                let r = inv_rms(row, self.eps);
                if let Some(out) = dx_rows.as_mut().and_then(Iterator::next) {
                    // mean(u ⊙ x̂) = r/d · Σ dy w x
                    let dot: f64 = row
                        .iter()
                        .zip(gr)
                        .zip(w)
                        .map(|((&v, &gi), &wi)| (v * gi * wi).to_f64())
                        .sum();
                    let c = T::from_f64(dot / d as f64) * r * r;
                    for (o, ((&v, &gi), &wi)) in out.iter_mut().zip(row.iter().zip(gr).zip(w)) {
                        *o = r * (gi * wi - v * c);
                    }
                }
                if self.with_w {
                    for ((acc, &v), &gi) in dw.iter_mut().zip(row).zip(gr) {
                        *acc += (gi * v * r).to_f64();
                    }
                }
            }
            dw
        };
        let partial = if self.with_x {
            par_rows(dx, d, |first, block| {
                rows(first, block.len() / d, Some(block))
            })
        } else {
            vec![rows(0, x.len() / d, None)]
        };
        if self.with_w {
            for (k, o) in dw_out.iter_mut().enumerate() {
                *o = T::from_f64(partial.iter().map(|p| p[k]).sum());
            }
        }
        Ok(out)
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
        let out = run_kernel(self, &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((out, Shape::from(len)))
    }
}
