//! Integration tests of `cgfed-runner`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-runner --test integration <module>::`.

mod common;

mod accuracy;
mod aggregation_run;
mod cgfedllm_run;
mod compare;
mod compression_state;
mod config_errors;
mod configs_parse;
mod faults;
mod federated_run;
mod lora_aggregation;
mod privacy_run;
mod rejection;
mod report;
mod resume;
mod robustness;
