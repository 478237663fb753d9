//! Fused SwiGLU activation `silu(gate) ⊙ up` with a hand-written backward.
//!
//! The composition `gate.silu()? * up` keeps `silu(gate)` alive for the backward and runs
//! about six elementwise passes backward (silu's derivative alone is four); the fused op
//! makes one pass forward and one backward, producing only the gradients that are needed
//! (an input that is not tracked — a frozen projection's output — gets none).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use cgfed_core::{Error, Result};

use super::kernel::{par_rows, par_rows2, run_kernel, Kernel, Real, ELEMWISE_BLOCK};

/// `silu(gate) ⊙ up`, with `silu(g) = g · sigmoid(g)`.
///
/// Differentiable in both inputs. On the CPU with f32 or f64 this is a fused custom op;
/// elsewhere (CUDA, half precision) it is `gate.silu()? * up`.
///
/// # Shapes
/// `gate` and `up` of one shape → that shape.
///
/// # Errors
/// [`Error::InvalidInput`] when the shapes, dtypes or devices of `gate` and `up` differ.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims()
        || gate.dtype() != up.dtype()
        || !gate.device().same_device(up.device())
    {
        return Err(Error::InvalidInput(format!(
            "swiglu inputs differ: gate {:?} {} on {:?}, up {:?} {} on {:?}",
            gate.dims(),
            gate.dtype().as_str(),
            gate.device().location(),
            up.dims(),
            up.dtype().as_str(),
            up.device().location()
        )));
    }
    if !(gate.device().is_cpu() && matches!(gate.dtype(), DType::F32 | DType::F64)) {
        return Ok((gate.silu()? * up)?);
    }
    let gate = gate.contiguous()?;
    let up = up.contiguous()?;
    Ok(gate.apply_op2(&up, SwiGlu)?)
}

/// Forward op: `(gate, up) → silu(gate) ⊙ up`.
struct SwiGlu;

impl Kernel for SwiGlu {
    const NAME: &'static str = "swiglu";
    const INPUTS: &'static [&'static str] = &["gate", "up"];

    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (gate, up) = (inputs[0], inputs[1]);
        let mut y = vec![T::zero(); gate.len()];
        par_rows(&mut y, ELEMWISE_BLOCK, |first, block| {
            let at = first * ELEMWISE_BLOCK;
            let (g, u) = (&gate[at..at + block.len()], &up[at..at + block.len()]);
            for ((o, &g), &u) in block.iter_mut().zip(g).zip(u) {
                *o = g * g.sigmoid() * u;
            }
        });
        Ok(y)
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "cgfed-swiglu"
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

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let bwd = SwiGluBwd {
            with_gate: gate.track_op(),
            with_up: up.track_op(),
        };
        if !bwd.with_gate && !bwd.with_up {
            return Ok((None, None));
        }
        let g = g.contiguous()?;
        // One flat buffer: `dgate` then `dup`, each only when wanted.
        let out = gate.apply_op3_no_bwd(up, &g, &bwd)?;
        let n = gate.elem_count();
        let mut at = 0;
        let mut part = |wanted: bool| -> candle_core::Result<Option<Tensor>> {
            if !wanted {
                return Ok(None);
            }
            let t = out.narrow(0, at, n)?.reshape(gate.shape())?;
            at += n;
            Ok(Some(t))
        };
        let dgate = part(bwd.with_gate)?;
        let dup = part(bwd.with_up)?;
        Ok((dgate, dup))
    }
}

/// Backward op: `(gate, up, dy) → [dgate…, dup…]` (flat), each part only when asked for.
struct SwiGluBwd {
    with_gate: bool,
    with_up: bool,
}

impl Kernel for SwiGluBwd {
    const NAME: &'static str = "swiglu backward";
    const INPUTS: &'static [&'static str] = &["gate", "up", "output gradient"];

    /// With `s = sigmoid(g)`: `dgate = dy ⊙ up ⊙ s (1 + g (1 − s))`, `dup = dy ⊙ g s`.
    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let (gate, up, dy) = (inputs[0], inputs[1], inputs[2]);
        let n = gate.len();
        let parts = usize::from(self.with_gate) + usize::from(self.with_up);
        let mut out = vec![T::zero(); parts * n];
        let one = T::one();
        let dgate = |at: usize, o: &mut [T]| {
            let end = at + o.len();
            for (o, ((&g, &u), &d)) in o
                .iter_mut()
                .zip(gate[at..end].iter().zip(&up[at..end]).zip(&dy[at..end]))
            {
                let s = g.sigmoid();
                *o = d * u * s * (one + g * (one - s));
            }
        };
        let dup = |at: usize, o: &mut [T]| {
            let end = at + o.len();
            for (o, (&g, &d)) in o.iter_mut().zip(gate[at..end].iter().zip(&dy[at..end])) {
                *o = d * g * g.sigmoid();
            }
        };
        match (self.with_gate, self.with_up) {
            (true, true) => {
                let (a, b) = out.split_at_mut(n);
                par_rows2(a, b, ELEMWISE_BLOCK, |first, a, b| {
                    dgate(first * ELEMWISE_BLOCK, a);
                    dup(first * ELEMWISE_BLOCK, b);
                });
            }
            (true, false) => {
                par_rows(&mut out, ELEMWISE_BLOCK, |first, o| {
                    dgate(first * ELEMWISE_BLOCK, o)
                });
            }
            (false, true) => {
                par_rows(&mut out, ELEMWISE_BLOCK, |first, o| {
                    dup(first * ELEMWISE_BLOCK, o)
                });
            }
            (false, false) => {}
        }
        Ok(out)
    }
}

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "cgfed-swiglu-bwd"
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
        let out = run_kernel(self, &[(s1, l1), (s2, l2), (s3, l3)])?;
        let parts = usize::from(self.with_gate) + usize::from(self.with_up);
        let len = l1.shape().elem_count() * parts;
        Ok((out, Shape::from(len)))
    }
}
