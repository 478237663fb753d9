//! Every trainable tensor receives a non-zero gradient.
//!
//! candle silently drops gradients through ops without a backward pass (fused RMSNorm,
//! RoPE, softmax_last_dim): a model built with one of those would give gradients only to
//! adapters after it. This test attaches adapters to all seven modules of every layer and
//! checks that each `A` and `B` gets a gradient with a non-zero norm.
//!
//! With the standard LoRA init (`B = 0`), `dL/dA = scale · Bᵀ (dL/dy)ᵀ x` is exactly zero,
//! so the test first sets every `B` to random values.

use candle_core::{DType, Device};
use cgfed_core::Example;
use cgfed_model::{batch, init, Batch, Llama, LlamaSpec, LoraConfig, LoraTarget};

#[test]
fn every_adapter_tensor_gets_a_nonzero_gradient() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut model = Llama::random(LlamaSpec::tiny(258), 7, DType::F32, &dev)?;
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: LoraTarget::ALL.map(|t| t.as_str().to_string()).to_vec(),
        ..Default::default()
    };
    model.attach_lora(&lora, 7)?;
    let params = model.trainable();
    assert_eq!(params.len(), 2 * 7 * 2, "A and B for 7 modules in 2 layers");
    for (name, var) in &params {
        if name.ends_with("lora_B") {
            var.set(&init::normal(1, name, var.dims(), 0.1, DType::F32, &dev)?)?;
        }
    }
    let examples: Vec<Example> = (0..3)
        .map(|i| Example {
            tokens: (0..20 + 3 * i)
                .map(|j| ((j * 37 + i * 11) % 258) as u32)
                .collect(),
            loss_start: 1 + i as usize,
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let b = Batch::new(&refs, &dev)?;
    let loss = batch::mean_nll(&model, &b)?;
    let grads = loss.backward()?;
    for (name, var) in &params {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        assert!(
            norm.is_finite() && norm > 1e-8,
            "gradient of {name} has norm {norm}"
        );
    }
    Ok(())
}
