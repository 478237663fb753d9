//! [`LlamaTrainer`]: the `llama` trainer plugin (LoRA fine-tuning of a [`Llama`]).
//!
//! ```toml
//! [trainer]
//! name = "llama"
//! lr = 3e-3              # learning rate, default 3e-3
//! local_steps = 4        # optimizer steps per local run, default 4
//! batch_size = 8         # examples per step, default 8 (capped at the client's data size)
//! optimizer = "adamw"    # "adamw" (default; betas 0.9/0.999, eps 1e-8) or "sgd"
//! weight_decay = 0.0     # decoupled weight decay for adamw, default 0 (must be 0 for sgd)
//! # max_grad_norm = 1.0  # clip the global gradient norm; default: no clipping
//! prox_mu = 0.0          # FedProx proximal term μ/2·‖w − w_start‖²; default 0 (off)
//! ```
//!
//! `prox_mu = μ > 0` is FedProx's client objective (Li et al., 2020): every step adds
//! `μ·(w − w_start)` to the gradient of each trainable tensor, pulling the local model
//! towards the state the round started from (reported `train_loss` stays the data loss).
//!
//! The trainer holds the global LoRA state (an [`Update`]). A local run loads the state it
//! is given into the adapters, builds a fresh optimizer, takes `local_steps` steps on
//! batches drawn by a [`BatchSampler`] seeded with `mix_seed([seed, round, client])`, and
//! returns `trained − start`. Step `k` draws its LoRA dropout masks (`lora.dropout`) from
//! `mix_seed([run seed, k])`; evaluation never uses dropout. Runs are bit-for-bit
//! deterministic on the CPU.
//!
//! With `lora.mode = "full"` the state is every base weight instead (HF names), and local
//! runs return the full weights' delta.

use crate::optim::FusedAdamW;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{Optimizer, ParamsAdamW, SGD};
use cgfed_core::config::{ensure, parse_table};
use cgfed_core::context::mix_seed;
use cgfed_core::{
    Error, EvalOutcome, Example, Layout, LocalOutcome, Result, Score, ScoreRequest, TrainCtx,
    Trainer, TrainerInit, Update,
};
use serde::{Deserialize, Serialize};

use crate::assets::FetchEvent;
use crate::batch::{check_examples, mean_nll, nll_sum, Batch, BatchSampler};
use crate::config::{LlamaSpec, ModelConfig};
use crate::lora::{LoraConfig, LoraMode};
use crate::model::Llama;
use crate::source::load_model;
use cgfed_core::TextTokenizer;
use std::sync::Arc;

/// The registered name.
pub const NAME: &str = "llama";

cgfed_core::inventory::submit! {
    cgfed_core::Plugin {
        name: NAME,
        summary: "LoRA fine-tuning of a LLaMA model on candle (random presets tiny/small)",
        params: TRAINER_PARAMS,
        factory: cgfed_core::Factory::Trainer(build),
    }
}

/// The documented `[trainer]` keys (`cgfed list`).
const TRAINER_PARAMS: &[cgfed_core::Param] = &[
    cgfed_core::Param {
        key: "lr",
        default: "3e-3",
        help: "learning rate",
    },
    cgfed_core::Param {
        key: "local_steps",
        default: "4",
        help: "optimizer steps per client per round",
    },
    cgfed_core::Param {
        key: "batch_size",
        default: "8",
        help: "examples per step (capped at the client's data)",
    },
    cgfed_core::Param {
        key: "optimizer",
        default: "\"adamw\"",
        help: "\"adamw\" (betas 0.9/0.999) or \"sgd\"",
    },
    cgfed_core::Param {
        key: "weight_decay",
        default: "0.0",
        help: "decoupled weight decay (adamw only)",
    },
    cgfed_core::Param {
        key: "max_grad_norm",
        default: "-",
        help: "clip the global gradient norm; default: no clipping",
    },
    cgfed_core::Param {
        key: "prox_mu",
        default: "0.0",
        help: "FedProx proximal term μ (gradient += μ·(w − w_start)); 0 = plain local SGD/AdamW",
    },
];

/// The plugin factory: parses `[model]`, `[lora]` and `[trainer]`, loads the model (a
/// named asset is fetched on first use, its steps logged) and builds the trainer.
pub fn build(init: &TrainerInit<'_>) -> Result<Box<dyn Trainer>> {
    let model_cfg: ModelConfig = parse_table(init.model, "model")?;
    let lora_cfg: LoraConfig = parse_table(init.lora, "lora")?;
    lora_cfg.validate()?;
    let trainer_cfg: TrainerConfig = init.trainer.parse()?;
    trainer_cfg.validate()?;
    let loaded = load_model(&model_cfg, init.vocab_size, init.seed, &mut |e| {
        if let FetchEvent::Step(s) = e {
            tracing::info!("{s}");
        }
    })?;
    let tokenizer = loaded
        .tokenizer
        .map(|t| Arc::new(t) as Arc<dyn TextTokenizer>);
    // The BOS scoring prepends: the checkpoint tokenizer's when its model wants one; random
    // presets are trained on cgfed-data's byte tokenizer, whose BOS is 256.
    let bos = match (&tokenizer, loaded.add_bos) {
        (_, false) => None,
        (Some(t), true) => t.bos_id(),
        (None, true) => (init.vocab_size > BYTE_BOS as usize).then_some(BYTE_BOS),
    };
    let t = LlamaTrainer::from_model(loaded.model, &lora_cfg, trainer_cfg, init.seed)?
        .with_label(loaded.label)
        .with_tokenizer(tokenizer)
        .with_bos(bos);
    Ok(Box::new(t))
}

/// BOS id of cgfed-data's `ByteTokenizer` (ids 0..=255 are bytes, 256 BOS, 257 EOS), the
/// tokenizer random presets are used with.
const BYTE_BOS: u32 = 256;

/// The local optimizer (`trainer.optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (betas 0.9 / 0.999, eps 1e-8), the default.
    #[default]
    Adamw,
    /// Plain stochastic gradient descent.
    Sgd,
}

fn default_lr() -> f64 {
    3e-3
}

fn default_local_steps() -> usize {
    4
}

fn default_batch_size() -> usize {
    8
}

/// The `[trainer]` table minus `name`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Learning rate. Default 3e-3.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Optimizer steps per local run. Default 4.
    #[serde(default = "default_local_steps")]
    pub local_steps: usize,
    /// Examples per step (capped at the number of examples with targets). Default 8.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `"adamw"` (default) or `"sgd"`.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// AdamW's decoupled weight decay. Default 0.
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value before each step. Default: no clipping.
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// FedProx's proximal coefficient μ (`μ/2·‖w − w_start‖²` added to the local
    /// objective). Default 0: off.
    #[serde(default)]
    pub prox_mu: f64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            local_steps: default_local_steps(),
            batch_size: default_batch_size(),
            optimizer: OptimizerKind::default(),
            weight_decay: 0.0,
            max_grad_norm: None,
            prox_mu: 0.0,
        }
    }
}

impl TrainerConfig {
    /// Error unless every value is in range; keys are reported as `trainer.<field>`.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.lr.is_finite() && self.lr > 0.0,
            "trainer.lr",
            format!("must be finite and > 0, got {}", self.lr),
        )?;
        ensure(
            self.local_steps >= 1,
            "trainer.local_steps",
            "must be at least 1",
        )?;
        ensure(
            self.batch_size >= 1,
            "trainer.batch_size",
            "must be at least 1",
        )?;
        ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "trainer.weight_decay",
            format!("must be finite and >= 0, got {}", self.weight_decay),
        )?;
        ensure(
            self.optimizer == OptimizerKind::Adamw || self.weight_decay == 0.0,
            "trainer.weight_decay",
            "is only supported with optimizer = \"adamw\"",
        )?;
        ensure(
            self.prox_mu.is_finite() && self.prox_mu >= 0.0,
            "trainer.prox_mu",
            format!("must be finite and >= 0 (0 = off), got {}", self.prox_mu),
        )?;
        if let Some(c) = self.max_grad_norm {
            ensure(
                c.is_finite() && c > 0.0,
                "trainer.max_grad_norm",
                format!("must be finite and > 0, got {c}"),
            )?;
        }
        Ok(())
    }
}

enum LocalOptimizer {
    Adamw(FusedAdamW),
    Sgd(SGD),
}

impl LocalOptimizer {
    fn new(cfg: &TrainerConfig, vars: Vec<Var>) -> Result<Self> {
        Ok(match cfg.optimizer {
            OptimizerKind::Adamw => LocalOptimizer::Adamw(FusedAdamW::new(
                vars,
                ParamsAdamW {
                    lr: cfg.lr,
                    weight_decay: cfg.weight_decay,
                    ..ParamsAdamW::default()
                },
            )?),
            OptimizerKind::Sgd => LocalOptimizer::Sgd(SGD::new(vars, cfg.lr)?),
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        match self {
            LocalOptimizer::Adamw(o) => o.step(grads)?,
            LocalOptimizer::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }
}

/// LoRA fine-tuning of a [`Llama`]: the `llama` [`Trainer`].
///
/// Updates it returns have the model's dtype and device; updates it receives may have any
/// float dtype and are converted.
pub struct LlamaTrainer {
    model: Llama,
    params: Vec<(String, Var)>,
    layout: Layout,
    global: Update,
    config: TrainerConfig,
    label: String,
    tokenizer: Option<Arc<dyn TextTokenizer>>,
    bos: Option<u32>,
}

/// Padded tokens per scoring batch (see [`LlamaTrainer::score_token_budget`]).
pub const SCORE_TOKEN_BUDGET: usize = 2048;

impl LlamaTrainer {
    /// A trainer over a random model of shape `spec` (seeded by `seed`) with fresh LoRA
    /// adapters (A seeded by `seed`, B zero), which are the initial global state.
    pub fn new(
        spec: LlamaSpec,
        lora: LoraConfig,
        config: TrainerConfig,
        seed: u64,
        device: Device,
        dtype: DType,
    ) -> Result<Self> {
        let model = Llama::random(spec, seed, dtype, &device)?;
        Self::from_model(model, &lora, config, seed)
    }

    /// A trainer over `model` (which must not have adapters yet): attaches LoRA adapters
    /// per `lora` (A seeded by `seed`), or makes every weight trainable in `mode = "full"`
    /// ([`Llama::prepare_training`]).
    pub fn from_model(
        mut model: Llama,
        lora: &LoraConfig,
        config: TrainerConfig,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        model.prepare_training(lora, seed)?;
        let params = model.trainable();
        let global = snapshot(&params)?;
        let layout = global.layout().clone();
        Ok(Self {
            model,
            params,
            layout,
            global,
            config,
            label: "custom".to_string(),
            tokenizer: None,
            bos: None,
        })
    }

    /// Set the model label shown by [`Trainer::describe`] (default `custom`; the factory
    /// uses the preset name, e.g. `tiny`).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Attach the checkpoint's tokenizer, offered to the data pipeline by
    /// [`Trainer::tokenizer`].
    pub fn with_tokenizer(mut self, tokenizer: Option<Arc<dyn TextTokenizer>>) -> Self {
        self.tokenizer = tokenizer;
        self
    }

    /// Set the BOS id that [`Trainer::score`] prepends to every request (`None`, the default
    /// of [`new`](Self::new) and [`from_model`](Self::from_model): no BOS). The factory sets
    /// it from the checkpoint (its tokenizer's BOS when the model wants one; 256, the byte
    /// tokenizer's, for random presets).
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos = bos;
        self
    }

    /// The BOS id [`Trainer::score`] prepends, if any.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Padded tokens per scoring batch: [`SCORE_TOKEN_BUDGET`]. Not `batch_size ×
    /// max_seq_len`: a checkpoint's `max_seq_len` is its context window (8,192 for SmolLM2),
    /// and the `[rows, vocab]` logits and attention scores grow with the batch.
    pub fn score_token_budget(&self) -> usize {
        SCORE_TOKEN_BUDGET
    }

    /// The model (with its adapters holding the global state, except during a local run).
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The trainer's config.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Replace the global state (e.g. to resume from a checkpoint or load an imported PEFT
    /// adapter, see [`crate::peft`]).
    pub fn set_global_state(&mut self, state: &Update) -> Result<()> {
        state.check_same_layout(&self.layout)?;
        self.global = self.convert(state)?;
        self.load(&self.global)
    }

    /// Number of trainable parameters.
    pub fn num_trainable(&self) -> usize {
        self.layout.numel()
    }

    /// Bring an incoming update to the model's dtype and device.
    fn convert(&self, u: &Update) -> Result<Update> {
        let (dtype, device) = (self.model.dtype(), self.model.device().clone());
        u.map(|t| t.to_dtype(dtype)?.to_device(&device))
    }

    /// Copy `state` into the adapter variables.
    fn load(&self, state: &Update) -> Result<()> {
        for ((name, var), (sname, t)) in self.params.iter().zip(state.iter()) {
            debug_assert_eq!(name, sname);
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }

    fn check_data(&self, data: &[Example]) -> Result<()> {
        if data.is_empty() {
            return Err(Error::InvalidInput(
                "no examples: the data set is empty".into(),
            ));
        }
        let spec = self.model.spec();
        check_examples(data, spec.vocab_size, spec.max_seq_len)
    }

    /// The optimizer steps of one local run, from the state already loaded; returns the
    /// summed loss, the number of target tokens and the trained state.
    fn run_steps(
        &mut self,
        start: &Update,
        data: &[Example],
        sampler: &mut BatchSampler,
        seed: u64,
        steps: usize,
        record: bool,
    ) -> Result<(f64, usize, Update, Vec<Update>)> {
        let vars = self.params.iter().map(|(_, v)| v.clone()).collect();
        let mut opt = LocalOptimizer::new(&self.config, vars)?;
        let (mut loss_sum, mut tokens) = (0.0, 0);
        let mut snapshots = Vec::new();
        for step in 0..steps {
            let idx = sampler.next_batch();
            let examples: Vec<&Example> = idx.iter().map(|&i| &data[i]).collect();
            let batch = Batch::new(&examples, self.model.device())?;
            self.model
                .set_train_seed(Some(mix_seed(&[seed, step as u64])));
            let loss = mean_nll(&self.model, &batch);
            self.model.set_train_seed(None);
            let loss = loss?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(Error::Other(format!(
                    "training diverged: loss is {value}; lower trainer.lr or set \
                     trainer.max_grad_norm"
                )));
            }
            let mut grads = loss.backward()?;
            if self.config.prox_mu > 0.0 {
                self.add_proximal(&mut grads, start)?;
            }
            if let Some(max) = self.config.max_grad_norm {
                self.clip(&mut grads, max)?;
            }
            opt.step(&grads)?;
            loss_sum += value;
            tokens += batch.num_targets;
            if record && step + 1 < steps {
                snapshots.push(snapshot(&self.params)?.sub(start)?);
            }
        }
        Ok((loss_sum, tokens, snapshot(&self.params)?, snapshots))
    }

    /// FedProx: `grad += μ·(w − w_start)` for every trainable tensor.
    fn add_proximal(
        &self,
        grads: &mut candle_core::backprop::GradStore,
        start: &Update,
    ) -> Result<()> {
        let mu = self.config.prox_mu;
        for ((_, var), (_, w0)) in self.params.iter().zip(start.iter()) {
            let pull = (var.as_tensor().detach() - w0.to_dtype(var.dtype())?)?.affine(mu, 0.0)?;
            let g = match grads.remove(var) {
                Some(g) => (g + pull)?,
                None => pull,
            };
            grads.insert(var, g);
        }
        Ok(())
    }

    /// Clip the global gradient norm of the trainable tensors to `max` (in place in `grads`).
    fn clip(&self, grads: &mut candle_core::backprop::GradStore, max: f64) -> Result<()> {
        let mut sq = 0.0f64;
        for (_, var) in &self.params {
            if let Some(g) = grads.get(var) {
                sq += g
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
            }
        }
        let norm = sq.sqrt();
        if norm > max {
            let s = max / (norm + 1e-12);
            for (_, var) in &self.params {
                if let Some(g) = grads.remove(var) {
                    grads.insert(var, g.affine(s, 0.0)?);
                }
            }
        }
        Ok(())
    }
}

/// A detached copy of every variable (not sharing storage with them).
fn snapshot(params: &[(String, Var)]) -> Result<Update> {
    Update::new(
        params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<Vec<(String, Tensor)>>>()?,
    )
}

fn human(n: usize) -> String {
    if n >= 100_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

impl Trainer for LlamaTrainer {
    fn name(&self) -> &str {
        NAME
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn global_state(&self) -> Result<Update> {
        Ok(self.global.clone())
    }

    fn load_global_state(&mut self, state: &Update) -> Result<()> {
        self.set_global_state(state)
    }

    fn apply_delta(&mut self, delta: &Update) -> Result<()> {
        delta.check_same_layout(&self.layout)?;
        let next = self.global.add(&self.convert(delta)?)?;
        next.check_finite()?;
        self.load(&next)?;
        self.global = next;
        Ok(())
    }

    fn train_local(
        &mut self,
        start: &Update,
        data: &[Example],
        ctx: &TrainCtx,
    ) -> Result<LocalOutcome> {
        start.check_same_layout(&self.layout)?;
        self.check_data(data)?;
        let start = self.convert(start)?;
        let seed = mix_seed(&[ctx.seed, ctx.round as u64, ctx.client as u64]);
        let mut sampler = BatchSampler::new(data, self.config.batch_size, seed)?;
        self.load(&start)?;
        let steps = ctx.local_steps.unwrap_or(self.config.local_steps);
        if steps == 0 {
            return Err(Error::InvalidInput(
                "a local run needs at least one step (TrainCtx::local_steps = 0)".into(),
            ));
        }
        let result = self.run_steps(
            &start,
            data,
            &mut sampler,
            seed,
            steps,
            ctx.record_snapshots,
        );
        // Restore the global state whatever happened.
        let restored = self.load(&self.global);
        let (loss_sum, tokens, trained, snapshots) = result?;
        restored?;
        Ok(LocalOutcome {
            delta: trained.sub(&start)?,
            num_examples: data.len(),
            train_loss: loss_sum / steps as f64,
            steps,
            tokens,
            snapshots,
        })
    }

    /// Adds `scale · R` to the frozen base weight of each named adapted module (LoRA mode
    /// only; in full fine-tuning the base weights are the state itself).
    fn merge_into_base(&mut self, residual: &Update) -> Result<()> {
        if self.model.lora_config().map(|l| l.mode) != Some(LoraMode::Lora) {
            return Err(Error::InvalidInput(
                "a base-weight residual needs LoRA adapters (lora.mode = \"lora\")".into(),
            ));
        }
        for (module, r) in residual.iter() {
            self.model.add_to_base_weight(module, r)?;
        }
        Ok(())
    }

    fn evaluate(&mut self, data: &[Example]) -> Result<EvalOutcome> {
        self.check_data(data)?;
        let mut eligible: Vec<&Example> = data.iter().filter(|e| e.target_tokens() > 0).collect();
        // Similar lengths together: batches are padded to their longest example.
        eligible.sort_by_key(|e| e.tokens.len());
        if eligible.is_empty() {
            return Err(Error::InvalidInput(format!(
                "none of the {} evaluation examples has a target token",
                data.len()
            )));
        }
        let (mut sum, mut tokens) = (0.0f64, 0usize);
        self.model.set_no_grad(true);
        let result = (|| -> Result<()> {
            for chunk in eligible.chunks(self.config.batch_size) {
                let batch = Batch::new(chunk, self.model.device())?;
                let s = nll_sum(&self.model, &batch)?;
                sum += s.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                tokens += batch.num_targets;
            }
            Ok(())
        })();
        self.model.set_no_grad(false);
        result?;
        Ok(EvalOutcome {
            loss: sum / tokens as f64,
            tokens,
        })
    }

    /// Batched log-likelihood scoring with [`crate::scoring::score_requests`]: BOS
    /// ([`bos`](LlamaTrainer::bos)) prepended, right padding, batches of at most
    /// [`score_token_budget`](LlamaTrainer::score_token_budget) padded tokens, evaluation
    /// mode (no LoRA dropout).
    fn score(&mut self, requests: &[ScoreRequest]) -> Result<Vec<Score>> {
        let saved = self.model.train_seed();
        self.model.set_train_seed(None);
        self.model.set_no_grad(true);
        let result = crate::scoring::score_requests(
            &self.model,
            self.bos,
            requests,
            self.score_token_budget(),
        );
        self.model.set_no_grad(false);
        self.model.set_train_seed(saved);
        result
    }

    fn device(&self) -> Device {
        self.model.device().clone()
    }

    /// Writes the global LoRA state in the PEFT layout (`adapter_config.json` +
    /// `adapter_model.safetensors`); `Ok(false)` in full fine-tuning mode.
    fn save_adapter(&self, dir: &std::path::Path) -> Result<bool> {
        match self.model.lora_config() {
            Some(l) if l.mode == LoraMode::Lora => {
                crate::peft::export_peft(dir, l, &self.global, Some(&self.label))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn tokenizer(&self) -> Option<Arc<dyn TextTokenizer>> {
        self.tokenizer.clone()
    }

    fn describe(&self) -> String {
        let spec = self.model.spec();
        let lora = self.model.lora_config();
        let what = match lora {
            Some(l) if l.mode == LoraMode::Full => "full fine-tuning".to_string(),
            Some(l) => format!("LoRA r={} on {}", l.rank, l.targets.join(",")),
            None => "nothing".to_string(),
        };
        let device = crate::device::describe_device(self.model.device());
        format!(
            "llama {} (d{}, {} layers, {}/{} heads, vocab {}): {} base params, {} trainable \
             ({what}), {}, {device}",
            self.label,
            spec.hidden_size,
            spec.num_layers,
            spec.num_heads,
            spec.num_kv_heads,
            spec.vocab_size,
            human(spec.num_params()),
            human(self.num_trainable()),
            self.model.dtype().as_str(),
        )
    }
}
