//! # cgfed-model
//!
//! A trainable LLaMA on candle, LoRA, and the `llama` [`Trainer`](cgfed_core::Trainer)
//! plugin. This crate owns:
//!
//! - [`LlamaSpec`] (the model's shape) and the `[model]` table ([`ModelConfig`]: presets
//!   `tiny` and `small` plus overrides, dtype);
//! - [`Llama`]: a LLaMA decoder with HF weight names, grouped-query attention, HF-layout
//!   RoPE, SwiGLU and optionally tied embeddings, built only from differentiable candle ops,
//!   with deterministic random initialisation ([`init`]);
//! - LoRA ([`LoraConfig`], the `[lora]` table, and [`LoraLinear`]): frozen base weights,
//!   trainable `A`/`B` [`Var`](candle_core::Var)s named `model.layers.{i}.self_attn.q_proj.lora_A`;
//! - batching and the next-token loss ([`batch`]);
//! - [`LlamaTrainer`], registered as trainer `llama`: local LoRA training from a given
//!   adapter state, returning the delta, exact held-out evaluation, and log-likelihood
//!   scoring of continuations ([`scoring`]).
//!
//! ```
//! use candle_core::{DType, Device};
//! use cgfed_core::{Example, TrainCtx, Trainer};
//! use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};
//!
//! let mut trainer = LlamaTrainer::new(
//!     LlamaSpec::tiny(258),
//!     LoraConfig::default(),
//!     TrainerConfig { local_steps: 2, batch_size: 2, ..Default::default() },
//!     42,
//!     Device::Cpu,
//!     DType::F32,
//! )?;
//! let data = vec![Example { tokens: (0..32).collect(), loss_start: 1 }; 4];
//! let start = trainer.global_state()?;
//! let ctx = TrainCtx { round: 0, client: 0, seed: 42, local_steps: None, record_snapshots: false };
//! let out = trainer.train_local(&start, &data, &ctx)?;
//! assert_eq!(out.delta.layout(), trainer.layout());
//! assert_eq!((out.steps, out.tokens), (2, 2 * 31 * 2));
//! trainer.apply_delta(&out.delta)?;
//! let eval = trainer.evaluate(&data)?;
//! assert!(eval.loss.is_finite() && eval.tokens == 4 * 31);
//! # Ok::<(), cgfed_core::Error>(())
//! ```

pub mod assets;
pub mod batch;
pub mod check;
pub mod config;
pub mod device;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod hf;
pub mod init;
pub mod lora;
pub mod model;
pub mod ops;
pub mod optim;
pub mod peft;
pub mod scoring;
pub mod source;
pub mod tokenizer;
pub mod trainer;

pub use batch::{Batch, BatchSampler};
pub use check::{check_model, CheckReport};
pub use config::{LlamaSpec, ModelConfig, ModelDType, Preset};
pub use gguf::{load_gguf, GgufModel};
pub use hf::{load_hf_dir, HfModel};
pub use lora::{LoraAdapter, LoraConfig, LoraLinear, LoraTarget};
pub use lora::{LoraDropout, LoraMode};
pub use model::{Llama, Weights};
pub use peft::{export_peft, import_peft};
pub use source::{load_model, LoadedModel};
pub use tokenizer::HfTokenizer;
pub use trainer::{LlamaTrainer, OptimizerKind, TrainerConfig};
