//! Differential privacy: client-level clipping, Gaussian noise and an RDP accountant, the
//! building blocks of DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018, "Learning
//! Differentially Private Recurrent Language Models").
//!
//! # What is protected
//!
//! **Client-level** DP: the neighbouring datasets differ by adding or removing *one client
//! with all of its data*. Whatever a client holds, the released sequence of global models
//! changes in distribution by at most `(ε, δ)`. This is stronger than example-level DP
//! (DP-SGD), which protects one training example.
//!
//! # The mechanism, per round
//!
//! With clipping bound `S` ([`DpConfig::clip_norm`]), noise multiplier `σ`
//! ([`DpConfig::noise_multiplier`]) and `m` clients per round (the configured number, a
//! fixed denominator, so that one client moves the mean by at most `S/m` even when fewer
//! report):
//!
//! - `mode = "server"` (central DP, [`DpMode::Server`]): the server clips every decoded
//!   update, `Δᵢ ← Δᵢ · min(1, S/‖Δᵢ‖₂)` ([`clip_update`]), sums them, adds
//!   `z ~ N(0, (σS)² I)` ([`add_gaussian_noise`]) and divides by `m`:
//!   `Δ = (Σᵢ Δᵢ + z)/m`. The noise in the mean has std `σS/m`. The server sees the
//!   clipped updates in the clear; the guarantee is about what it releases.
//! - `mode = "client"` (distributed DP, [`DpMode::Client`]): each client clips its own
//!   update to `S` and adds `N(0, σ²S²/m)` per coordinate *before compressing*; the server's
//!   uniform mean of `m` such updates then carries noise of std `σS/m`, exactly as in
//!   server mode, so the reported ε is the same — **under the assumption that only the
//!   aggregate is seen** (secure aggregation, or a trusted server). Each noised update on its
//!   own is only protected by noise multiplier `σ/√m`, a much weaker guarantee (with
//!   `m = 10`, σ = 1 becomes ≈ 0.32). Compression after the noise is post-processing and
//!   does not weaken either guarantee (its error is not counted as extra noise either).
//!
//! [`DpConfig::noise_std`] gives the std to add at the point where noise is added (`σS`
//! on the sum, or `σS/√m` on each update); [`DpConfig::mean_noise_std`] the resulting std
//! in the mean (`σS/m` in both modes).
//!
//! # Accounting
//!
//! One round is one step of the *sampled Gaussian mechanism*: a sensitivity-`S` sum with
//! `N(0, σ²S²)` noise over a Poisson sample of clients with rate `q = m/N` (`N` clients in
//! all). [`RdpAccountant`] computes its Rényi DP at a set of orders α (Mironov, Talwar &
//! Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"), composes
//! `T` rounds by adding RDP, and converts to `(ε, δ)`:
//!
//! - tight (default, what Google's `dp_accounting` and Opacus report; Balle et al. 2020,
//!   "Hypothesis Testing Interpretations and Rényi Differential Privacy", Prop. 12;
//!   Canonne, Kamath & Steinke 2020): `ε = min_α RDP(α) + ln(1 − 1/α) − (ln δ + ln α)/(α − 1)`;
//! - classic (Mironov 2017, "Rényi Differential Privacy", Prop. 3):
//!   `ε = min_α RDP(α) + ln(1/δ)/(α − 1)`.
//!
//! The code is a port of `dp_accounting` 0.6.0 (`rdp_privacy_accountant.py`) and agrees with
//! it to about 1e-11 relative; the default orders are its `DEFAULT_RDP_ORDERS`
//! ([`default_orders`]: 1.1, 1.2, …, 10.9, then 11..=63, 128, 256, 512, 1024).
//!
//! **Assumption.** The accountant assumes Poisson sampling (every client joins a round
//! independently with probability `q`). The runner samples a fixed-size subset of `m`
//! clients without replacement; using the Poisson accountant with `q = m/N` for that is the
//! usual approximation (as in McMahan et al. 2018 and TensorFlow Federated), not a proof.
//! With `σ = 0` only clipping happens and ε is `+∞`.
//!
//! # Config
//!
//! ```toml
//! [privacy]
//! clip_norm = 1.0          # S, required, > 0
//! noise_multiplier = 1.0   # σ, required, >= 0 (0: clipping only, ε = ∞)
//! mode = "server"          # or "client"
//! delta = 1e-5             # δ of the reported (ε, δ)
//! # orders = [2, 4, 8, 16, 32]   # RDP orders; default: dp_accounting's
//! ```
//!
//! ```
//! use cgfed_aggregators::privacy::DpConfig;
//! let table: cgfed_core::toml::Table =
//!     "clip_norm = 1.0\nnoise_multiplier = 1.0".parse().unwrap();
//! let cfg = DpConfig::from_table(&table).unwrap();
//! // 10 of 100 clients per round, 100 rounds:
//! let report = cfg.privacy_report(10, 100, 100).unwrap();
//! assert_eq!(report.mode, "server");
//! assert!(report.epsilon.is_finite() && report.epsilon <= report.epsilon_classic);
//! ```

mod clip;
mod noise;
mod rdp;
mod special;

pub use clip::{clip_update, l2_norm};
pub use noise::add_gaussian_noise;
pub use rdp::{
    default_orders, epsilon_for, rdp_sampled_gaussian, rdp_to_epsilon, Conversion, PrivacyReport,
    RdpAccountant, MAX_ORDER,
};

use cgfed_core::config::{ensure, parse_table};
use cgfed_core::{toml, Error, Result, Update};
use serde::{Deserialize, Serialize};

/// Where the Gaussian noise is added (the `privacy.mode` key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpMode {
    /// Central DP: the server clips, sums, adds `N(0, (σS)²)` and divides by `m`.
    #[default]
    Server,
    /// Distributed DP: each client clips and adds `N(0, σ²S²/m)` before compressing.
    Client,
}

impl DpMode {
    /// `"server"` or `"client"`, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DpMode::Server => "server",
            DpMode::Client => "client",
        }
    }
}

impl std::fmt::Display for DpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[privacy]` table: DP-FedAvg's clipping bound, noise multiplier, placement and δ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpConfig {
    /// `S`, the L2 bound each client update is clipped to (required, finite, > 0).
    pub clip_norm: f64,
    /// `σ`, noise std as a multiple of `S` (required, finite, ≥ 0; 0 = clipping only).
    pub noise_multiplier: f64,
    /// Where the noise is added: `"server"` (default) or `"client"`.
    #[serde(default)]
    pub mode: DpMode,
    /// δ of the reported `(ε, δ)`, in `(0, 1)`; default 1e-5.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// RDP orders for the accountant, each in `(1, MAX_ORDER]`; default [`default_orders`].
    #[serde(default)]
    pub orders: Option<Vec<f64>>,
}

fn default_delta() -> f64 {
    1e-5
}

/// Key prefix of the table in the experiment config.
const KEY: &str = "privacy";

impl DpConfig {
    /// Parse and validate the `[privacy]` table. Errors name `privacy.<key>` and the
    /// accepted values.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        for (key, what) in [
            (
                "clip_norm",
                "the L2 clipping bound S, a finite number > 0 (e.g. 1.0)",
            ),
            (
                "noise_multiplier",
                "the noise multiplier σ, a finite number >= 0 (e.g. 1.0; 0 = clipping only)",
            ),
        ] {
            ensure(
                table.contains_key(key),
                format!("{KEY}.{key}"),
                format!("missing; give {what}"),
            )?;
        }
        let cfg: Self = parse_table(table, KEY)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check the ranges (done by [`from_table`](Self::from_table)).
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.clip_norm.is_finite() && self.clip_norm > 0.0,
            format!("{KEY}.clip_norm"),
            format!("must be a finite number > 0, got {}", self.clip_norm),
        )?;
        ensure(
            self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0,
            format!("{KEY}.noise_multiplier"),
            format!(
                "must be a finite number >= 0 (0 = clipping only), got {}",
                self.noise_multiplier
            ),
        )?;
        ensure(
            self.delta > 0.0 && self.delta < 1.0,
            format!("{KEY}.delta"),
            format!("must be in (0, 1), e.g. 1e-5, got {}", self.delta),
        )?;
        if let Some(orders) = &self.orders {
            ensure(
                !orders.is_empty(),
                format!("{KEY}.orders"),
                format!(
                    "must list at least one RDP order in (1, {MAX_ORDER}], or be left out for \
                     the defaults"
                ),
            )?;
            if let Some(bad) = orders.iter().find(|&&a| !(a > 1.0 && a <= MAX_ORDER)) {
                return Err(Error::config(
                    format!("{KEY}.orders"),
                    format!("every RDP order must be in (1, {MAX_ORDER}], got {bad}"),
                ));
            }
        }
        Ok(())
    }

    /// Std of the Gaussian noise to add where it is added, for `clients_per_round = m`:
    /// `σS` on the server's sum ([`DpMode::Server`]) or `σS/√m` on each client's clipped
    /// update ([`DpMode::Client`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `clients_per_round` is 0.
    pub fn noise_std(&self, clients_per_round: usize) -> Result<f64> {
        let m = check_clients(clients_per_round)?;
        let sum_std = self.noise_multiplier * self.clip_norm;
        Ok(match self.mode {
            DpMode::Server => sum_std,
            DpMode::Client => sum_std / m.sqrt(),
        })
    }

    /// Std of the noise in the averaged update, `σS/m`, the same in both modes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `clients_per_round` is 0.
    pub fn mean_noise_std(&self, clients_per_round: usize) -> Result<f64> {
        Ok(self.noise_multiplier * self.clip_norm / check_clients(clients_per_round)?)
    }

    /// Clip `update` to [`clip_norm`](Self::clip_norm); see [`clip_update`].
    pub fn clip(&self, update: &Update) -> Result<(Update, f64)> {
        clip_update(update, self.clip_norm)
    }

    /// An empty accountant at this config's orders (or the defaults).
    pub fn accountant(&self) -> Result<RdpAccountant> {
        match &self.orders {
            Some(orders) => RdpAccountant::new(orders.clone()),
            None => Ok(RdpAccountant::default()),
        }
    }

    /// The `(ε, δ)` after `rounds` rounds with `clients_per_round` of `num_clients` clients
    /// sampled each round (`q = clients_per_round / num_clients`), at this config's δ,
    /// with `mode` filled in.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `clients_per_round` is 0 or exceeds `num_clients`.
    pub fn privacy_report(
        &self,
        clients_per_round: usize,
        num_clients: usize,
        rounds: u64,
    ) -> Result<PrivacyReport> {
        check_clients(clients_per_round)?;
        if clients_per_round > num_clients {
            return Err(Error::InvalidInput(format!(
                "{clients_per_round} clients per round out of {num_clients} clients"
            )));
        }
        let q = clients_per_round as f64 / num_clients as f64;
        let mut acc = self.accountant()?;
        acc.compose_sampled_gaussian(q, self.noise_multiplier, rounds)?;
        Ok(acc.epsilon(self.delta)?.with_mode(self.mode.as_str()))
    }
}

fn check_clients(clients_per_round: usize) -> Result<f64> {
    if clients_per_round == 0 {
        return Err(Error::InvalidInput(
            "differential privacy needs at least one client per round".into(),
        ));
    }
    Ok(clients_per_round as f64)
}

/// `f` applied to every value of `update` (host f32, canonical order), rebuilt as f32 with
/// the same layout on the same device.
fn map_values(update: &Update, mut f: impl FnMut(f32) -> f32) -> Result<Update> {
    let mut parts = Vec::with_capacity(update.len());
    update.for_each_host(|_, _, values| {
        parts.push(values.iter().map(|&v| f(v)).collect());
        Ok(())
    })?;
    Update::from_parts(update.layout(), parts, &update.device())
}
