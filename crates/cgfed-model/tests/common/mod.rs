//! Helpers shared by the fused-op tests.
#![allow(dead_code)]

use anyhow::Result;
use candle_core::{DType, Tensor};

/// Largest `|a − b| / max(1, |b|)` over all elements.
pub fn max_rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max))
}
