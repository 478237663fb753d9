//! Integration tests of `cgfed-core`, one module per file, linked into one test binary
//! (one link of candle instead of one per file). Run one file's tests with
//! `cargo test -p cgfed-core --test integration <module>::`.

mod metrics;
#[cfg(feature = "testkit")]
mod none_compressor;
mod registry;
mod update;
#[cfg(feature = "testkit")]
mod wrappers;
