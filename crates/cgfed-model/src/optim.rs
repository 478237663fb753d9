//! [`FusedAdamW`]: AdamW with the same update rule as `candle_nn::optim::AdamW`, computed
//! in one pass per variable over host buffers instead of ~14 tensor ops (each allocating a
//! tensor the size of the variable). On the CPU with f32 variables (moments kept as f32,
//! each element updated in f64); other devices and dtypes use candle's AdamW for that
//! variable.
//!
//! Update (step `t`, gradient `g`): `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ(1 − lr·λ) − lr · (m/(1−β₁ᵗ)) / (sqrt(v/(1−β₂ᵗ)) + ε)`.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

/// Per-variable state: host moments, or candle's optimizer for unsupported variables.
enum Slot {
    Host { m: Vec<f32>, v: Vec<f32> },
    Candle(Box<AdamW>),
}

/// AdamW over flat host buffers (see the [module docs](self)).
pub struct FusedAdamW {
    vars: Vec<(Var, Slot)>,
    params: ParamsAdamW,
    step_t: usize,
}

impl Optimizer for FusedAdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let host = var.device().is_cpu() && var.dtype() == DType::F32;
                let slot = if host {
                    let n = var.elem_count();
                    Slot::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    Slot::Candle(Box::new(AdamW::new(vec![var.clone()], params.clone())?))
                };
                Ok((var, slot))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            params,
            step_t: 0,
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let (b1, b2) = (p.beta1, p.beta2);
        let scale_m = 1.0 / (1.0 - b1.powi(self.step_t as i32));
        let scale_v = 1.0 / (1.0 - b2.powi(self.step_t as i32));
        let decay = 1.0 - p.lr * p.weight_decay;
        for (var, slot) in &mut self.vars {
            let Some(g) = grads.get(var) else { continue };
            match slot {
                Slot::Candle(o) => o.step(grads)?,
                Slot::Host { m, v } => {
                    let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                    let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                    for (((th, mi), vi), gi) in
                        theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(&g)
                    {
                        let gi = *gi as f64;
                        let mn = b1 * *mi as f64 + (1.0 - b1) * gi;
                        let vn = b2 * *vi as f64 + (1.0 - b2) * gi * gi;
                        *mi = mn as f32;
                        *vi = vn as f32;
                        let adj = (mn * scale_m) / ((vn * scale_v).sqrt() + p.eps);
                        *th = (*th as f64 * decay - p.lr * adj) as f32;
                    }
                    var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
                }
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
        for (_, slot) in &mut self.vars {
            if let Slot::Candle(o) = slot {
                o.set_learning_rate(lr);
            }
        }
    }
}
