//! Integration tests of `cgfed-quantize`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-quantize --test integration <module>::`.

mod common;

mod bf16;
mod fp16;
mod kbit;
mod qsgd;
mod sign;
