//! LoRA completeness: merging adapters into the base weights, full fine-tuning
//! (`lora.mode = "full"`), and LoRA dropout (`lora.dropout`, seeded, training only).

use candle_core::{DType, Device, Tensor};
use cgfed_core::toml;
use cgfed_core::{Example, TrainCtx, Trainer};
use cgfed_model::batch::{mean_nll, Batch};
use cgfed_model::model::weight_shapes;
use cgfed_model::{
    init, Llama, LlamaSpec, LlamaTrainer, LoraConfig, LoraDropout, LoraMode, LoraTarget,
    TrainerConfig,
};

fn spec() -> LlamaSpec {
    let mut s = LlamaSpec::tiny(50);
    s.max_seq_len = 32;
    s
}

fn all_targets() -> Vec<String> {
    LoraTarget::ALL.map(|t| t.as_str().to_string()).to_vec()
}

fn data() -> Vec<Example> {
    (0..6u32)
        .map(|i| Example {
            tokens: (0..20).map(|j| (i * 11 + j * 5) % 50).collect(),
            loss_start: 2,
        })
        .collect()
}

fn trainer(lora: LoraConfig) -> anyhow::Result<LlamaTrainer> {
    Ok(LlamaTrainer::new(
        spec(),
        lora,
        TrainerConfig {
            local_steps: 2,
            batch_size: 3,
            ..Default::default()
        },
        5,
        Device::Cpu,
        DType::F32,
    )?)
}

const CTX: TrainCtx = TrainCtx {
    round: 1,
    client: 2,
    seed: 9,
    local_steps: None,
    record_snapshots: false,
};

#[test]
fn merged_weights_give_the_same_logits() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut model = Llama::random(spec(), 3, DType::F32, &dev)?;
    let lora = LoraConfig {
        rank: 4,
        alpha: 12.0,
        targets: all_targets(),
        ..Default::default()
    };
    model.attach_lora(&lora, 3)?;
    for (name, var) in model.trainable() {
        var.set(&init::normal(4, &name, var.dims(), 0.2, DType::F32, &dev)?)?;
    }
    let merged = Llama::from_weights(spec(), &model.merged_weights()?)?;
    let base = Llama::from_weights(spec(), &model.weights()?)?;
    let ids = Tensor::new(&[[1u32, 7, 3, 49, 0, 22, 8, 8, 2, 13]], &dev)?;
    let want: Vec<f32> = model.forward(&ids)?.flatten_all()?.to_vec1()?;
    let got: Vec<f32> = merged.forward(&ids)?.flatten_all()?.to_vec1()?;
    let plain: Vec<f32> = base.forward(&ids)?.flatten_all()?.to_vec1()?;
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let d = diff(&want, &got);
    println!("max |logit(LoRA) - logit(merged)| = {d:e}");
    assert!(d < 1e-5, "{d}");
    assert!(
        diff(&want, &plain) > 1e-2,
        "the adapters change the output, so the test has teeth"
    );
    Ok(())
}

#[test]
fn full_mode_trains_every_weight() -> anyhow::Result<()> {
    let full = LoraConfig {
        mode: LoraMode::Full,
        ..Default::default()
    };
    let mut t = trainer(full)?;
    let want: Vec<(String, Vec<usize>)> = weight_shapes(&spec());
    let layout: Vec<(String, Vec<usize>)> = t
        .layout()
        .specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    assert_eq!(layout, want, "the layout is every base weight, by HF name");
    assert_eq!(t.num_trainable(), spec().num_params());
    assert!(
        t.describe().contains("full fine-tuning"),
        "{}",
        t.describe()
    );

    // The gradient reaches every weight.
    let examples = data();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, &Device::Cpu)?;
    let loss = mean_nll(t.model(), &batch)?;
    let grads = loss.backward()?;
    for (name, var) in t.model().trainable() {
        let g = grads
            .get(&var)
            .unwrap_or_else(|| panic!("no gradient for `{name}`"));
        let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0, "zero gradient for `{name}`");
    }

    // A local run moves every weight, and the delta is applied to the model.
    let start = t.global_state()?;
    let before = t.evaluate(&data())?.loss;
    let out = t.train_local(&start, &data(), &CTX)?;
    assert_eq!(out.delta.layout(), t.layout());
    for (name, d) in out.delta.iter() {
        let m = d.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(m > 0.0, "`{name}` did not move");
    }
    t.apply_delta(&out.delta)?;
    let after = t.evaluate(&data())?.loss;
    println!("full fine-tuning, 2 AdamW steps: eval loss {before:.4} -> {after:.4}");
    assert!(after < before, "{before} -> {after}");
    Ok(())
}

#[test]
fn full_mode_rejects_adapters() -> anyhow::Result<()> {
    let mut model = Llama::random(spec(), 3, DType::F32, &Device::Cpu)?;
    let full = LoraConfig {
        mode: LoraMode::Full,
        ..Default::default()
    };
    let e = model.attach_lora(&full, 1).unwrap_err().to_string();
    assert!(e.contains("lora.mode"), "{e}");
    model.prepare_training(&full, 1)?;
    assert!(model.unfreeze_all().is_err());
    assert!(model.attach_lora(&LoraConfig::default(), 1).is_err());
    Ok(())
}

#[test]
fn dropout_mask_is_seeded_and_unbiased() -> anyhow::Result<()> {
    let x = Tensor::ones((200, 100), DType::F32, &Device::Cpu)?;
    let d = LoraDropout { p: 0.3, seed: 17 };
    let a: Vec<f32> = d.apply(&x)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = d.apply(&x)?.flatten_all()?.to_vec1()?;
    assert_eq!(a, b, "same seed, same mask");
    let c: Vec<f32> = LoraDropout { seed: 18, ..d }
        .apply(&x)?
        .flatten_all()?
        .to_vec1()?;
    assert_ne!(a, c);
    let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
    let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
    assert!((zeros - 0.3).abs() < 0.02, "dropped fraction {zeros}");
    assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let none: Vec<f32> = LoraDropout { p: 0.0, seed: 1 }
        .apply(&x)?
        .flatten_all()?
        .to_vec1()?;
    assert!(none.iter().all(|&v| v == 1.0));
    Ok(())
}

#[test]
fn dropout_is_deterministic_and_training_only() -> anyhow::Result<()> {
    let with = |p: f64| LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: all_targets(),
        dropout: p,
        ..Default::default()
    };
    let run = |p: f64| -> anyhow::Result<(Vec<f32>, f64, f64)> {
        let mut t = trainer(with(p))?;
        // A non-zero B so that the first step's gradient of A (and hence dropout) matters.
        let start = t.global_state()?.map(|x| x.affine(1.0, 0.05))?;
        t.set_global_state(&start)?;
        let eval = t.evaluate(&data())?.loss;
        let out = t.train_local(&start, &data(), &CTX)?;
        let eval_after_run = t.evaluate(&data())?.loss;
        Ok((out.delta.to_flat()?, eval, eval_after_run))
    };
    let (d1, e1, e1_after) = run(0.5)?;
    let (d2, _, _) = run(0.5)?;
    let (d0, e0, _) = run(0.0)?;
    assert_eq!(d1, d2, "same seeds, same masks, same delta");
    assert_ne!(d1, d0, "dropout changes training");
    assert_eq!(e1, e0, "evaluation does not drop anything");
    assert_eq!(
        e1, e1_after,
        "a local run leaves the global state and eval mode"
    );
    Ok(())
}

#[test]
fn lora_table_parses_mode_and_dropout() -> anyhow::Result<()> {
    let cfg: LoraConfig = toml::from_str("mode = \"full\"\ndropout = 0.05")?;
    assert_eq!((cfg.mode, cfg.dropout), (LoraMode::Full, 0.05));
    let cfg: LoraConfig = toml::from_str("")?;
    assert_eq!((cfg.mode, cfg.dropout), (LoraMode::Lora, 0.0));
    assert!(toml::from_str::<LoraConfig>("mode = \"fulll\"").is_err());
    let bad = LoraConfig {
        dropout: 1.0,
        ..Default::default()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("lora.dropout"), "{e}");
    Ok(())
}
