//! Fused SwiGLU activation `silu(gate) ⊙ up` with a hand-written backward.
//!
//! The composition `gate.silu()? * up` keeps `silu(gate)` alive for the backward and runs
//! about six elementwise passes backward (silu's derivative alone is four); the fused op
//! makes one pass forward and one backward, producing only the gradients that are needed
//! (an input that is not tracked — a frozen projection's output — gets none).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use cgfed_core::{Error, Result};

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

/// Real scalars the kernel runs on.
trait Real: WithDType {
    /// `1 / (1 + e^(−self))`.
    fn sigmoid(self) -> Self;
}

impl Real for f32 {
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
}

impl Real for f64 {
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
}

/// The contiguous slice a layout views, or an error for a strided one.
fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("swiglu: inputs must be contiguous"),
    }
}

/// Forward op: `(gate, up) → silu(gate) ⊙ up`.
struct SwiGlu;

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
        fn run<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
            g.iter()
                .zip(u)
                .map(|(&g, &u)| g * g.sigmoid() * u)
                .collect()
        }
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                f32::to_cpu_storage_owned(run::<f32>(slice(s1, l1)?, slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                f64::to_cpu_storage_owned(run::<f64>(slice(s1, l1)?, slice(s2, l2)?))
            }
            _ => candle_core::bail!(
                "swiglu: unsupported dtypes {:?}/{:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((y, l1.shape().clone()))
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

impl SwiGluBwd {
    /// With `s = sigmoid(g)`: `dgate = dy ⊙ up ⊙ s (1 + g (1 − s))`, `dup = dy ⊙ g s`.
    fn run<T: Real>(&self, gate: &[T], up: &[T], dy: &[T]) -> Vec<T> {
        let n = gate.len();
        let parts = usize::from(self.with_gate) + usize::from(self.with_up);
        let mut out = Vec::with_capacity(parts * n);
        let one = T::from_f64(1.0);
        if self.with_gate {
            out.extend(gate.iter().zip(up).zip(dy).map(|((&g, &u), &d)| {
                let s = g.sigmoid();
                d * u * s * (one + g * (one - s))
            }));
        }
        if self.with_up {
            out.extend(gate.iter().zip(dy).map(|(&g, &d)| d * g * g.sigmoid()));
        }
        out
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
        let n = l1.shape().elem_count();
        let len = n * (usize::from(self.with_gate) + usize::from(self.with_up));
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                f32::to_cpu_storage_owned(self.run::<f32>(
                    slice(s1, l1)?,
                    slice(s2, l2)?,
                    slice(s3, l3)?,
                ))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                f64::to_cpu_storage_owned(self.run::<f64>(
                    slice(s1, l1)?,
                    slice(s2, l2)?,
                    slice(s3, l3)?,
                ))
            }
            _ => candle_core::bail!(
                "swiglu backward: unsupported dtypes {:?}/{:?}/{:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, Shape::from(len)))
    }
}
