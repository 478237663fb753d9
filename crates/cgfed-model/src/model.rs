//! [`Llama`]: a trainable LLaMA decoder built only from differentiable candle ops.
//!
//! candle-transformers' LLaMA is inference-only and uses fused ops without a backward pass
//! (see PLATFORM.md), so this one is built from ops that have one: RMSNorm
//! ([`crate::ops::rms_norm::rms_norm`]), RoPE in the HF (non-interleaved, rotate-half)
//! layout ([`crate::ops::rope::rope`]), a causal attention softmax with an optional per-key
//! padding bias ([`crate::ops::causal_softmax::causal_softmax`]), grouped-query attention
//! by stacking the query heads that share a kv head (no repeated kv copies), and a SwiGLU
//! feed-forward layer ([`crate::ops::swiglu::swiglu`]). These `ops` are fused custom ops with
//! hand-written backward on the CPU (f32/f64) and the equivalent candle-nn compositions
//! (`rms_norm_slow`, `rope_slow`, mask + `softmax`, `silu() * up`) elsewhere.
//!
//! Base weights are plain tensors (frozen); only LoRA adapters attached with
//! [`Llama::attach_lora`] are trainable [`Var`]s — or, for full fine-tuning
//! ([`Llama::unfreeze_all`], `lora.mode = "full"`), every base weight.
//!
//! [`Llama::merged_weights`] folds the adapters into the base weights
//! (`W + scale · B A`), giving a plain model with the same outputs.
//!
//! # Weight names (HF)
//!
//! `model.embed_tokens.weight` `[vocab, hidden]`,
//! `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.layers.{i}.input_layernorm.weight`, `model.layers.{i}.post_attention_layernorm.weight`,
//! `model.norm.weight`, and `lm_head.weight` unless embeddings are tied.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use cgfed_core::{Error, Result};

use crate::config::LlamaSpec;
use crate::init;
use crate::lora::{LoraAdapter, LoraConfig, LoraDropout, LoraLinear, LoraMode, LoraTarget};
use crate::ops::{causal_softmax::causal_softmax, rms_norm::rms_norm, rope::rope, swiglu::swiglu};

/// Standard deviation of the random normal initialisation of the block matrices
/// (attention and MLP projections), as HF's `initializer_range`.
pub const INIT_STD: f64 = 0.02;

/// The embedding and output-head matrices are initialised `N(0, (EMBED_SCALE / hidden)²)`.
///
/// Why not 0.02: after the final RMSNorm (weight 1, frozen) every hidden state has norm
/// `√hidden`, so the largest logit margin a LoRA-only fine-tune can ever reach is about
/// `√hidden · |e| ≈ hidden · std`. With std 0.02 and hidden 64 that is ≈1.3 nats and the
/// tiny presets could barely learn. With tied embeddings the same quantity is also the
/// initial bias toward predicting the current token again, so it cannot be large either;
/// `hidden · std = 4` keeps the initial loss near `ln(vocab)` and leaves room to learn.
pub const EMBED_SCALE: f64 = 4.0;

/// Named base weights, keyed by HF name.
pub type Weights = BTreeMap<String, Tensor>;

/// One decoder block.
#[derive(Debug, Clone)]
struct Block {
    input_norm: Tensor,
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    post_norm: Tensor,
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
}

impl Block {
    fn linear_mut(&mut self, t: LoraTarget) -> &mut LoraLinear {
        match t {
            LoraTarget::QProj => &mut self.q,
            LoraTarget::KProj => &mut self.k,
            LoraTarget::VProj => &mut self.v,
            LoraTarget::OProj => &mut self.o,
            LoraTarget::GateProj => &mut self.gate,
            LoraTarget::UpProj => &mut self.up,
            LoraTarget::DownProj => &mut self.down,
        }
    }

    fn linear(&self, t: LoraTarget) -> &LoraLinear {
        match t {
            LoraTarget::QProj => &self.q,
            LoraTarget::KProj => &self.k,
            LoraTarget::VProj => &self.v,
            LoraTarget::OProj => &self.o,
            LoraTarget::GateProj => &self.gate,
            LoraTarget::UpProj => &self.up,
            LoraTarget::DownProj => &self.down,
        }
    }
}

/// A LLaMA decoder (frozen base weights, optional trainable LoRA adapters).
///
/// # Shapes
/// [`forward`](Self::forward): token ids `[batch, seq]` (u32, `seq <= max_seq_len`) →
/// logits `[batch, seq, vocab]` for every position.
#[derive(Debug, Clone)]
pub struct Llama {
    spec: LlamaSpec,
    embed: Tensor,
    layers: Vec<Block>,
    norm: Tensor,
    lm_head: Option<Tensor>,
    cos: Tensor,
    sin: Tensor,
    lora: Option<LoraConfig>,
    /// Every base weight as a trainable variable, after [`Llama::unfreeze_all`].
    full: Vec<(String, Var)>,
    /// Training mode: the seed of the current step's LoRA dropout masks.
    train_seed: Option<u64>,
    /// Forward passes record no autograd graph (see [`Llama::set_no_grad`]).
    no_grad: bool,
    dtype: DType,
    device: Device,
}

/// The HF names and shapes of every base weight of `spec`, in name order.
pub fn weight_shapes(spec: &LlamaSpec) -> Vec<(String, Vec<usize>)> {
    let (h, f, kv, v) = (
        spec.hidden_size,
        spec.intermediate_size,
        spec.kv_dim(),
        spec.vocab_size,
    );
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, h]),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if !spec.tie_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    for i in 0..spec.num_layers {
        let p = format!("model.layers.{i}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![h, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, f]),
        ]);
    }
    out.sort();
    out
}

/// The names and shapes of the LoRA tensors `cfg` attaches to a model of shape `spec`
/// (`model.layers.{i}.self_attn.q_proj.lora_A` `[rank, in]`, `….lora_B` `[out, rank]`),
/// in name order. Empty in `mode = "full"`.
pub fn lora_shapes(spec: &LlamaSpec, cfg: &LoraConfig) -> Result<Vec<(String, Vec<usize>)>> {
    cfg.validate()?;
    if cfg.mode == LoraMode::Full {
        return Ok(Vec::new());
    }
    let (h, f, kv, r) = (
        spec.hidden_size,
        spec.intermediate_size,
        spec.kv_dim(),
        cfg.rank,
    );
    let mut out = Vec::new();
    for i in 0..spec.num_layers {
        for t in cfg.parsed_targets()? {
            let (o, n) = match t {
                LoraTarget::QProj | LoraTarget::OProj => (h, h),
                LoraTarget::KProj | LoraTarget::VProj => (kv, h),
                LoraTarget::GateProj | LoraTarget::UpProj => (f, h),
                LoraTarget::DownProj => (h, f),
            };
            let p = t.module_path(i);
            out.push((format!("{p}.lora_A"), vec![r, n]));
            out.push((format!("{p}.lora_B"), vec![o, r]));
        }
    }
    out.sort();
    Ok(out)
}

/// Random base weights for `spec`: block matrices `N(0, INIT_STD²)`, embedding and output
/// head `N(0, (EMBED_SCALE / hidden)²)`, every norm weight 1.
/// Deterministic in `seed` (each tensor seeded by its name, see [`init::tensor_seed`]).
pub fn random_weights(
    spec: &LlamaSpec,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Weights> {
    spec.validate()?;
    weight_shapes(spec)
        .into_iter()
        .map(|(name, shape)| {
            let t = if shape.len() == 1 {
                Tensor::ones(shape.as_slice(), dtype, device)?
            } else if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
                let std = EMBED_SCALE / spec.hidden_size as f64;
                init::normal(seed, &name, &shape, std, dtype, device)?
            } else {
                init::normal(seed, &name, &shape, INIT_STD, dtype, device)?
            };
            Ok((name, t))
        })
        .collect()
}

impl Llama {
    /// A model with random base weights ([`random_weights`]) and no adapters.
    pub fn random(spec: LlamaSpec, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let weights = random_weights(&spec, seed, dtype, device)?;
        Self::from_weights(spec, &weights)
    }

    /// A model from named base weights (HF names). Every expected weight must be present
    /// with its exact shape; extra names are an error (they usually mean a spec mismatch).
    /// Tensors are converted to the dtype of `model.embed_tokens.weight`.
    pub fn from_weights(spec: LlamaSpec, weights: &Weights) -> Result<Self> {
        spec.validate()?;
        let shapes = weight_shapes(&spec);
        if let Some(extra) = weights
            .keys()
            .find(|k| shapes.binary_search_by(|(n, _)| n.cmp(k)).is_err())
        {
            return Err(Error::InvalidInput(format!(
                "unexpected weight `{extra}` for this model shape (tie_embeddings = {}, {} layers)",
                spec.tie_embeddings, spec.num_layers
            )));
        }
        let embed_name = "model.embed_tokens.weight";
        let dtype = weights
            .get(embed_name)
            .map(Tensor::dtype)
            .ok_or_else(|| Error::InvalidInput(format!("missing weight `{embed_name}`")))?;
        if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return Err(Error::InvalidInput(format!(
                "weights must be floating point, `{embed_name}` is {}",
                dtype.as_str()
            )));
        }
        let device = weights[embed_name].device().clone();
        let get = |name: String| -> Result<Tensor> {
            let t = weights
                .get(&name)
                .ok_or_else(|| Error::InvalidInput(format!("missing weight `{name}`")))?;
            let want = &shapes[shapes
                .binary_search_by(|(n, _)| n.cmp(&name))
                .map_err(|_| Error::Other(format!("no shape for `{name}`")))?]
            .1;
            if t.dims() != want.as_slice() {
                return Err(Error::InvalidInput(format!(
                    "weight `{name}` has shape {:?}, expected {want:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(dtype)?.to_device(&device)?)
        };
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                input_norm: get(format!("{p}.input_layernorm.weight"))?,
                q: LoraLinear::new(get(format!("{p}.self_attn.q_proj.weight"))?),
                k: LoraLinear::new(get(format!("{p}.self_attn.k_proj.weight"))?),
                v: LoraLinear::new(get(format!("{p}.self_attn.v_proj.weight"))?),
                o: LoraLinear::new(get(format!("{p}.self_attn.o_proj.weight"))?),
                post_norm: get(format!("{p}.post_attention_layernorm.weight"))?,
                gate: LoraLinear::new(get(format!("{p}.mlp.gate_proj.weight"))?),
                up: LoraLinear::new(get(format!("{p}.mlp.up_proj.weight"))?),
                down: LoraLinear::new(get(format!("{p}.mlp.down_proj.weight"))?),
            });
        }
        let embed = get(embed_name.to_string())?;
        let norm = get("model.norm.weight".to_string())?;
        let lm_head = if spec.tie_embeddings {
            None
        } else {
            Some(get("lm_head.weight".to_string())?)
        };
        let (cos, sin) = rope_tables(&spec, dtype, &device)?;
        Ok(Self {
            spec,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            lora: None,
            full: Vec::new(),
            train_seed: None,
            no_grad: false,
            dtype,
            device,
        })
    }

    /// Make the model trainable as `cfg.mode` says: attach LoRA adapters
    /// ([`attach_lora`](Self::attach_lora), A seeded by `seed`) in mode `lora`, make every
    /// base weight trainable ([`unfreeze_all`](Self::unfreeze_all)) in mode `full`.
    pub fn prepare_training(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        match cfg.mode {
            LoraMode::Lora => self.attach_lora(cfg, seed),
            LoraMode::Full => {
                cfg.validate()?;
                self.unfreeze_all()?;
                self.lora = Some(cfg.clone());
                Ok(())
            }
        }
    }

    /// Full fine-tuning: turn every base weight into a trainable [`Var`] named by its HF
    /// name (a tied embedding is one variable used twice). Error if adapters are attached
    /// or the weights are already trainable.
    pub fn unfreeze_all(&mut self) -> Result<()> {
        if self.lora.is_some() || !self.full.is_empty() {
            return Err(Error::InvalidInput(
                "cannot unfreeze the base weights: adapters are attached or the weights are \
                 already trainable"
                    .into(),
            ));
        }
        let mut full = Vec::new();
        for (name, t) in self.weights_mut() {
            let var = Var::from_tensor(&t.detach().copy()?)?;
            *t = var.as_tensor().clone();
            full.push((name, var));
        }
        full.sort_by(|a, b| a.0.cmp(&b.0));
        self.full = full;
        Ok(())
    }

    /// Every base weight with its HF name (mutable; for [`unfreeze_all`](Self::unfreeze_all)).
    fn weights_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out: Vec<(String, &mut Tensor)> = vec![
            ("model.embed_tokens.weight".into(), &mut self.embed),
            ("model.norm.weight".into(), &mut self.norm),
        ];
        if let Some(head) = self.lm_head.as_mut() {
            out.push(("lm_head.weight".into(), head));
        }
        for (i, block) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), &mut block.input_norm));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                &mut block.post_norm,
            ));
            let Block {
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                ..
            } = block;
            for (t, lin) in LoraTarget::ALL
                .into_iter()
                .zip([q, k, v, o, gate, up, down])
            {
                out.push((format!("{}.weight", t.module_path(i)), lin.weight_mut()));
            }
        }
        out
    }

    /// A detached copy of every base weight (HF names; the current values in full
    /// fine-tuning). Adapters are not included: see [`merged_weights`](Self::merged_weights).
    pub fn weights(&self) -> Result<Weights> {
        let mut out = Weights::new();
        out.insert(
            "model.embed_tokens.weight".into(),
            self.embed.detach().copy()?,
        );
        out.insert("model.norm.weight".into(), self.norm.detach().copy()?);
        if let Some(head) = &self.lm_head {
            out.insert("lm_head.weight".into(), head.detach().copy()?);
        }
        for (i, block) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.insert(
                format!("{p}.input_layernorm.weight"),
                block.input_norm.detach().copy()?,
            );
            out.insert(
                format!("{p}.post_attention_layernorm.weight"),
                block.post_norm.detach().copy()?,
            );
            for t in LoraTarget::ALL {
                out.insert(
                    format!("{}.weight", t.module_path(i)),
                    block.linear(t).weight().detach().copy()?,
                );
            }
        }
        Ok(out)
    }

    /// The base weights with every adapter folded in: `W + scale · B A` for each adapted
    /// linear, the others unchanged. [`Llama::from_weights`] on the result gives a model
    /// without adapters and the same outputs (up to rounding).
    pub fn merged_weights(&self) -> Result<Weights> {
        let mut out = self.weights()?;
        for (i, block) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if let Some(ad) = block.linear(t).adapter() {
                    let name = format!("{}.weight", t.module_path(i));
                    let w = out
                        .get(&name)
                        .ok_or_else(|| Error::Other(format!("no base weight `{name}`")))?;
                    let ba = ad.b.as_tensor().matmul(ad.a.as_tensor())?.detach();
                    let merged = (w + ba.affine(ad.scale, 0.0)?)?;
                    out.insert(name, merged);
                }
            }
        }
        Ok(out)
    }

    /// Training mode: `Some(seed)` applies LoRA dropout (`lora.dropout`) with masks drawn
    /// from `seed` and each module's name; `None` (the default) is evaluation mode, without
    /// dropout. The trainer sets a fresh seed for every optimizer step.
    pub fn set_train_seed(&mut self, seed: Option<u64>) {
        self.train_seed = seed;
    }

    /// With `true`, forward passes use every weight detached and record no autograd graph:
    /// nothing can be differentiated, and every intermediate is freed as soon as it has
    /// been used (candle has no no-grad mode; without this, a forward through trainable
    /// weights keeps every layer's activations alive until its output is dropped). For
    /// evaluation and scoring.
    pub fn set_no_grad(&mut self, on: bool) {
        self.no_grad = on;
    }

    /// Whether forward passes record no graph (see [`set_no_grad`](Self::set_no_grad)).
    pub fn no_grad(&self) -> bool {
        self.no_grad
    }

    /// `t`, detached in no-grad mode.
    fn w(&self, t: &Tensor) -> Tensor {
        if self.no_grad {
            t.detach()
        } else {
            t.clone()
        }
    }

    /// The current training-mode seed (see [`set_train_seed`](Self::set_train_seed)).
    pub fn train_seed(&self) -> Option<u64> {
        self.train_seed
    }

    /// Apply the linear `t` of layer `layer`, with LoRA dropout in training mode.
    fn project(&self, block: &Block, layer: usize, t: LoraTarget, x: &Tensor) -> Result<Tensor> {
        let dropout = match (self.train_seed, &self.lora) {
            (Some(seed), Some(cfg)) if cfg.dropout > 0.0 => Some(LoraDropout {
                p: cfg.dropout,
                seed: init::tensor_seed(seed, &t.module_path(layer)),
            }),
            _ => None,
        };
        block.linear(t).forward_opts(x, dropout, self.no_grad)
    }

    /// Attach a fresh LoRA adapter (A random from `seed`, B zero) to every target module of
    /// every layer. Error if adapters are already attached, the weights are trainable,
    /// `cfg.mode` is `full` (use [`prepare_training`](Self::prepare_training)) or the
    /// config is invalid.
    pub fn attach_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        cfg.validate()?;
        if cfg.mode == LoraMode::Full {
            return Err(Error::config(
                "lora.mode",
                "\"full\" attaches no adapters; use Llama::prepare_training",
            ));
        }
        if self.lora.is_some() || !self.full.is_empty() {
            return Err(Error::InvalidInput(
                "LoRA adapters are already attached to this model".into(),
            ));
        }
        let targets = cfg.parsed_targets()?;
        for (i, block) in self.layers.iter_mut().enumerate() {
            for &t in &targets {
                let lin = block.linear_mut(t);
                let (out_dim, in_dim) = lin.weight().dims2()?;
                let adapter = LoraAdapter::init(
                    &t.module_path(i),
                    out_dim,
                    in_dim,
                    cfg,
                    seed,
                    self.dtype,
                    &self.device,
                )?;
                lin.attach(adapter)?;
            }
        }
        self.lora = Some(cfg.clone());
        Ok(())
    }

    /// Add `scale · residual` to the frozen base weight of the adapted linear at
    /// `module_path` (e.g. `model.layers.3.self_attn.q_proj`), where `scale` is the adapter's
    /// `alpha / rank`: the exact-LoRA-aggregation residual (see
    /// [`Trainer::merge_into_base`](cgfed_core::Trainer::merge_into_base)).
    ///
    /// # Errors
    /// No adapted linear at that path, or `residual` is not `[out, in]`.
    pub fn add_to_base_weight(&mut self, module_path: &str, residual: &Tensor) -> Result<()> {
        for (i, block) in self.layers.iter_mut().enumerate() {
            for t in LoraTarget::ALL {
                if t.module_path(i) != module_path {
                    continue;
                }
                let lin = block.linear_mut(t);
                let Some(scale) = lin.adapter().map(|a| a.scale) else {
                    return Err(Error::InvalidInput(format!(
                        "`{module_path}` has no LoRA adapter to merge a residual for"
                    )));
                };
                let w = lin.weight();
                if residual.dims() != w.dims() {
                    return Err(Error::InvalidInput(format!(
                        "residual for `{module_path}` has shape {:?}, the weight {:?}",
                        residual.dims(),
                        w.dims()
                    )));
                }
                let r = residual.to_dtype(w.dtype())?.to_device(w.device())?;
                let next = (w + r.affine(scale, 0.0)?)?.detach();
                *lin.weight_mut() = next;
                return Ok(());
            }
        }
        Err(Error::InvalidInput(format!(
            "no adapted linear layer `{module_path}` in the model"
        )))
    }

    /// The LoRA config of the attached adapters, if any.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Every trainable tensor, sorted by name (`model.layers.{i}.self_attn.q_proj.lora_A`, …,
    /// or every HF weight name after [`unfreeze_all`](Self::unfreeze_all)).
    /// Empty when no adapters are attached.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = self.full.clone();
        for (i, block) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if let Some(ad) = block.linear(t).adapter() {
                    let path = t.module_path(i);
                    out.push((format!("{path}.lora_A"), ad.a.clone()));
                    out.push((format!("{path}.lora_B"), ad.b.clone()));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The model's shape.
    pub fn spec(&self) -> &LlamaSpec {
        &self.spec
    }

    /// Weight and activation dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Logits for every position.
    ///
    /// # Shapes
    /// `ids` `[batch, seq]` u32 → `[batch, seq, vocab]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids)?;
        self.head(&h)
    }

    /// The final hidden states (after the last RMSNorm), before the output head.
    ///
    /// # Shapes
    /// `ids` `[batch, seq]` u32 → `[batch, seq, hidden]`.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        self.hidden_masked(ids, None)
    }

    /// Logits for every position, with a padding mask.
    ///
    /// `attention_mask` `[batch, seq]` (any numeric dtype) is 1 for real tokens and 0 for
    /// padding: no position attends to a padded key. Because RoPE scores depend only on
    /// relative positions, real tokens get the same logits with left or right padding as
    /// unpadded; logits at padded positions are meaningless.
    ///
    /// # Shapes
    /// `ids` `[batch, seq]` u32, `attention_mask` `[batch, seq]` → `[batch, seq, vocab]`.
    pub fn forward_masked(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self.hidden_masked(ids, attention_mask)?;
        self.head(&h)
    }

    /// [`Llama::hidden`] with an optional padding mask (see [`Llama::forward_masked`]).
    pub fn hidden_masked(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = self.check_ids(ids)?;
        let mut x = self
            .w(&self.embed)
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.spec.hidden_size))?;
        let key_bias = match attention_mask {
            None => None,
            Some(m) => {
                if m.dims() != [b, t] {
                    return Err(Error::InvalidInput(format!(
                        "attention mask has shape {:?}, ids have [{b}, {t}]",
                        m.dims()
                    )));
                }
                // [b, t]: a large finite negative for padded keys (not -inf, so a row whose
                // every key is padding still gives finite, ignorable values).
                let neg = if self.dtype == DType::F16 {
                    -6.0e4
                } else {
                    -1.0e30
                };
                let keep = m.to_dtype(DType::F32)?.ne(0f64)?.to_dtype(DType::F32)?;
                Some(((keep - 1.0)? * -neg)?.to_dtype(self.dtype)?)
            }
        };
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let eps = self.spec.rms_norm_eps as f32;
        for (i, block) in self.layers.iter().enumerate() {
            let a = self.attention(
                block,
                i,
                &rms_norm(&x, &self.w(&block.input_norm), eps)?,
                key_bias.as_ref(),
                &cos,
                &sin,
            )?;
            x = (x + a)?;
            let h = rms_norm(&x, &self.w(&block.post_norm), eps)?;
            let gate = self.project(block, i, LoraTarget::GateProj, &h)?;
            let up = self.project(block, i, LoraTarget::UpProj, &h)?;
            let m = self.project(block, i, LoraTarget::DownProj, &swiglu(&gate, &up)?)?;
            x = (x + m)?;
        }
        rms_norm(&x, &self.w(&self.norm), eps)
    }

    /// Output head: logits from final hidden states (the embedding matrix when tied).
    ///
    /// # Shapes
    /// `[..., hidden]` → `[..., vocab]`.
    pub fn head(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        LoraLinear::new(self.w(w)).forward(h)
    }

    fn check_ids(&self, ids: &Tensor) -> Result<(usize, usize)> {
        let (b, t) = ids.dims2().map_err(|_| {
            Error::InvalidInput(format!(
                "token ids must be a [batch, seq] tensor, got shape {:?}",
                ids.dims()
            ))
        })?;
        if ids.dtype() != DType::U32 {
            return Err(Error::InvalidInput(format!(
                "token ids must be u32, got {}",
                ids.dtype().as_str()
            )));
        }
        if b == 0 || t == 0 {
            return Err(Error::InvalidInput(format!(
                "empty token id tensor of shape [{b}, {t}]"
            )));
        }
        if t > self.spec.max_seq_len {
            return Err(Error::InvalidInput(format!(
                "sequence of {t} tokens is longer than model.max_seq_len = {}",
                self.spec.max_seq_len
            )));
        }
        let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= self.spec.vocab_size {
            return Err(Error::InvalidInput(format!(
                "token id {max} is out of range for a vocabulary of {} ids",
                self.spec.vocab_size
            )));
        }
        Ok((b, t))
    }

    /// Causal self-attention with RoPE and grouped-query heads.
    ///
    /// # Shapes
    /// `x` `[b, t, hidden]`, `key_bias` `[b, t]` (additive, per key), `cos`/`sin`
    /// `[t, head_dim / 2]` → `[b, t, hidden]`.
    fn attention(
        &self,
        block: &Block,
        layer: usize,
        x: &Tensor,
        key_bias: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (
            self.spec.num_heads,
            self.spec.num_kv_heads,
            self.spec.head_dim(),
        );
        let heads = |target: LoraTarget, n: usize| -> Result<Tensor> {
            Ok(self
                .project(block, layer, target, x)?
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = rope(&heads(LoraTarget::QProj, nh)?, cos, sin)?;
        let k = rope(&heads(LoraTarget::KProj, nkv)?, cos, sin)?;
        let v = heads(LoraTarget::VProj, nkv)?;
        // Grouped-query attention without repeat_kv copies: the `rep` query heads that share a
        // kv head are stacked along the rows, [b, nkv, rep · t, hd] (a free reshape, since
        // query head i uses kv head i / rep); the causal softmax knows row r is position r mod t.
        let rep = nh / nkv;
        let scores = q.reshape((b, nkv, rep * t, hd))?.matmul(&k.t()?)?;
        let probs = causal_softmax(&scores, 1.0 / (hd as f64).sqrt(), key_bias)?;
        let y = probs
            .matmul(&v)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.project(block, layer, LoraTarget::OProj, &y)
    }
}

/// RoPE tables `[max_seq_len, head_dim / 2]` (HF layout: frequency `θ^(-2i/d)` for pair
/// `(i, i + d/2)`), computed in f64 on the host.
fn rope_tables(spec: &LlamaSpec, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let hd = spec.head_dim();
    let half = hd / 2;
    let mut cos = Vec::with_capacity(spec.max_seq_len * half);
    let mut sin = Vec::with_capacity(spec.max_seq_len * half);
    for pos in 0..spec.max_seq_len {
        for i in 0..half {
            let inv_freq = 1.0 / spec.rope_theta.powf((2 * i) as f64 / hd as f64);
            let (s, c) = (pos as f64 * inv_freq).sin_cos();
            cos.push(c);
            sin.push(s);
        }
    }
    let shape = [spec.max_seq_len, half];
    Ok((
        init::host_tensor(cos, &shape, dtype, device)?,
        init::host_tensor(sin, &shape, dtype, device)?,
    ))
}
