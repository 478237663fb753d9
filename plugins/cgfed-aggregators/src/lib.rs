//! # cgfed-aggregators
//!
//! Server-side aggregators for cgfed, each a registered plugin chosen by name in the
//! `[aggregator]` table (`cgfed list` prints every key with its default):
//!
//! ```toml
//! [aggregator]
//! name = "fedadam"
//! server_lr = 0.01
//! clip_norm = "median"
//! ```
//!
//! With `Δᵢ` client i's decoded delta and `wᵢ` its normalised weight (example count by
//! default, `weighting = "uniform"` for 1), `Δ̄ = Σᵢ wᵢ·Δᵢ`:
//!
//! | name | delta | keys (defaults) | reference |
//! |---|---|---|---|
//! | `fedavg` | `Δ̄` | `weighting = "examples"`, `lora = "factors"` | McMahan et al. 2017; FedIT (Zhang et al. 2024); FedEx-LoRA (Singhal et al. 2024) |
//! | `fedavgm` | `v ← β·v + Δ̄`, `η·v` | `server_lr = 1.0`, `momentum = 0.9`, `weighting` | Hsu et al. 2019 |
//! | `fedadam` | `m ← β1·m + (1−β1)·Δ̄`, `v ← β2·v + (1−β2)·Δ̄²`, `η·m/(√v+τ)` | `server_lr = 0.01`, `beta1 = 0.9`, `beta2 = 0.99`, `tau = 0.001`, `weighting` | Reddi et al. 2021 |
//! | `fedyogi` | as fedadam with `v ← v − (1−β2)·Δ̄²·sign(v − Δ̄²)` | as fedadam | Reddi et al. 2021 |
//! | `fedadagrad` | as fedadam with `v ← v + Δ̄²` (`beta2` unused) | as fedadam | Reddi et al. 2021 |
//! | `median` | coordinate-wise median (unweighted) | — | Yin et al. 2018 |
//! | `trimmed-mean` | coordinate-wise mean without the `⌊β·n⌋` largest and smallest | `beta = 0.1` in `[0, 0.5)` | Yin et al. 2018 |
//! | `krum` | the update with the lowest `Σ` of squared distances to its `n−f−2` nearest others; multi-Krum: mean of the `m` best | `byzantine = 1` (f), `multi = 1` (m) | Blanchard et al. 2017 |
//!
//! Every aggregator also takes `clip_norm` ([`clip`]): a positive number or `"median"`
//! clips each client update to that L2 norm before aggregating (metric `clipped`). Adaptive
//! optimizers start with `m = 0`, `v = τ²` and use no bias correction, as in the paper.
//!
//! `fedavg` with `lora = "product"` ([`lora`]) also returns, per adapted module, the
//! residual `R = Σᵢ wᵢ·BᵢAᵢ − B̄Ā = Σᵢ wᵢ·(Bᵢ − B̄)(Aᵢ − Ā)` for the frozen base weights, so
//! the aggregated effective weight is exact; a layout without `<module>.lora_A` /
//! `<module>.lora_B` pairs is a config error on `aggregator.lora`.
//!
//! Every aggregator rejects an empty round and NaN/infinite values with an error, computes
//! on host f32 (f64 accumulators) in client order and returns its delta on `ctx.device`.
//! `fedavgm` and the adaptive optimizers checkpoint their moments with
//! `save_state` / `load_state` (safetensors; format in `state.rs`).

pub mod adaptive;
pub mod clip;
pub mod coordinate;
pub mod fedavg;
pub mod fedavgm;
pub mod host;
pub mod krum;
pub mod lora;
mod params;
mod state;

pub use adaptive::{AdaptiveConfig, FedAdaptive, Variant};
pub use clip::ClipNorm;
pub use coordinate::{Median, MedianConfig, TrimmedMean, TrimmedMeanConfig};
pub use fedavg::{FedAvg, FedAvgConfig, LoraMode};
pub use fedavgm::{FedAvgM, FedAvgMConfig};
pub use host::Weighting;
pub use krum::{Krum, KrumConfig, Selection};
pub mod privacy;
