//! The federated hooks of `LlamaTrainer`: FedProx's proximal term (`trainer.prox_mu`) and
//! merging an exact-LoRA-aggregation residual into the frozen base weights.

use candle_core::{DType, Device, Tensor};
use cgfed_core::{Example, TrainCtx, Trainer, Update};
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, OptimizerKind, TrainerConfig};

fn trainer(local_steps: usize, prox_mu: f64) -> anyhow::Result<LlamaTrainer> {
    Ok(LlamaTrainer::new(
        LlamaSpec::tiny(258),
        LoraConfig::default(),
        TrainerConfig {
            lr: 0.05,
            local_steps,
            batch_size: 3,
            optimizer: OptimizerKind::Sgd,
            prox_mu,
            ..Default::default()
        },
        7,
        Device::Cpu,
        DType::F32,
    )?)
}

fn data() -> Vec<Example> {
    (0..9)
        .map(|i| Example {
            tokens: (0..12 + i)
                .map(|j| ((j * 37 + i * 11) % 256) as u32)
                .collect(),
            loss_start: 1,
        })
        .collect()
}

fn delta(t: &mut LlamaTrainer, start: &Update) -> anyhow::Result<Vec<f32>> {
    let ctx = TrainCtx {
        round: 1,
        client: 2,
        seed: 5,
        local_steps: None,
        record_snapshots: false,
    };
    Ok(t.train_local(start, &data(), &ctx)?.delta.to_flat()?)
}

/// With SGD the proximal term is zero at the first step (w = w_start) and
/// `−lr·μ·(w₁ − w₀)` at the second, everything else being identical (same batches, same
/// w₁): `Δ₂(μ) − Δ₂(0) = −lr·μ·Δ₁`.
#[test]
fn prox_term_adds_exactly_mu_times_the_drift_to_the_gradient() -> anyhow::Result<()> {
    let (lr, mu) = (0.05f32, 3.0f32);
    let mut one = trainer(1, 0.0)?;
    let start = one.global_state()?;
    // Move away from B = 0 so the first step's gradient reaches every factor.
    let mut warm = trainer(1, 0.0)?;
    let d0 = delta(&mut warm, &start)?;
    let moved = Update::from_flat(start.layout(), &d0, &Device::Cpu)?.add(&start)?;

    let d1 = delta(&mut one, &moved)?;
    let plain = delta(&mut trainer(2, 0.0)?, &moved)?;
    let prox = delta(&mut trainer(2, mu as f64)?, &moved)?;
    let scale = d1.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    assert!(scale > 0.0);
    let mut worst = 0.0f32;
    for ((p, q), d) in prox.iter().zip(&plain).zip(&d1) {
        worst = worst.max((p - q - (-lr * mu * d)).abs());
    }
    assert!(worst <= 1e-5 * scale.max(1.0), "max deviation {worst}");
    // μ > 0 pulls the local model back: a strictly smaller delta.
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        norm(&prox) < norm(&plain),
        "{} vs {}",
        norm(&prox),
        norm(&plain)
    );
    Ok(())
}

#[test]
fn prox_mu_zero_is_plain_local_training() -> anyhow::Result<()> {
    let mut a = trainer(3, 0.0)?;
    let start = a.global_state()?;
    let cfg = TrainerConfig {
        prox_mu: 0.0,
        ..a.config().clone()
    };
    assert_eq!(cfg, *a.config());
    assert_eq!(
        delta(&mut a, &start)?,
        delta(&mut trainer(3, 0.0)?, &start)?
    );
    Ok(())
}

#[test]
fn bad_prox_mu_names_the_key() {
    for mu in [-1.0, f64::NAN, f64::INFINITY] {
        let err = TrainerConfig {
            prox_mu: mu,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("trainer.prox_mu") && err.contains(">= 0"),
            "{err}"
        );
    }
}

#[test]
fn merge_into_base_adds_the_scaled_residual_to_that_weight_only() -> anyhow::Result<()> {
    let mut t = trainer(1, 0.0)?;
    let before = t.model().weights()?;
    let scale = LoraConfig::default().scale();
    let module = "model.layers.0.self_attn.q_proj";
    let w = &before[&format!("{module}.weight")];
    let (out, inp) = w.dims2()?;
    let r = Tensor::randn(0f32, 1.0, (out, inp), &Device::Cpu)?;
    t.merge_into_base(&Update::new(vec![(module.to_string(), r.clone())])?)?;
    let after = t.model().weights()?;
    for (name, w0) in &before {
        let w1 = &after[name];
        let expected = if name == &format!("{module}.weight") {
            (w0 + r.affine(scale, 0.0)?)?
        } else {
            w0.clone()
        };
        let diff = (w1 - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{name}: {diff}");
    }
    Ok(())
}

#[test]
fn merge_into_base_rejects_unknown_modules_and_wrong_shapes() -> anyhow::Result<()> {
    let mut t = trainer(1, 0.0)?;
    let r = Tensor::zeros((4, 4), DType::F32, &Device::Cpu)?;
    let err = t
        .merge_into_base(&Update::new(vec![(
            "model.layers.99.self_attn.q_proj".into(),
            r.clone(),
        )])?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no adapted linear"), "{err}");
    let err = t
        .merge_into_base(&Update::new(vec![(
            "model.layers.0.self_attn.q_proj".into(),
            r,
        )])?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
    Ok(())
}

/// A straggler's `TrainCtx::local_steps` replaces the configured count: 2 steps of a
/// 4-step trainer are exactly a 2-step trainer's run.
#[test]
fn local_steps_override_runs_that_many_steps() -> anyhow::Result<()> {
    let mut four = trainer(4, 0.0)?;
    let start = four.global_state()?;
    let ctx = TrainCtx {
        round: 1,
        client: 2,
        seed: 5,
        local_steps: Some(2),
        record_snapshots: false,
    };
    let out = four.train_local(&start, &data(), &ctx)?;
    assert_eq!(out.steps, 2);
    assert_eq!(out.delta.to_flat()?, delta(&mut trainer(2, 0.0)?, &start)?);
    let zero = TrainCtx {
        local_steps: Some(0),
        ..ctx
    };
    assert!(four.train_local(&start, &data(), &zero).is_err());
    Ok(())
}

/// TGAP's temporal ensemble: with `record_snapshots`, the delta after each earlier local
/// step comes back too, and snapshot j is exactly the delta of a run of j + 1 steps.
#[test]
fn snapshots_are_the_deltas_after_each_local_step() -> anyhow::Result<()> {
    let mut t = trainer(4, 0.0)?;
    let start = t.global_state()?;
    let ctx = TrainCtx {
        round: 0,
        client: 1,
        seed: 9,
        local_steps: Some(3),
        record_snapshots: true,
    };
    let out = t.train_local(&start, &data(), &ctx)?;
    assert_eq!(out.snapshots.len(), 2);
    for (j, snap) in out.snapshots.iter().enumerate() {
        let short = TrainCtx {
            local_steps: Some(j + 1),
            record_snapshots: false,
            ..ctx.clone()
        };
        let d = t.train_local(&start, &data(), &short)?;
        assert!(d.snapshots.is_empty());
        assert_eq!(snap.to_flat()?, d.delta.to_flat()?, "snapshot {j}");
    }
    assert_ne!(out.snapshots[1].to_flat()?, out.delta.to_flat()?);
    Ok(())
}
