//! `ops::cross_entropy_sum` against the differentiable composition
//! `-(log_softmax(logits).gather(targets).sum())`: value and gradient.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::ops::log_softmax;
use cgfed_model::ops::cross_entropy::cross_entropy_sum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn reference(logits: &Tensor, targets: &Tensor) -> Tensor {
    let logp = log_softmax(logits, 1).unwrap();
    let picked = logp.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap();
    picked.sum_all().unwrap().neg().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    scalar(
        &a.sub(b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap(),
    )
}

/// Compare value and gradient (of `scale · loss`, as the mean loss does) for random
/// logits `[n, vocab]` uniform in `±range`.
fn check(n: usize, vocab: usize, range: f64, dtype: DType, seed: u64, grad_tol: f64) {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f64> = (0..n * vocab)
        .map(|_| rng.random_range(-range..range))
        .collect();
    let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
    let logits0 = Tensor::from_vec(data, (n, vocab), &dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let targets = Tensor::from_vec(targets, n, &dev).unwrap();
    let logits = Var::from_tensor(&logits0).unwrap();
    let scale = 1.0 / n.max(1) as f64;

    let fast = cross_entropy_sum(logits.as_tensor(), &targets).unwrap();
    let slow = reference(logits.as_tensor(), &targets);
    assert_eq!(fast.dims(), slow.dims(), "scalar output");
    assert_eq!(fast.dtype(), dtype);
    let (vf, vs) = (scalar(&fast), scalar(&slow));
    assert!(
        (vf - vs).abs() <= 1e-5 * vs.abs().max(1.0),
        "value {vf} vs {vs} (n {n}, vocab {vocab}, ±{range}, {dtype:?})"
    );

    let gf = (fast * scale).unwrap().backward().unwrap();
    let gs = (slow * scale).unwrap().backward().unwrap();
    let d = max_abs_diff(
        gf.get(logits.as_tensor()).unwrap(),
        gs.get(logits.as_tensor()).unwrap(),
    );
    assert!(
        d <= grad_tol,
        "gradient differs by {d} (n {n}, vocab {vocab}, ±{range}, {dtype:?})"
    );
    assert!(gf.get(&targets).is_none());
}

#[test]
fn matches_composition_f32() {
    for (i, &(n, vocab, range)) in [
        (1usize, 1usize, 1.0),
        (3, 2, 1.0),
        (7, 13, 3.0),
        (16, 258, 10.0),
        (5, 1000, 50.0),
        (64, 2000, 5.0),
    ]
    .iter()
    .enumerate()
    {
        check(n, vocab, range, DType::F32, i as u64, 1e-5);
    }
}

#[test]
fn matches_composition_f64() {
    for (i, &(n, vocab, range)) in [(3usize, 2usize, 1.0), (9, 77, 50.0), (32, 500, 4.0)]
        .iter()
        .enumerate()
    {
        check(n, vocab, range, DType::F64, 100 + i as u64, 1e-12);
    }
}

#[test]
fn large_vocab_f32() {
    // SmolLM2's vocabulary, large-magnitude logits; big enough to run on several threads.
    check(4, 49152, 50.0, DType::F32, 7, 1e-5);
    check(3, 49152, 2.0, DType::F32, 8, 1e-5);
}

#[test]
fn gradient_of_unscaled_sum_and_accumulation() {
    // The loss used twice: the gradient accumulates (2 · (softmax − onehot)).
    let dev = Device::Cpu;
    let logits = Var::from_tensor(&Tensor::randn(0f64, 3.0, (6, 11), &dev).unwrap()).unwrap();
    let targets = Tensor::new(&[0u32, 10, 5, 5, 1, 2], &dev).unwrap();
    let fast = cross_entropy_sum(logits.as_tensor(), &targets).unwrap();
    let fast2 = (&fast + &fast).unwrap();
    let slow = reference(logits.as_tensor(), &targets);
    let slow2 = (&slow + &slow).unwrap();
    let gf = fast2.backward().unwrap();
    let gs = slow2.backward().unwrap();
    let d = max_abs_diff(
        gf.get(logits.as_tensor()).unwrap(),
        gs.get(logits.as_tensor()).unwrap(),
    );
    assert!(d <= 1e-12, "{d}");
}

#[test]
fn strided_logits() {
    let dev = Device::Cpu;
    let base = Var::from_tensor(&Tensor::randn(0f32, 2.0, (9, 5), &dev).unwrap()).unwrap();
    let logits = base.as_tensor().t().unwrap(); // [5, 9], non-contiguous
    let targets = Tensor::new(&[8u32, 0, 3, 3, 7], &dev).unwrap();
    let fast = cross_entropy_sum(&logits, &targets).unwrap();
    let slow = reference(&logits, &targets);
    assert!((scalar(&fast) - scalar(&slow)).abs() <= 1e-5);
    let gf = fast.backward().unwrap();
    let gs = slow.backward().unwrap();
    let d = max_abs_diff(
        gf.get(base.as_tensor()).unwrap(),
        gs.get(base.as_tensor()).unwrap(),
    );
    assert!(d <= 1e-6, "{d}");
}

#[test]
fn invalid_inputs_are_errors() {
    let dev = Device::Cpu;
    let logits = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    let bad = Tensor::new(&[1u32, 4], &dev).unwrap();
    let err = cross_entropy_sum(&logits, &bad).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    // Half precision takes the composition, which checks too.
    let half = logits.to_dtype(DType::BF16).unwrap();
    assert!(cross_entropy_sum(&half, &bad).is_err());
    // Wrong count, wrong rank, wrong dtype.
    let one = Tensor::new(&[1u32], &dev).unwrap();
    assert!(cross_entropy_sum(&logits, &one).is_err());
    let flat = Tensor::zeros(4, DType::F32, &dev).unwrap();
    assert!(cross_entropy_sum(&flat, &one).is_err());
    let i64t = Tensor::new(&[1i64, 2], &dev).unwrap();
    assert!(cross_entropy_sum(&logits, &i64t).is_err());
    // Zero rows: zero loss.
    let empty = Tensor::zeros((0, 4), DType::F32, &dev).unwrap();
    let none = Tensor::zeros(0, DType::U32, &dev).unwrap();
    assert_eq!(scalar(&cross_entropy_sum(&empty, &none).unwrap()), 0.0);
}

#[test]
fn half_precision_falls_back_to_the_composition() {
    let dev = Device::Cpu;
    let logits = Tensor::randn(0f32, 1.0, (3, 7), &dev)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let targets = Tensor::new(&[0u32, 6, 2], &dev).unwrap();
    let a = scalar(&cross_entropy_sum(&logits, &targets).unwrap());
    let b = scalar(&reference(&logits, &targets));
    assert_eq!(a, b);
}
