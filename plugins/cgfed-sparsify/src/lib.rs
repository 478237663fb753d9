//! # cgfed-sparsify
//!
//! Sparsifying gradient compressors for cgfed. Each is a first stage ([`cgfed_core::Staged`]):
//! alone its payload is the structure (which elements) followed by the kept values as f32,
//! and with `values = { kind = "..." }` the kept values go through a second compressor
//! (`topk+bf16`, `randk+fp16`, …; see [`cgfed_core::wrappers`]).
//!
//! | name | keeps | structure on the wire | module |
//! |---|---|---|---|
//! | `topk` | exactly the `k` largest `\|x\|` (ties to the lower index), per tensor or per update | one index set per tensor | [`topk`] |
//! | `approx-topk` | every `\|x\| ≥` a threshold estimated from a random sample (DGC); exactly `k` when that overshoots | one index set per tensor | [`approx_topk`] |
//! | `randk` | `k` positions drawn from a seed both ends share | nothing: values only | [`randk`] |
//!
//! Kept counts: a tensor of `n` elements keeps `k(n) = min(n, max(1, ⌈ratio·n⌉))`
//! ([`keep_count`]), or `min(n, k)` with an absolute `k`.
//!
//! ## `topk`
//!
//! ```toml
//! [compressor]
//! kind = "topk"
//! ratio = 0.01        # default 0.01, in (0, 1]
//! # k = 1000          # default: none; absolute count (per tensor, or per update), >= 1
//! scope = "tensor"    # default "tensor"; "update": k(N) over the whole update
//! ```
//!
//! ## `approx-topk`
//!
//! ```toml
//! [compressor]
//! kind = "approx-topk"
//! ratio = 0.01          # default 0.01, in (0, 1]: target k(n)
//! sample_ratio = 0.01   # default 0.01, in (0, 1]: sample size (at least 1000, or all)
//! max_overshoot = 1.3   # default 1.3, >= 1: above max_overshoot·k, keep exactly k
//! scope = "tensor"      # default "tensor"; or "update"
//! ```
//!
//! ## `randk`
//!
//! ```toml
//! [compressor]
//! kind = "randk"
//! ratio = 0.01        # default 0.01, in (0, 1]
//! # k = 1000          # default: none; absolute count per tensor, >= 1
//! unbiased = false    # default false; true: decoded values scaled by n/k (E[x̂] = x)
//! ```
//!
//! Composition and error feedback are core wrappers and work with all three:
//!
//! ```toml
//! [compressor]
//! kind = "topk"
//! ratio = 0.01
//! values = { kind = "bf16" }   # payload topk+bf16: index sets, then 2 bytes per value
//! error_feedback = true
//! ```
//!
//! Every module documents its body byte by byte with the exact length formula.
//!
//! ## Cost (rough, one core, `--release`, `examples/timing.rs`)
//!
//! On a 4096×4096 f32 update at ratio 0.01: `topk` compresses in about 18–20 ms (of which
//! 6 ms is the core's finiteness check; a plain `select_nth_unstable_by` alone takes about
//! 100 ms) to 0.406 bits per element; `approx-topk` takes about the same time (its one
//! threshold pass is also what dominates `topk`) with a kept count within ±2.5 % (one
//! standard deviation) of `k`; `randk` about 11 ms to 0.32 bits per element. Decoding
//! any of them takes about 31 ms, mostly page faults of the fresh 67 MB dense output.

mod common;
mod select;

pub mod approx_topk;
pub mod randk;
pub mod topk;

pub use approx_topk::{ApproxTopK, ApproxTopKConfig};
pub use common::{index_set_len, keep_count, Scope};
pub use randk::{RandK, RandKConfig};
pub use topk::{TopK, TopKConfig};
