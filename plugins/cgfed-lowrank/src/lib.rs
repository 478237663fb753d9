//! # cgfed-lowrank
//!
//! Low-rank gradient compressors for cgfed. The crate registers one compressor:
//!
//! - [`powersgd`] (`kind = "powersgd"`): PowerSGD (Vogels et al. 2019). Every matrix
//!   (a tensor of rank ≥ 2 viewed as `shape[0]` rows by the product of the other
//!   dimensions) is sent as two rank-`r` factors `P` (`n × r`, orthonormal columns) and
//!   `Q` (`m × r`) from one power-iteration step, warm-started from the client's `Q` of
//!   its last round; the server rebuilds `P·Qᵀ`. Vectors, and matrices whose factors would
//!   not be smaller than the matrix (`(n + m)·r ≥ n·m`), are sent dense. The payload is
//!   `10 + 4·Σ_t c_t` bytes (`c_t = (n_t + m_t)·r` for a factored tensor, its element
//!   count otherwise); see the module docs for the byte layout.
//!
//! `powersgd` is a first stage ([`cgfed_core::Staged`]): its values (`<tensor>/P`,
//! `<tensor>/Q` and the dense tensors) can go through a second compressor with
//! `values = { ... }`, and it works inside the core's `error_feedback` wrapper (the
//! configuration PowerSGD was designed for).
//!
//! Link the crate (the umbrella `cgfed-plugins` does) so its registration is kept.
//!
//! ## Configuration
//!
//! ```toml
//! [compressor]
//! kind = "powersgd"
//! rank = 4                      # r, 1..=4096                      (default 4)
//! warm_start = true             # reuse last round's Q per client  (default true)
//! power_iterations = 1          # power steps per round, 1..=16    (default 1)
//! error_feedback = true         # core wrapper, recommended        (default false)
//! values = { kind = "fp16" }    # optional second stage: factors as f16
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rank` | `4` | rank `r` of the factors, `1..=4096` |
//! | `warm_start` | `true` | start the power iteration from the client's previous `Q` (state key `powersgd/q/<tensor>`, `m·r` f32) instead of a fresh seeded Gaussian matrix |
//! | `power_iterations` | `1` | power-iteration steps per round, `1..=16` (two passes over each matrix per step) |
//!
//! ```
//! use cgfed_core::{registry, PluginTable};
//! use cgfed_lowrank as _;
//! let c = registry::build_compressor(&PluginTable::named("compressor", "powersgd")).unwrap();
//! assert_eq!(c.name(), "powersgd");
//! assert!(c.as_staged().is_some());
//! ```

mod linalg;
pub mod powersgd;

pub use powersgd::{PowerSgd, PowerSgdConfig};
