//! The `Trainer` contract of `LlamaTrainer`: `train_local` starts from the state it is
//! given, leaves the global state unchanged and returns a delta with the trainer's layout;
//! `apply_delta` moves the global state; runs are bit-for-bit deterministic; bad data is an
//! error, not a panic.

use candle_core::{DType, Device};
use cgfed_core::{Example, TrainCtx, Trainer, Update};
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};

fn trainer(seed: u64) -> anyhow::Result<LlamaTrainer> {
    Ok(LlamaTrainer::new(
        LlamaSpec::tiny(258),
        LoraConfig::default(),
        TrainerConfig {
            lr: 1e-2,
            local_steps: 3,
            batch_size: 3,
            ..Default::default()
        },
        seed,
        Device::Cpu,
        DType::F32,
    )?)
}

fn data() -> Vec<Example> {
    (0..7)
        .map(|i| Example {
            tokens: (0..10 + 2 * i)
                .map(|j| ((j * 31 + i * 7) % 258) as u32)
                .collect(),
            loss_start: i % 3,
        })
        .collect()
}

fn ctx(client: usize) -> TrainCtx {
    TrainCtx {
        round: 2,
        client,
        seed: 99,
        local_steps: None,
        record_snapshots: false,
    }
}

fn err<T>(r: cgfed_core::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn flat(u: &Update) -> Vec<f32> {
    u.to_flat().expect("flat")
}

#[test]
fn train_local_returns_a_delta_and_leaves_the_global_state_alone() -> anyhow::Result<()> {
    let mut t = trainer(1)?;
    let data = data();
    let global = t.global_state()?;
    let eval0 = t.evaluate(&data)?;
    let out = t.train_local(&global, &data, &ctx(0))?;
    assert_eq!(out.delta.layout(), t.layout());
    assert_eq!(out.num_examples, 7);
    assert_eq!(out.steps, 3);
    assert!(out.tokens > 0 && out.train_loss.is_finite());
    assert!(
        flat(&out.delta).iter().any(|&x| x != 0.0),
        "delta is all zero"
    );
    assert_eq!(
        flat(&t.global_state()?),
        flat(&global),
        "global state changed"
    );
    assert_eq!(t.evaluate(&data)?, eval0, "evaluation changed");

    t.apply_delta(&out.delta)?;
    let expected: Vec<f32> = flat(&global)
        .iter()
        .zip(flat(&out.delta))
        .map(|(g, d)| g + d)
        .collect();
    assert_eq!(flat(&t.global_state()?), expected);
    let eval1 = t.evaluate(&data)?;
    assert_ne!(
        eval1.loss, eval0.loss,
        "apply_delta did not change the model"
    );
    assert_eq!(
        eval1.tokens,
        data.iter().map(Example::target_tokens).sum::<usize>()
    );
    Ok(())
}

#[test]
fn train_local_starts_from_the_given_state() -> anyhow::Result<()> {
    let mut a = trainer(1)?;
    let mut b = trainer(1)?;
    let data = data();
    // b's global state moves; training from a's (unmoved) state must not see that.
    let moved = b.train_local(&b.global_state()?, &data, &ctx(5))?;
    b.apply_delta(&moved.delta)?;
    let start = a.global_state()?;
    let da = a.train_local(&start, &data, &ctx(0))?;
    let db = b.train_local(&start, &data, &ctx(0))?;
    assert_eq!(flat(&da.delta), flat(&db.delta));
    assert_eq!(da.train_loss, db.train_loss);
    Ok(())
}

#[test]
fn identical_trainers_are_bit_identical() -> anyhow::Result<()> {
    let data = data();
    let mut a = trainer(42)?;
    let mut b = trainer(42)?;
    assert_eq!(flat(&a.global_state()?), flat(&b.global_state()?));
    let oa = a.train_local(&a.global_state()?, &data, &ctx(3))?;
    let ob = b.train_local(&b.global_state()?, &data, &ctx(3))?;
    assert_eq!(flat(&oa.delta), flat(&ob.delta));
    assert_eq!(oa.train_loss.to_bits(), ob.train_loss.to_bits());
    assert_eq!(oa.tokens, ob.tokens);
    a.apply_delta(&oa.delta)?;
    b.apply_delta(&ob.delta)?;
    assert_eq!(
        a.evaluate(&data)?.loss.to_bits(),
        b.evaluate(&data)?.loss.to_bits()
    );
    // Another client (another batch order) or another model seed gives another result.
    let oc = a.train_local(&b.global_state()?, &data, &ctx(4))?;
    assert_ne!(flat(&oc.delta), flat(&ob.delta));
    let c = trainer(43)?;
    assert_ne!(flat(&c.global_state()?), flat(&a.global_state()?));
    Ok(())
}

#[test]
fn bad_data_is_an_error_with_a_clear_message() -> anyhow::Result<()> {
    let mut t = trainer(1)?;
    let start = t.global_state()?;

    let e = err(t.train_local(&start, &[], &ctx(0)));
    assert!(e.contains("empty"), "{e}");
    let e = err(t.evaluate(&[]));
    assert!(e.contains("empty"), "{e}");

    let bad_id = vec![Example {
        tokens: vec![1, 2, 258, 3],
        loss_start: 1,
    }];
    let e = err(t.train_local(&start, &bad_id, &ctx(0)));
    assert!(
        e.contains("258") && e.contains("position 2") && e.contains("vocabulary"),
        "{e}"
    );

    let too_long = vec![Example {
        tokens: vec![1; 257],
        loss_start: 1,
    }];
    let e = err(t.evaluate(&too_long));
    assert!(e.contains("max_seq_len") && e.contains("257"), "{e}");

    let no_targets = vec![Example {
        tokens: vec![1, 2, 3],
        loss_start: 3,
    }];
    let e = err(t.train_local(&start, &no_targets, &ctx(0)));
    assert!(e.contains("target"), "{e}");

    let wrong_layout = Update::new(vec![(
        "x".to_string(),
        candle_core::Tensor::zeros(3, DType::F32, &Device::Cpu)?,
    )])?;
    let e = err(t.apply_delta(&wrong_layout));
    assert!(e.contains("layout"), "{e}");
    // Nothing above changed the global state.
    assert_eq!(flat(&t.global_state()?), flat(&start));
    Ok(())
}
