//! # cgfed-aggregators
//!
//! Server-side aggregators for cgfed. Today: `fedavg` (weighted by example count, or
//! uniform). Pick one by name in a config:
//!
//! ```toml
//! [aggregator]
//! name = "fedavg"
//! weighting = "examples"   # or "uniform"
//! ```

pub mod fedavg;

pub use fedavg::{FedAvg, Weighting};
