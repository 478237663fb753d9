//! LoRA: the `[lora]` config table ([`LoraConfig`]) and the linear layer with an optional
//! low-rank adapter ([`LoraLinear`]).
//!
//! A LoRA linear computes `y = x Wᵀ + (alpha / rank) · (x Aᵀ) Bᵀ` with the base weight `W`
//! `[out, in]` frozen (a plain tensor) and only `A` `[rank, in]` and `B` `[out, rank]`
//! trainable (candle [`Var`]s). `A` starts uniform in `±1/√in` (PEFT's kaiming-uniform with
//! `a = √5`), `B` starts at zero, so a fresh adapter leaves the model unchanged.
//!
//! # Names
//!
//! Adapter tensors are named after the module they adapt, PEFT-like but without PEFT's
//! `base_model.model.` prefix and `.weight` suffix:
//! `model.layers.{i}.self_attn.q_proj.lora_A`, `model.layers.{i}.mlp.down_proj.lora_B`, ….
//!
//! ```toml
//! [lora]
//! rank = 8                                          # default 8
//! alpha = 16.0                                      # default 16; scale = alpha / rank
//! targets = ["q_proj", "k_proj", "v_proj", "o_proj"] # default; also gate_proj, up_proj, down_proj
//! dropout = 0.0                                     # default 0; LoRA input dropout, training only
//! mode = "lora"                                     # "lora" (default) or "full"
//! ```
//!
//! # Dropout
//!
//! With `dropout = p > 0` the adapter path sees `dropout(x)` (PEFT's `lora_dropout`):
//! `y = x Wᵀ + scale · (dropout(x) Aᵀ) Bᵀ`, each input element zeroed with probability `p`
//! and the survivors scaled by `1 / (1 - p)`. Masks are drawn on the host from a ChaCha
//! stream seeded by the training step's seed and the module's name ([`LoraDropout`]), so
//! runs stay bit-for-bit deterministic; evaluation never drops anything.
//!
//! # Full fine-tuning
//!
//! `mode = "full"` trains every base weight instead of adapters (for tiny models): the
//! trainable tensors, the update layout and the deltas are the full weights, named by
//! their HF names (`model.embed_tokens.weight`, …). `rank`, `alpha`, `targets` and
//! `dropout` are then unused.

use candle_core::{DType, Device, Tensor, Var};
use cgfed_core::config::ensure;
use cgfed_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::init;
use crate::ops::linear::linear;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A module a LoRA adapter can be attached to (`lora.targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query projection.
    QProj,
    /// Attention key projection.
    KProj,
    /// Attention value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// SwiGLU gate projection.
    GateProj,
    /// SwiGLU up projection.
    UpProj,
    /// SwiGLU down projection.
    DownProj,
}

impl LoraTarget {
    /// Every target, in the order of the block's modules.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// The module name, as in config files and weight names (`q_proj`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    /// The module's path in layer `layer`, e.g. `model.layers.3.self_attn.q_proj`.
    pub fn module_path(self, layer: usize) -> String {
        let group = match self {
            LoraTarget::QProj | LoraTarget::KProj | LoraTarget::VProj | LoraTarget::OProj => {
                "self_attn"
            }
            LoraTarget::GateProj | LoraTarget::UpProj | LoraTarget::DownProj => "mlp",
        };
        format!("model.layers.{layer}.{group}.{}", self.as_str())
    }

    /// Parse a module name; the error lists the accepted names.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| {
                Error::config(
                    "lora.targets",
                    format!("unknown target `{name}`; accepted: {}", accepted_targets()),
                )
            })
    }
}

fn accepted_targets() -> String {
    LoraTarget::ALL.map(LoraTarget::as_str).join(", ")
}

impl std::fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_rank() -> usize {
    8
}

fn default_alpha() -> f64 {
    16.0
}

fn default_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"]
        .map(String::from)
        .to_vec()
}

/// The `[lora]` table. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of every adapter. Default 8.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Scale numerator: the adapter output is multiplied by `alpha / rank`. Default 16.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Modules to adapt in every layer. Default `["q_proj", "k_proj", "v_proj", "o_proj"]`;
    /// accepted: `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// Dropout probability on the adapters' input during training, in `[0, 1)`. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// `"lora"` (default): train adapters; `"full"`: train every base weight.
    #[serde(default)]
    pub mode: LoraMode,
}

/// What local training updates (`lora.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraMode {
    /// LoRA adapters on the target modules (the default).
    #[default]
    Lora,
    /// Full fine-tuning: every base weight is trainable (tiny models only; the update is
    /// as large as the model).
    Full,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: default_rank(),
            alpha: default_alpha(),
            targets: default_targets(),
            dropout: 0.0,
            mode: LoraMode::default(),
        }
    }
}

impl LoraConfig {
    /// Error unless rank ≥ 1, alpha is finite and > 0, dropout is in `[0, 1)`, and the
    /// targets are known, non-empty and not repeated.
    pub fn validate(&self) -> Result<()> {
        self.parsed_targets().map(|_| ())?;
        ensure(self.rank >= 1, "lora.rank", "must be at least 1")?;
        ensure(
            self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout),
            "lora.dropout",
            format!("must be in [0, 1), got {}", self.dropout),
        )?;
        ensure(
            self.alpha.is_finite() && self.alpha > 0.0,
            "lora.alpha",
            format!("must be finite and > 0, got {}", self.alpha),
        )
    }

    /// The targets, parsed and in block order (`q_proj` … `down_proj`).
    pub fn parsed_targets(&self) -> Result<Vec<LoraTarget>> {
        ensure(
            !self.targets.is_empty(),
            "lora.targets",
            format!(
                "must name at least one module; accepted: {}",
                accepted_targets()
            ),
        )?;
        let mut out = Vec::with_capacity(self.targets.len());
        for name in &self.targets {
            let t = LoraTarget::parse(name)?;
            if out.contains(&t) {
                return Err(Error::config(
                    "lora.targets",
                    format!("`{name}` is listed twice"),
                ));
            }
            out.push(t);
        }
        out.sort();
        Ok(out)
    }

    /// `alpha / rank`, the factor applied to the adapter's output.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The trainable part of a LoRA linear: `A` `[rank, in]`, `B` `[out, rank]` and the scale.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// Down-projection `[rank, in]`.
    pub a: Var,
    /// Up-projection `[out, rank]`.
    pub b: Var,
    /// `alpha / rank`.
    pub scale: f64,
}

impl LoraAdapter {
    /// A fresh adapter for a `[out, in]` weight called `module` (A random, B zero). The
    /// values of A depend only on `seed` and `module`.
    pub fn init(
        module: &str,
        out_dim: usize,
        in_dim: usize,
        cfg: &LoraConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = init::uniform(
            seed,
            &format!("{module}.lora_A"),
            &[cfg.rank, in_dim],
            bound,
            dtype,
            device,
        )?;
        let b = Tensor::zeros((out_dim, cfg.rank), dtype, device)?;
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: cfg.scale(),
        })
    }
}

/// A bias-free linear layer `y = x Wᵀ`, with an optional LoRA adapter.
///
/// # Shapes
/// `weight` is `[out, in]`; `forward` takes `[..., in]` and returns `[..., out]`.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    weight: Tensor,
    adapter: Option<LoraAdapter>,
}

impl LoraLinear {
    /// A plain (frozen) linear layer from its `[out, in]` weight.
    pub fn new(weight: Tensor) -> Self {
        Self {
            weight,
            adapter: None,
        }
    }

    /// The frozen base weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The adapter, if one is attached.
    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// Attach `adapter`; error if one is already attached or the shapes do not fit.
    pub fn attach(&mut self, adapter: LoraAdapter) -> Result<()> {
        if self.adapter.is_some() {
            return Err(Error::InvalidInput(
                "a LoRA adapter is already attached to this layer".into(),
            ));
        }
        let (out_dim, in_dim) = self.weight.dims2()?;
        let (_, a_in) = adapter.a.as_tensor().dims2()?;
        let (b_out, _) = adapter.b.as_tensor().dims2()?;
        if a_in != in_dim || b_out != out_dim {
            return Err(Error::InvalidInput(format!(
                "LoRA A {:?} / B {:?} do not fit a [{out_dim}, {in_dim}] weight",
                adapter.a.as_tensor().dims(),
                adapter.b.as_tensor().dims()
            )));
        }
        self.adapter = Some(adapter);
        Ok(())
    }

    /// Replace the base weight (same shape), e.g. by a [`Var`]'s tensor for full
    /// fine-tuning.
    pub(crate) fn weight_mut(&mut self) -> &mut Tensor {
        &mut self.weight
    }

    /// `x Wᵀ + scale · (x Aᵀ) Bᵀ` (no dropout: evaluation).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_dropout(x, None)
    }

    /// `x Wᵀ + scale · (dropout(x) Aᵀ) Bᵀ`: as [`forward`](Self::forward), with `dropout`
    /// (when given and an adapter is attached) applied to the adapter's input only.
    pub fn forward_with_dropout(&self, x: &Tensor, dropout: Option<LoraDropout>) -> Result<Tensor> {
        self.forward_opts(x, dropout, false)
    }

    /// [`forward_with_dropout`](Self::forward_with_dropout); with `no_grad`, the weights
    /// and adapter factors are used detached, so the result records no graph (evaluation:
    /// intermediates are freed as soon as they are used).
    pub fn forward_opts(
        &self,
        x: &Tensor,
        dropout: Option<LoraDropout>,
        no_grad: bool,
    ) -> Result<Tensor> {
        let w = |t: &Tensor| if no_grad { t.detach() } else { t.clone() };
        let dims = x.dims().to_vec();
        let Some((&in_dim, lead)) = dims.split_last() else {
            return Err(Error::InvalidInput(
                "linear layer input must have at least one dimension".into(),
            ));
        };
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        // A frozen base weight gets no gradient; a trainable one gets it in its own layout.
        let mut y = linear(&x2, &w(&self.weight))?;
        if let Some(ad) = &self.adapter {
            let xa = match dropout {
                Some(d) => d.apply(&x2)?,
                None => x2.clone(),
            };
            let h = linear(&xa, &w(ad.a.as_tensor()))?;
            // scale · (h Bᵀ) as h (scale · B)ᵀ: the scaling touches the [out, r] factor, not
            // the [rows, out] product (and its gradient).
            let d = linear(&h, &w(ad.b.as_tensor()).affine(ad.scale, 0.0)?)?;
            y = (y + d)?;
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(y.dim(1)?);
        Ok(y.reshape(out_dims)?)
    }
}

/// One dropout mask's parameters: drop probability and the seed of its random stream.
///
/// The model derives `seed` from the training step's seed and the module's name
/// ([`init::tensor_seed`]), so every module of every step gets its own reproducible mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraDropout {
    /// Probability of zeroing an element, in `[0, 1)`.
    pub p: f64,
    /// Seed of the mask's ChaCha8 stream.
    pub seed: u64,
}

impl LoraDropout {
    /// Zero each element of `x` with probability `p` and scale the others by `1 / (1 - p)`.
    /// The mask is drawn on the host (one 32-bit draw per element, row-major) and is a
    /// constant for backprop. `p = 0` returns `x` unchanged.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        if self.p.is_nan() || self.p >= 1.0 {
            return Err(Error::config(
                "lora.dropout",
                format!("must be in [0, 1), got {}", self.p),
            ));
        }
        // Keep when the draw is at or above p·2³², i.e. with probability 1 - p.
        let threshold = (self.p * 4_294_967_296.0) as u64;
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mut draws = vec![0u32; x.elem_count()];
        ChaCha8Rng::seed_from_u64(self.seed).fill(&mut draws[..]);
        let mask: Vec<f32> = draws
            .into_iter()
            .map(|d| if u64::from(d) >= threshold { keep } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok(x.mul(&mask)?)
    }
}
