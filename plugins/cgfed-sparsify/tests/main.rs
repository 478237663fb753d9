//! Integration tests of `cgfed-sparsify`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-sparsify --test integration <module>::`.

mod common;

mod approx_topk;
mod randk;
mod topk;
