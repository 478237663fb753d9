//! Fused attention softmax (`ops::causal_softmax`) against the composition
//! `softmax(scores · s + causal mask + key bias)`: values and gradients, f32 and f64, with and
//! without a padding bias, grouped rows (several query heads per kv head), shapes big enough
//! to take the multi-threaded path.

use crate::common;
use common::max_rel;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use cgfed_model::ops::causal_softmax::{causal_softmax, composed};

/// `[b, t]` bias: 0 for kept keys, −1e30 for the first `pad[b]` (left-padded) keys.
fn left_pad_bias(pad: &[usize], t: usize, dtype: DType) -> Result<Tensor> {
    let v: Vec<f32> = pad
        .iter()
        .flat_map(|&p| (0..t).map(move |j| if j < p { -1.0e30 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(v, (pad.len(), t), &Device::Cpu)?.to_dtype(dtype)?)
}

fn check(b: usize, g: usize, rep: usize, t: usize, dtype: DType, padded: bool) -> Result<()> {
    let dev = Device::Cpu;
    let (vtol, gtol) = match dtype {
        DType::F32 => (1e-6, 1e-5),
        _ => (1e-14, 1e-12),
    };
    let shape = (b, g, rep * t, t);
    let scale = 0.3;
    let x0 = Tensor::randn(0f64, 3.0, shape, &dev)?.to_dtype(dtype)?;
    let probe = Tensor::randn(0f64, 1.0, shape, &dev)?.to_dtype(dtype)?;
    // Left pads of 0, 3, 6, … keys (mod t): early queries of padded rows see only padding.
    let pads: Vec<usize> = (0..b).map(|i| (i * 3) % t.max(1)).collect();
    let bias = if padded {
        Some(left_pad_bias(&pads, t, dtype)?)
    } else {
        None
    };
    let run = |fused: bool| -> Result<(Tensor, Tensor)> {
        let x = Var::from_tensor(&x0)?;
        let p = if fused {
            causal_softmax(x.as_tensor(), scale, bias.as_ref())?
        } else {
            composed(x.as_tensor(), scale, bias.as_ref())?
        };
        let grads = (&p * &probe)?.sum_all()?.backward()?;
        Ok((p, grads.get(x.as_tensor()).expect("scores grad").clone()))
    };
    let (p1, d1) = run(true)?;
    let (p0, d0) = run(false)?;
    let ctx = format!("b{b} g{g} rep{rep} t{t} {dtype:?} padded={padded}");
    let e = max_rel(&p1, &p0)?;
    assert!(e <= vtol, "values {ctx}: {e}");
    let e = max_rel(&d1, &d0)?;
    assert!(e <= gtol, "grads {ctx}: {e}");
    // Causality: every probability above the diagonal is exactly zero, rows sum to 1.
    let p = p1.to_dtype(DType::F64)?.flatten_to(2)?.to_vec2::<f64>()?;
    for (r, row) in p.iter().enumerate() {
        let pos = r % t;
        assert!(row[pos + 1..].iter().all(|&v| v == 0.0), "{ctx}: row {r}");
        let s: f64 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "{ctx}: row {r} sums to {s}");
    }
    Ok(())
}

#[test]
fn matches_composition_f32_and_f64() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (b, g, rep, t) in [(1, 1, 1, 1), (2, 3, 1, 5), (2, 2, 3, 7), (1, 4, 2, 16)] {
            for padded in [false, true] {
                check(b, g, rep, t, dtype, padded)?;
            }
        }
    }
    Ok(())
}

#[test]
fn large_shapes_take_the_threaded_path_and_agree() -> Result<()> {
    // 2 · 3 · (3 · 64) · 64 = 73,728 elements, above the op's threading threshold.
    check(2, 3, 3, 64, DType::F32, true)?;
    check(2, 4, 1, 96, DType::F64, false)
}

#[test]
fn fully_padded_rows_stay_finite() -> Result<()> {
    // Left padding of 3: queries 0..3 see only padded keys.
    let x = Tensor::randn(0f32, 1.0, (1, 2, 6, 6), &Device::Cpu)?;
    let bias = left_pad_bias(&[3], 6, DType::F32)?;
    let p = causal_softmax(&x, 0.5, Some(&bias))?;
    let v = p.flatten_all()?.to_vec1::<f32>()?;
    assert!(v.iter().all(|x| x.is_finite()));
    Ok(())
}

#[test]
fn rejects_bad_shapes() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 1, 5, 3), DType::F32, &dev).unwrap();
    let err = causal_softmax(&x, 1.0, None).unwrap_err().to_string();
    assert!(err.contains("multiple of the key count"), "{err}");
    let x = Tensor::zeros((1, 1, 6, 3), DType::F32, &dev).unwrap();
    let bias = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let err = causal_softmax(&x, 1.0, Some(&bias))
        .unwrap_err()
        .to_string();
    assert!(err.contains("key bias must be [1, 3]"), "{err}");
    let x = Tensor::zeros((6, 3), DType::F32, &dev).unwrap();
    assert!(causal_softmax(&x, 1.0, None).is_err());
}
