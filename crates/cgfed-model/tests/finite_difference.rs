//! Analytic gradients of the loss match central finite differences (f64).
//!
//! The checked elements sit in layer 0 (so the gradient flows back through every later
//! layer's RMSNorm, attention softmax, RoPE and SwiGLU) and in the last layer's MLP.
//! With step `h = 1e-5` in f64 the central difference has truncation error O(h²) ≈ 1e-10
//! and round-off ≈ 1e-16 · L / h ≈ 1e-10, so a relative tolerance of 1e-6 is generous.

use candle_core::{DType, Device, Tensor, Var};
use cgfed_core::Example;
use cgfed_model::{batch, init, Batch, Llama, LlamaSpec, LoraConfig, LoraTarget};

const H: f64 = 1e-5;
const REL_TOL: f64 = 1e-6;

fn loss(model: &Llama, b: &Batch) -> anyhow::Result<f64> {
    Ok(batch::mean_nll(model, b)?.to_scalar::<f64>()?)
}

fn set_elem(var: &Var, flat: usize, value: f64) -> anyhow::Result<()> {
    let mut v = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
    v[flat] = value;
    var.set(&Tensor::from_vec(v, var.dims(), var.device())?)?;
    Ok(())
}

#[test]
fn lora_gradients_match_central_differences() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut spec = LlamaSpec::tiny(50);
    spec.max_seq_len = 32;
    let mut model = Llama::random(spec, 3, DType::F64, &dev)?;
    let lora = LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: LoraTarget::ALL.map(|t| t.as_str().to_string()).to_vec(),
        ..Default::default()
    };
    model.attach_lora(&lora, 3)?;
    let params = model.trainable();
    // Random B (with B = 0 the gradient of A is exactly zero) and a larger random A so
    // every adapter contributes.
    for (name, var) in &params {
        var.set(&init::normal(9, name, var.dims(), 0.3, DType::F64, &dev)?)?;
    }
    let examples = [
        Example {
            tokens: vec![1, 5, 9, 2, 44, 7, 7, 30, 12, 3],
            loss_start: 1,
        },
        Example {
            tokens: vec![4, 8, 15, 16, 23, 42],
            loss_start: 3,
        },
    ];
    let refs: Vec<&Example> = examples.iter().collect();
    let b = Batch::new(&refs, &dev)?;
    let grads = batch::mean_nll(&model, &b)?.backward()?;

    let checks = [
        ("model.layers.0.self_attn.q_proj.lora_A", 5),
        ("model.layers.0.self_attn.k_proj.lora_B", 3),
        ("model.layers.0.self_attn.v_proj.lora_A", 17),
        ("model.layers.0.self_attn.o_proj.lora_B", 40),
        ("model.layers.1.mlp.gate_proj.lora_A", 11),
        ("model.layers.1.mlp.down_proj.lora_B", 7),
    ];
    for (name, flat) in checks {
        let var = &params
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no var {name}"))
            .1;
        let analytic = grads
            .get(var)
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?[flat];
        let x0 = var.as_tensor().flatten_all()?.to_vec1::<f64>()?[flat];
        set_elem(var, flat, x0 + H)?;
        let up = loss(&model, &b)?;
        set_elem(var, flat, x0 - H)?;
        let down = loss(&model, &b)?;
        set_elem(var, flat, x0)?;
        let numeric = (up - down) / (2.0 * H);
        let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-12);
        println!("{name}[{flat}]: analytic {analytic:.10e} numeric {numeric:.10e} rel {rel:.2e}");
        assert!(
            analytic.abs() > 1e-8,
            "{name}[{flat}]: gradient too small to check"
        );
        assert!(
            rel < REL_TOL,
            "{name}[{flat}]: analytic {analytic} vs numeric {numeric}"
        );
    }
    Ok(())
}
