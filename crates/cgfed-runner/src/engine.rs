//! The federation engine: the round loop of a simulated federated fine-tuning run.
//!
//! Per round: sample clients (seeded by experiment seed and round) → send each the global
//! trainable state as a real dense payload, or with `[downlink]` the compressed broadcasts
//! it missed (downlink bytes) → local training → compress with the client's own state
//! (uplink bytes = exact payload lengths) → server decodes (malformed payloads are
//! rejected and counted, the round goes on) → aggregate → apply (through the downlink
//! compressor when there is one) → evaluate every `eval.every` rounds → one JSON line in
//! `metrics.jsonl` → checkpoint of every client's compressor state. At the end,
//! `summary.json`.
//!
//! Clients talk to the server only through payload bytes plus an example count and a
//! training loss, so the same round logic can later drive remote clients. In simulation the
//! clients share the trainer's frozen base model, and the client's self-decode (to measure
//! SNR and cosine) is the same computation as the server's decode of the same bytes, so it
//! is done once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cgfed_core::builtin::none::NoCompression;
use cgfed_core::candle_core::Device;
use cgfed_core::metrics::Reconstruction;
use cgfed_core::{
    registry, Aggregator, ClientState, ClientUpdate, Error, Example, GradientCompressor, Layout,
    Payload, Phase, Result, RoundCtx, TextTokenizer, TrainCtx, Trainer, TrainerInit, Update,
};
use cgfed_data::{ByteTokenizer, DataConfig, FederatedData};

use crate::accuracy::{mc_accuracy, AccuracyReport};
use crate::checkpoint::{self, StateCheckpoint};
use crate::config::ExperimentConfig;
use crate::downlink::{Downlink, ResidualLog};
use crate::faults::{attack_seed, Fate, StragglerPolicy};
use crate::metrics::{finite_mean, ClientMetrics, ClientStatus, Quality, RoundMetrics, RunSummary};
use crate::privacy::Privacy;
use crate::sampling::sample_clients;

/// What an observer (a progress bar, a test) learns when a run starts.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// `experiment.name`.
    pub name: String,
    /// Calibration rounds requested by the compressor (run before the training rounds).
    pub calibration_rounds: usize,
    /// Training rounds (`federation.rounds`).
    pub rounds: usize,
    /// Rounds already completed by the run this one resumes (0 for a fresh run).
    pub resumed_from: usize,
    /// Trainer description.
    pub trainer: String,
    /// Compressor description (wrappers included).
    pub compressor: String,
    /// Downlink compressor description, when `[downlink]` is configured.
    pub downlink: Option<String>,
    /// Aggregator name.
    pub aggregator: String,
    /// Human-readable partition summary.
    pub partition: String,
    /// Held-out loss before training.
    pub initial_eval_loss: f64,
    /// Multiple-choice accuracy before training (empty without such items).
    pub initial_accuracy: Vec<AccuracyReport>,
    /// Where metrics and the summary are written.
    pub run_dir: PathBuf,
}

/// Receives progress while a run goes on. Every method has a no-op default.
pub trait Observer {
    /// Called once, after setup and the initial evaluation.
    fn on_start(&mut self, _info: &RunInfo) {}
    /// Called after every round with its metrics line.
    fn on_round(&mut self, _metrics: &RoundMetrics) {}
    /// Asked after every round but the last, once its checkpoint is written: `false` stops
    /// the run there with [`Error::Interrupted`] (it can resume). Default: `true`.
    fn keep_going(&mut self) -> bool {
        true
    }
}

/// Where a run directory stands ([`run_status`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// No run there yet (or none with a checkpoint).
    New,
    /// A run stopped after `round` of its `total` rounds (calibration included); resuming
    /// continues from round `from` (0 when it stopped before its calibration fit, whose
    /// observations the checkpoint does not hold, so it starts over).
    Interrupted {
        /// Rounds completed.
        round: usize,
        /// Rounds of the whole run.
        total: usize,
        /// The round a resumed run continues from.
        from: usize,
    },
    /// A finished run, with its summary.
    Finished(Box<RunSummary>),
}

/// Where the run directory of `cfg` stands: new, interrupted (and from where it would
/// resume) or finished.
///
/// # Errors
/// A run directory written by a different config: the error names the first keys that
/// differ. Damaged `summary.json` or checkpoint files.
pub fn run_status(cfg: &ExperimentConfig) -> Result<RunStatus> {
    let run_dir = cfg.run_dir();
    let saved = run_dir.join("config.toml");
    if !saved.exists() {
        return Ok(RunStatus::New);
    }
    let text = std::fs::read_to_string(&saved).map_err(|e| Error::io(&saved, e))?;
    let diff = crate::config::diff_keys(&text, &cfg.to_toml_string()?);
    if !diff.is_empty() {
        return Err(Error::Other(format!(
            "{} holds a run of a different config ({}); use the same config, start afresh \
             with `cgfed run` (replaces it), or pick another experiment.name",
            run_dir.display(),
            diff.join("; ")
        )));
    }
    let summary = run_dir.join("summary.json");
    if summary.exists() {
        return Ok(RunStatus::Finished(Box::new(crate::metrics::read_summary(
            &summary,
        )?)));
    }
    let Some(dir) = checkpoint::latest(&run_dir)? else {
        return Ok(RunStatus::New);
    };
    let p = checkpoint::Progress::load(&dir)?;
    let from = if p.round < p.calibration_rounds {
        0
    } else {
        p.round
    };
    Ok(RunStatus::Interrupted {
        round: p.round,
        total: p.calibration_rounds + p.rounds,
        from,
    })
}

/// What [`Experiment::restore`] read back.
struct Resume {
    progress: checkpoint::Progress,
    history: Vec<RoundMetrics>,
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// A fully built experiment, ready to run.
pub struct Experiment {
    cfg: ExperimentConfig,
    trainer: Box<dyn Trainer>,
    compressor: Box<dyn GradientCompressor>,
    aggregator: Box<dyn Aggregator>,
    data: FederatedData,
    /// D1 of every client when the compressor asks for a calibration split (calibration
    /// rounds train on it; `data.clients` then holds D2).
    calib_data: Option<Vec<Vec<Example>>>,
    states: Vec<ClientState>,
    downlink: Option<Downlink>,
    residuals: ResidualLog,
    byzantine: Vec<bool>,
    privacy: Option<Privacy>,
    layout: Arc<Layout>,
    device: Device,
    tokenizer: Arc<dyn TextTokenizer>,
    /// The evaluation before the first round, when the caller already has it.
    initial: Option<(f64, Vec<AccuracyReport>)>,
    /// Held while this experiment writes into its run directory.
    lock: Option<checkpoint::RunLock>,
}

impl std::fmt::Debug for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Experiment")
            .field("name", &self.cfg.experiment.name)
            .field("trainer", &self.trainer.describe())
            .field("compressor", &self.compressor.name())
            .field("aggregator", &self.aggregator.name())
            .finish()
    }
}

/// Stream number for the downlink/server contexts (distinct from any client index).
const SERVER: Option<usize> = None;

impl Experiment {
    /// Build every part of the experiment (data, tokenizer, trainer, plugins). Any config
    /// error surfaces here, before the first round.
    pub fn build(cfg: &ExperimentConfig) -> Result<Self> {
        let data_cfg = DataConfig::from_table(&cfg.data)?;
        let seed = cfg.experiment.seed;
        let trainer_table = cfg.trainer_table()?;
        let trainer = registry::build_trainer(&TrainerInit {
            trainer: &trainer_table,
            model: &cfg.model,
            lora: &cfg.lora,
            vocab_size: ByteTokenizer::VOCAB_SIZE,
            seed,
        })?;
        let device = trainer.device();
        let tokenizer: Arc<dyn TextTokenizer> =
            cgfed_data::build_tokenizer(&data_cfg, trainer.tokenizer())?;
        let compressor = registry::build_compressor(&cfg.compressor_table()?)?;
        let aggregator = registry::build_aggregator(&cfg.aggregator_table()?)?;
        let downlink = cfg
            .downlink_table()?
            .map(|t| Downlink::build(&t, cfg.federation.clients))
            .transpose()?;
        let mut data = cgfed_data::build_federated_data(
            &data_cfg,
            tokenizer.as_ref(),
            cfg.federation.clients,
            seed,
        )?;
        let calib_data = match compressor.calibration_split() {
            Some(f) => {
                let (d1, d2) = crate::calibration::split_clients(&data.clients, f, seed)?;
                data.clients = d2;
                Some(d1)
            }
            None => None,
        };
        let layout = Arc::new(trainer.layout().clone());
        let fed = &cfg.federation;
        let byzantine = match &cfg.faults {
            Some(f) => f.byzantine_clients(fed.clients, seed),
            None => vec![false; fed.clients],
        };
        let privacy = cfg
            .privacy_config()?
            .map(|p| Privacy::new(p, fed.clients, fed.clients_per_round));
        Ok(Self {
            cfg: cfg.clone(),
            trainer,
            compressor,
            aggregator,
            states: vec![ClientState::default(); cfg.federation.clients],
            downlink,
            residuals: ResidualLog::new(cfg.federation.clients),
            byzantine,
            privacy,
            data,
            calib_data,
            layout,
            device,
            tokenizer,
            initial: None,
            lock: None,
        })
    }

    /// Use `loss` and `accuracy` as the evaluation before the first round instead of
    /// computing them. A comparison passes what its first variant measured to the others:
    /// the same seed, `[model]`, `[lora]`, `[data]` and `[eval]` give the same initial model
    /// and evaluation set, so the numbers are the same and the evaluation runs once.
    pub fn set_initial_evaluation(&mut self, loss: f64, accuracy: Vec<AccuracyReport>) {
        self.initial = Some((loss, accuracy));
    }

    /// Held-out loss and multiple-choice accuracy (every `[eval] accuracy` scoring, on the
    /// first `accuracy_items` evaluation items) of the current global state.
    ///
    /// # Errors
    /// Trainer or tokenizer errors.
    pub fn evaluate(&mut self) -> Result<Evaluation> {
        let t = Instant::now();
        let loss = self.trainer.evaluate(&self.data.eval)?;
        let accuracy = self.accuracy()?;
        Ok(Evaluation {
            loss: loss.loss,
            perplexity: loss.perplexity(),
            tokens: loss.tokens,
            accuracy,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Every configured accuracy report (none without multiple-choice evaluation items).
    fn accuracy(&mut self) -> Result<Vec<AccuracyReport>> {
        let items = &self.data.eval_items;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let n = self
            .cfg
            .eval
            .accuracy_items
            .unwrap_or(items.len())
            .min(items.len());
        let template = if self.data.chat {
            self.tokenizer.chat_template()
        } else {
            None
        };
        self.cfg
            .eval
            .accuracy
            .iter()
            .map(|&format| {
                mc_accuracy(
                    self.trainer.as_mut(),
                    self.tokenizer.as_ref(),
                    &items[..n],
                    format,
                    template,
                )
            })
            .collect()
    }

    /// The per-client training data and the held-out set.
    pub fn data(&self) -> &FederatedData {
        &self.data
    }

    /// Client `c`'s compressor state (error-feedback residual, warm starts).
    ///
    /// # Panics
    /// If `c` is not a client index.
    pub fn client_state(&self, c: usize) -> &ClientState {
        &self.states[c]
    }

    /// The compressor state of every client and of the server's downlink, as written to
    /// the run's checkpoint after `round` completed rounds.
    pub fn state_checkpoint(&self, round: usize) -> StateCheckpoint {
        let (server, last_sync, broadcast) = match &self.downlink {
            Some(d) => (d.state.clone(), d.last_sync.clone(), d.broadcast.clone()),
            None => Default::default(),
        };
        StateCheckpoint {
            round,
            clients: self.states.clone(),
            server,
            last_sync,
            broadcast,
        }
    }

    /// The trainer (e.g. to evaluate after a run).
    pub fn trainer_mut(&mut self) -> &mut dyn Trainer {
        self.trainer.as_mut()
    }

    fn ctx(&self, round: usize, client: Option<usize>, phase: Phase) -> RoundCtx {
        RoundCtx {
            round,
            client,
            seed: self.cfg.experiment.seed,
            phase,
            layout: self.layout.clone(),
            device: self.device.clone(),
        }
    }

    /// Run every round from the start, writing `config.toml`, `partition.json`,
    /// `metrics.jsonl`, a [`checkpoint`] after every round, `summary.json` and the final
    /// adapter (`adapter/`, PEFT layout, when the trainer has one) into the run directory.
    /// What an earlier run left there is replaced.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<RunSummary> {
        self.drive(observer, None)
    }

    /// Continue the run in the run directory from its last checkpoint, with results
    /// identical to an uninterrupted run (timings aside): the global state, every client's
    /// compressor state, the aggregator's and the compressor's own state are restored and
    /// `metrics.jsonl` is cut back to the checkpointed rounds. A finished run returns its
    /// summary without running; a directory without a checkpoint (or one interrupted
    /// before its calibration fit) runs from the start.
    ///
    /// # Errors
    /// A run directory written by a different config (the error names the keys), a run
    /// that cannot resume (e.g. residuals merged into the base weights), a damaged
    /// checkpoint, and everything [`run`](Self::run) can fail with.
    pub fn resume(&mut self, observer: &mut dyn Observer) -> Result<RunSummary> {
        if self.cfg.run_dir().exists() {
            self.lock_run_dir()?;
        }
        match run_status(&self.cfg)? {
            RunStatus::Finished(summary) => Ok(*summary),
            RunStatus::Interrupted { from: 0, .. } | RunStatus::New => self.drive(observer, None),
            RunStatus::Interrupted { .. } => {
                let resume = self.restore()?;
                self.drive(observer, Some(resume))
            }
        }
    }

    /// Lock the run directory for this process (once; see [`checkpoint::lock`]): two
    /// processes writing one run directory would overwrite each other's checkpoints.
    fn lock_run_dir(&mut self) -> Result<()> {
        if self.lock.is_none() {
            let dir = self.cfg.run_dir();
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            self.lock = Some(checkpoint::lock(&dir)?);
        }
        Ok(())
    }

    /// Restore the state of the last checkpoint (see [`resume`](Self::resume)).
    fn restore(&mut self) -> Result<Resume> {
        let run_dir = self.cfg.run_dir();
        let dir = checkpoint::latest(&run_dir)?.ok_or_else(|| {
            Error::Other(format!(
                "{}: no checkpoint to resume from",
                run_dir.display()
            ))
        })?;
        let progress = checkpoint::Progress::load(&dir)?;
        if let Some(why) = &progress.not_resumable {
            return Err(Error::Other(format!(
                "{} cannot resume: {why}; run it again from the start with `cgfed run`",
                run_dir.display()
            )));
        }
        let global = checkpoint::load_update(
            &dir.join(checkpoint::GLOBAL_FILE),
            &self.layout,
            &self.device,
        )?;
        self.trainer.load_global_state(&global)?;
        let states = dir.join(checkpoint::FILE);
        if states.exists() {
            let ck = StateCheckpoint::load(&states)?;
            if ck.clients.len() != self.states.len() {
                return Err(Error::Other(format!(
                    "{}: {} clients, the config has {}",
                    states.display(),
                    ck.clients.len(),
                    self.states.len()
                )));
            }
            self.states = ck.clients;
            if let Some(d) = &mut self.downlink {
                d.state = ck.server;
                d.last_sync = ck.last_sync;
                d.broadcast = ck.broadcast;
            }
        }
        let agg = dir.join(checkpoint::AGGREGATOR_FILE);
        if agg.exists() {
            let bytes = std::fs::read(&agg).map_err(|e| Error::io(&agg, e))?;
            self.aggregator.load_state(&bytes)?;
        }
        let own = dir.join(checkpoint::COMPRESSOR_DIR);
        if own.exists() {
            self.compressor.load_checkpoint(&own)?;
        }
        let metrics_path = run_dir.join("metrics.jsonl");
        let history = crate::metrics::read_rounds(&metrics_path, Some(progress.round))?;
        if history.len() != progress.round {
            return Err(Error::Other(format!(
                "{}: {} rounds, the checkpoint has {}",
                metrics_path.display(),
                history.len(),
                progress.round
            )));
        }
        Ok(Resume { progress, history })
    }

    /// The round loop, from the start or from a restored checkpoint.
    fn drive(&mut self, observer: &mut dyn Observer, resume: Option<Resume>) -> Result<RunSummary> {
        let started = Instant::now();
        let run_dir = self.cfg.run_dir();
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        self.lock_run_dir()?;
        write_file(
            &run_dir.join("config.toml"),
            self.cfg.to_toml_string()?.as_bytes(),
        )?;
        write_file(
            &run_dir.join("partition.json"),
            &json_bytes(&self.data.summary)?,
        )?;
        let metrics_path = run_dir.join("metrics.jsonl");
        let mut lines = String::new();
        for m in resume.iter().flat_map(|r| &r.history) {
            lines.push_str(&serde_json::to_string(m).map_err(|e| Error::Other(e.to_string()))?);
            lines.push('\n');
        }
        if resume.is_none() {
            // A fresh run replaces whatever an earlier one left.
            for stale in [
                "summary.json",
                "checkpoint",
                "checkpoint.old",
                "checkpoint.next",
            ] {
                let p = run_dir.join(stale);
                let gone = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(e) = gone {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(Error::io(&p, e));
                    }
                }
            }
        }
        // The checkpointed rounds only: a crash after a metrics line and before its
        // checkpoint leaves a line that the resumed run writes again.
        checkpoint::write_atomic(&metrics_path, lines.as_bytes())?;
        let mut out = BufWriter::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&metrics_path)
                .map_err(|e| Error::io(&metrics_path, e))?,
        );

        let (mut progress, mut history) = match resume {
            Some(r) => (r.progress, r.history),
            None => {
                let (loss, accuracy) = match self.initial.take() {
                    Some(known) => known,
                    None => (
                        self.trainer.evaluate(&self.data.eval)?.loss,
                        self.accuracy()?,
                    ),
                };
                let progress = checkpoint::Progress {
                    version: 1,
                    round: 0,
                    calibration_rounds: self.compressor.calibration_rounds(),
                    rounds: self.cfg.federation.rounds,
                    initial_eval_loss: loss,
                    initial_accuracy: accuracy,
                    fit: Default::default(),
                    wall_s: 0.0,
                    not_resumable: None,
                };
                (progress, Vec::new())
            }
        };
        let prior_wall = progress.wall_s;
        let calibration_rounds = progress.calibration_rounds;
        let rounds = self.cfg.federation.rounds;
        let total = calibration_rounds + rounds;
        observer.on_start(&RunInfo {
            name: self.cfg.experiment.name.clone(),
            calibration_rounds,
            rounds,
            resumed_from: progress.round,
            trainer: self.trainer.describe(),
            compressor: self.compressor.describe(),
            downlink: self.downlink.as_ref().map(Downlink::describe),
            aggregator: self.aggregator.describe(),
            partition: self.data.summary.to_string(),
            initial_eval_loss: progress.initial_eval_loss,
            initial_accuracy: progress.initial_accuracy.clone(),
            run_dir: run_dir.clone(),
        });
        tracing::info!(
            trainer = %self.trainer.describe(),
            initial_eval_loss = progress.initial_eval_loss,
            resumed_from = progress.round,
            "run {} starting",
            self.cfg.experiment.name
        );

        // Bytes every client downloads once before it can compress (e.g. encoder weights).
        let artifact_bytes =
            self.compressor.client_artifacts()?.len() * self.cfg.federation.clients;
        let mut cum_up = history.last().map_or(0, |m| m.cum_uplink_bytes);
        let mut cum_down = history.last().map_or(0, |m| m.cum_downlink_bytes);
        let acc_every = self.cfg.eval.accuracy_every.unwrap_or(self.cfg.eval.every);
        let mut final_accuracy = Vec::new();
        for r in progress.round..total {
            let phase = if r < calibration_rounds {
                Phase::Calibration
            } else {
                Phase::Train
            };
            let mut m = self.round(r, phase)?;
            if r == 0 {
                m.downlink_bytes += artifact_bytes;
            }
            if phase == Phase::Calibration && r + 1 == calibration_rounds {
                let report = self.compressor.fit()?;
                progress.fit = report.metrics.clone();
                m.extra.extend(report.metrics);
                m.downlink_bytes += report.broadcast_bytes * self.cfg.federation.clients;
            }
            let last = r + 1 == total;
            let t = Instant::now();
            if (r + 1) % self.cfg.eval.every == 0 || last {
                let e = self.trainer.evaluate(&self.data.eval)?;
                m.eval_loss = Some(e.loss);
                m.perplexity = Some(e.perplexity());
            }
            // Accuracy counts training rounds, so that variants with and without
            // calibration rounds are scored after the same training.
            let trained = (r + 1).saturating_sub(calibration_rounds);
            if (phase == Phase::Train && trained % acc_every == 0) || last {
                let reports = self.accuracy()?;
                m.accuracy = flat_accuracy(&reports);
                if last {
                    final_accuracy = reports;
                }
            }
            m.time_eval_ms = ms(t);
            if let Some(p) = &self.privacy {
                m.epsilon = Some(p.report(r + 1)?.epsilon).filter(|e| e.is_finite());
            }
            cum_up += m.uplink_bytes;
            cum_down += m.downlink_bytes;
            m.cum_uplink_bytes = cum_up;
            m.cum_downlink_bytes = cum_down;
            append_line(&mut out, &m, &metrics_path)?;
            tracing::info!(
                round = m.round,
                train_loss = ?m.train_loss,
                eval_loss = ?m.eval_loss,
                uplink_bytes = m.uplink_bytes,
                "round done"
            );
            progress.round = r + 1;
            progress.wall_s = prior_wall + started.elapsed().as_secs_f64();
            if self.residuals.dense_bytes > 0 {
                progress.not_resumable = Some(
                    "its aggregator merged residuals into the base weights, which the \
                     checkpoint does not hold"
                        .into(),
                );
            }
            self.save_checkpoint(&run_dir, &progress)?;
            observer.on_round(&m);
            history.push(m);
            if !last && !observer.keep_going() {
                return Err(Error::Interrupted { round: r + 1 });
            }
        }

        let initial_loss = progress.initial_eval_loss;
        let last_eval = history
            .iter()
            .rev()
            .find_map(|m| m.eval_loss)
            .unwrap_or(initial_loss);
        let evals: Vec<f64> = std::iter::once(initial_loss)
            .chain(history.iter().filter_map(|m| m.eval_loss))
            .collect();
        let total_dense: usize = history.iter().map(|m| m.dense_bytes).sum();
        let adapter = run_dir.join("adapter");
        let adapter_dir = self
            .trainer
            .save_adapter(&adapter)?
            .then(|| adapter.display().to_string());
        let initial_accuracy = progress.initial_accuracy.clone();
        let summary = RunSummary {
            name: self.cfg.experiment.name.clone(),
            seed: self.cfg.experiment.seed,
            rounds: history.len(),
            trainer: self.trainer.describe(),
            compressor: self.compressor.describe(),
            downlink_compressor: self.downlink.as_ref().map(Downlink::describe),
            aggregator: self.aggregator.describe(),
            update_numel: self.layout.numel(),
            initial_eval_loss: initial_loss,
            final_eval_loss: last_eval,
            best_eval_loss: evals.iter().copied().fold(f64::INFINITY, f64::min),
            final_perplexity: last_eval.exp(),
            total_uplink_bytes: cum_up,
            total_downlink_bytes: cum_down,
            total_dense_bytes: total_dense,
            ratio: ratio(total_dense, cum_up),
            mean_snr_db: finite_mean(history.iter().filter_map(|m| m.quality.snr_db)),
            rejected_updates: history.iter().map(|m| m.rejected_updates).sum(),
            skipped_rounds: history.iter().filter(|m| m.skipped).count(),
            dropped_clients: history.iter().map(|m| m.dropped).sum(),
            stragglers: history.iter().map(|m| m.stragglers).sum(),
            byzantine_clients: (0..self.byzantine.len())
                .filter(|&c| self.byzantine[c])
                .collect(),
            faults: self.cfg.faults.clone(),
            privacy: self
                .privacy
                .as_ref()
                .map(|p| p.report(history.len()))
                .transpose()?,
            calibration: self.calibration_summary(calibration_rounds, &history, progress.fit),
            wall_s: prior_wall + started.elapsed().as_secs_f64(),
            adapter_dir,
            initial_accuracy: flat_accuracy(&initial_accuracy),
            final_accuracy: flat_accuracy(&final_accuracy),
            accuracy_reports: final_accuracy,
        };
        write_file(&run_dir.join("summary.json"), &json_bytes(&summary)?)?;
        self.lock = None;
        Ok(summary)
    }

    /// What the calibration phase trained on and cost (`None` without calibration or split).
    fn calibration_summary(
        &self,
        rounds: usize,
        history: &[RoundMetrics],
        fit: std::collections::BTreeMap<String, f64>,
    ) -> Option<crate::calibration::CalibrationSummary> {
        let split = self.compressor.calibration_split();
        if rounds == 0 && split.is_none() {
            return None;
        }
        let count = |d: &[Vec<Example>]| d.iter().map(Vec::len).sum::<usize>();
        let calib = history.iter().filter(|m| m.phase == Phase::Calibration);
        Some(crate::calibration::CalibrationSummary {
            rounds,
            split,
            d1_examples: self.calib_data.as_deref().map(count).unwrap_or(0),
            d2_examples: count(&self.data.clients),
            uplink_bytes: calib.clone().map(|m| m.uplink_bytes).sum(),
            downlink_bytes: calib.map(|m| m.downlink_bytes).sum(),
            fit,
        })
    }

    /// Run only the calibration rounds (`cgfed tgap`): dense rounds on D1 observed by the
    /// compressor, then its `fit`, then `save_fitted(out_dir)`. Writes the rounds' metrics
    /// lines to `out_dir/metrics.jsonl` and the summary to `out_dir/tgap.json`.
    ///
    /// # Errors
    /// A compressor that asks for no calibration rounds; training, fitting or I/O errors.
    pub fn calibrate(
        &mut self,
        out_dir: &std::path::Path,
        observer: &mut dyn Observer,
    ) -> Result<crate::calibration::CalibrationSummary> {
        let rounds = self.compressor.calibration_rounds();
        if rounds == 0 {
            return Err(Error::InvalidInput(format!(
                "compressor `{}` asks for no calibration rounds (with cgfedllm: drop `load`,                  set tgap.rounds ≥ 1)",
                self.compressor.describe()
            )));
        }
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let metrics_path = out_dir.join("metrics.jsonl");
        let mut out =
            BufWriter::new(File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?);
        let initial = self.trainer.evaluate(&self.data.eval)?;
        observer.on_start(&RunInfo {
            name: self.cfg.experiment.name.clone(),
            calibration_rounds: rounds,
            rounds: 0,
            resumed_from: 0,
            trainer: self.trainer.describe(),
            compressor: self.compressor.describe(),
            downlink: None,
            aggregator: self.aggregator.describe(),
            partition: self.data.summary.to_string(),
            initial_eval_loss: initial.loss,
            initial_accuracy: Vec::new(),
            run_dir: out_dir.to_path_buf(),
        });
        let mut history = Vec::new();
        let mut fit = std::collections::BTreeMap::new();
        let (mut cum_up, mut cum_down) = (0, 0);
        for r in 0..rounds {
            let mut m = self.round(r, Phase::Calibration)?;
            if r + 1 == rounds {
                let report = self.compressor.fit()?;
                fit = report.metrics.clone();
                m.extra.extend(report.metrics);
                let t = Instant::now();
                let e = self.trainer.evaluate(&self.data.eval)?;
                m.time_eval_ms = ms(t);
                m.eval_loss = Some(e.loss);
                m.perplexity = Some(e.perplexity());
            }
            cum_up += m.uplink_bytes;
            cum_down += m.downlink_bytes;
            m.cum_uplink_bytes = cum_up;
            m.cum_downlink_bytes = cum_down;
            append_line(&mut out, &m, &metrics_path)?;
            observer.on_round(&m);
            history.push(m);
        }
        self.compressor.save_fitted(out_dir)?;
        let summary = self
            .calibration_summary(rounds, &history, fit)
            .unwrap_or_default();
        write_file(&out_dir.join("tgap.json"), &json_bytes(&summary)?)?;
        Ok(summary)
    }

    /// Write the checkpoint after `progress.round` rounds (see [`checkpoint::dir`]).
    fn save_checkpoint(
        &self,
        run_dir: &std::path::Path,
        progress: &checkpoint::Progress,
    ) -> Result<()> {
        checkpoint::commit(run_dir, |dir| {
            checkpoint::save_update(
                &dir.join(checkpoint::GLOBAL_FILE),
                &self.trainer.global_state()?,
            )?;
            let agg = self.aggregator.save_state()?;
            if !agg.is_empty() {
                checkpoint::write_atomic(&dir.join(checkpoint::AGGREGATOR_FILE), &agg)?;
            }
            if !self.states.iter().all(ClientState::is_empty) || self.downlink.is_some() {
                self.state_checkpoint(progress.round)
                    .save(&dir.join(checkpoint::FILE))?;
            }
            self.compressor
                .save_checkpoint(&dir.join(checkpoint::COMPRESSOR_DIR))?;
            progress.save(dir)
        })
    }

    /// One round: downlink, local training (with the configured faults), compression,
    /// decoding, the quorum check, aggregation.
    fn round(&mut self, r: usize, phase: Phase) -> Result<RoundMetrics> {
        let fed = &self.cfg.federation;
        let seed = self.cfg.experiment.seed;
        let sampled = sample_clients(fed.clients, fed.clients_per_round, seed, r);
        let dense = NoCompression;
        // Calibration rounds send dense updates for the compressor to observe.
        let compressor: &dyn GradientCompressor = match phase {
            Phase::Calibration => &dense,
            Phase::Train => self.compressor.as_ref(),
        };

        // Downlink: the global trainable state as real dense bytes, which every sampled
        // client decodes; with `[downlink]`, what a client pays is what it missed. Exact
        // LoRA aggregation adds the base-weight residuals a client has not seen yet.
        let server_ctx = self.ctx(r, SERVER, phase);
        let global = self.trainer.global_state()?;
        let down = dense.compress(&global, &mut ClientState::default(), &server_ctx)?;
        let start = dense.decompress(&down, &server_ctx)?;
        let mut downlink_bytes = match &mut self.downlink {
            Some(d) => sampled.iter().map(|&c| d.sync_cost(c, r, down.len())).sum(),
            None => down.len() * sampled.len(),
        };
        downlink_bytes += sampled
            .iter()
            .map(|&c| self.residuals.sync_cost(c, r))
            .sum::<usize>();

        let mut m = RoundMetrics::new(r + 1, phase, sampled.clone(), downlink_bytes);
        let faults = self.cfg.faults.clone().unwrap_or_default();
        let mut received: Vec<(Payload, Update)> = Vec::new();
        let mut snapshots: std::collections::BTreeMap<usize, Vec<Update>> = Default::default();
        let mut accepted: Vec<ClientUpdate> = Vec::new();
        let mut quality: Vec<Reconstruction> = Vec::new();
        let mut density: Vec<f64> = Vec::new();
        let mut dp_clipped = 0usize;
        for &c in &sampled {
            let ctx = self.ctx(r, Some(c), phase);
            let byzantine = self.byzantine[c];
            let data: &[Example] = match (&self.calib_data, phase) {
                (Some(d1), Phase::Calibration) => &d1[c],
                _ => &self.data.clients[c],
            };
            let dense_bytes = self.layout.dense_bytes();
            let mut cm = ClientMetrics::new(c, data.len(), dense_bytes, byzantine);
            m.byzantine += usize::from(byzantine);
            let fate = faults.fate(seed, r, c);
            if fate == Fate::Dropped {
                m.dropped += 1;
                cm.status = ClientStatus::Dropped;
                m.clients.push(cm);
                continue;
            }
            let straggler = fate == Fate::Straggler;
            m.stragglers += usize::from(straggler);
            // Client side: start from the global state it received, train, compress.
            let t = Instant::now();
            let local = self.trainer.train_local(
                &start,
                data,
                &TrainCtx {
                    round: r,
                    client: c,
                    seed,
                    local_steps: straggler.then_some(faults.straggler_steps),
                    // TGAP's temporal ensemble (not under DP: only privatised updates may
                    // leave a client).
                    record_snapshots: phase == Phase::Calibration && self.privacy.is_none(),
                },
            )?;
            m.time_train_ms += ms(t);
            cm.train_loss = Some(local.train_loss);
            if !byzantine && !local.snapshots.is_empty() {
                snapshots.insert(c, local.snapshots);
            }
            if straggler && faults.straggler_policy == StragglerPolicy::Drop {
                cm.status = ClientStatus::Late;
                m.clients.push(cm);
                continue;
            }
            m.dense_bytes += dense_bytes;
            let mut delta = local.delta;
            if let Some(p) = &self.privacy {
                let (noised, clipped) = p.on_client(&delta, seed, r, c)?;
                delta = noised;
                dp_clipped += usize::from(clipped);
            }
            if byzantine {
                delta = faults.attack_update(&delta, attack_seed(seed, r, c))?;
            }
            let t = Instant::now();
            let payload = match compressor.compress(&delta, &mut self.states[c], &ctx) {
                Ok(p) if byzantine => faults.attack_payload(p, attack_seed(seed, r, c)),
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(client = c, round = r + 1, "client failed to encode: {e}");
                    m.time_encode_ms += ms(t);
                    m.rejected_updates += 1;
                    cm.rejected = true;
                    cm.status = ClientStatus::Rejected;
                    m.clients.push(cm);
                    continue;
                }
            };
            m.time_encode_ms += ms(t);
            m.uplink_bytes += payload.len();
            cm.uplink_bytes = payload.len();
            cm.ratio = ratio(dense_bytes, payload.len());

            // Server side: decode from the bytes alone; reject what does not validate.
            let t = Instant::now();
            let decoded = compressor
                .decompress(&payload, &ctx)
                .and_then(|u| u.check_finite().map(|_| u));
            m.time_decode_ms += ms(t);
            match decoded {
                Ok(update) => {
                    let decoded = update.to_flat()?;
                    let q = Reconstruction::measure(&delta.to_flat()?, &decoded);
                    cm.quality = Quality::of(&q);
                    cm.nonzero = decoded.iter().filter(|v| **v != 0.0).count();
                    if straggler {
                        cm.status = ClientStatus::Partial;
                    }
                    density.push(cm.nonzero as f64 / decoded.len().max(1) as f64);
                    quality.push(q);
                    accepted.push(ClientUpdate {
                        client: c,
                        update: update.clone(),
                        num_examples: local.num_examples,
                        train_loss: local.train_loss,
                    });
                    received.push((payload, update));
                }
                Err(e) => {
                    tracing::warn!(client = c, round = r + 1, "payload rejected: {e}");
                    m.rejected_updates += 1;
                    cm.rejected = true;
                    cm.status = ClientStatus::Rejected;
                }
            }
            m.clients.push(cm);
        }

        if phase == Phase::Calibration {
            for u in &accepted {
                let ctx = self.ctx(r, Some(u.client), phase);
                for s in snapshots.remove(&u.client).unwrap_or_default() {
                    self.compressor.observe(&s, &ctx)?;
                }
                self.compressor.observe(&u.update, &ctx)?;
            }
        }
        m.participants = accepted.len();
        m.ratio = ratio(m.dense_bytes, m.uplink_bytes);
        m.quality = Quality::mean(&quality);
        m.density = finite_mean(density);
        let weight: usize = accepted.iter().map(|u| u.num_examples).sum();
        if weight > 0 {
            m.train_loss = Some(
                accepted
                    .iter()
                    .map(|u| u.train_loss * u.num_examples as f64)
                    .sum::<f64>()
                    / weight as f64,
            );
        }

        let quorum = self.cfg.federation.min_clients;
        if accepted.len() < quorum {
            let reason = format!(
                "{} valid update(s), fewer than federation.min_clients = {quorum} ({} dropped, \
                 {} late, {} rejected)",
                accepted.len(),
                m.dropped,
                m.clients
                    .iter()
                    .filter(|c| c.status == ClientStatus::Late)
                    .count(),
                m.rejected_updates
            );
            tracing::warn!(round = r + 1, "round skipped: {reason}");
            m.skipped = true;
            m.skip_reason = Some(reason);
            if let Some(d) = &mut self.downlink {
                d.skip();
            }
            return Ok(m);
        }
        let t = Instant::now();
        if let Some(p) = &self.privacy {
            let (noised, clipped) = p.on_server(accepted, seed, r)?;
            accepted = noised;
            dp_clipped += clipped;
            m.extra.insert("dp_clipped".into(), dp_clipped as f64);
        }
        let agg = self.aggregator.aggregate(&accepted, &global, &server_ctx)?;
        agg.delta.check_finite()?;
        m.extra.extend(agg.metrics);
        if let Some(residual) = &agg.base_residual {
            residual.check_finite()?;
            self.trainer.merge_into_base(residual)?;
            self.residuals
                .record(r, agg.base_residual_bytes, residual.layout().dense_bytes());
            m.extra
                .insert("base_residual_bytes".into(), agg.base_residual_bytes as f64);
        }
        match &mut self.downlink {
            Some(d) => {
                let (broadcast, dm) = d.broadcast(&agg.delta, &server_ctx)?;
                self.trainer.apply_delta(&broadcast)?;
                m.downlink = Some(dm);
            }
            None => self.trainer.apply_delta(&agg.delta)?,
        }
        if phase == Phase::Train {
            let report = self.compressor.after_round(&received, &server_ctx)?;
            m.extra.extend(report.metrics);
            // A refreshed encoder goes to every client, sampled this round or not.
            m.downlink_bytes += report.broadcast_bytes * self.cfg.federation.clients;
        }
        m.time_aggregate_ms = ms(t);
        Ok(m)
    }
}

/// Build and run the experiment described by `cfg`.
pub fn run_experiment(cfg: &ExperimentConfig, observer: &mut dyn Observer) -> Result<RunSummary> {
    Experiment::build(cfg)?.run(observer)
}

/// Append `m` as one JSON line to `metrics.jsonl` and flush it (a crash keeps every
/// finished round).
fn append_line(out: &mut impl Write, m: &RoundMetrics, path: &std::path::Path) -> Result<()> {
    serde_json::to_writer(&mut *out, m)
        .map_err(|e| Error::Other(format!("cannot serialise metrics: {e}")))?;
    out.write_all(b"\n")
        .and_then(|_| out.flush())
        .map_err(|e| Error::io(path, e))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn ratio(dense: usize, sent: usize) -> f64 {
    if sent == 0 {
        0.0
    } else {
        dense as f64 / sent as f64
    }
}

fn json_bytes<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::Other(format!("cannot serialise: {e}")))
}

fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Held-out loss and accuracy of one model state ([`Experiment::evaluate`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Mean NLL per target token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Target tokens scored.
    pub tokens: usize,
    /// One report per configured scoring.
    pub accuracy: Vec<AccuracyReport>,
    /// Wall time of the evaluation.
    pub seconds: f64,
}

/// `metric → accuracy` over all reports (`acc_cloze`, `acc_cloze_norm`, `acc_letter`).
pub fn flat_accuracy(reports: &[AccuracyReport]) -> std::collections::BTreeMap<String, f64> {
    reports
        .iter()
        .flat_map(|r| r.metrics.iter().map(|(k, v)| (k.clone(), *v)))
        .collect()
}
