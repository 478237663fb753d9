//! Rényi-DP accounting of the Poisson-sampled Gaussian mechanism, and conversion to
//! `(ε, δ)`-DP.
//!
//! A port of Google's `dp_accounting` (`rdp/rdp_privacy_accountant.py`, 0.6.0):
//! `_compute_log_a_int`, `_compute_log_a_frac`, `_compute_rdp_poisson_subsampled_gaussian`
//! and `compute_epsilon`, with the same special cases, termination rule and default orders.

use serde::{Deserialize, Serialize};

use cgfed_core::{Error, Result};

use super::special::{log_add, log_erfc};

/// Largest accepted RDP order. An integer order `α` costs `α + 1` terms, so this bounds
/// the work per order; dp_accounting's largest default order is 1024.
pub const MAX_ORDER: f64 = 10_000.0;

/// Terms of the fractional-order series before giving up (dp_accounting's
/// `_MAX_STEPS_LOG_A_FRAC`); an order that does not converge gets RDP `+∞` (excluded).
const MAX_FRAC_TERMS: usize = 1000;

/// dp_accounting's `RdpAccountant` default orders (`DEFAULT_RDP_ORDERS`): 1.1, 1.2, …, 10.9
/// (`1 + x/10` for x = 1..=99), the integers 11..=63, and 128, 256, 512, 1024 (156 orders).
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + x as f64 / 10.0)
        .chain((11..64).map(f64::from))
        .chain([128.0, 256.0, 512.0, 1024.0])
        .collect()
}

/// RDP at order `alpha` of one step of the sampled Gaussian mechanism: Poisson sampling
/// with rate `q`, Gaussian noise of `sigma` times the L2 sensitivity.
///
/// `q = 0` gives 0, `sigma = 0` gives `+∞`, `q = 1` gives the Gaussian mechanism's
/// `α/(2σ²)`; otherwise `ln(A_α)/(α − 1)` (Mironov, Talwar & Zhang 2019), with `A_α` by
/// the binomial expansion for integer `α` and by the two-series formula (their Sec. 3.3)
/// for fractional `α`.
///
/// # Errors
/// [`Error::InvalidInput`] when `q ∉ [0, 1]`, `sigma` is not finite and ≥ 0, or `alpha`
/// is not in `(1, MAX_ORDER]`.
pub fn rdp_sampled_gaussian(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    check_mechanism(q, sigma)?;
    check_order(alpha)?;
    Ok(rdp_unchecked(q, sigma, alpha))
}

fn rdp_unchecked(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// `ln A_α = ln Σ_{i=0}^{α} C(α,i) qⁱ (1−q)^{α−i} exp((i²−i)/(2σ²))`, for integer `α`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let mut log_a = f64::NEG_INFINITY;
    let mut log_coef = 0.0; // ln C(α, i)
    for i in 0..=alpha {
        if i > 0 {
            log_coef += ((alpha - i + 1) as f64).ln() - (i as f64).ln();
        }
        let i = i as f64;
        let s = log_coef + i * log_q + (alpha as f64 - i) * log_1mq + (i * i - i) / two_var;
        log_a = log_add(log_a, s);
    }
    log_a
}

/// `ln A_α` for fractional `α`: the integrals over `(−∞, z₀]` and `[z₀, ∞)` as two series
/// (Mironov, Talwar & Zhang 2019, Sec. 3.3), `z₀ = σ² ln(1/q − 1) + 1/2`; stops once both
/// terms decrease and are below `e⁻³⁰` of the total, `+∞` after `MAX_FRAC_TERMS` terms.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let two_var = 2.0 * sigma * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let scale = std::f64::consts::SQRT_2 * sigma;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut log_coef = 0.0; // ln |C(α, i)|
    for i in 0..MAX_FRAC_TERMS {
        if i > 0 {
            log_coef += (alpha - i as f64 + 1.0).abs().ln() - (i as f64).ln();
        }
        let i = i as f64;
        let j = alpha - i;
        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / scale);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / scale);
        let log_s0 = log_t0 + (i * i - i) / two_var + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    tracing::warn!(
        q,
        sigma,
        alpha,
        "RDP series for a fractional order did not converge after {MAX_FRAC_TERMS} terms; \
         excluding this order"
    );
    f64::INFINITY
}

/// How RDP is turned into `(ε, δ)`-DP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conversion {
    /// `ε = RDP(α) + ln(1 − 1/α) − (ln δ + ln α)/(α − 1)` (Balle et al. 2020, Prop. 12;
    /// Canonne, Kamath & Steinke 2020), with dp_accounting's guards: ε = 0 when
    /// `δ² > 1 − e^{−RDP}` (the KL bound), orders `α ≤ 1.01` skipped. What dp_accounting and
    /// Opacus report; never larger than [`Conversion::Classic`].
    #[default]
    Tight,
    /// `ε = RDP(α) + ln(1/δ)/(α − 1)` (Mironov 2017, Prop. 3).
    Classic,
}

/// The smallest ε over `orders` for accumulated RDP values `rdp` at `delta`, and the order
/// that attains it (the first one on ties).
///
/// # Errors
/// [`Error::InvalidInput`] when the lengths differ or are 0, an order is not in
/// `(1, MAX_ORDER]`, an RDP value is NaN, or `delta ∉ (0, 1)`.
pub fn rdp_to_epsilon(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    conversion: Conversion,
) -> Result<(f64, f64)> {
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(Error::InvalidInput(format!(
            "need one RDP value per order and at least one order, got {} orders and {} values",
            orders.len(),
            rdp.len()
        )));
    }
    check_delta(delta)?;
    for (&a, &r) in orders.iter().zip(rdp) {
        check_order(a)?;
        if r.is_nan() {
            return Err(Error::InvalidInput(format!("RDP at order {a} is NaN")));
        }
    }
    let eps_at = |a: f64, r: f64| match conversion {
        Conversion::Classic => r.max(0.0) - delta.ln() / (a - 1.0),
        Conversion::Tight => {
            if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
                0.0
            } else if a > 1.01 {
                r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
            } else {
                f64::INFINITY
            }
        }
    };
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = eps_at(a, r);
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// Accumulates the RDP of composed sampled Gaussian mechanisms at a fixed set of orders.
///
/// ```
/// use cgfed_aggregators::privacy::RdpAccountant;
/// let mut acc = RdpAccountant::default();
/// acc.compose_sampled_gaussian(0.01, 1.0, 300).unwrap(); // q, σ, steps
/// let report = acc.epsilon(1e-5).unwrap();
/// assert!(report.epsilon < report.epsilon_classic);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
    steps: u64,
    mechanism: Composed,
}

/// Which mechanisms have been composed so far (for the report).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Composed {
    Nothing,
    /// All steps so far had this sampling rate and noise multiplier.
    Same {
        q: f64,
        sigma: f64,
    },
    Mixed,
}

impl Default for RdpAccountant {
    /// An empty accountant at [`default_orders`].
    fn default() -> Self {
        Self::with_valid_orders(default_orders())
    }
}

impl RdpAccountant {
    /// An empty accountant (RDP 0 at every order) at `orders`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `orders` is empty or an order is not in `(1, MAX_ORDER]`.
    pub fn new(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() {
            return Err(Error::InvalidInput(
                "the RDP accountant needs at least one order".into(),
            ));
        }
        orders.iter().try_for_each(|&a| check_order(a))?;
        Ok(Self::with_valid_orders(orders))
    }

    fn with_valid_orders(orders: Vec<f64>) -> Self {
        Self {
            rdp: vec![0.0; orders.len()],
            orders,
            steps: 0,
            mechanism: Composed::Nothing,
        }
    }

    /// The orders, as given.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP at each order (same order as [`orders`](Self::orders)).
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Total number of composed steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Compose `steps` runs of the sampled Gaussian mechanism (sampling rate `q`, noise
    /// multiplier `sigma`): RDP adds up, `RDP(α) += steps · rdp_sampled_gaussian(q, σ, α)`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `q ∉ [0, 1]` or `sigma` is not finite and ≥ 0.
    pub fn compose_sampled_gaussian(&mut self, q: f64, sigma: f64, steps: u64) -> Result<()> {
        check_mechanism(q, sigma)?;
        if steps == 0 {
            return Ok(());
        }
        for (acc, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *acc += steps as f64 * rdp_unchecked(q, sigma, a);
        }
        self.steps += steps;
        self.mechanism = match self.mechanism {
            Composed::Nothing => Composed::Same { q, sigma },
            Composed::Same { q: q0, sigma: s0 } if q0 == q && s0 == sigma => self.mechanism,
            _ => Composed::Mixed,
        };
        Ok(())
    }

    /// The `(ε, δ)` guarantee of everything composed so far at `delta`, by both conversions
    /// ([`Conversion::Tight`] is `epsilon`, [`Conversion::Classic`] is `epsilon_classic`).
    /// The report's `mode` is empty; see [`PrivacyReport::with_mode`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `delta ∉ (0, 1)`.
    pub fn epsilon(&self, delta: f64) -> Result<PrivacyReport> {
        let (epsilon, order) = rdp_to_epsilon(&self.orders, &self.rdp, delta, Conversion::Tight)?;
        let (epsilon_classic, order_classic) =
            rdp_to_epsilon(&self.orders, &self.rdp, delta, Conversion::Classic)?;
        let (sampling_rate, noise_multiplier) = match self.mechanism {
            Composed::Same { q, sigma } => (Some(q), Some(sigma)),
            Composed::Nothing | Composed::Mixed => (None, None),
        };
        Ok(PrivacyReport {
            epsilon,
            delta,
            order,
            epsilon_classic,
            order_classic,
            sampling_rate,
            noise_multiplier,
            steps: self.steps,
            mode: String::new(),
            accountant: "rdp".into(),
        })
    }
}

/// `(ε, δ)` of `steps` compositions of the sampled Gaussian mechanism at [`default_orders`].
///
/// # Errors
/// As [`RdpAccountant::compose_sampled_gaussian`] and [`RdpAccountant::epsilon`].
pub fn epsilon_for(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<PrivacyReport> {
    let mut acc = RdpAccountant::default();
    acc.compose_sampled_gaussian(q, sigma, steps)?;
    acc.epsilon(delta)
}

/// A privacy guarantee: the run is `(epsilon, delta)`-DP at the level the accountant was
/// fed (for DP-FedAvg: one client's whole data).
///
/// Serialises to JSON with an infinite ε (no noise) written as `null`, read back as `+∞`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// ε by the tight conversion ([`Conversion::Tight`]); `+∞` without noise.
    #[serde(with = "inf_as_null")]
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// The RDP order that gave `epsilon`.
    pub order: f64,
    /// ε by the classic conversion ([`Conversion::Classic`]); ≥ `epsilon`.
    #[serde(with = "inf_as_null")]
    pub epsilon_classic: f64,
    /// The RDP order that gave `epsilon_classic`.
    pub order_classic: f64,
    /// The sampling rate `q` of every composed step; `None` when steps differed (or none).
    pub sampling_rate: Option<f64>,
    /// The noise multiplier `σ` of every composed step; `None` when steps differed (or none).
    pub noise_multiplier: Option<f64>,
    /// Number of composed steps (federated rounds).
    pub steps: u64,
    /// Where noise was added: `"server"` or `"client"`; filled by the caller.
    pub mode: String,
    /// Always `"rdp"`.
    pub accountant: String,
}

impl PrivacyReport {
    /// The same report with `mode` set.
    pub fn with_mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = mode.into();
        self
    }
}

/// Serde for an f64 that may be `+∞`: JSON has no infinity, so it is written as `null`.
mod inf_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        v.is_finite().then_some(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

fn check_mechanism(q: f64, sigma: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&q) {
        return Err(Error::InvalidInput(format!(
            "sampling rate must be in [0, 1], got {q}"
        )));
    }
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::InvalidInput(format!(
            "noise multiplier must be a finite number >= 0, got {sigma}"
        )));
    }
    Ok(())
}

/// An order must be in `(1, MAX_ORDER]`.
fn check_order(alpha: f64) -> Result<()> {
    if alpha > 1.0 && alpha <= MAX_ORDER {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "RDP order must be in (1, {MAX_ORDER}], got {alpha}"
        )))
    }
}

fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "delta must be in (0, 1), got {delta}"
        )))
    }
}
