//! `FusedAdamW` follows `candle_nn::optim::AdamW` step for step (within f32 round-off),
//! with and without weight decay, and skips variables without a gradient.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use cgfed_model::optim::FusedAdamW;

fn run<O: Optimizer<Config = ParamsAdamW>>(params: ParamsAdamW) -> anyhow::Result<Vec<Vec<f32>>> {
    let dev = Device::Cpu;
    // deterministic, non-trivial start values
    let init: Vec<f32> = (0..91)
        .map(|i| ((i * 37 % 91) as f32 / 45.0) - 1.0)
        .collect();
    let w = Var::from_tensor(&Tensor::from_vec(init, (7, 13), &dev)?)?;
    let untouched = Var::from_tensor(&Tensor::ones(3, DType::F32, &dev)?)?;
    let a: Vec<f32> = (0..91).map(|i| 0.1 + (i % 5) as f32 * 0.3).collect();
    let c: Vec<f32> = (0..91)
        .map(|i| ((i * 11 % 17) as f32 - 8.0) * 0.05)
        .collect();
    let a = Tensor::from_vec(a, (7, 13), &dev)?;
    let c = Tensor::from_vec(c, (7, 13), &dev)?;
    let mut opt = O::new(vec![w.clone(), untouched.clone()], params)?;
    let mut history = Vec::new();
    for _ in 0..6 {
        let loss = ((w.as_tensor().sqr()? * &a)? + (w.as_tensor() * &c)?)?.sum_all()?;
        opt.step(&loss.backward()?)?;
        history.push(w.as_tensor().flatten_all()?.to_vec1::<f32>()?);
    }
    assert_eq!(
        untouched.as_tensor().to_vec1::<f32>()?,
        vec![1.0; 3],
        "no gradient, no update"
    );
    Ok(history)
}

fn compare(params: ParamsAdamW) -> anyhow::Result<()> {
    let fused = run::<FusedAdamW>(params.clone())?;
    let reference = run::<AdamW>(params)?;
    let mut moved = 0f32;
    for (f, r) in fused.iter().zip(&reference) {
        for (x, y) in f.iter().zip(r) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "fused {x} vs candle {y}"
            );
        }
    }
    for (x, y) in fused[5].iter().zip(&fused[0]) {
        moved = moved.max((x - y).abs());
    }
    assert!(moved > 1e-3, "the optimizer did not move the parameters");
    Ok(())
}

#[test]
fn matches_candle_adamw() -> anyhow::Result<()> {
    compare(ParamsAdamW {
        lr: 0.05,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    })
}

#[test]
fn matches_candle_adamw_with_weight_decay() -> anyhow::Result<()> {
    compare(ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.1,
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
    })
}
