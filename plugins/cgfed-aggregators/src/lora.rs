//! The exact aggregate of LoRA products (`fedavg` with `lora = "product"`; the FedEx-LoRA
//! construction, Singhal et al., 2024).
//!
//! Averaging the factors separately (FedIT) gives `B̄·Ā`, not the mean of the clients'
//! products `Σᵢ wᵢ·Bᵢ·Aᵢ`. The difference
//!
//! ```text
//! R = Σᵢ wᵢ·Bᵢ·Aᵢ − B̄·Ā = Σᵢ wᵢ·(Bᵢ − B̄)·(Aᵢ − Ā)
//! ```
//!
//! is the weighted cross-covariance of the factors: it vanishes when all clients' `B` (or all
//! `A`) agree and grows with client drift and the number of local steps. Adding `scale·R` to
//! the frozen base weight makes the aggregated effective weight exact while the trainable
//! state stays rank r. `R` is computed in f64 from the covariance form (no cancellation
//! between two large products).

use cgfed_core::candle_core::Tensor;
use cgfed_core::{Error, Layout, Result, RoundCtx, Update};

/// One adapted module: where its factors sit in the flat layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraPair {
    /// Module path (the tensor names without `.lora_A` / `.lora_B`).
    pub module: String,
    /// Offset of `A` ([r, in]) in the flat layout.
    pub a: usize,
    /// Offset of `B` ([out, r]) in the flat layout.
    pub b: usize,
    /// Rank r.
    pub rank: usize,
    /// Input features.
    pub fan_in: usize,
    /// Output features.
    pub fan_out: usize,
}

/// Every `<module>.lora_A` [r, in] / `<module>.lora_B` [out, r] pair of `layout`, in layout
/// order of the `A` tensors.
///
/// # Errors
/// [`Error::InvalidInput`] for a factor without its partner or with shapes that do not pair.
pub fn lora_pairs(layout: &Layout) -> Result<Vec<LoraPair>> {
    let mut offsets = std::collections::BTreeMap::new();
    let mut off = 0;
    for spec in layout.specs() {
        offsets.insert(spec.name.as_str(), (off, spec.shape.as_slice()));
        off += spec.numel();
    }
    let mut pairs = Vec::new();
    for spec in layout.specs() {
        let (module, partner) = if let Some(m) = spec.name.strip_suffix(".lora_A") {
            (m, format!("{m}.lora_B"))
        } else if let Some(m) = spec.name.strip_suffix(".lora_B") {
            (m, format!("{m}.lora_A"))
        } else {
            continue;
        };
        if !offsets.contains_key(partner.as_str()) {
            return Err(Error::InvalidInput(format!(
                "LoRA factor `{}` has no partner `{partner}`",
                spec.name
            )));
        }
        if spec.name.ends_with(".lora_B") {
            continue; // the pair is recorded at its A
        }
        let (a, sa) = offsets[spec.name.as_str()];
        let (b, sb) = offsets[partner.as_str()];
        match (sa, sb) {
            ([r, fan_in], [fan_out, rb]) if r == rb => pairs.push(LoraPair {
                module: module.to_string(),
                a,
                b,
                rank: *r,
                fan_in: *fan_in,
                fan_out: *fan_out,
            }),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "LoRA pair `{module}`: lora_A {sa:?} and lora_B {sb:?} do not form \
                     [out, r]·[r, in]"
                )))
            }
        }
    }
    Ok(pairs)
}

/// The product residual of one round.
#[derive(Debug, Clone)]
pub struct Residual {
    /// `R` per module (tensor `<module>`, shape [out, in]) on `ctx.device`.
    pub update: Update,
    /// `Σ min(4·out·in, 4·k·r·(out + in))` over modules, k = number of clients.
    pub bytes: usize,
    /// `‖R‖_F / ‖Σᵢ wᵢ·Bᵢ·Aᵢ − B·A‖_F` over all modules (0 when the denominator is 0).
    pub fedit_rel_err: f64,
}

/// `R` for every pair, with `global` the flat starting state, `deltas` the flat client
/// deltas and `weights` normalised.
pub fn product_residual(
    pairs: &[LoraPair],
    global: &[f32],
    deltas: &[Vec<f32>],
    weights: &[f64],
    ctx: &RoundCtx,
) -> Result<Residual> {
    let k = deltas.len();
    let mut tensors = Vec::with_capacity(pairs.len());
    let (mut bytes, mut r2, mut d2) = (0usize, 0f64, 0f64);
    for p in pairs {
        let (r, fi, fo) = (p.rank, p.fan_in, p.fan_out);
        // Client factors Aᵢ = A + ΔAᵢ, Bᵢ = B + ΔBᵢ in f64, and their weighted means.
        let factor = |x: &[f32], off: usize, len: usize| -> Vec<f64> {
            (0..len)
                .map(|e| global[off + e] as f64 + x[off + e] as f64)
                .collect()
        };
        let a_i: Vec<Vec<f64>> = deltas.iter().map(|d| factor(d, p.a, r * fi)).collect();
        let b_i: Vec<Vec<f64>> = deltas.iter().map(|d| factor(d, p.b, fo * r)).collect();
        let mean = |xs: &[Vec<f64>]| -> Vec<f64> {
            let mut m = vec![0f64; xs[0].len()];
            for (x, &w) in xs.iter().zip(weights) {
                m.iter_mut().zip(x).for_each(|(m, &v)| *m += w * v);
            }
            m
        };
        let (a_bar, b_bar) = (mean(&a_i), mean(&b_i));
        // R = Σᵢ wᵢ (Bᵢ − B̄)(Aᵢ − Ā).
        let mut res = vec![0f64; fo * fi];
        for ((a, b), &w) in a_i.iter().zip(&b_i).zip(weights) {
            for o in 0..fo {
                let row = &mut res[o * fi..(o + 1) * fi];
                for q in 0..r {
                    let dbq = w * (b[o * r + q] - b_bar[o * r + q]);
                    if dbq == 0.0 {
                        continue;
                    }
                    let a_row = &a[q * fi..(q + 1) * fi];
                    let abar_row = &a_bar[q * fi..(q + 1) * fi];
                    for ((x, &av), &am) in row.iter_mut().zip(a_row).zip(abar_row) {
                        *x += dbq * (av - am);
                    }
                }
            }
        }
        // Σᵢ wᵢ BᵢAᵢ − B·A = B̄Ā − B·A + R.
        let (a0, b0) = (&global[p.a..p.a + r * fi], &global[p.b..p.b + fo * r]);
        for o in 0..fo {
            for c in 0..fi {
                let mut m = res[o * fi + c];
                for q in 0..r {
                    m += b_bar[o * r + q] * a_bar[q * fi + c]
                        - b0[o * r + q] as f64 * a0[q * fi + c] as f64;
                }
                d2 += m * m;
            }
        }
        r2 += res.iter().map(|x| x * x).sum::<f64>();
        bytes += (4 * fo * fi).min(4 * k * r * (fo + fi));
        let values: Vec<f32> = res.into_iter().map(|x| x as f32).collect();
        tensors.push((
            p.module.clone(),
            Tensor::from_vec(values, (fo, fi), &ctx.device)?,
        ));
    }
    let fedit_rel_err = if d2 > 0.0 { (r2 / d2).sqrt() } else { 0.0 };
    Ok(Residual {
        update: Update::new(tensors)?,
        bytes,
        fedit_rel_err,
    })
}
