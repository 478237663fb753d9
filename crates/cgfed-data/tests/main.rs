//! Integration tests of `cgfed-data`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-data --test integration <module>::`.

mod common;

mod config;
mod corpus;
mod datasets;
mod determinism;
mod heldout;
mod iid;
mod partitioners;
mod prompts;
mod summary;
mod tokenizer;
mod userdata;
