//! Parameter counts of the presets, and the count formula against the actual weights.

use candle_core::{DType, Device};
use cgfed_core::Trainer;
use cgfed_model::{model, LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};

fn counted(spec: &LlamaSpec) -> usize {
    model::weight_shapes(spec)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

#[test]
fn tiny_has_about_a_tenth_of_a_million_parameters() {
    let spec = LlamaSpec::tiny(258);
    let n = spec.num_params();
    assert_eq!(n, counted(&spec));
    assert!((100_000..1_000_000).contains(&n), "tiny has {n} parameters");
    assert_eq!(n, 107_456);
}

#[test]
fn small_has_about_a_million_parameters() {
    let spec = LlamaSpec::small(2000);
    assert_eq!(spec.num_params(), counted(&spec));
    assert!((900_000..1_100_000).contains(&spec.num_params()));
    let mut untied = spec.clone();
    untied.tie_embeddings = false;
    assert_eq!(untied.num_params(), counted(&untied));
    assert_eq!(untied.num_params(), spec.num_params() + 2000 * 128);
}

#[test]
fn lora_trainable_count_and_description() -> anyhow::Result<()> {
    let t = LlamaTrainer::new(
        LlamaSpec::tiny(258),
        LoraConfig::default(),
        TrainerConfig::default(),
        0,
        Device::Cpu,
        DType::F32,
    )?;
    // Per layer, r = 8: q and o are 8·64 + 64·8, k and v are 8·64 + 32·8.
    assert_eq!(t.num_trainable(), 2 * (2 * 1024 + 2 * 768));
    assert_eq!(t.layout().numel(), t.num_trainable());
    let d = t.describe();
    assert!(
        d.contains("0.11M base params") && d.contains("7.2k trainable") && d.contains("r=8"),
        "{d}"
    );
    Ok(())
}
