//! The [`Trainer`] trait: local training and evaluation of the model being fine-tuned.

use candle_core::Device;

use crate::config::PluginTable;
use crate::error::{Error, Result};
use crate::update::{Layout, Update};

/// One tokenized training or evaluation sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids, including any BOS/EOS the data pipeline added.
    pub tokens: Vec<u32>,
    /// Index of the first token that is a prediction target. Positions before it (a prompt)
    /// are context only; 1 means "every token after the first" (plain language modelling).
    pub loss_start: usize,
}

impl Example {
    /// Number of predicted (loss-bearing) tokens: targets at positions `max(loss_start,1)..len`.
    pub fn target_tokens(&self) -> usize {
        self.tokens.len().saturating_sub(self.loss_start.max(1))
    }
}

/// Which local training run this is.
#[derive(Debug, Clone)]
pub struct TrainCtx {
    /// Round index, from 0.
    pub round: usize,
    /// Client index.
    pub client: usize,
    /// The experiment seed (combine with round and client for batch order and dropout).
    pub seed: u64,
    /// Take this many optimizer steps instead of the trainer's configured number (a
    /// straggler that finished only part of its work). `None`: the configured number.
    pub local_steps: Option<usize>,
    /// Also return the delta after every local step but the last
    /// ([`LocalOutcome::snapshots`]): TGAP's temporal ensemble records them during
    /// calibration rounds. Trainers that cannot may return none.
    pub record_snapshots: bool,
}

/// What a client's local training produced.
#[derive(Debug, Clone)]
pub struct LocalOutcome {
    /// Trained state minus the starting state, for every trainable tensor.
    pub delta: Update,
    /// Examples the client trained on (its dataset size).
    pub num_examples: usize,
    /// Mean training loss over the local steps (nats per target token).
    pub train_loss: f64,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Target tokens processed.
    pub tokens: usize,
    /// With [`TrainCtx::record_snapshots`]: the delta from the starting state after each
    /// local step before the last (the last is [`delta`](Self::delta)), in step order.
    /// Empty otherwise.
    pub snapshots: Vec<Update>,
}

/// Held-out evaluation result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOutcome {
    /// Mean negative log-likelihood per target token (nats).
    pub loss: f64,
    /// Target tokens scored.
    pub tokens: usize,
}

impl EvalOutcome {
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// One continuation to score after a context, for log-likelihood (multiple-choice)
/// evaluation: see [`Trainer::score`].
///
/// Both parts are token ids without BOS: the trainer adds BOS itself if its model uses one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScoreRequest {
    /// The conditioning text (e.g. the question prompt). May be empty when the trainer's
    /// model has a BOS token; trainers may drop its oldest tokens to fit the model.
    pub context: Vec<u32>,
    /// The tokens to score (e.g. an answer option, or a letter like `" A"`). Never empty.
    pub continuation: Vec<u32>,
}

impl ScoreRequest {
    /// A request scoring `continuation` after `context`.
    pub fn new(context: Vec<u32>, continuation: Vec<u32>) -> Self {
        Self {
            context,
            continuation,
        }
    }
}

/// The result of scoring one [`ScoreRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `Σ log p(continuation token | context, earlier continuation tokens)`, in nats (≤ 0).
    pub logprob: f64,
    /// Number of continuation tokens scored (the continuation's length).
    pub tokens: usize,
    /// Whether every continuation token is the model's argmax prediction at its position
    /// (greedy decoding from the context would produce the continuation; ties count as
    /// argmax).
    pub greedy: bool,
}

/// Everything a trainer factory gets to build itself.
#[derive(Debug, Clone)]
pub struct TrainerInit<'a> {
    /// The `[trainer]` table (name plus the trainer's own keys: learning rate, local steps…).
    pub trainer: &'a PluginTable,
    /// The `[model]` table, parsed by the trainer.
    pub model: &'a toml::Table,
    /// The `[lora]` table, parsed by the trainer.
    pub lora: &'a toml::Table,
    /// Vocabulary size of the default (byte) tokenizer. Random presets, which have no
    /// tokenizer of their own, size their embedding with it; real checkpoints ignore it and
    /// offer their own tokenizer through [`Trainer::tokenizer`].
    pub vocab_size: usize,
    /// Experiment seed (model init).
    pub seed: u64,
}

/// Owns the model: gives the trainable state, applies global deltas, trains locally for a
/// client from a given state, and evaluates.
///
/// # Design
///
/// The server's global trainable state (e.g. the LoRA adapter) lives in the trainer.
/// [`train_local`](Self::train_local) starts from the state it is given (what the client
/// received on the downlink), not from whatever the model last held, and must leave the
/// global state unchanged; [`evaluate`](Self::evaluate) scores the global state. Clients in
/// a simulation share the frozen base weights; only the trainable state changes hands.
///
/// # Shapes
///
/// Every [`Update`] in and out has the layout [`layout`](Self::layout).
pub trait Trainer: Send {
    /// Registered name.
    fn name(&self) -> &str;

    /// Names and shapes of the trainable tensors.
    fn layout(&self) -> &Layout;

    /// The current global trainable state.
    fn global_state(&self) -> Result<Update>;

    /// `global += delta`.
    fn apply_delta(&mut self, delta: &Update) -> Result<()>;

    /// Run local training on `data` starting from `start`; return the delta and statistics.
    fn train_local(
        &mut self,
        start: &Update,
        data: &[Example],
        ctx: &TrainCtx,
    ) -> Result<LocalOutcome>;

    /// Replace the global trainable state by `state` exactly (a resumed run restores the
    /// state its checkpoint saved). Default: an error saying the trainer cannot, so runs
    /// with it cannot resume.
    fn load_global_state(&mut self, state: &Update) -> Result<()> {
        let _ = state;
        Err(Error::Other(format!(
            "trainer {} cannot restore a saved global state, so its runs cannot resume",
            self.name()
        )))
    }

    /// Add `residual` to frozen base weights: one `[out, in]` tensor per adapted module,
    /// named by its module path (e.g. `layers.3.self_attn.q_proj`), in units of the LoRA
    /// product `B·A` (the trainer applies its LoRA scale). Aggregators that aggregate the
    /// LoRA product exactly produce it ([`Aggregated::base_residual`](crate::Aggregated)).
    /// Default: an error saying the trainer cannot.
    fn merge_into_base(&mut self, residual: &Update) -> Result<()> {
        let _ = residual;
        Err(Error::Other(format!(
            "trainer {} cannot merge a residual into its base weights",
            self.name()
        )))
    }

    /// Mean loss of the global state on `data`.
    fn evaluate(&mut self, data: &[Example]) -> Result<EvalOutcome>;

    /// Log-likelihood of each request's continuation after its context under the current
    /// global state (no training, no dropout), in the same order as `requests`.
    ///
    /// Error for an empty continuation or one that cannot fit the model; contexts that are
    /// too long are truncated from the left. Default: an error saying the trainer does not
    /// support scoring.
    fn score(&mut self, requests: &[ScoreRequest]) -> Result<Vec<Score>> {
        let _ = requests;
        Err(Error::Other(format!(
            "trainer {} does not support scoring",
            self.name()
        )))
    }

    /// Device the trainer runs on; decoded updates are placed there. Default: CPU.
    fn device(&self) -> Device {
        Device::Cpu
    }

    /// The model's own tokenizer, for checkpoints that come with one. Default: none (the
    /// data pipeline then uses its byte tokenizer).
    fn tokenizer(&self) -> Option<std::sync::Arc<dyn crate::TextTokenizer>> {
        None
    }

    /// Save the global trainable state as an adapter others can load (e.g. PEFT layout)
    /// into `dir`; `Ok(false)` when this trainer has no such format. Default: `Ok(false)`.
    fn save_adapter(&self, _dir: &std::path::Path) -> Result<bool> {
        Ok(false)
    }

    /// A one-line description for logs (parameter counts, device). Default: the name.
    fn describe(&self) -> String {
        self.name().to_string()
    }
}
