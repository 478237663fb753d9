//! Loading a Hugging Face LLaMA checkpoint directory ([`load_hf_dir`]).
//!
//! A directory as written by `transformers`' `save_pretrained`:
//!
//! - `config.json` (required): parsed with candle-transformers'
//!   [`LlamaConfig`] into a [`LlamaSpec`]
//!   (`num_key_value_heads` defaults to `num_attention_heads`, `tie_word_embeddings` to
//!   `false` as in `transformers`); `model_type` must be `llama` when present, and
//!   `rope_scaling`, `attention_bias`/`mlp_bias`, a `hidden_act` other than `silu` and a
//!   `head_dim` other than `hidden_size / num_attention_heads` are errors;
//! - the weights (required): `model.safetensors.index.json` (its `weight_map` names the
//!   shard of every tensor), else `model.safetensors`, else every `*.safetensors` file of the
//!   directory. Only the tensors the model needs are loaded (`rotary_emb.inv_freq`, a tied
//!   `lm_head.weight` and other extras are ignored), each converted to the requested dtype
//!   (bf16/f16 checkpoints load as f32);
//! - `tokenizer.json` (optional): an [`HfTokenizer`] with the BOS/EOS ids of `config.json`
//!   (falling back to the tokenizer's own guess) and `tokenizer_config.json`'s
//!   `chat_template` when there is one.
//!
//! Every error names the file, and the tensor where one is concerned.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use cgfed_model::hf::load_hf_dir;
//!
//! let hf = load_hf_dir("models/SmolLM2-135M".as_ref(), DType::F32, &Device::Cpu)?;
//! let model = hf.build()?;
//! # Ok::<(), cgfed_core::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::safetensors::{BufferedSafetensors, Load};
use candle_core::{DType, Device};
use candle_transformers::models::llama::{LlamaConfig, LlamaEosToks};
use cgfed_core::{Error, Result};

use crate::config::LlamaSpec;
use crate::model::{weight_shapes, Llama, Weights};
use crate::tokenizer::HfTokenizer;

/// File name of the model config.
pub const CONFIG_FILE: &str = "config.json";
/// File name of a single-file checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name of the tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the tokenizer config (holds the chat template).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// A loaded HF checkpoint: shape, weights (HF names) and tokenizer.
#[derive(Debug, Clone)]
pub struct HfModel {
    /// The model's shape, from `config.json`.
    pub spec: LlamaSpec,
    /// Every base weight [`Llama::from_weights`] needs, in the requested dtype.
    pub weights: Weights,
    /// The tokenizer, when the directory has a `tokenizer.json`.
    pub tokenizer: Option<HfTokenizer>,
}

impl HfModel {
    /// The [`Llama`] with these weights (no adapters).
    pub fn build(&self) -> Result<Llama> {
        Llama::from_weights(self.spec.clone(), &self.weights)
    }
}

/// The parts of `config.json` the project uses.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// The model's shape.
    pub spec: LlamaSpec,
    /// `bos_token_id`, if set.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (the first one when it is a list), if set.
    pub eos_token_id: Option<u32>,
}

fn json_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("invalid JSON: {e}")).in_file(path)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| json_error(path, e))
}

/// Parse a `config.json` (LLaMA architecture) into a validated [`HfConfig`].
pub fn read_config(path: &Path) -> Result<HfConfig> {
    let value = read_json(path)?;
    if let Some(mt) = value.get("model_type").and_then(|v| v.as_str()) {
        if mt != "llama" {
            return Err(Error::InvalidInput(format!(
                "model_type \"{mt}\" is not supported; only \"llama\" checkpoints load"
            ))
            .in_file(path));
        }
    }
    // Architecture variants the model does not implement: refuse rather than load wrongly.
    let unsupported = [
        (
            "attention_bias",
            value.get("attention_bias").is_some_and(|v| v != false),
        ),
        (
            "mlp_bias",
            value.get("mlp_bias").is_some_and(|v| v != false),
        ),
        (
            "hidden_act",
            value
                .get("hidden_act")
                .is_some_and(|v| v != "silu" && !v.is_null()),
        ),
        (
            "head_dim",
            value
                .get("head_dim")
                .and_then(|v| v.as_u64())
                .is_some_and(|hd| {
                    let h = value.get("hidden_size").and_then(|v| v.as_u64());
                    let n = value.get("num_attention_heads").and_then(|v| v.as_u64());
                    matches!((h, n), (Some(h), Some(n)) if n > 0 && hd != h / n)
                }),
        ),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, bad)| *bad) {
        return Err(Error::InvalidInput(format!(
            "`{key}` = {} is not supported (bias-free SwiGLU attention with head_dim = \
             hidden_size / num_attention_heads only)",
            value[*key]
        ))
        .in_file(path));
    }
    let cfg: LlamaConfig = serde_json::from_value(value).map_err(|e| {
        Error::InvalidInput(format!("not a usable LLaMA config: {e}")).in_file(path)
    })?;
    if cfg.rope_scaling.is_some() {
        return Err(Error::InvalidInput(
            "rope_scaling is not supported (the model implements plain RoPE)".into(),
        )
        .in_file(path));
    }
    let spec = LlamaSpec {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_layers: cfg.num_hidden_layers,
        num_heads: cfg.num_attention_heads,
        num_kv_heads: cfg.num_key_value_heads(),
        rope_theta: f64::from(cfg.rope_theta),
        rms_norm_eps: cfg.rms_norm_eps,
        max_seq_len: cfg.max_position_embeddings,
        tie_embeddings: cfg.tie_word_embeddings.unwrap_or(false),
    };
    spec.validate().map_err(|e| e.in_file(path))?;
    let eos_token_id = match cfg.eos_token_id {
        Some(LlamaEosToks::Single(id)) => Some(id),
        Some(LlamaEosToks::Multiple(ids)) => ids.first().copied(),
        None => None,
    };
    Ok(HfConfig {
        spec,
        bos_token_id: cfg.bos_token_id,
        eos_token_id,
    })
}

/// The safetensors files to search, in order: the shards named by the index (only those
/// holding a needed tensor), else `model.safetensors`, else every `*.safetensors`.
fn weight_files(dir: &Path, needed: &BTreeSet<&str>) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        let value = read_json(&index)?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::InvalidInput("no `weight_map` object in the shard index".into())
                    .in_file(&index)
            })?;
        let mut files = BTreeSet::new();
        for (name, file) in map {
            if needed.contains(name.as_str()) {
                let file = file.as_str().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "weight_map entry of tensor `{name}` is not a file name"
                    ))
                    .in_file(&index)
                })?;
                files.insert(file.to_string());
            }
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no weights: expected {WEIGHTS_FILE}, {INDEX_FILE} or *.safetensors shards"
        ))
        .in_file(dir));
    }
    Ok(files)
}

/// Read the weights `spec` needs from the checkpoint files of `dir`, checking each
/// tensor's shape and converting it to `dtype`.
pub fn load_weights(
    dir: &Path,
    spec: &LlamaSpec,
    dtype: DType,
    device: &Device,
) -> Result<Weights> {
    let shapes: BTreeMap<String, Vec<usize>> = weight_shapes(spec).into_iter().collect();
    let needed: BTreeSet<&str> = shapes.keys().map(String::as_str).collect();
    let files = weight_files(dir, &needed)?;
    let mut weights = Weights::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let st = BufferedSafetensors::new(bytes).map_err(|e| {
            Error::InvalidInput(format!(
                "not a readable safetensors file (truncated or corrupt?): {e}"
            ))
            .in_file(file)
        })?;
        for (name, view) in st.tensors() {
            let Some(want) = shapes.get(&name) else {
                continue;
            };
            if weights.contains_key(&name) {
                continue;
            }
            if view.shape() != want.as_slice() {
                return Err(Error::InvalidInput(format!(
                    "tensor `{name}` has shape {:?}, expected {want:?} from {CONFIG_FILE}",
                    view.shape()
                ))
                .in_file(file));
            }
            let t = view
                .load(device)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|e| {
                    Error::InvalidInput(format!("cannot load tensor `{name}`: {e}")).in_file(file)
                })?;
            weights.insert(name, t);
        }
    }
    if let Some(missing) = needed.iter().find(|n| !weights.contains_key(**n)) {
        let searched: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect();
        return Err(Error::InvalidInput(format!(
            "missing tensor `{missing}` (searched {}; tie_word_embeddings = {})",
            searched.join(", "),
            spec.tie_embeddings
        ))
        .in_file(dir));
    }
    Ok(weights)
}

/// The chat template of a `tokenizer_config.json`: a string, or the entry named `default`
/// of a list of `{name, template}` objects.
fn read_chat_template(path: &Path) -> Result<Option<String>> {
    let value = read_json(path)?;
    Ok(match value.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|e| e.get("template"))
            .and_then(|t| t.as_str())
            .map(String::from),
        _ => None,
    })
}

/// Load a HF LLaMA checkpoint directory (see the [module docs](self)).
pub fn load_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<HfModel> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        return Err(Error::InvalidInput(format!(
            "no {CONFIG_FILE}: not a Hugging Face model directory"
        ))
        .in_file(dir));
    }
    let config = read_config(&config_path)?;
    let weights = load_weights(dir, &config.spec, dtype, device)?;
    let tok_path = dir.join(TOKENIZER_FILE);
    let tokenizer = if tok_path.is_file() {
        let tok = HfTokenizer::from_file(&tok_path)?;
        let bos = config
            .bos_token_id
            .or(cgfed_core::TextTokenizer::bos_id(&tok));
        let eos = config
            .eos_token_id
            .or(cgfed_core::TextTokenizer::eos_id(&tok));
        let tc_path = dir.join(TOKENIZER_CONFIG_FILE);
        let template = if tc_path.is_file() {
            read_chat_template(&tc_path)?
        } else {
            None
        };
        Some(tok.with_special_ids(bos, eos).with_chat_template(template))
    } else {
        None
    };
    Ok(HfModel {
        spec: config.spec,
        weights,
        tokenizer,
    })
}
