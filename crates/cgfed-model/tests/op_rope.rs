//! Fused RoPE (`ops::rope`, `ops::rope_interleaved`) against candle-nn's differentiable
//! `rope_slow` / `rope_i_slow`: values and input gradients, f32 and f64, contiguous and
//! strided inputs, longer tables, edge shapes.

use crate::common;
use common::max_rel;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::rotary_emb::{rope_i_slow, rope_slow};
use cgfed_model::ops::rope::{rope, rope_interleaved};

/// Real RoPE tables `[rows, d/2]` for θ = 10000.
fn tables(rows: usize, d: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
    let half = d / 2;
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for p in 0..rows {
        for i in 0..half {
            let a = p as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
            c.push(a.cos());
            s.push(a.sin());
        }
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(c, (rows, half), &dev)?.to_dtype(dtype)?,
        Tensor::from_vec(s, (rows, half), &dev)?.to_dtype(dtype)?,
    ))
}

fn check(
    (b, h, t, d): (usize, usize, usize, usize),
    extra_rows: usize,
    dtype: DType,
    strided: bool,
    interleaved: bool,
) -> Result<()> {
    let dev = Device::Cpu;
    let (vtol, gtol) = match dtype {
        DType::F32 => (1e-5, 1e-5),
        _ => (1e-12, 1e-10),
    };
    let (cos, sin) = tables(t + extra_rows, d, dtype)?;
    let probe = Tensor::randn(0f64, 1.0, (b, h, t, d), &dev)?.to_dtype(dtype)?;
    // Strided: x is the [b, t, h, d] var viewed as [b, h, t, d], as in attention.
    let shape = if strided { (b, t, h, d) } else { (b, h, t, d) };
    let x0 = Tensor::randn(0f64, 1.0, shape, &dev)?.to_dtype(dtype)?;
    let run = |fused: bool| -> Result<(Tensor, Tensor)> {
        let xv = Var::from_tensor(&x0)?;
        let x = if strided {
            xv.as_tensor().transpose(1, 2)?
        } else {
            xv.as_tensor().clone()
        };
        let y = match (fused, interleaved) {
            (true, false) => rope(&x, &cos, &sin)?,
            (true, true) => rope_interleaved(&x, &cos, &sin)?,
            // The slow versions want contiguous-friendly inputs and exactly t rows for rope_i.
            (false, false) => rope_slow(&x.contiguous()?, &cos, &sin)?,
            (false, true) => rope_i_slow(
                &x.contiguous()?,
                &cos.narrow(0, 0, t)?,
                &sin.narrow(0, 0, t)?,
            )?,
        };
        let grads = (&y * &probe)?.sum_all()?.backward()?;
        Ok((y, grads.get(xv.as_tensor()).expect("x grad").clone()))
    };
    let (y1, dx1) = run(true)?;
    let (y0, dx0) = run(false)?;
    let ctx = format!(
        "{:?} +{extra_rows} {dtype:?} strided={strided} interleaved={interleaved}",
        (b, h, t, d)
    );
    let e = max_rel(&y1, &y0)?;
    assert!(e <= vtol, "values {ctx}: {e}");
    let e = max_rel(&dx1, &dx0)?;
    assert!(e <= gtol, "dx {ctx}: {e}");
    Ok(())
}

#[test]
fn matches_composition_f32_and_f64_both_layouts() -> Result<()> {
    for interleaved in [false, true] {
        for dtype in [DType::F32, DType::F64] {
            for shape in [
                (2, 3, 5, 8),
                (1, 4, 17, 64),
                (3, 2, 7, 16),
                (1, 1, 1, 2),
                (2, 1, 3, 2),
            ] {
                for strided in [false, true] {
                    for extra in [0, 3] {
                        check(shape, extra, dtype, strided, interleaved)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn backward_is_the_inverse_rotation() -> Result<()> {
    // Rotation is orthogonal: the gradient of sum(rope(x) ⊙ rope(v)) w.r.t. x is v.
    let (cos, sin) = tables(6, 8, DType::F64)?;
    let x = Var::randn(0f64, 1.0, (2, 3, 6, 8), &Device::Cpu)?;
    let v = Tensor::randn(0f64, 1.0, (2, 3, 6, 8), &Device::Cpu)?;
    for interleaved in [false, true] {
        let f = if interleaved { rope_interleaved } else { rope };
        let g = (f(x.as_tensor(), &cos, &sin)? * f(&v, &cos, &sin)?)?
            .sum_all()?
            .backward()?;
        let e = max_rel(g.get(x.as_tensor()).unwrap(), &v)?;
        assert!(e < 1e-12, "{e}");
    }
    Ok(())
}

#[test]
fn rejects_bad_shapes() -> Result<()> {
    let dev = Device::Cpu;
    let (cos, sin) = tables(4, 8, DType::F32)?;
    let x = Tensor::zeros((1, 2, 4, 8), DType::F32, &dev)?;
    assert!(rope(&x.narrow(3, 0, 6)?, &cos, &sin).is_err());
    assert!(rope(&Tensor::zeros((1, 2, 5, 8), DType::F32, &dev)?, &cos, &sin).is_err());
    assert!(rope(&Tensor::zeros((2, 4, 8), DType::F32, &dev)?, &cos, &sin).is_err());
    assert!(rope(&x.to_dtype(DType::F64)?, &cos, &sin).is_err());
    assert!(rope_interleaved(&x, &cos.narrow(1, 0, 3)?, &sin).is_err());
    Ok(())
}

#[test]
fn tracked_tables_and_half_precision_fall_back_to_the_composition() -> Result<()> {
    let (cos, sin) = tables(5, 8, DType::F64)?;
    let x = Var::randn(0f64, 1.0, (1, 2, 5, 8), &Device::Cpu)?;
    let cv = Var::from_tensor(&cos)?;
    let g1 = rope(x.as_tensor(), cv.as_tensor(), &sin)?
        .sqr()?
        .sum_all()?
        .backward()?;
    let g0 = rope_slow(x.as_tensor(), cv.as_tensor(), &sin)?
        .sqr()?
        .sum_all()?
        .backward()?;
    let e = max_rel(
        g1.get(cv.as_tensor()).unwrap(),
        g0.get(cv.as_tensor()).unwrap(),
    )?;
    assert!(e < 1e-12, "{e}");
    let xh = x.as_tensor().to_dtype(DType::BF16)?;
    let (ch, sh) = (cos.to_dtype(DType::BF16)?, sin.to_dtype(DType::BF16)?);
    assert_eq!(
        max_rel(&rope(&xh, &ch, &sh)?, &rope_slow(&xh, &ch, &sh)?)?,
        0.0
    );
    Ok(())
}

#[test]
fn large_shapes_take_the_threaded_path_and_agree() -> Result<()> {
    // 4 · 4 · 128 · 32 = 65,536 elements, above the kernels' threading threshold.
    for interleaved in [false, true] {
        check((4, 4, 128, 32), 0, DType::F32, true, interleaved)?;
    }
    check((2, 3, 96, 64), 5, DType::F64, false, false)
}
