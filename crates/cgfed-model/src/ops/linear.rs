//! Linear layer `y = x · Wᵀ` whose backward computes only the gradients that are needed, in
//! the layout they are needed in.
//!
//! candle's `x.matmul(&w.t())` has two costs in training that this op avoids:
//! - its backward always computes both operand gradients; for a base weight that is a plain
//!   (frozen) tensor the weight gradient `xᵀ · dy` is computed and then thrown away — a third
//!   of the layer's backward FLOPs;
//! - for a trainable weight, the gradient arrives for `Wᵀ` and goes back through the
//!   transpose as a strided view that the gradient store copies into a contiguous `[out, in]`
//!   tensor: one extra pass over every weight-sized gradient (all of a model's parameters, in
//!   full fine-tuning).
//!
//! [`linear`] is a [`CustomOp2`] on `(x, W)` whose forward is the same GEMM candle's matmul
//! runs (same kernel, same layouts, so the result is bit-identical) and whose backward returns
//! `dx = dy · W` when `x` is tracked and `dW = dyᵀ · x`, computed directly in `W`'s layout,
//! when `W` is.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use cgfed_core::{Error, Result};

/// `(batch, m, n, k)` of a GEMM, as candle's storage `matmul` takes it.
type Bmnk = (usize, usize, usize, usize);

/// The custom op: forward `x Wᵀ` for a 2-D `x` `[m, k]` and `W` `[n, k]`; backward `dy · W`
/// and `dyᵀ · x`, each when its operand is tracked.
struct Linear;

impl Linear {
    /// `(batch, m, n, k)`, the layout of `Wᵀ`, and the output shape.
    fn plan(l_x: &Layout, l_w: &Layout) -> candle_core::Result<(Bmnk, Layout, Shape)> {
        let (m, k) = l_x.shape().dims2()?;
        let (n, k2) = l_w.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: input [{m}, {k}] does not fit weight [{n}, {k2}]");
        }
        Ok(((1, m, n, k), l_w.transpose(0, 1)?, Shape::from((m, n))))
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "cgfed-linear"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (bmnk, l_wt, shape) = Self::plan(l_x, l_w)?;
        Ok((s_x.matmul(s_w, bmnk, l_x, &l_wt)?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &candle_core::CudaStorage,
        l_x: &Layout,
        s_w: &candle_core::CudaStorage,
        l_w: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (bmnk, l_wt, shape) = Self::plan(l_x, l_w)?;
        Ok((s_x.matmul(s_w, bmnk, l_x, &l_wt)?, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Same product as candle's matmul backward for the lhs (`dy · (Wᵀ)ᵀ`).
        let dx = if x.track_op() {
            Some(grad_res.matmul(w)?)
        } else {
            None
        };
        // `dyᵀ · x` is `[n, k]`, W's own layout: the GEMM reads `dyᵀ` through its strides.
        let dw = if w.track_op() {
            Some(grad_res.t()?.matmul(x)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `y = x · wᵀ` for `x` `[..., in]` and `w` `[out, in]`, giving `[..., out]`. Backprop gives
/// `x` its gradient `dy · w` when `x` is tracked, and `w` its gradient `dyᵀ · x` (contiguous,
/// `[out, in]`) only when `w` is tracked ([`Tensor::track_op`]: a
/// [`Var`](candle_core::Var) in full fine-tuning, or a tensor computed from one) — a frozen
/// base weight costs no weight-gradient GEMM.
///
/// The value equals `x.matmul(&w.t())` bit for bit (same GEMM). On Metal and for empty
/// shapes it is that plain matmul.
///
/// Errors if `x` has no dimension, the inner dimensions differ, `w` is not 2-D, or the
/// dtypes or devices differ.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&in_dim, lead)) = dims.split_last() else {
        return Err(Error::InvalidInput(
            "linear: input must have at least one dimension".into(),
        ));
    };
    let (out_dim, w_in) = w.dims2()?;
    if w_in != in_dim {
        return Err(Error::InvalidInput(format!(
            "linear: input {:?} does not fit weight [{out_dim}, {w_in}]",
            x.dims()
        )));
    }
    if x.dtype() != w.dtype() {
        return Err(Error::InvalidInput(format!(
            "linear: input is {:?} but weight is {:?}",
            x.dtype(),
            w.dtype()
        )));
    }
    let rows: usize = lead.iter().product();
    let mut out_dims = lead.to_vec();
    out_dims.push(out_dim);
    let x2 = x.reshape((rows, in_dim))?;
    if rows == 0 || in_dim == 0 || out_dim == 0 || x.device().is_metal() {
        // Degenerate shapes (candle's matmul returns zeros), Metal (no kernel here): the
        // plain matmul.
        return Ok(x2.matmul(&w.t()?)?.reshape(out_dims)?);
    }
    // `reshape` copies a strided input into a contiguous one, which the GEMM accepts.
    Ok(x2.apply_op2(w, Linear)?.reshape(out_dims)?)
}
