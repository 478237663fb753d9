//! Integration tests of `cgfed-aggregators`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-aggregators --test integration <module>::`.

mod common;

mod clip;
mod errors;
mod fedavg;
mod lora;
mod privacy;
mod robust;
mod server_opt;
