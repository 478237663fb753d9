//! Simulated faults and attacks: Byzantine clients, drop-outs and stragglers (`[faults]`).
//!
//! ```toml
//! [faults]
//! byzantine_fraction = 0.25   # this share of all clients is Byzantine (a fixed, seeded set)
//! attack = "sign-flip"        # sign-flip | scale | gaussian | nan | inf | random-bytes
//! # lambda = 1.0              # sign-flip sends −λ·Δ (default λ = 1), scale sends λ·Δ (default 10)
//! # noise_std = 1.0           # gaussian: sends N(0, noise_std²) per element instead of Δ
//! dropout = 0.1               # each sampled client drops out of a round with this probability
//! straggler_fraction = 0.2    # each remaining sampled client is a straggler with this probability
//! straggler_steps = 1         # a straggler completes only this many local steps …
//! straggler_policy = "partial" # … and sends that ("partial"), or misses the deadline ("drop")
//! ```
//!
//! Byzantine clients are drawn once per run: `⌊byzantine_fraction·clients + ½⌋` clients
//! from a stream seeded by the experiment seed. When sampled they train like everybody
//! else and then attack:
//!
//! - `sign-flip`, `scale`, `gaussian` replace the update before compression (the attacker
//!   then compresses it with the configured compressor, like an honest client);
//! - `nan`, `inf`, `random-bytes` attack the wire: the honest payload keeps its header and
//!   every 32-bit word of its body is overwritten by a NaN (`0x7fc00000`) or +∞
//!   (`0x7f800000`) bit pattern, or the body is replaced by as many random bytes. Decoders
//!   must reject such payloads (or decode them to finite values); the runner also rejects
//!   any decoded update with a non-finite value, so nothing non-finite reaches the model.
//!
//! Drop-outs and stragglers are drawn per round and client (seeded by experiment seed,
//! round and client). A dropped client receives the global state (its downlink is counted)
//! but never answers. A straggler trains `straggler_steps` steps only; with `"partial"` it
//! sends that update (FedProx's systems heterogeneity), with `"drop"` the round's deadline
//! passes first and its update is not sent. `federation.min_clients` is the quorum: a round
//! with fewer valid updates is skipped and logged, not crashed.

use cgfed_core::config::ensure;
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::{Error, Payload, Result, Update};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a Byzantine client does (`faults.attack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Send `−λ·Δ` (default λ = 1).
    #[default]
    SignFlip,
    /// Send `λ·Δ` (default λ = 10).
    Scale,
    /// Send `N(0, noise_std²)` per element instead of Δ.
    Gaussian,
    /// Every 32-bit word of the payload body set to a NaN bit pattern.
    Nan,
    /// Every 32-bit word of the payload body set to +∞.
    Inf,
    /// The payload body replaced by random bytes (same length).
    RandomBytes,
}

impl Attack {
    /// Whether the attack rewrites the payload bytes (after compression) rather than the
    /// update (before).
    pub fn on_the_wire(self) -> bool {
        matches!(self, Attack::Nan | Attack::Inf | Attack::RandomBytes)
    }
}

/// What happens to a straggler's update (`faults.straggler_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StragglerPolicy {
    /// It sends the update of the steps it completed.
    #[default]
    Partial,
    /// It misses the round's deadline: nothing is sent.
    Drop,
}

/// `[faults]`: simulated Byzantine clients, drop-outs and stragglers. Everything defaults
/// to off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsSection {
    /// Share of all clients that is Byzantine, in `[0, 1]`. Default 0.
    #[serde(default)]
    pub byzantine_fraction: f64,
    /// What Byzantine clients send. Default `sign-flip`.
    #[serde(default)]
    pub attack: Attack,
    /// λ of `sign-flip` (default 1) and `scale` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Standard deviation of the `gaussian` attack. Default 1.
    #[serde(default = "one")]
    pub noise_std: f64,
    /// Per round, the probability that a sampled client drops out. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Per round, the probability that a sampled client (not dropped) is a straggler.
    /// Default 0.
    #[serde(default)]
    pub straggler_fraction: f64,
    /// Local steps a straggler completes (≥ 1). Default 1.
    #[serde(default = "one_step")]
    pub straggler_steps: usize,
    /// `partial` (default: send what was done) or `drop` (missed the deadline).
    #[serde(default)]
    pub straggler_policy: StragglerPolicy,
}

fn one() -> f64 {
    1.0
}
fn one_step() -> usize {
    1
}

impl Default for FaultsSection {
    fn default() -> Self {
        Self {
            byzantine_fraction: 0.0,
            attack: Attack::default(),
            lambda: None,
            noise_std: 1.0,
            dropout: 0.0,
            straggler_fraction: 0.0,
            straggler_steps: 1,
            straggler_policy: StragglerPolicy::default(),
        }
    }
}

fn probability(v: f64, key: &str) -> Result<()> {
    ensure(
        v.is_finite() && (0.0..=1.0).contains(&v),
        key,
        format!("must be a probability in [0, 1], got {v}"),
    )
}

impl FaultsSection {
    /// Error unless every value is in range (keys reported as `faults.<key>`).
    pub fn validate(&self) -> Result<()> {
        probability(self.byzantine_fraction, "faults.byzantine_fraction")?;
        probability(self.dropout, "faults.dropout")?;
        probability(self.straggler_fraction, "faults.straggler_fraction")?;
        if let Some(l) = self.lambda {
            ensure(
                l.is_finite() && l > 0.0,
                "faults.lambda",
                format!("must be finite and > 0, got {l}"),
            )?;
            ensure(
                matches!(self.attack, Attack::SignFlip | Attack::Scale),
                "faults.lambda",
                "only applies to attack = \"sign-flip\" or \"scale\"",
            )?;
        }
        ensure(
            self.noise_std.is_finite() && self.noise_std > 0.0,
            "faults.noise_std",
            format!("must be finite and > 0, got {}", self.noise_std),
        )?;
        ensure(
            self.straggler_steps >= 1,
            "faults.straggler_steps",
            "must be at least 1 (a straggler that does nothing is a drop-out: use faults.dropout)",
        )
    }

    /// λ of the configured attack (its default when not set).
    pub fn lambda(&self) -> f64 {
        self.lambda.unwrap_or(match self.attack {
            Attack::Scale => 10.0,
            _ => 1.0,
        })
    }

    /// Which clients are Byzantine: `⌊fraction·clients + ½⌋` of them, seeded.
    pub fn byzantine_clients(&self, clients: usize, seed: u64) -> Vec<bool> {
        let count = ((self.byzantine_fraction * clients as f64) + 0.5).floor() as usize;
        let count = count.min(clients);
        let mut out = vec![false; clients];
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, stream_of("faults/byzantine")]));
        for c in rand::seq::index::sample(&mut rng, clients, count) {
            out[c] = true;
        }
        out
    }

    /// What happens to client `client` in round `round`.
    pub fn fate(&self, seed: u64, round: usize, client: usize) -> Fate {
        if self.dropout == 0.0 && self.straggler_fraction == 0.0 {
            return Fate::OnTime;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[
            seed,
            round as u64,
            client as u64,
            stream_of("faults/fate"),
        ]));
        let (drop, straggle): (f64, f64) = (rng.random(), rng.random());
        if drop < self.dropout {
            Fate::Dropped
        } else if straggle < self.straggler_fraction {
            Fate::Straggler
        } else {
            Fate::OnTime
        }
    }

    /// The update a Byzantine client compresses instead of its true `delta` (unchanged for
    /// the attacks that act on the wire).
    pub fn attack_update(&self, delta: &Update, seed: u64) -> Result<Update> {
        match self.attack {
            Attack::SignFlip => delta.scale(-self.lambda()),
            Attack::Scale => delta.scale(self.lambda()),
            Attack::Gaussian => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let normal = rand_distr::Normal::new(0.0f32, self.noise_std as f32)
                    .map_err(|e| Error::config("faults.noise_std", e.to_string()))?;
                let parts = delta
                    .to_parts()?
                    .into_iter()
                    .map(|p| p.iter().map(|_| rng.sample(normal)).collect())
                    .collect();
                Update::from_parts(delta.layout(), parts, &delta.device())
            }
            Attack::Nan | Attack::Inf | Attack::RandomBytes => Ok(delta.clone()),
        }
    }

    /// The payload a Byzantine client sends instead of `payload` (unchanged for the
    /// attacks that act on the update). The header (version, name) is kept, so the
    /// server's decoder sees a payload that claims the right format.
    pub fn attack_payload(&self, payload: Payload, seed: u64) -> Payload {
        if !self.attack.on_the_wire() {
            return payload;
        }
        let mut bytes = payload.into_bytes();
        let header = bytes
            .get(1)
            .map_or(bytes.len(), |&n| (2 + n as usize).min(bytes.len()));
        let body = &mut bytes[header..];
        match self.attack {
            Attack::Nan | Attack::Inf => {
                let word = if self.attack == Attack::Nan {
                    0x7fc0_0000u32
                } else {
                    0x7f80_0000u32
                }
                .to_le_bytes();
                for (i, b) in body.iter_mut().enumerate() {
                    *b = word[i % 4];
                }
            }
            _ => ChaCha8Rng::seed_from_u64(seed).fill_bytes(body),
        }
        Payload::from_bytes(bytes)
    }
}

/// What a sampled client does in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Trains and sends on time.
    OnTime,
    /// Never answers.
    Dropped,
    /// Completes only `straggler_steps` local steps.
    Straggler,
}

/// The seed of a Byzantine client's attack draw in one round.
pub fn attack_seed(seed: u64, round: usize, client: usize) -> u64 {
    mix_seed(&[
        seed,
        round as u64,
        client as u64,
        stream_of("faults/attack"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgfed_core::candle_core::Device;
    use cgfed_core::{Layout, TensorSpec};

    fn update(values: &[f32]) -> Update {
        let layout = Layout::new(vec![TensorSpec {
            name: "w".into(),
            shape: vec![values.len()],
        }])
        .unwrap();
        Update::from_flat(&layout, values, &Device::Cpu).unwrap()
    }

    fn faults(attack: Attack, lambda: Option<f64>) -> FaultsSection {
        FaultsSection {
            attack,
            lambda,
            ..FaultsSection::default()
        }
    }

    #[test]
    fn update_attacks_flip_scale_or_replace() {
        let x = update(&[1.0, -2.0, 0.5]);
        let flip = faults(Attack::SignFlip, None).attack_update(&x, 1).unwrap();
        assert_eq!(flip.to_flat().unwrap(), vec![-1.0, 2.0, -0.5]);
        let flip4 = faults(Attack::SignFlip, Some(4.0))
            .attack_update(&x, 1)
            .unwrap();
        assert_eq!(flip4.to_flat().unwrap(), vec![-4.0, 8.0, -2.0]);
        let scale = faults(Attack::Scale, None).attack_update(&x, 1).unwrap();
        assert_eq!(scale.to_flat().unwrap(), vec![10.0, -20.0, 5.0]);
        let g = faults(Attack::Gaussian, None);
        let big = update(&vec![0.0; 20_000]);
        let noise = g.attack_update(&big, 7).unwrap().to_flat().unwrap();
        let var = noise.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / noise.len() as f64;
        // Sample variance of 20k N(0, 1) draws: 1 ± 0.01 (std of the estimate), 5 sigma.
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert_eq!(noise, g.attack_update(&big, 7).unwrap().to_flat().unwrap());
        for a in [Attack::Nan, Attack::Inf, Attack::RandomBytes] {
            let same = faults(a, None).attack_update(&x, 1).unwrap();
            assert_eq!(same.to_flat().unwrap(), x.to_flat().unwrap());
        }
    }

    #[test]
    fn wire_attacks_keep_the_header_and_the_length() {
        let body: Vec<u8> = (0..13).collect();
        let honest = Payload::from_body("topk", &body).unwrap();
        let header = Payload::header_len("topk");
        for attack in [Attack::Nan, Attack::Inf, Attack::RandomBytes] {
            let bad = faults(attack, None).attack_payload(honest.clone(), 3);
            assert_eq!(bad.len(), honest.len());
            assert_eq!(bad.as_bytes()[..header], honest.as_bytes()[..header]);
            assert_ne!(bad.as_bytes()[header..], honest.as_bytes()[header..]);
            if attack == Attack::Nan {
                let w = &bad.as_bytes()[header..header + 4];
                assert!(f32::from_le_bytes(w.try_into().unwrap()).is_nan());
            }
            if attack == Attack::Inf {
                let w = &bad.as_bytes()[header..header + 4];
                assert_eq!(f32::from_le_bytes(w.try_into().unwrap()), f32::INFINITY);
            }
        }
        // Update attacks leave the bytes alone; a payload too short for its header too.
        let same = faults(Attack::SignFlip, None).attack_payload(honest.clone(), 3);
        assert_eq!(same, honest);
        let stub = Payload::from_bytes(vec![1]);
        assert_eq!(
            faults(Attack::Nan, None).attack_payload(stub.clone(), 3),
            stub
        );
    }

    #[test]
    fn byzantine_set_has_the_rounded_size_and_depends_on_the_seed() {
        let f = FaultsSection {
            byzantine_fraction: 0.3,
            ..FaultsSection::default()
        };
        let a = f.byzantine_clients(10, 1);
        assert_eq!(a.iter().filter(|b| **b).count(), 3);
        assert_eq!(a, f.byzantine_clients(10, 1));
        assert!((2..20).any(|s| f.byzantine_clients(10, s) != a));
        // ⌊0.25·6 + ½⌋ = 2.
        let q = FaultsSection {
            byzantine_fraction: 0.25,
            ..FaultsSection::default()
        };
        assert_eq!(q.byzantine_clients(6, 0).iter().filter(|b| **b).count(), 2);
        assert!(FaultsSection::default()
            .byzantine_clients(5, 0)
            .iter()
            .all(|b| !b));
    }

    #[test]
    fn fates_follow_the_configured_probabilities() {
        let f = FaultsSection {
            dropout: 0.2,
            straggler_fraction: 0.5,
            ..FaultsSection::default()
        };
        let n = 20_000;
        let (mut dropped, mut straggled) = (0, 0);
        for i in 0..n {
            match f.fate(9, i / 100, i % 100) {
                Fate::Dropped => dropped += 1,
                Fate::Straggler => straggled += 1,
                Fate::OnTime => {}
            }
        }
        // Binomial: 0.2 ± 0.003 dropped, 0.8·0.5 = 0.4 ± 0.0035 straggling (5 sigma bands).
        let (d, s) = (dropped as f64 / n as f64, straggled as f64 / n as f64);
        assert!((d - 0.2).abs() < 0.015, "dropped {d}");
        assert!((s - 0.4).abs() < 0.018, "straggled {s}");
        assert_eq!(FaultsSection::default().fate(9, 3, 4), Fate::OnTime);
    }
}
