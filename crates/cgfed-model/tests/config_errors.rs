//! Bad `[model]`, `[lora]` and `[trainer]` tables are errors that name the key path and,
//! where there is a fixed set, the accepted values.

use cgfed_core::toml;
use cgfed_core::{registry, PluginTable, Trainer, TrainerInit};
// Link the crate so its `inventory` registration is present.
use cgfed_model as _;

fn build(model: &str, lora: &str, trainer: &str) -> cgfed_core::Result<Box<dyn Trainer>> {
    let model: toml::Table = toml::from_str(model).expect("model toml");
    let lora: toml::Table = toml::from_str(lora).expect("lora toml");
    let mut t: toml::Table = toml::from_str(trainer).expect("trainer toml");
    t.insert("name".into(), toml::Value::String("llama".into()));
    let trainer = PluginTable::from_value("trainer", &toml::Value::Table(t))?;
    registry::build_trainer(&TrainerInit {
        trainer: &trainer,
        model: &model,
        lora: &lora,
        vocab_size: 258,
        seed: 1,
    })
}

fn error(model: &str, lora: &str, trainer: &str) -> String {
    match build(model, lora, trainer) {
        Ok(_) => panic!("expected an error for model `{model}` lora `{lora}` trainer `{trainer}`"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` does not mention `{p}`");
    }
}

#[test]
fn defaults_build() {
    let t = build("", "", "").expect("defaults");
    assert!(t.describe().starts_with("llama tiny"), "{}", t.describe());
    let t = build(
        "preset = \"small\"\nhidden_size = 96\ndtype = \"f64\"",
        "rank = 2",
        "lr = 1e-3",
    )
    .expect("overrides");
    assert!(t.describe().contains("small+ (d96"), "{}", t.describe());
}

#[test]
fn unknown_model_key() {
    let e = error("hiden_size = 32", "", "");
    assert_mentions(&e, &["model", "hiden_size", "hidden_size", "preset"]);
}

#[test]
fn vocab_size_is_not_a_model_key() {
    let e = error("vocab_size = 32", "", "");
    assert_mentions(&e, &["model", "vocab_size"]);
}

#[test]
fn bad_preset_lists_presets() {
    let e = error("preset = \"huge\"", "", "");
    assert_mentions(&e, &["model.preset", "huge", "tiny", "small"]);
}

#[test]
fn bad_dtype_lists_dtypes() {
    let e = error("dtype = \"int8\"", "", "");
    assert_mentions(&e, &["model.dtype", "f32", "f64", "bf16", "f16"]);
    // half precision is a CUDA-only option
    let e = error("dtype = \"f16\"", "", "");
    assert_mentions(&e, &["model.dtype", "CUDA", "f32"]);
}

#[test]
fn heads_must_divide_hidden_and_kv_heads_must_divide_heads() {
    let e = error("num_heads = 5", "", "");
    assert_mentions(&e, &["model.num_heads", "64"]);
    let e = error("num_kv_heads = 3", "", "");
    assert_mentions(&e, &["model.num_kv_heads", "3"]);
    let e = error("hidden_size = 0", "", "");
    assert_mentions(&e, &["model.hidden_size"]);
}

#[test]
fn unknown_lora_key() {
    let e = error("", "rnak = 4", "");
    assert_mentions(&e, &["lora", "rnak", "rank", "targets"]);
}

#[test]
fn unknown_lora_target_lists_accepted_targets() {
    let e = error("", "targets = [\"q_proj\", \"qkv_proj\"]", "");
    assert_mentions(
        &e,
        &[
            "lora.targets",
            "qkv_proj",
            "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
        ],
    );
    let e = error("", "targets = [\"q_proj\", \"q_proj\"]", "");
    assert_mentions(&e, &["lora.targets", "twice"]);
    let e = error("", "targets = []", "");
    assert_mentions(&e, &["lora.targets"]);
}

#[test]
fn bad_lora_values() {
    assert_mentions(&error("", "rank = 0", ""), &["lora.rank"]);
    assert_mentions(&error("", "alpha = -1.0", ""), &["lora.alpha"]);
}

#[test]
fn bad_trainer_values() {
    assert_mentions(&error("", "", "lr = 0.0"), &["trainer.lr"]);
    assert_mentions(&error("", "", "local_steps = 0"), &["trainer.local_steps"]);
    assert_mentions(&error("", "", "batch_size = 0"), &["trainer.batch_size"]);
    assert_mentions(
        &error("", "", "max_grad_norm = -1.0"),
        &["trainer.max_grad_norm"],
    );
    assert_mentions(
        &error("", "", "optimizer = \"adam\""),
        &["trainer.optimizer", "adamw", "sgd"],
    );
    assert_mentions(
        &error("", "", "optimizer = \"sgd\"\nweight_decay = 0.1"),
        &["trainer.weight_decay"],
    );
    assert_mentions(
        &error("", "", "learning_rate = 0.1"),
        &["trainer", "learning_rate", "lr"],
    );
}
