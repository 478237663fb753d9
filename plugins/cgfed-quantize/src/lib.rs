//! # cgfed-quantize
//!
//! Quantization compressors for cgfed. Today: `fp16` (IEEE half precision, 2 bytes per
//! element). Registered with the core registry; pick it by name in a config:
//!
//! ```toml
//! [compressor]
//! name = "fp16"
//! ```

pub mod fp16;

pub use fp16::Fp16;
