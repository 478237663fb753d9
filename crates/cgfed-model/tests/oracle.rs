//! The forward pass matches candle-transformers' LLaMA (an independent, HF-faithful
//! inference implementation) on the same weights: same RoPE layout, GQA head grouping,
//! RMSNorm, SwiGLU, tied and untied heads. A LoRA adapter equals its merged weight
//! `W + (alpha / r) · B A` in the reference model.
//!
//! The reference returns only the last position's logits, so it is run once per prefix.
//! Both run in f32; logits are O(1), so an absolute tolerance of 1e-4 is ~100 ulps.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use cgfed_model::{init, model, Llama, LlamaSpec, LoraConfig, LoraTarget, Weights};

const TOL: f32 = 1e-4;

fn reference_config(s: &LlamaSpec) -> reference::Config {
    reference::Config {
        hidden_size: s.hidden_size,
        intermediate_size: s.intermediate_size,
        vocab_size: s.vocab_size,
        num_hidden_layers: s.num_layers,
        num_attention_heads: s.num_heads,
        num_key_value_heads: s.num_kv_heads,
        use_flash_attn: false,
        rms_norm_eps: s.rms_norm_eps,
        rope_theta: s.rope_theta as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: s.max_seq_len,
        tie_word_embeddings: s.tie_embeddings,
    }
}

/// Max |ours − reference| over every position of `tokens`.
fn max_diff(ours: &Llama, weights: &Weights, tokens: &[u32]) -> anyhow::Result<f32> {
    let dev = Device::Cpu;
    let spec = ours.spec();
    let map: HashMap<String, Tensor> = weights.clone().into_iter().collect();
    let cfg = reference_config(spec);
    let oracle = reference::Llama::load(VarBuilder::from_tensors(map, DType::F32, &dev), &cfg)?;
    let logits = ours.forward(&Tensor::new(tokens, &dev)?.unsqueeze(0)?)?;
    let mut worst = 0f32;
    for t in 1..=tokens.len() {
        let mut cache = reference::Cache::new(false, DType::F32, &cfg, &dev)?;
        let want = oracle.forward(
            &Tensor::new(&tokens[..t], &dev)?.unsqueeze(0)?,
            0,
            &mut cache,
        )?;
        let got = logits.i((.., t - 1, ..))?;
        let d = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        worst = worst.max(d);
    }
    Ok(worst)
}

fn tokens(vocab: usize) -> Vec<u32> {
    (0..17).map(|i| ((i * 53 + 7) % vocab) as u32).collect()
}

#[test]
fn base_model_matches_reference_tied_gqa() -> anyhow::Result<()> {
    let spec = LlamaSpec::tiny(258);
    let w = model::random_weights(&spec, 21, DType::F32, &Device::Cpu)?;
    let ours = Llama::from_weights(spec, &w)?;
    let d = max_diff(&ours, &w, &tokens(258))?;
    println!("max |logit difference| {d:e}");
    assert!(d < TOL, "max logit difference {d}");
    Ok(())
}

#[test]
fn base_model_matches_reference_untied_mha() -> anyhow::Result<()> {
    let mut spec = LlamaSpec::tiny(100);
    spec.tie_embeddings = false;
    spec.num_kv_heads = spec.num_heads;
    spec.rope_theta = 500.0;
    let w = model::random_weights(&spec, 22, DType::F32, &Device::Cpu)?;
    let ours = Llama::from_weights(spec, &w)?;
    let d = max_diff(&ours, &w, &tokens(100))?;
    println!("max |logit difference| {d:e}");
    assert!(d < TOL, "max logit difference {d}");
    Ok(())
}

#[test]
fn lora_equals_merged_weights() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let spec = LlamaSpec::tiny(258);
    let w = model::random_weights(&spec, 23, DType::F32, &dev)?;
    let mut ours = Llama::from_weights(spec, &w)?;
    let lora = LoraConfig {
        rank: 4,
        alpha: 6.0,
        targets: LoraTarget::ALL.map(|t| t.as_str().to_string()).to_vec(),
        ..Default::default()
    };
    ours.attach_lora(&lora, 23)?;
    let mut merged = w.clone();
    let params = ours.trainable();
    for pair in params.chunks(2) {
        let [(a_name, a), (b_name, b)] = pair else {
            unreachable!()
        };
        b.set(&init::normal(5, b_name, b.dims(), 0.05, DType::F32, &dev)?)?;
        let module = a_name.strip_suffix(".lora_A").expect("A first");
        let key = format!("{module}.weight");
        let delta = (b.as_tensor().matmul(a.as_tensor())? * lora.scale())?;
        let base = merged[&key].clone();
        merged.insert(key, (base + delta)?);
    }
    let d = max_diff(&ours, &merged, &tokens(258))?;
    println!("max |logit difference| {d:e}");
    assert!(d < TOL, "max logit difference {d}");
    // The adapters matter: the unmerged base differs.
    assert!(max_diff(&ours, &w, &tokens(258))? > 100.0 * TOL);
    Ok(())
}
