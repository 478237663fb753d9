//! Fused RMSNorm (`ops::rms_norm`) against candle-nn's differentiable `rms_norm_slow`:
//! values and gradients for x and w, f32 and f64, contiguous and strided inputs, edge shapes.

use crate::common;
use common::max_rel;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::ops::rms_norm_slow;
use cgfed_model::ops::rms_norm::rms_norm;

fn tols(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-5),
        _ => (1e-12, 1e-10),
    }
}

/// Compares values and gradients (x and w) of the fused op and the composition.
fn check(shape: &[usize], dtype: DType, eps: f32, strided: bool) -> Result<()> {
    let dev = Device::Cpu;
    let (vtol, gtol) = tols(dtype);
    let d = *shape.last().unwrap();
    let x0 = Tensor::randn(0f64, 1.0, shape, &dev)?.to_dtype(dtype)?;
    let w0 = (Tensor::randn(0f64, 1.0, d, &dev)?.to_dtype(dtype)? + 1.0)?;
    let probe = Tensor::randn(0f64, 1.0, shape, &dev)?.to_dtype(dtype)?;

    let run = |fused: bool| -> Result<(Tensor, Tensor, Tensor)> {
        let xv = Var::from_tensor(&x0)?;
        let wv = Var::from_tensor(&w0)?;
        // Feed the op the strided view when asked (Var::from_tensor copies contiguously).
        let x = if strided {
            let n = shape.len();
            xv.as_tensor()
                .transpose(n - 2, n - 1)?
                .contiguous()?
                .transpose(n - 2, n - 1)?
        } else {
            xv.as_tensor().clone()
        };
        let y = if fused {
            rms_norm(&x, wv.as_tensor(), eps)?
        } else {
            rms_norm_slow(&x, wv.as_tensor(), eps)?
        };
        let loss = (&y * &probe)?.sum_all()?;
        let g = loss.backward()?;
        Ok((
            y,
            g.get(xv.as_tensor()).expect("x grad").clone(),
            g.get(wv.as_tensor()).expect("w grad").clone(),
        ))
    };
    let (y1, dx1, dw1) = run(true)?;
    let (y0, dx0, dw0) = run(false)?;
    let ctx = format!("{shape:?} {dtype:?} eps={eps} strided={strided}");
    let e = max_rel(&y1, &y0)?;
    assert!(e <= vtol, "values {ctx}: {e}");
    let e = max_rel(&dx1, &dx0)?;
    assert!(e <= gtol, "dx {ctx}: {e}");
    // dw sums over every row; the composition accumulates that sum in the input dtype (the
    // fused op in f64), so the reference's own rounding grows like sqrt(rows): the tolerance
    // does too (512 f32 rows: 2.3e-4; measured differences up to 2.6e-5).
    let rows = (shape.iter().product::<usize>() / d) as f64;
    let dw_tol = gtol * rows.sqrt().max(1.0);
    let e = max_rel(&dw1, &dw0)?;
    assert!(e <= dw_tol, "dw {ctx}: {e} (tolerance {dw_tol})");
    Ok(())
}

#[test]
fn matches_composition_f32_and_f64() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for shape in [
            &[3, 5, 16][..],
            &[2, 7, 64],
            &[1, 2],
            &[1, 1, 2],
            &[4, 2],
            &[9, 33],
        ] {
            for strided in [false, true] {
                check(shape, dtype, 1e-5, strided)?;
            }
        }
    }
    Ok(())
}

#[test]
fn eps_matters() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for eps in [1e-6, 1e-2, 1.0] {
            check(&[3, 8], dtype, eps, false)?;
        }
    }
    // Tiny inputs: eps dominates the denominator.
    let x = (Tensor::randn(0f64, 1.0, (2, 8), &Device::Cpu)? * 1e-4)?;
    let w = Tensor::ones(8, DType::F64, &Device::Cpu)?;
    let e = max_rel(&rms_norm(&x, &w, 1e-2)?, &rms_norm_slow(&x, &w, 1e-2)?)?;
    assert!(e < 1e-12, "{e}");
    Ok(())
}

#[test]
fn frozen_weight_gets_no_gradient_and_x_grad_is_unchanged() -> Result<()> {
    let dev = Device::Cpu;
    let xv = Var::randn(0f64, 1.0, (4, 6, 10), &dev)?;
    let w = (Tensor::randn(0f64, 1.0, 10, &dev)? + 1.0)?;
    let probe = Tensor::randn(0f64, 1.0, (4, 6, 10), &dev)?;
    let g1 = (rms_norm(xv.as_tensor(), &w, 1e-5)? * &probe)?
        .sum_all()?
        .backward()?;
    let g0 = (rms_norm_slow(xv.as_tensor(), &w, 1e-5)? * &probe)?
        .sum_all()?
        .backward()?;
    assert!(g1.get(&w).is_none());
    let e = max_rel(
        g1.get(xv.as_tensor()).unwrap(),
        g0.get(xv.as_tensor()).unwrap(),
    )?;
    assert!(e < 1e-10, "{e}");
    // Only w trainable (full fine-tuning of a norm over frozen activations).
    let wv = Var::from_tensor(&w)?;
    let x = xv.as_tensor().detach();
    let g1 = (rms_norm(&x, wv.as_tensor(), 1e-5)? * &probe)?
        .sum_all()?
        .backward()?;
    let g0 = (rms_norm_slow(&x, wv.as_tensor(), 1e-5)? * &probe)?
        .sum_all()?
        .backward()?;
    let e = max_rel(
        g1.get(wv.as_tensor()).unwrap(),
        g0.get(wv.as_tensor()).unwrap(),
    )?;
    assert!(e < 1e-10, "{e}");
    Ok(())
}

#[test]
fn rejects_mismatched_weight() -> Result<()> {
    let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
    assert!(rms_norm(&x, &Tensor::zeros(3, DType::F32, &Device::Cpu)?, 1e-5).is_err());
    assert!(rms_norm(&x, &Tensor::zeros(4, DType::F64, &Device::Cpu)?, 1e-5).is_err());
    Ok(())
}

#[test]
fn other_dtypes_fall_back_to_the_composition() -> Result<()> {
    let x = Tensor::randn(0f32, 1.0, (3, 8), &Device::Cpu)?.to_dtype(DType::BF16)?;
    let w = Tensor::ones(8, DType::BF16, &Device::Cpu)?;
    let y = rms_norm(&x, &w, 1e-5)?;
    let y0 = rms_norm_slow(&x, &w, 1e-5)?;
    assert_eq!(max_rel(&y, &y0)?, 0.0);
    let _ = y.sum(D::Minus1)?;
    Ok(())
}

#[test]
fn large_shapes_take_the_threaded_path_and_agree() -> Result<()> {
    // 512 · 128 = 65,536 elements, above the kernels' threading threshold: dx is computed in
    // row blocks on several threads and dw summed from per-block partials.
    check(&[4, 128, 128], DType::F32, 1e-5, false)?;
    check(&[2, 160, 96], DType::F64, 1e-5, false)
}
