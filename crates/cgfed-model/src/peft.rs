//! LoRA adapters in Hugging Face PEFT's format: [`export_peft`] and [`import_peft`].
//!
//! A PEFT adapter directory holds `adapter_config.json` (`peft_type = "LORA"`, `r`,
//! `lora_alpha`, `lora_dropout`, `target_modules`, …) and `adapter_model.safetensors`
//! with one tensor per adapter matrix:
//!
//! | ours | PEFT | shape |
//! |---|---|---|
//! | `model.layers.{i}.self_attn.q_proj.lora_A` | `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` | `[r, in]` |
//! | `model.layers.{i}.self_attn.q_proj.lora_B` | `base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight` | `[out, r]` |
//!
//! The shapes are PEFT's too (`lora_A` is `nn.Linear(in, r)`, whose weight is `[r, in]`),
//! and so is the scale `lora_alpha / r`, so tensors are copied unchanged. Only plain LoRA
//! is accepted on import: `use_rslora`, `use_dora`, `fan_in_fan_out`, per-module
//! `rank_pattern`/`alpha_pattern`, `layers_to_transform`, `modules_to_save`, a `bias`
//! other than `"none"` and regex `target_modules` are errors, not silently ignored.
//!
//! ```no_run
//! use cgfed_core::Trainer;
//! use cgfed_model::peft::{export_peft, import_peft_for};
//! # fn demo(trainer: &mut cgfed_model::LlamaTrainer) -> cgfed_core::Result<()> {
//! let lora = trainer.model().lora_config().cloned().unwrap_or_default();
//! export_peft("out/adapter".as_ref(), &lora, &trainer.global_state()?, Some("SmolLM2-135M"))?;
//! let (_cfg, state) = import_peft_for("out/adapter".as_ref(), trainer.model().spec())?;
//! trainer.set_global_state(&state)?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cgfed_core::{Error, Result, Update};
use serde_json::{json, Value};

use crate::config::LlamaSpec;
use crate::lora::{LoraConfig, LoraMode, LoraTarget};
use crate::model::lora_shapes;

/// File name of the adapter config.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix PEFT puts before the base model's module names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// Which matrix of an adapter a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    A,
    B,
}

/// Parse one of our adapter names (`model.layers.{i}.{group}.{target}.lora_{A,B}`).
fn parse_name(name: &str) -> Option<(usize, LoraTarget, Part)> {
    let (module, part) = match name.rsplit_once('.')? {
        (m, "lora_A") => (m, Part::A),
        (m, "lora_B") => (m, Part::B),
        _ => return None,
    };
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, _) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let target = LoraTarget::ALL
        .into_iter()
        .find(|t| t.module_path(layer) == module)?;
    Some((layer, target, part))
}

/// Our adapter name → PEFT's (`base_model.model.` + name + `.weight`).
pub fn to_peft_name(name: &str) -> String {
    format!("{PEFT_PREFIX}{name}.weight")
}

/// PEFT's adapter name → ours, if it has PEFT's prefix and suffix.
pub fn from_peft_name(name: &str) -> Option<String> {
    Some(
        name.strip_prefix(PEFT_PREFIX)?
            .strip_suffix(".weight")?
            .to_string(),
    )
}

/// Check that `state` is a consistent set of adapters for `lora`: every name is an adapter
/// name of a configured target, every module of every layer `0..n` has both `A` `[r, in]`
/// and `B` `[out, r]`. Returns the number of layers. Errors name the tensor (our name).
fn check_structure(lora: &LoraConfig, state: &Update) -> Result<usize> {
    let targets = lora.parsed_targets()?;
    let mut seen: BTreeMap<(usize, LoraTarget), BTreeSet<Part>> = BTreeMap::new();
    for (name, t) in state.iter() {
        let Some((layer, target, part)) = parse_name(name) else {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}` is not a LoRA adapter matrix (expected names like \
                 model.layers.0.self_attn.q_proj.lora_A)"
            )));
        };
        if !targets.contains(&target) {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}` adapts `{target}`, which is not in target_modules [{}]",
                lora.targets.join(", ")
            )));
        }
        let dims = t.dims();
        let ok = match (part, dims) {
            (Part::A, [r, _]) | (Part::B, [_, r]) => *r == lora.rank,
            _ => false,
        };
        if !ok {
            let want = match part {
                Part::A => format!("[{}, in]", lora.rank),
                Part::B => format!("[out, {}]", lora.rank),
            };
            return Err(Error::InvalidInput(format!(
                "tensor `{name}` has shape {dims:?}, expected {want} for rank r = {}",
                lora.rank
            )));
        }
        seen.entry((layer, target)).or_default().insert(part);
    }
    let layers = seen.keys().map(|(l, _)| l + 1).max().unwrap_or(0);
    if layers == 0 {
        return Err(Error::InvalidInput("no adapter tensors".into()));
    }
    for layer in 0..layers {
        for &target in &targets {
            let parts = seen.get(&(layer, target));
            for (part, suffix) in [(Part::A, "lora_A"), (Part::B, "lora_B")] {
                if !parts.is_some_and(|p| p.contains(&part)) {
                    return Err(Error::InvalidInput(format!(
                        "missing tensor `{}.{suffix}`",
                        target.module_path(layer)
                    )));
                }
            }
        }
    }
    Ok(layers)
}

/// Check `state` against a model of shape `spec`: exactly the tensors `lora` attaches
/// ([`lora_shapes`]), with their shapes. Errors name the tensor.
pub fn check_adapter(spec: &LlamaSpec, lora: &LoraConfig, state: &Update) -> Result<()> {
    let want = lora_shapes(spec, lora)?;
    let want_map: BTreeMap<&str, &Vec<usize>> = want.iter().map(|(n, s)| (n.as_str(), s)).collect();
    for (name, t) in state.iter() {
        match want_map.get(name) {
            None => {
                return Err(Error::InvalidInput(format!(
                    "unexpected tensor `{name}` for this model ({} layers, targets [{}])",
                    spec.num_layers,
                    lora.targets.join(", ")
                )))
            }
            Some(s) if t.dims() != s.as_slice() => {
                return Err(Error::InvalidInput(format!(
                    "tensor `{name}` has shape {:?}, expected {s:?} for this model",
                    t.dims()
                )))
            }
            Some(_) => {}
        }
    }
    if let Some((name, _)) = want.iter().find(|(n, _)| state.get(n).is_none()) {
        return Err(Error::InvalidInput(format!(
            "missing tensor `{name}` for this model"
        )));
    }
    Ok(())
}

/// Write `state` (adapter tensors named as [`Llama::trainable`](crate::Llama::trainable)
/// names them) as a PEFT adapter in `dir` (created if needed): `adapter_config.json` and
/// `adapter_model.safetensors` (tensors in their own dtype). Error if `lora` is not a valid
/// LoRA (`mode = "lora"`) config or `state` is not a complete set of its adapters.
pub fn export_peft(
    dir: &Path,
    lora: &LoraConfig,
    state: &Update,
    base_model_name: Option<&str>,
) -> Result<()> {
    lora.validate()?;
    if lora.mode != LoraMode::Lora {
        return Err(Error::config(
            "lora.mode",
            "only LoRA adapters can be exported in PEFT format, not full fine-tuning",
        ));
    }
    check_structure(lora, state)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let targets: Vec<&str> = lora
        .parsed_targets()?
        .into_iter()
        .map(LoraTarget::as_str)
        .collect();
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name,
        "revision": null,
        "inference_mode": true,
    });
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Other(format!("cannot serialise the adapter config: {e}")))?;
    std::fs::write(&config_path, text + "\n").map_err(|e| Error::io(&config_path, e))?;
    let tensors: HashMap<String, Tensor> = state
        .iter()
        .map(|(n, t)| Ok((to_peft_name(n), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights_path)
        .map_err(|e| Error::InvalidInput(format!("cannot write: {e}")).in_file(&weights_path))
}

fn bad_config(path: &Path, msg: impl Into<String>) -> Error {
    Error::InvalidInput(msg.into()).in_file(path)
}

/// Parse a PEFT `adapter_config.json` into a [`LoraConfig`] (plain LoRA only).
pub fn read_adapter_config(path: &Path) -> Result<LoraConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| bad_config(path, format!("invalid JSON: {e}")))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad_config(
                path,
                format!("peft_type is {other:?}, expected \"LORA\""),
            ))
        }
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_config(path, "`r` must be a positive integer"))?;
    let alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad_config(path, "`lora_alpha` must be a number"))?;
    let dropout = match field("lora_dropout") {
        None => 0.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| bad_config(path, "`lora_dropout` must be a number"))?,
    };
    let targets = match field("target_modules") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|t| {
                t.as_str().map(String::from).ok_or_else(|| {
                    bad_config(path, "`target_modules` must be a list of module names")
                })
            })
            .collect::<Result<Vec<_>>>()?,
        Some(Value::String(s)) => {
            return Err(bad_config(
                path,
                format!("regex target_modules \"{s}\" is not supported; list the module names"),
            ))
        }
        _ => return Err(bad_config(path, "`target_modules` is missing")),
    };
    for (key, ok) in [
        ("bias", field("bias").is_none_or(|b| b == "none")),
        (
            "fan_in_fan_out",
            field("fan_in_fan_out").is_none_or(|b| b == false),
        ),
        ("use_rslora", field("use_rslora").is_none_or(|b| b == false)),
        ("use_dora", field("use_dora").is_none_or(|b| b == false)),
        (
            "rank_pattern",
            field("rank_pattern").is_none_or(|p| p.as_object().is_some_and(|o| o.is_empty())),
        ),
        (
            "alpha_pattern",
            field("alpha_pattern").is_none_or(|p| p.as_object().is_some_and(|o| o.is_empty())),
        ),
        (
            "layers_to_transform",
            field("layers_to_transform").is_none(),
        ),
        (
            "modules_to_save",
            field("modules_to_save").is_none_or(|m| m.as_array().is_some_and(|a| a.is_empty())),
        ),
    ] {
        if !ok {
            return Err(bad_config(
                path,
                format!(
                    "`{key}` = {} is not supported (only plain LoRA adapters load)",
                    v[key]
                ),
            ));
        }
    }
    let lora = LoraConfig {
        rank: rank as usize,
        alpha,
        targets,
        dropout,
        mode: LoraMode::Lora,
    };
    lora.validate().map_err(|e| e.in_file(path))?;
    Ok(lora)
}

/// Read a PEFT adapter directory written by [`export_peft`] or by PEFT's
/// `save_pretrained`: the config and the adapter tensors under our names, as f32 (f64 is
/// kept). Checks the tensors are a complete, consistently shaped set of adapters for the
/// config; errors name the file and the tensor. Use [`import_peft_for`] to also check
/// them against a model.
pub fn import_peft(dir: &Path) -> Result<(LoraConfig, Update)> {
    let lora = read_adapter_config(&dir.join(ADAPTER_CONFIG_FILE))?;
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let raw = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
        Error::InvalidInput(format!(
            "not a readable safetensors file (truncated or corrupt?): {e}"
        ))
        .in_file(&path)
    })?;
    let mut tensors = Vec::with_capacity(raw.len());
    for (peft_name, t) in raw {
        let name = from_peft_name(&peft_name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "tensor `{peft_name}` is not a PEFT LoRA weight (expected names like \
                 {PEFT_PREFIX}model.layers.0.self_attn.q_proj.lora_A.weight)"
            ))
            .in_file(&path)
        })?;
        let t = match t.dtype() {
            DType::F32 | DType::F64 => t,
            DType::F16 | DType::BF16 => t.to_dtype(DType::F32)?,
            other => {
                return Err(Error::InvalidInput(format!(
                    "tensor `{peft_name}` has dtype {}, expected a float type",
                    other.as_str()
                ))
                .in_file(&path))
            }
        };
        tensors.push((name, t));
    }
    let state = Update::new(tensors).map_err(|e| e.in_file(&path))?;
    check_structure(&lora, &state).map_err(|e| e.in_file(&path))?;
    Ok((lora, state))
}

/// [`import_peft`], then check the adapters fit a model of shape `spec`
/// ([`check_adapter`]); errors name the file and the tensor.
pub fn import_peft_for(dir: &Path, spec: &LlamaSpec) -> Result<(LoraConfig, Update)> {
    let (lora, state) = import_peft(dir)?;
    check_adapter(spec, &lora, &state).map_err(|e| e.in_file(dir.join(ADAPTER_WEIGHTS_FILE)))?;
    Ok((lora, state))
}
