//! `ops::frozen_linear`: same value as `x.matmul(wᵀ)`, same input gradient, no weight
//! gradient for a frozen weight, a weight gradient for a trainable one.

use candle_core::{DType, Device, Tensor, Var, D};
use cgfed_model::ops::linear::linear;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn plain(x: &Tensor, w: &Tensor) -> Tensor {
    let dims = x.dims();
    let (in_dim, lead) = dims.split_last().unwrap();
    let rows: usize = lead.iter().product();
    let mut out = lead.to_vec();
    out.push(w.dim(0).unwrap());
    x.reshape((rows, *in_dim))
        .unwrap()
        .matmul(&w.t().unwrap())
        .unwrap()
        .reshape(out)
        .unwrap()
}

/// Forward and input gradient of `frozen_linear` vs the plain composition for `x_shape`
/// and a `[out, in]` weight; returns the gradient difference.
fn check(x_shape: &[usize], out_dim: usize, dtype: DType, tol: f64) {
    let dev = Device::Cpu;
    let in_dim = *x_shape.last().unwrap();
    let x0 = Tensor::randn(0f32, 1.0, x_shape, &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let w = Tensor::randn(0f32, 0.5, (out_dim, in_dim), &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let mut out_shape = x_shape.to_vec();
    *out_shape.last_mut().unwrap() = out_dim;
    let r = Tensor::randn(0f32, 1.0, out_shape, &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();

    let x = Var::from_tensor(&x0).unwrap();
    let y_fast = linear(x.as_tensor(), &w).unwrap();
    let y_ref = plain(x.as_tensor(), &w);
    assert_eq!(y_fast.dims(), y_ref.dims());
    assert_eq!(
        max_abs_diff(&y_fast, &y_ref),
        0.0,
        "forward differs for {x_shape:?}"
    );

    let g_fast = y_fast
        .mul(&r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g_ref = y_ref
        .mul(&r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dx_fast = g_fast.get(x.as_tensor()).expect("x gets a gradient");
    let dx_ref = g_ref.get(x.as_tensor()).unwrap();
    let diff = max_abs_diff(dx_fast, dx_ref);
    assert!(
        diff <= tol,
        "dx differs by {diff} for {x_shape:?} {dtype:?}"
    );
    // No gradient for the frozen weight (the plain matmul computes one for `wᵀ`).
    assert!(g_fast.get(&w).is_none(), "frozen weight got a gradient");
}

#[test]
fn matches_matmul_f32() {
    for (shape, out) in [
        (vec![5usize, 7], 3usize),
        (vec![1, 1], 1),
        (vec![2, 4, 6], 5),
        (vec![3, 2, 5, 16], 9),
        (vec![64, 96], 130),
    ] {
        check(&shape, out, DType::F32, 1e-6);
    }
}

#[test]
fn matches_matmul_f64() {
    for (shape, out) in [
        (vec![5usize, 7], 3usize),
        (vec![2, 4, 6], 5),
        (vec![33, 48], 17),
    ] {
        check(&shape, out, DType::F64, 1e-12);
    }
}

#[test]
fn strided_input() {
    // A transposed (non-contiguous) input.
    let dev = Device::Cpu;
    let x0 = Tensor::randn(0f64, 1.0, (6, 2, 4), &dev).unwrap();
    let w = Tensor::randn(0f64, 1.0, (3, 6), &dev).unwrap();
    let x = Var::from_tensor(&x0).unwrap();
    let xt = x.as_tensor().transpose(0, 2).unwrap(); // [4, 2, 6]
    let y_fast = linear(&xt, &w).unwrap();
    let y_ref = plain(&xt, &w);
    assert!(max_abs_diff(&y_fast, &y_ref) <= 1e-12);
    let g_fast = y_fast.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = y_ref.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let d = max_abs_diff(
        g_fast.get(x.as_tensor()).unwrap(),
        g_ref.get(x.as_tensor()).unwrap(),
    );
    assert!(d <= 1e-12, "{d}");
}

#[test]
fn trainable_weight_still_gets_its_gradient() {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 4), &dev).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 4), &dev).unwrap()).unwrap();
    let y_fast = linear(x.as_tensor(), w.as_tensor()).unwrap();
    let y_ref = plain(x.as_tensor(), w.as_tensor());
    let g_fast = y_fast.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = y_ref.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for t in [x.as_tensor(), w.as_tensor()] {
        let d = max_abs_diff(g_fast.get(t).unwrap(), g_ref.get(t).unwrap());
        assert!(d <= 1e-12, "{d}");
    }
    // A weight computed from a Var also trains.
    let w2 = w.as_tensor().affine(2.0, 0.0).unwrap();
    let g = linear(x.as_tensor(), &w2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(w.as_tensor()).is_some());
}

#[test]
fn no_gradient_tracking_without_vars() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (3, 8), &dev).unwrap();
    let y = linear(&x, &w).unwrap();
    assert!(!y.track_op());
    assert_eq!(y.dims(), &[4, 3]);
    let s = y.sum(D::Minus1).unwrap();
    assert_eq!(s.dims(), &[4]);
}

#[test]
fn shape_and_dtype_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
    assert!(linear(&x, &w).is_err());
    let w64 = Tensor::zeros((3, 4), DType::F64, &dev).unwrap();
    assert!(linear(&x, &w64).is_err());
    let w3 = Tensor::zeros((1, 3, 4), DType::F32, &dev).unwrap();
    assert!(linear(&x, &w3).is_err());
    let scalar = Tensor::new(1f32, &dev).unwrap();
    assert!(linear(&scalar, &w).is_err());
    // Empty batch: an empty output of the right shape.
    let empty = Tensor::zeros((0, 4), DType::F32, &dev).unwrap();
    let w4 = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
    assert_eq!(linear(&empty, &w4).unwrap().dims(), &[0, 3]);
}
