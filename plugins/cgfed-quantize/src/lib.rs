//! # cgfed-quantize
//!
//! Quantization compressors for cgfed. Today: `fp16` (IEEE half precision) and `bf16`
//! (bfloat16), 2 bytes per element each. Registered with the core registry; pick one by
//! name in a config:
//!
//! ```toml
//! [compressor]
//! name = "fp16"
//! ```

pub mod bf16;
pub mod fp16;

pub use bf16::Bf16;
pub use fp16::Fp16;
