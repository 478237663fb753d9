//! Fused cross-entropy: the summed negative log-likelihood of target ids under a
//! row-wise softmax, with a hand-written backward.
//!
//! The composition `-(log_softmax(logits).gather(targets).sum())` makes about six passes
//! over the `[n, vocab]` logits forward and more than a dozen backward (including a dense
//! scatter of the picked gradient into a zero matrix). [`cross_entropy_sum`] makes two
//! passes forward (row max, then the sum of exponentials; the per-row maximum and log-sum
//! are kept for the backward) and one backward, writing `dlogits = g · (softmax − onehot)`
//! directly, rows split over candle's CPU threads.
//!
//! CPU with f32 or f64 logits only; other dtypes and devices use the composition.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use cgfed_core::{Error, Result};

use super::kernel::{par_rows, par_rows_with_work, Real};

/// Error unless every target id is below `vocab`.
fn check_targets(targets: &[u32], vocab: usize) -> candle_core::Result<()> {
    if let Some((i, &t)) = targets
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        candle_core::bail!(
            "cross_entropy_sum: target {t} of row {i} is out of range for {vocab} classes"
        );
    }
    Ok(())
}

fn contiguous<'a, T>(data: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("cross_entropy_sum: {what} must be contiguous"),
    }
}

fn targets_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    match s {
        CpuStorage::U32(t) => contiguous(t, l, "targets"),
        _ => candle_core::bail!("cross_entropy_sum: targets must be u32"),
    }
}

/// Per-row statistics: `(max, ln Σ exp(x − max))`.
type RowStats = Vec<(f64, f64)>;

/// Forward: `Σ_i (max_i + ln Σ_j exp(x_ij − max_i) − x_i,t_i)`, filling `stats`.
fn ce_forward<T: Real>(
    logits: &[T],
    targets: &[u32],
    vocab: usize,
    stats: &OnceLock<RowStats>,
) -> candle_core::Result<CpuStorage> {
    check_targets(targets, vocab)?;
    let n = targets.len();
    let mut row_stats = vec![(0f64, 0f64); n];
    // One stats entry per row: split the stats like rows of length 1.
    let f = |first: usize, chunk: &mut [(f64, f64)]| {
        for (r, st) in chunk.iter_mut().enumerate() {
            let i = first + r;
            let row = &logits[i * vocab..(i + 1) * vocab];
            let m = row
                .iter()
                .fold(T::neg_infinity(), |m, &x| if x > m { x } else { m });
            let sum: f64 = row.iter().map(|&x| (x - m).exp().to_f64()).sum();
            *st = (m.to_f64(), sum.ln());
        }
    };
    par_rows_with_work(&mut row_stats, 1, n * vocab, f);
    let mut total = 0f64;
    for (i, (&(m, ls), &t)) in row_stats.iter().zip(targets).enumerate() {
        // Same rounding as log_softmax: (x − max) − ln Σ.
        let x = logits[i * vocab + t as usize];
        let logp = (x - T::from_f64(m)).to_f64() - ls;
        total -= logp;
    }
    let _ = stats.set(row_stats);
    Ok(T::to_cpu_storage_owned(vec![T::from_f64(total)]))
}

/// Backward: `g · (softmax − onehot)`, one pass.
fn ce_backward<T: Real>(
    logits: &[T],
    targets: &[u32],
    vocab: usize,
    stats: &[(f64, f64)],
    g: f64,
) -> CpuStorage {
    let mut out = vec![T::from_f64(0.0); logits.len()];
    par_rows(&mut out, vocab, |first, chunk| {
        for (r, orow) in chunk.chunks_mut(vocab).enumerate() {
            let i = first + r;
            let (m, ls) = stats[i];
            let (m, ls) = (T::from_f64(m), T::from_f64(ls));
            let row = &logits[i * vocab..(i + 1) * vocab];
            for (o, &x) in orow.iter_mut().zip(row) {
                *o = T::from_f64((x - m - ls).exp().to_f64() * g);
            }
            let t = targets[i] as usize;
            orow[t] = T::from_f64(orow[t].to_f64() - g);
        }
    });
    T::to_cpu_storage_owned(out)
}

/// Per-row statistics computed anew (when the forward's were not kept).
fn row_stats<T: Real>(logits: &[T], vocab: usize) -> RowStats {
    logits
        .chunks(vocab)
        .map(|row| {
            let m = row
                .iter()
                .fold(T::neg_infinity(), |m, &x| if x > m { x } else { m });
            let sum: f64 = row.iter().map(|&x| (x - m).exp().to_f64()).sum();
            (m.to_f64(), sum.ln())
        })
        .collect()
}

/// The loss op on `(logits [n, vocab], targets [n] u32)`; keeps the row statistics.
struct CrossEntropySum {
    stats: OnceLock<RowStats>,
}

impl CustomOp2 for CrossEntropySum {
    fn name(&self) -> &'static str {
        "cross-entropy-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, vocab) = l1.shape().dims2()?;
        let targets = targets_slice(s2, l2)?;
        let out = match s1 {
            CpuStorage::F32(x) => {
                ce_forward(contiguous(x, l1, "logits")?, targets, vocab, &self.stats)?
            }
            CpuStorage::F64(x) => {
                ce_forward(contiguous(x, l1, "logits")?, targets, vocab, &self.stats)?
            }
            _ => candle_core::bail!("cross_entropy_sum: logits must be f32 or f64"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let op = CrossEntropyGrad {
            g,
            stats: self.stats.get(),
        };
        Ok((Some(logits.apply_op2_no_bwd(targets, &op)?), None))
    }
}

/// The backward kernel: `g · (softmax(logits) − onehot(targets))`.
struct CrossEntropyGrad<'a> {
    g: f64,
    stats: Option<&'a RowStats>,
}

impl CrossEntropyGrad<'_> {
    fn run<T: Real>(&self, x: &[T], targets: &[u32], vocab: usize) -> CpuStorage {
        match self.stats {
            Some(st) => ce_backward(x, targets, vocab, st, self.g),
            None => ce_backward(x, targets, vocab, &row_stats(x, vocab), self.g),
        }
    }
}

impl CustomOp2 for CrossEntropyGrad<'_> {
    fn name(&self) -> &'static str {
        "cross-entropy-sum-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, vocab) = l1.shape().dims2()?;
        let targets = targets_slice(s2, l2)?;
        if self.stats.is_some_and(|s| s.len() != n) {
            candle_core::bail!("cross_entropy_sum: stale row statistics");
        }
        check_targets(targets, vocab)?;
        let out = match s1 {
            CpuStorage::F32(x) => self.run(contiguous(x, l1, "logits")?, targets, vocab),
            CpuStorage::F64(x) => self.run(contiguous(x, l1, "logits")?, targets, vocab),
            _ => candle_core::bail!("cross_entropy_sum: logits must be f32 or f64"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Sum over rows of `-log softmax(logits)[i, targets[i]]`: a differentiable scalar.
///
/// # Shapes
/// `logits` `[n, vocab]` (floating point), `targets` `[n]` u32.
///
/// On the CPU with f32 or f64 logits this is a fused op (two passes forward, one backward,
/// `dlogits = g · (softmax − onehot)` without materialising either); otherwise the
/// differentiable composition `-(log_softmax(logits).gather(targets).sum())`. The value is
/// accumulated in f64 and returned in the logits' dtype.
///
/// Errors on mismatched shapes, non-u32 targets, or a target id `>= vocab` (never panics).
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, vocab) = logits.dims2()?;
    let t_n = targets.dims1()?;
    if t_n != n {
        return Err(Error::InvalidInput(format!(
            "cross_entropy_sum: {t_n} targets for {n} rows of logits"
        )));
    }
    if targets.dtype() != DType::U32 {
        return Err(Error::InvalidInput(format!(
            "cross_entropy_sum: targets must be u32, got {:?}",
            targets.dtype()
        )));
    }
    let fused = logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64);
    if !fused {
        if n > 0 {
            let max = targets.max(0)?.to_scalar::<u32>()?;
            if max as usize >= vocab {
                return Err(Error::InvalidInput(format!(
                    "cross_entropy_sum: target {max} is out of range for {vocab} classes"
                )));
            }
        }
        let logp = candle_nn::ops::log_softmax(logits, 1)?;
        let picked = logp.gather(&targets.unsqueeze(1)?, 1)?;
        return Ok(picked.sum_all()?.neg()?);
    }
    let logits = logits.contiguous()?;
    let targets = targets.contiguous()?;
    let op = CrossEntropySum {
        stats: OnceLock::new(),
    };
    match logits.apply_op2(&targets, op) {
        Ok(t) => Ok(t),
        Err(e) => Err(Error::InvalidInput(e.to_string())),
    }
}
