//! Integration tests of `cgfed-model`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-model --test integration <module>::`.

mod common;

mod causality;
mod check_model;
mod config_errors;
mod device;
mod federated_objectives;
mod finite_difference;
mod gguf_loader;
mod gguf_tokenizer;
mod gradient_flow;
mod hf_loader;
mod lora_modes;
mod op_causal_softmax;
mod op_cross_entropy;
mod op_linear;
mod op_rms_norm;
mod op_rope;
mod op_swiglu;
mod optim;
mod oracle;
mod overfit;
mod padding_mask;
mod param_count;
mod peft_roundtrip;
mod registry;
mod scoring;
mod trainer_contract;
