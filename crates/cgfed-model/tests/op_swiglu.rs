//! Fused SwiGLU (`ops::swiglu`) against the composition `gate.silu()? * up`: values and
//! gradients for both inputs, f32 and f64, contiguous and strided inputs, edge shapes.

use crate::common;
use common::max_rel;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use cgfed_model::ops::swiglu::swiglu;

/// The tensor itself, or a strided view with the same values (last two dims swapped twice).
fn view(t: &Tensor, strided: bool) -> Result<Tensor> {
    let n = t.rank();
    if !strided || n < 2 {
        return Ok(t.clone());
    }
    Ok(t.transpose(n - 2, n - 1)?
        .contiguous()?
        .transpose(n - 2, n - 1)?)
}

fn check(shape: &[usize], dtype: DType, strided: bool) -> Result<()> {
    let dev = Device::Cpu;
    let (vtol, gtol) = match dtype {
        DType::F32 => (1e-5, 1e-5),
        _ => (1e-12, 1e-10),
    };
    // Wide range so both sigmoid tails are exercised.
    let g0 = Tensor::randn(0f64, 4.0, shape, &dev)?.to_dtype(dtype)?;
    let u0 = Tensor::randn(0f64, 1.0, shape, &dev)?.to_dtype(dtype)?;
    let probe = Tensor::randn(0f64, 1.0, shape, &dev)?.to_dtype(dtype)?;
    let run = |fused: bool| -> Result<(Tensor, Tensor, Tensor)> {
        let gv = Var::from_tensor(&g0)?;
        let uv = Var::from_tensor(&u0)?;
        let g = view(gv.as_tensor(), strided)?;
        let u = view(uv.as_tensor(), strided)?;
        let y = if fused {
            swiglu(&g, &u)?
        } else {
            (g.silu()? * &u)?
        };
        let grads = (&y * &probe)?.sum_all()?.backward()?;
        Ok((
            y,
            grads.get(gv.as_tensor()).expect("gate grad").clone(),
            grads.get(uv.as_tensor()).expect("up grad").clone(),
        ))
    };
    let (y1, dg1, du1) = run(true)?;
    let (y0, dg0, du0) = run(false)?;
    let ctx = format!("{shape:?} {dtype:?} strided={strided}");
    let e = max_rel(&y1, &y0)?;
    assert!(e <= vtol, "values {ctx}: {e}");
    let e = max_rel(&dg1, &dg0)?;
    assert!(e <= gtol, "dgate {ctx}: {e}");
    let e = max_rel(&du1, &du0)?;
    assert!(e <= gtol, "dup {ctx}: {e}");
    Ok(())
}

#[test]
fn matches_composition_f32_and_f64() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for shape in [&[2, 5, 24][..], &[3, 7, 64], &[1], &[1, 2], &[2], &[5, 3]] {
            for strided in [false, true] {
                check(shape, dtype, strided)?;
            }
        }
    }
    Ok(())
}

#[test]
fn only_tracked_inputs_get_gradients() -> Result<()> {
    let dev = Device::Cpu;
    let gate = Tensor::randn(0f64, 2.0, (3, 8), &dev)?;
    let up = Var::randn(0f64, 1.0, (3, 8), &dev)?;
    let probe = Tensor::randn(0f64, 1.0, (3, 8), &dev)?;
    let g1 = (swiglu(&gate, up.as_tensor())? * &probe)?
        .sum_all()?
        .backward()?;
    let g0 = ((gate.silu()? * up.as_tensor())? * &probe)?
        .sum_all()?
        .backward()?;
    assert!(g1.get(&gate).is_none());
    let e = max_rel(
        g1.get(up.as_tensor()).unwrap(),
        g0.get(up.as_tensor()).unwrap(),
    )?;
    assert!(e < 1e-12, "{e}");

    let gate = Var::from_tensor(&gate)?;
    let up = up.as_tensor().detach();
    let g1 = (swiglu(gate.as_tensor(), &up)? * &probe)?
        .sum_all()?
        .backward()?;
    let g0 = ((gate.as_tensor().silu()? * &up)? * &probe)?
        .sum_all()?
        .backward()?;
    assert!(g1.get(&up).is_none());
    let e = max_rel(
        g1.get(gate.as_tensor()).unwrap(),
        g0.get(gate.as_tensor()).unwrap(),
    )?;
    assert!(e < 1e-10, "{e}");
    Ok(())
}

#[test]
fn same_input_twice_sums_both_gradients() -> Result<()> {
    // swiglu(x, x) = x² sigmoid(x): both paths must accumulate into x.
    let x = Var::randn(0f64, 1.5, (4, 5), &Device::Cpu)?;
    let g1 = swiglu(x.as_tensor(), x.as_tensor())?
        .sum_all()?
        .backward()?;
    let g0 = (x.as_tensor().silu()? * x.as_tensor())?
        .sum_all()?
        .backward()?;
    let e = max_rel(
        g1.get(x.as_tensor()).unwrap(),
        g0.get(x.as_tensor()).unwrap(),
    )?;
    assert!(e < 1e-10, "{e}");
    Ok(())
}

#[test]
fn rejects_mismatched_inputs_and_falls_back_for_half() -> Result<()> {
    let dev = Device::Cpu;
    let a = Tensor::zeros((2, 4), DType::F32, &dev)?;
    assert!(swiglu(&a, &Tensor::zeros((2, 3), DType::F32, &dev)?).is_err());
    assert!(swiglu(&a, &Tensor::zeros((2, 4), DType::F64, &dev)?).is_err());
    let g = Tensor::randn(0f32, 1.0, (3, 8), &dev)?.to_dtype(DType::BF16)?;
    let u = Tensor::randn(0f32, 1.0, (3, 8), &dev)?.to_dtype(DType::BF16)?;
    assert_eq!(max_rel(&swiglu(&g, &u)?, &(g.silu()? * &u)?)?, 0.0);
    Ok(())
}

#[test]
fn large_shapes_take_the_threaded_path_and_agree() -> Result<()> {
    // 4 · 64 · 344 = 88,064 elements, above the kernels' threading threshold (and not a
    // multiple of the 4,096-element block, so the last block is partial).
    check(&[4, 64, 344], DType::F32, false)?;
    check(&[3, 100, 130], DType::F64, true)
}
