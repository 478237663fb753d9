//! Fused rotary position embedding (RoPE) with a hand-written backward.
//!
//! [`rope`] is the HF (non-interleaved, rotate-half) layout of
//! [`candle_nn::rotary_emb::rope_slow`]; [`rope_interleaved`] the GPT-J / llama.cpp layout of
//! [`candle_nn::rotary_emb::rope_i_slow`]. RoPE rotates each pair of channels by a
//! position-dependent angle θ, so its backward is the rotation by −θ: one pass forward, one
//! backward, where the compositions take five to eight ops (two `cat`s, a `narrow` pair, a
//! `neg`, broadcast products) each way. candle-nn's fused `rope`/`rope_i` have no backward.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use cgfed_core::{Error, Result};

use super::kernel::{par_rows, run_kernel, Kernel, Real};

/// RoPE in the HF layout: channel `i < d/2` pairs with `i + d/2`, rotated by the angle whose
/// cosine and sine are `cos[t, i]`, `sin[t, i]`.
///
/// Differentiable in `x` (the tables are constants). On the CPU with f32 or f64, and
/// `cos`/`sin` not tracked, this is a fused custom op; otherwise it is
/// [`candle_nn::rotary_emb::rope_slow`].
///
/// # Shapes
/// `x` `[b, h, t, d]` (`d` even), `cos`/`sin` `[≥ t, d/2]` (the first `t` rows are used)
/// → `[b, h, t, d]`.
///
/// # Errors
/// [`Error::InvalidInput`] for other shapes, or when dtypes or devices differ.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    apply(x, cos, sin, false)
}

/// RoPE in the interleaved layout: channels `2i` and `2i + 1` form a pair, rotated by the
/// angle of `cos[t, i]`, `sin[t, i]`. Otherwise as [`rope`]; the fallback is
/// [`candle_nn::rotary_emb::rope_i_slow`].
///
/// # Shapes
/// `x` `[b, h, t, d]` (`d` even), `cos`/`sin` `[≥ t, d/2]` → `[b, h, t, d]`.
///
/// # Errors
/// [`Error::InvalidInput`] for other shapes, or when dtypes or devices differ.
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    apply(x, cos, sin, true)
}

fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let name = if interleaved {
        "rope_interleaved"
    } else {
        "rope"
    };
    let (_, _, t, d) = x.dims4().map_err(|_| {
        Error::InvalidInput(format!(
            "{name} input must be [batch, heads, seq, head_dim], got {:?}",
            x.dims()
        ))
    })?;
    let table_ok = |c: &Tensor| matches!(c.dims(), &[rows, half] if rows >= t && half * 2 == d);
    if d % 2 != 0 || !table_ok(cos) || !table_ok(sin) {
        return Err(Error::InvalidInput(format!(
            "{name}: input {:?} needs an even head_dim and cos/sin of [>= {t}, {}], got {:?} and {:?}",
            x.dims(),
            d / 2,
            cos.dims(),
            sin.dims()
        )));
    }
    for c in [cos, sin] {
        if c.dtype() != x.dtype() || !c.device().same_device(x.device()) {
            return Err(Error::InvalidInput(format!(
                "{name}: input is {} on {:?}, table is {} on {:?}",
                x.dtype().as_str(),
                x.device().location(),
                c.dtype().as_str(),
                c.device().location()
            )));
        }
    }
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && !cos.track_op()
        && !sin.track_op();
    if !fused {
        return Ok(if interleaved {
            candle_nn::rotary_emb::rope_i_slow(x, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope_slow(x, cos, sin)?
        });
    }
    let x = x.contiguous()?;
    let cos = cos.narrow(0, 0, t)?.contiguous()?;
    let sin = sin.narrow(0, 0, t)?.contiguous()?;
    Ok(x.apply_op3(
        &cos,
        &sin,
        Rope {
            interleaved,
            inverse: false,
            d,
        },
    )?)
}

/// `(x, cos, sin) → rotated x`; `inverse` rotates by −θ (the backward).
struct Rope {
    interleaved: bool,
    inverse: bool,
    /// Head dimension (channels per row).
    d: usize,
}

impl Kernel for Rope {
    const NAME: &'static str = "rope";
    const INPUTS: &'static [&'static str] = &["x", "cos", "sin"];

    /// Rotates every `[t, d]` block of `x` (`d = 2 · half`, `half = cos.len() / t`).
    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (x, cos, sin, d) = (inputs[0], inputs[1], inputs[2], self.d);
        let half = d / 2;
        let table = cos.len(); // t · half
        let mut y = vec![T::zero(); x.len()];
        // The pair (a, b) → (a c − b s, b c + a s); inverse: s → −s.
        let neg = self.inverse;
        par_rows(&mut y, d, |first, block| {
            for (i, out) in block.chunks_exact_mut(d).enumerate() {
                let r = first + i;
                let row = &x[r * d..(r + 1) * d];
                let at = (r * half) % table;
                let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
                if self.interleaved {
                    for ((o, p), (&ci, &si)) in out
                        .chunks_exact_mut(2)
                        .zip(row.chunks_exact(2))
                        .zip(c.iter().zip(s))
                    {
                        let si = if neg { T::zero() - si } else { si };
                        let (a, b) = (p[0], p[1]);
                        o[0] = a * ci - b * si;
                        o[1] = b * ci + a * si;
                    }
                } else {
                    let (lo, hi) = row.split_at(half);
                    let (olo, ohi) = out.split_at_mut(half);
                    for (((ol, oh), (&a, &b)), (&ci, &si)) in olo
                        .iter_mut()
                        .zip(ohi.iter_mut())
                        .zip(lo.iter().zip(hi))
                        .zip(c.iter().zip(s))
                    {
                        let si = if neg { T::zero() - si } else { si };
                        *ol = a * ci - b * si;
                        *oh = b * ci + a * si;
                    }
                }
            }
        });
        Ok(y)
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        match (self.interleaved, self.inverse) {
            (false, false) => "cgfed-rope",
            (false, true) => "cgfed-rope-bwd",
            (true, false) => "cgfed-rope-i",
            (true, true) => "cgfed-rope-i-bwd",
        }
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
        let (_, _, t, d) = l1.shape().dims4()?;
        if l2.shape().dims() != [t, d / 2] || l3.shape().dims() != [t, d / 2] {
            candle_core::bail!(
                "rope: tables {:?}/{:?} do not match input {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            );
        }
        if d != self.d {
            candle_core::bail!(
                "rope: input {:?} does not have head_dim {}",
                l1.shape(),
                self.d
            );
        }
        let y = run_kernel(self, &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // `rope` only takes this path when the tables are untracked: they get no gradient.
        if !x.track_op() {
            return Ok((None, None, None));
        }
        let inverse = Rope {
            interleaved: self.interleaved,
            inverse: !self.inverse,
            d: self.d,
        };
        let dx = g.contiguous()?.apply_op3_no_bwd(cos, sin, &inverse)?;
        Ok((Some(dx), None, None))
    }
}
