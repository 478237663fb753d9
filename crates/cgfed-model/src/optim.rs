//! [`FusedAdamW`]: AdamW with the same update rule as `candle_nn::optim::AdamW`, computed
//! in one pass per variable instead of ~14 tensor ops (each allocating a tensor the size of
//! the variable): an in-place candle op that reads the gradient and updates the variable's
//! own storage and the host moments, split over candle's CPU threads for big variables. On
//! the CPU with f32 variables (moments kept as f32, each element updated in f64); other
//! devices and dtypes use candle's AdamW for that variable.
//!
//! Update (step `t`, gradient `g`): `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ(1 − lr·λ) − lr · (m/(1−β₁ᵗ)) / (sqrt(v/(1−β₂ᵗ)) + ε)`.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rayon::prelude::*;

/// Below this many elements a variable is updated on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 16;

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
                    let update = Update {
                        b1,
                        b2,
                        scale_m,
                        scale_v,
                        decay,
                        lr: p.lr,
                        eps: p.eps,
                        moments: Mutex::new((m, v)),
                    };
                    var.as_tensor()
                        .inplace_op2(&g.to_dtype(DType::F32)?.contiguous()?, &update)?;
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

/// One AdamW step for one f32 variable, in place: `(θ, g)` with the moments borrowed.
struct Update<'a> {
    b1: f64,
    b2: f64,
    scale_m: f64,
    scale_v: f64,
    decay: f64,
    lr: f64,
    eps: f64,
    /// `(m, v)`: `InplaceOp2::cpu_fwd` takes `&self`, so the moments sit behind a lock.
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
}

impl Update<'_> {
    /// The update over matching chunks of θ, m, v and g.
    fn run(&self, theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((th, mi), vi), gi) in theta.iter_mut().zip(m).zip(v).zip(g) {
            let gi = *gi as f64;
            let mn = self.b1 * *mi as f64 + (1.0 - self.b1) * gi;
            let vn = self.b2 * *vi as f64 + (1.0 - self.b2) * gi * gi;
            *mi = mn as f32;
            *vi = vn as f32;
            let adj = (mn * self.scale_m) / ((vn * self.scale_v).sqrt() + self.eps);
            *th = (*th as f64 * self.decay - self.lr * adj) as f32;
        }
    }
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "cgfed-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("adamw: variable and gradient must be f32");
        };
        let (Some((a, b)), Some((ga, gb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw: variable and gradient must be contiguous");
        };
        let (theta, g) = (&mut theta[a..b], &g[ga..gb]);
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: moments lock poisoned".into()))?;
        let (m, v) = &mut *moments;
        if theta.len() != g.len() || theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!(
                "adamw: variable of {} elements, gradient of {}, moments of {}",
                theta.len(),
                g.len(),
                m.len()
            );
        }
        let threads = candle_core::utils::get_num_threads();
        if threads <= 1 || theta.len() < PAR_MIN_ELEMS {
            self.run(theta, m, v, g);
            return Ok(());
        }
        let per = theta.len().div_ceil(threads);
        theta
            .par_chunks_mut(per)
            .zip(m.par_chunks_mut(per))
            .zip(v.par_chunks_mut(per))
            .zip(g.par_chunks(per))
            .for_each(|(((th, m), v), g)| self.run(th, m, v, g));
        Ok(())
    }
}
