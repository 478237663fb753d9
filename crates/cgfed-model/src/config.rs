//! Model shape ([`LlamaSpec`]) and the `[model]` config table ([`ModelConfig`]).
//!
//! ```toml
//! [model]
//! preset = "tiny"        # "tiny" (default, ≈0.1M params) or "small" (≈1M with vocab 2000)
//! dtype = "f32"          # "f32" (default) or "f64" (gradient checks)
//! # optional overrides of any preset field except the vocabulary size, which always comes
//! # from the data pipeline's tokenizer:
//! # hidden_size = 64
//! # intermediate_size = 172
//! # num_layers = 2
//! # num_heads = 4
//! # num_kv_heads = 2
//! # rope_theta = 10000.0
//! # rms_norm_eps = 1e-5
//! # max_seq_len = 256
//! # tie_embeddings = true
//! ```

use candle_core::{DType, Device};
use cgfed_core::config::ensure;
use cgfed_core::Result;
use serde::{Deserialize, Serialize};

use crate::model::Llama;

/// The shape of a LLaMA model: everything needed to allocate its weights.
///
/// Field names follow HF `config.json` where one exists (`hidden_size`, `num_kv_heads` is
/// `num_key_value_heads`, `num_layers` is `num_hidden_layers`, `max_seq_len` is
/// `max_position_embeddings`, `tie_embeddings` is `tie_word_embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaSpec {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of the residual stream (`d_model`).
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Number of query heads; `hidden_size / num_heads` is the head dimension.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when `< num_heads`).
    pub num_kv_heads: usize,
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Longest sequence (in tokens) the model accepts; sizes the RoPE tables.
    pub max_seq_len: usize,
    /// Whether the output head reuses the token embedding matrix (no `lm_head.weight`).
    pub tie_embeddings: bool,
}

impl LlamaSpec {
    /// The `tiny` preset: hidden 64, 2 layers, 4 query / 2 kv heads (head dim 16), FFN 172,
    /// θ 10000, ε 1e-5, tied embeddings, 256 positions. ≈0.107M parameters with a 258-token
    /// byte vocabulary.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 172,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_seq_len: 256,
            tie_embeddings: true,
        }
    }

    /// The `small` preset: hidden 128, 4 layers, 4 query / 2 kv heads (head dim 32), FFN 344,
    /// θ 10000, ε 1e-5, tied embeddings, 256 positions. ≈0.98M parameters with vocab 2000.
    pub fn small(vocab_size: usize) -> Self {
        Self {
            hidden_size: 128,
            intermediate_size: 344,
            num_layers: 4,
            ..Self::tiny(vocab_size)
        }
    }

    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Width of the key and value projections (`num_kv_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    /// Number of base (frozen) parameters, counting a tied embedding once.
    pub fn num_params(&self) -> usize {
        let (h, f, kv) = (self.hidden_size, self.intermediate_size, self.kv_dim());
        let attn = 2 * h * h + 2 * h * kv;
        let mlp = 3 * h * f;
        let norms = 2 * h;
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        self.vocab_size * h + self.num_layers * (attn + mlp + norms) + h + head
    }

    /// Error unless the shape is usable; keys are reported as `model.<field>`.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.vocab_size > 0,
            "model.vocab_size",
            "must be at least 1 (it comes from the data pipeline's tokenizer)",
        )?;
        for (key, v) in [
            ("model.hidden_size", self.hidden_size),
            ("model.intermediate_size", self.intermediate_size),
            ("model.num_layers", self.num_layers),
            ("model.num_heads", self.num_heads),
            ("model.num_kv_heads", self.num_kv_heads),
            ("model.max_seq_len", self.max_seq_len),
        ] {
            ensure(v > 0, key, "must be at least 1")?;
        }
        ensure(
            self.hidden_size.is_multiple_of(self.num_heads),
            "model.num_heads",
            format!(
                "{} does not divide model.hidden_size = {}",
                self.num_heads, self.hidden_size
            ),
        )?;
        ensure(
            self.head_dim().is_multiple_of(2),
            "model.num_heads",
            format!(
                "head dimension hidden_size / num_heads = {} must be even for RoPE",
                self.head_dim()
            ),
        )?;
        ensure(
            self.num_heads.is_multiple_of(self.num_kv_heads),
            "model.num_kv_heads",
            format!(
                "{} does not divide model.num_heads = {} (grouped-query attention shares each \
                 kv head among a whole number of query heads)",
                self.num_kv_heads, self.num_heads
            ),
        )?;
        ensure(
            self.rope_theta.is_finite() && self.rope_theta > 1.0,
            "model.rope_theta",
            format!("must be finite and > 1, got {}", self.rope_theta),
        )?;
        ensure(
            self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0,
            "model.rms_norm_eps",
            format!("must be finite and > 0, got {}", self.rms_norm_eps),
        )?;
        Ok(())
    }
}

/// A named model shape (`model.preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// [`LlamaSpec::tiny`] (the default).
    #[default]
    Tiny,
    /// [`LlamaSpec::small`].
    Small,
}

impl Preset {
    /// The preset's shape for a vocabulary of `vocab_size` ids.
    pub fn spec(self, vocab_size: usize) -> LlamaSpec {
        match self {
            Preset::Tiny => LlamaSpec::tiny(vocab_size),
            Preset::Small => LlamaSpec::small(vocab_size),
        }
    }

    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
        }
    }
}

/// Floating-point type of the model's weights and activations (`model.dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelDType {
    /// 32-bit floats (the default).
    #[default]
    F32,
    /// 64-bit floats, for gradient checks against finite differences.
    F64,
    /// bfloat16 (CUDA only).
    Bf16,
    /// IEEE half precision (CUDA only).
    F16,
}

impl ModelDType {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            ModelDType::F32 => DType::F32,
            ModelDType::F64 => DType::F64,
            ModelDType::Bf16 => DType::BF16,
            ModelDType::F16 => DType::F16,
        }
    }
}

/// The `[model]` table: where the model comes from (at most one of `preset`, `asset`,
/// `gguf`, `hf_dir`; a random `tiny` preset when none is given), its dtype and device, and
/// shape overrides for presets. Every key is optional.
///
/// ```toml
/// [model]
/// asset = "smollm2-135m"     # or: preset = "tiny" | gguf = "m.gguf" | hf_dir = "path/"
/// dtype = "f32"              # f32 | f64 (CPU); bf16 | f16 (CUDA)
/// device = "auto"            # auto | cpu | cuda | cuda:N
/// ```
///
/// For presets the vocabulary size comes from the data pipeline's byte tokenizer
/// ([`cgfed_core::TrainerInit::vocab_size`]); checkpoints bring their own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A random-init shape. Default `"tiny"` when no other source is given.
    pub preset: Option<Preset>,
    /// A named downloadable checkpoint (e.g. `"smollm2-135m"`), fetched into the cache
    /// (`$CGFED_HOME`, default `~/.cache/cgfed`) on first use.
    pub asset: Option<String>,
    /// A local GGUF file.
    pub gguf: Option<std::path::PathBuf>,
    /// A local Hugging Face directory (`config.json`, `*.safetensors`, `tokenizer.json`).
    pub hf_dir: Option<std::path::PathBuf>,
    /// Where to run: `auto` (default: CUDA when built with it and a GPU is present, else
    /// CPU), `cpu`, `cuda`, `cuda:N`.
    pub device: Option<String>,
    /// Weight and activation dtype. Default `"f32"`.
    pub dtype: ModelDType,
    /// Overrides [`LlamaSpec::hidden_size`].
    pub hidden_size: Option<usize>,
    /// Overrides [`LlamaSpec::intermediate_size`].
    pub intermediate_size: Option<usize>,
    /// Overrides [`LlamaSpec::num_layers`].
    pub num_layers: Option<usize>,
    /// Overrides [`LlamaSpec::num_heads`].
    pub num_heads: Option<usize>,
    /// Overrides [`LlamaSpec::num_kv_heads`].
    pub num_kv_heads: Option<usize>,
    /// Overrides [`LlamaSpec::rope_theta`].
    pub rope_theta: Option<f64>,
    /// Overrides [`LlamaSpec::rms_norm_eps`].
    pub rms_norm_eps: Option<f64>,
    /// Overrides [`LlamaSpec::max_seq_len`].
    pub max_seq_len: Option<usize>,
    /// Overrides [`LlamaSpec::tie_embeddings`].
    pub tie_embeddings: Option<bool>,
}

/// Calls macro `$m` with the names of the [`LlamaSpec`] fields a `[model]` table may override.
macro_rules! shape_overrides {
    ($m:ident) => {
        $m!(
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            rope_theta,
            rms_norm_eps,
            max_seq_len,
            tie_embeddings
        )
    };
}

impl ModelConfig {
    /// The preset's shape with the overrides applied, validated.
    pub fn spec(&self, vocab_size: usize) -> Result<LlamaSpec> {
        let mut s = self.preset.unwrap_or_default().spec(vocab_size);
        macro_rules! apply {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { s.$f = v; })* };
        }
        shape_overrides!(apply);
        s.validate()?;
        Ok(s)
    }

    /// Names of the shape overrides that are set (they apply to presets only).
    pub fn overrides(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! check {
            ($($f:ident),*) => { $(if self.$f.is_some() { v.push(stringify!($f)); })* };
        }
        shape_overrides!(check);
        v
    }

    /// Error unless at most one source is given, overrides go with a preset, and the
    /// resulting preset shape is usable (checked with a placeholder vocabulary).
    pub fn validate(&self) -> Result<()> {
        let sources: Vec<&str> = [
            ("preset", self.preset.is_some()),
            ("asset", self.asset.is_some()),
            ("gguf", self.gguf.is_some()),
            ("hf_dir", self.hf_dir.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        if sources.len() > 1 {
            return Err(cgfed_core::Error::config(
                format!("model.{}", sources[1]),
                format!(
                    "give one model source, not {}; accepted: preset, asset, gguf, hf_dir",
                    sources.join(" and ")
                ),
            ));
        }
        let from_checkpoint = sources.first().is_some_and(|k| *k != "preset");
        if let (true, Some(first)) = (from_checkpoint, self.overrides().first()) {
            return Err(cgfed_core::Error::config(
                format!("model.{first}"),
                "shape overrides apply to presets only; a checkpoint's shape comes from its files",
            ));
        }
        self.spec(1).map(|_| ())
    }

    /// A short label for logs: the preset name, with `+` when fields are overridden.
    pub fn label(&self) -> String {
        format!(
            "{}{}",
            self.preset.unwrap_or_default().as_str(),
            if self.overrides().is_empty() { "" } else { "+" }
        )
    }

    /// Build the randomly initialised model (deterministic in `seed`).
    pub fn build(&self, vocab_size: usize, seed: u64, device: &Device) -> Result<Llama> {
        let spec = self.spec(vocab_size)?;
        Llama::random(spec, seed, self.dtype.dtype(), device)
    }
}
