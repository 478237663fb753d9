//! Local training fits a small fixed batch: LoRA on a random tiny model drives the loss on
//! four byte-level sentences well below its starting value (≈ ln 258 ≈ 5.55 nats): from
//! 5.84 to about 3.6 nats in 100 steps (the logit margin LoRA can reach on a random model
//! with frozen embeddings is bounded, see `cgfed_model::model::EMBED_SCALE`).

use candle_core::{DType, Device};
use cgfed_core::{Example, TrainCtx, Trainer};
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};

fn bytes(s: &str) -> Example {
    Example {
        tokens: s.bytes().map(u32::from).collect(),
        loss_start: 1,
    }
}

#[test]
fn training_on_one_batch_reduces_its_loss() -> anyhow::Result<()> {
    let data = vec![
        bytes("the quick brown fox jumps over the lazy dog."),
        bytes("a stitch in time saves nine, they say."),
        bytes("all that glitters is not gold, you know."),
        bytes("the early bird catches the worm, of course."),
    ];
    let mut trainer = LlamaTrainer::new(
        LlamaSpec::tiny(258),
        LoraConfig::default(),
        TrainerConfig {
            lr: 1e-2,
            local_steps: 100,
            batch_size: 4,
            ..Default::default()
        },
        5,
        Device::Cpu,
        DType::F32,
    )?;
    let before = trainer.evaluate(&data)?.loss;
    let out = trainer.train_local(
        &trainer.global_state()?,
        &data,
        &TrainCtx {
            round: 0,
            client: 0,
            seed: 5,
            local_steps: None,
            record_snapshots: false,
        },
    )?;
    trainer.apply_delta(&out.delta)?;
    let after = trainer.evaluate(&data)?.loss;
    println!(
        "loss before {before:.3}, after {after:.3}, train_loss {:.3}",
        out.train_loss
    );
    assert!((before - 258f64.ln()).abs() < 0.5, "initial loss {before}");
    assert!(
        after < 0.7 * before,
        "loss only went from {before} to {after}"
    );
    assert!(out.train_loss < before && out.train_loss > after);
    Ok(())
}
