//! Client-level differential privacy in the round loop (`[privacy]`): where the clipping
//! and noise of [`cgfed_aggregators::privacy`] are applied, and the accountant's ε per
//! round.
//!
//! - `mode = "server"` (central DP): the server clips every decoded update to `clip_norm`
//!   S, adds `N(0, (σ·S)²)` to their sum and divides by `clients_per_round` m (a fixed
//!   denominator); the aggregator then gets this one noised mean (so a robust aggregator
//!   has nothing left to vote on, and a server optimizer such as `fedadam` post-processes
//!   it: DP-FedAdam).
//! - `mode = "client"` (distributed DP): each client clips its update to S and adds
//!   `N(0, σ²S²/m)` before compressing; the server's uniform mean carries noise of std
//!   σ·S/m, as in central mode, if the aggregator is a mean (use `fedavg` with
//!   `weighting = "uniform"`).
//!
//! ε is reported for δ by the RDP accountant of the sampled Gaussian mechanism with
//! sampling rate q = clients_per_round / clients, noise multiplier σ and one step per
//! round (every round that aggregates client updates, calibration rounds included).

use cgfed_aggregators::privacy::{add_gaussian_noise, DpConfig, DpMode, PrivacyReport};
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::{ClientUpdate, Result, Update};

/// The `[privacy]` stage of a run.
#[derive(Debug, Clone)]
pub struct Privacy {
    cfg: DpConfig,
    clients: usize,
    per_round: usize,
}

impl Privacy {
    /// The stage for `clients` clients of which `per_round` are sampled each round.
    pub fn new(cfg: DpConfig, clients: usize, per_round: usize) -> Self {
        Self {
            cfg,
            clients,
            per_round,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DpConfig {
        &self.cfg
    }

    /// Client side: in client mode the clipped and noised `delta` (and whether clipping
    /// changed it); in server mode `delta` unchanged.
    pub fn on_client(
        &self,
        delta: &Update,
        seed: u64,
        round: usize,
        client: usize,
    ) -> Result<(Update, bool)> {
        if self.cfg.mode != DpMode::Client {
            return Ok((delta.clone(), false));
        }
        let (clipped, norm) = self.cfg.clip(delta)?;
        let std = self.cfg.noise_std(self.per_round)?;
        let noise_seed = mix_seed(&[
            seed,
            round as u64,
            client as u64,
            stream_of("privacy/client"),
        ]);
        let noised = if std > 0.0 {
            add_gaussian_noise(&clipped, std, noise_seed)?
        } else {
            clipped
        };
        Ok((noised, norm > self.cfg.clip_norm))
    }

    /// Server side: in server mode the one noised mean of the clipped `updates` (and how
    /// many were clipped); in client mode `updates` unchanged.
    pub fn on_server(
        &self,
        updates: Vec<ClientUpdate>,
        seed: u64,
        round: usize,
    ) -> Result<(Vec<ClientUpdate>, usize)> {
        if self.cfg.mode != DpMode::Server || updates.is_empty() {
            return Ok((updates, 0));
        }
        let mut clipped_count = 0;
        let mut sum: Option<Update> = None;
        for u in &updates {
            let (c, norm) = self.cfg.clip(&u.update)?;
            clipped_count += usize::from(norm > self.cfg.clip_norm);
            sum = Some(match sum {
                None => c,
                Some(s) => s.add(&c)?,
            });
        }
        let mut sum = sum.expect("updates is not empty");
        let std = self.cfg.noise_std(self.per_round)?;
        if std > 0.0 {
            sum = add_gaussian_noise(
                &sum,
                std,
                mix_seed(&[seed, round as u64, stream_of("privacy/server")]),
            )?;
        }
        let mean = sum.scale(1.0 / self.per_round as f64)?;
        let first = &updates[0];
        let noised = ClientUpdate {
            client: first.client,
            update: mean,
            num_examples: updates.iter().map(|u| u.num_examples).sum(),
            train_loss: updates.iter().map(|u| u.train_loss).sum::<f64>() / updates.len() as f64,
        };
        Ok((vec![noised], clipped_count))
    }

    /// The guarantee after `rounds` rounds.
    ///
    /// # Errors
    /// Accountant errors (invalid orders).
    pub fn report(&self, rounds: usize) -> Result<PrivacyReport> {
        self.cfg
            .privacy_report(self.per_round, self.clients, rounds as u64)
    }
}
