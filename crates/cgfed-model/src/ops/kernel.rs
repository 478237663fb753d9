//! Plumbing shared by the fused CPU kernels: the float types they run on, contiguous slices
//! of candle's CPU storage, the f32/f64 dispatch of a kernel over its inputs, and the
//! row-parallel loop that spreads a big op over candle's CPU threads.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, WithDType};
use rayon::prelude::*;

/// Below this many output elements a kernel runs on the calling thread: splitting smaller
/// work costs more in synchronisation than it saves.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;

/// Floating-point element types the fused kernels run on (f32, f64).
pub(crate) trait Real: WithDType + Send + Sync {
    /// `e^self`.
    fn exp(self) -> Self;
    /// `1 / (1 + e^(−self))`.
    fn sigmoid(self) -> Self {
        Self::one() / (Self::one() + (Self::zero() - self).exp())
    }
    /// −∞.
    fn neg_infinity() -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn neg_infinity() -> Self {
        f32::NEG_INFINITY
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn neg_infinity() -> Self {
        f64::NEG_INFINITY
    }
}

/// The contiguous slice of `s` that `l` views, or an error naming the op and the input for a
/// strided layout or another element type.
pub(crate) fn slice<'a, T: WithDType>(
    op: &str,
    what: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

/// A kernel over same-typed float inputs, run for f32 or f64 by [`run_kernel`].
pub(crate) trait Kernel {
    /// The op's name, for error messages.
    const NAME: &'static str;
    /// The inputs' names, in order, for error messages.
    const INPUTS: &'static [&'static str];
    /// Computes the output from contiguous inputs.
    fn run<T: Real>(&self, inputs: &[&[T]]) -> candle_core::Result<Vec<T>>;
}

/// Runs `k` on `inputs` (storage and layout of each) in their common dtype, f32 or f64.
pub(crate) fn run_kernel<K: Kernel>(
    k: &K,
    inputs: &[(&CpuStorage, &Layout)],
) -> candle_core::Result<CpuStorage> {
    fn go<T: Real, K: Kernel>(
        k: &K,
        inputs: &[(&CpuStorage, &Layout)],
    ) -> candle_core::Result<CpuStorage> {
        let slices = inputs
            .iter()
            .enumerate()
            .map(|(i, (s, l))| slice::<T>(K::NAME, K::INPUTS.get(i).unwrap_or(&"input"), s, l))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(T::to_cpu_storage_owned(k.run::<T>(&slices)?))
    }
    let dtypes: Vec<DType> = inputs.iter().map(|(s, _)| s.dtype()).collect();
    match dtypes.as_slice() {
        [DType::F32, rest @ ..] if rest.iter().all(|&d| d == DType::F32) => go::<f32, K>(k, inputs),
        [DType::F64, rest @ ..] if rest.iter().all(|&d| d == DType::F64) => go::<f64, K>(k, inputs),
        _ => candle_core::bail!("{}: unsupported dtypes {dtypes:?}", K::NAME),
    }
}

/// Runs `f(first_row, rows)` over `out` cut into blocks of whole rows of `row_len` elements
/// (the last row may be shorter), on candle's CPU threads when `out` is big enough, and
/// returns each block's result in order. One block (and the calling thread) otherwise.
pub(crate) fn par_rows<T: Send, R: Send>(
    out: &mut [T],
    row_len: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let work = out.len();
    par_rows_with_work(out, row_len, work, f)
}

/// [`par_rows`] whose decision to split is made on `work` (elements touched in all) rather
/// than on the output's length: for kernels that read much more than they write.
pub(crate) fn par_rows_with_work<T: Send, R: Send>(
    out: &mut [T],
    row_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let rows = out.len().div_ceil(row_len.max(1));
    let threads = candle_core::utils::get_num_threads();
    if threads <= 1 || work < PAR_MIN_ELEMS || rows < 2 {
        return vec![f(0, out)];
    }
    // A few blocks per thread, so uneven rows (causal attention) still balance.
    let per = rows.div_ceil((threads * 4).min(rows));
    out.par_chunks_mut(per * row_len)
        .enumerate()
        .map(|(i, block)| f(i * per, block))
        .collect()
}

/// [`par_rows`] over two outputs of one length, cut at the same rows: `f(first_row, a, b)`.
pub(crate) fn par_rows2<T: Send>(
    a: &mut [T],
    b: &mut [T],
    row_len: usize,
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync,
) {
    assert_eq!(a.len(), b.len(), "par_rows2: outputs differ in length");
    let rows = a.len().div_ceil(row_len.max(1));
    let threads = candle_core::utils::get_num_threads();
    if threads <= 1 || 2 * a.len() < PAR_MIN_ELEMS || rows < 2 {
        return f(0, a, b);
    }
    let per = rows.div_ceil((threads * 4).min(rows));
    a.par_chunks_mut(per * row_len)
        .zip(b.par_chunks_mut(per * row_len))
        .enumerate()
        .for_each(|(i, (a, b))| f(i * per, a, b));
}

/// Element count of the blocks elementwise kernels are cut into for [`par_rows`].
pub(crate) const ELEMWISE_BLOCK: usize = 4096;
