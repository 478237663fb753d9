//! PEFT export/import: a trained adapter state survives `export_peft` → `import_peft`
//! bit for bit (same tensors, same held-out loss in a fresh trainer), uses PEFT's names,
//! shapes and config keys, and broken or mismatched adapters give errors naming the file
//! and the tensor.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use cgfed_core::{Example, TrainCtx, Trainer};
use cgfed_model::peft::{
    export_peft, import_peft, import_peft_for, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE,
};
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};

fn spec() -> LlamaSpec {
    let mut s = LlamaSpec::tiny(50);
    s.max_seq_len = 32;
    s
}

fn lora() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
        dropout: 0.1,
        ..Default::default()
    }
}

fn trainer(seed: u64) -> anyhow::Result<LlamaTrainer> {
    Ok(LlamaTrainer::new(
        spec(),
        lora(),
        TrainerConfig {
            local_steps: 3,
            batch_size: 2,
            ..Default::default()
        },
        seed,
        Device::Cpu,
        DType::F32,
    )?)
}

fn data() -> Vec<Example> {
    (0..6u32)
        .map(|i| Example {
            tokens: (0..20).map(|j| (i * 7 + j * 3) % 50).collect(),
            loss_start: 1,
        })
        .collect()
}

/// A trainer whose global state has been trained for one round.
fn trained() -> anyhow::Result<LlamaTrainer> {
    let mut t = trainer(11)?;
    let start = t.global_state()?;
    let ctx = TrainCtx {
        round: 0,
        client: 0,
        seed: 11,
        local_steps: None,
        record_snapshots: false,
    };
    let out = t.train_local(&start, &data(), &ctx)?;
    t.apply_delta(&out.delta)?;
    Ok(t)
}

#[test]
fn export_import_roundtrip_is_exact() -> anyhow::Result<()> {
    let mut t = trained()?;
    let state = t.global_state()?;
    let dir = tempfile::tempdir()?;
    export_peft(dir.path(), &lora(), &state, Some("tiny-random-llama"))?;

    let (cfg, back) = import_peft(dir.path())?;
    assert_eq!(cfg.rank, 4);
    assert_eq!(cfg.alpha, 8.0);
    assert_eq!(cfg.dropout, 0.1);
    assert_eq!(cfg.parsed_targets()?, lora().parsed_targets()?);
    assert_eq!(back.layout(), state.layout());
    for ((n, a), (_, b)) in state.iter().zip(back.iter()) {
        let (a, b): (Vec<f32>, Vec<f32>) =
            (a.flatten_all()?.to_vec1()?, b.flatten_all()?.to_vec1()?);
        assert_eq!(a, b, "{n}");
    }

    // A fresh trainer (same base model, different adapter init) loaded with the imported
    // state evaluates exactly like the original.
    let mut fresh = trainer(11)?;
    let before = fresh.evaluate(&data())?.loss;
    fresh.set_global_state(&back)?;
    let (want, got) = (t.evaluate(&data())?.loss, fresh.evaluate(&data())?.loss);
    assert_eq!(got, want);
    assert_ne!(before, want, "training changed the adapters");
    Ok(())
}

#[test]
fn files_use_peft_names_shapes_and_keys() -> anyhow::Result<()> {
    let t = trained()?;
    let dir = tempfile::tempdir()?;
    export_peft(dir.path(), &lora(), &t.global_state()?, None)?;
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join(ADAPTER_CONFIG_FILE),
    )?)?;
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["lora_dropout"], 0.1);
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["fan_in_fan_out"], false);
    assert_eq!(cfg["inference_mode"], true);
    assert!(cfg["base_model_name_or_path"].is_null());

    let m = candle_core::safetensors::load(dir.path().join(ADAPTER_WEIGHTS_FILE), &Device::Cpu)?;
    assert_eq!(m.len(), 2 * 3 * 2, "A and B of 3 modules in 2 layers");
    let p = "base_model.model.model.layers.1";
    // tiny: hidden 64, FFN 172, kv dim 32.
    for (name, shape) in [
        (format!("{p}.self_attn.q_proj.lora_A.weight"), [4, 64]),
        (format!("{p}.self_attn.q_proj.lora_B.weight"), [64, 4]),
        (format!("{p}.self_attn.v_proj.lora_B.weight"), [32, 4]),
        (format!("{p}.mlp.down_proj.lora_A.weight"), [4, 172]),
        (format!("{p}.mlp.down_proj.lora_B.weight"), [64, 4]),
    ] {
        assert_eq!(m[&name].dims(), shape, "{name}");
    }
    Ok(())
}

/// Export a good adapter, damage its tensors with `f`, and return the import error text.
fn import_error(
    f: impl Fn(&mut HashMap<String, Tensor>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let t = trained()?;
    let dir = tempfile::tempdir()?;
    export_peft(dir.path(), &lora(), &t.global_state()?, None)?;
    let path = dir.path().join(ADAPTER_WEIGHTS_FILE);
    let mut m = candle_core::safetensors::load(&path, &Device::Cpu)?;
    f(&mut m)?;
    candle_core::safetensors::save(&m, &path)?;
    match import_peft_for(dir.path(), &spec()) {
        Ok(_) => anyhow::bail!("damaged adapter imported"),
        Err(e) => {
            eprintln!("{e}");
            Ok(e.to_string())
        }
    }
}

#[test]
fn broken_adapters_name_file_and_tensor() -> anyhow::Result<()> {
    let q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let e = import_error(|m| {
        m.remove(q_a);
        Ok(())
    })?;
    assert!(
        e.contains(ADAPTER_WEIGHTS_FILE)
            && e.contains("model.layers.0.self_attn.q_proj.lora_A")
            && e.contains("missing"),
        "{e}"
    );

    let e = import_error(|m| {
        m.insert(
            q_a.into(),
            Tensor::zeros((3, 64), DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    assert!(
        e.contains(ADAPTER_WEIGHTS_FILE) && e.contains("q_proj.lora_A") && e.contains("[3, 64]"),
        "{e}"
    );

    // Right rank, wrong input width: only the model check can see it.
    let e = import_error(|m| {
        m.insert(
            q_a.into(),
            Tensor::zeros((4, 48), DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    assert!(
        e.contains(ADAPTER_WEIGHTS_FILE) && e.contains("q_proj.lora_A") && e.contains("[4, 64]"),
        "{e}"
    );

    let e = import_error(|m| {
        m.insert(
            "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight".into(),
            Tensor::zeros((4, 64), DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    assert!(e.contains("k_proj") && e.contains("target_modules"), "{e}");

    let e = import_error(|m| {
        m.insert(
            "lm_head.weight".into(),
            Tensor::zeros((4, 4), DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    assert!(
        e.contains(ADAPTER_WEIGHTS_FILE) && e.contains("lm_head.weight"),
        "{e}"
    );
    Ok(())
}

#[test]
fn unsupported_adapter_configs_are_rejected() -> anyhow::Result<()> {
    let t = trained()?;
    let dir = tempfile::tempdir()?;
    export_peft(dir.path(), &lora(), &t.global_state()?, None)?;
    let path = dir.path().join(ADAPTER_CONFIG_FILE);
    let good: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    for (key, value, expect) in [
        ("use_rslora", serde_json::json!(true), "use_rslora"),
        ("target_modules", serde_json::json!(".*proj"), "regex"),
        ("peft_type", serde_json::json!("IA3"), "peft_type"),
        ("bias", serde_json::json!("all"), "bias"),
    ] {
        let mut cfg = good.clone();
        cfg[key] = value;
        std::fs::write(&path, serde_json::to_string(&cfg)?)?;
        let e = import_peft(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains(ADAPTER_CONFIG_FILE) && e.contains(expect),
            "{key}: {e}"
        );
    }
    Ok(())
}

#[test]
fn full_fine_tuning_state_cannot_be_exported() -> anyhow::Result<()> {
    let t = trained()?;
    let full = LoraConfig {
        mode: cgfed_model::LoraMode::Full,
        ..lora()
    };
    let dir = tempfile::tempdir()?;
    let e = export_peft(dir.path(), &full, &t.global_state()?, None).unwrap_err();
    assert!(e.to_string().contains("lora.mode"), "{e}");
    Ok(())
}
