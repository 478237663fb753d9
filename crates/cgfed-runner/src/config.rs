//! The experiment config: one TOML file per experiment, `--set` overrides, and errors that
//! name the file, the key path and the accepted values.
//!
//! ```toml
//! [experiment]
//! name = "tiny"        # run directory: <output_dir>/<name>
//! seed = 0
//! output_dir = "runs"
//!
//! [model]              # parsed by the trainer (see cgfed-model)
//! preset = "tiny"
//!
//! [lora]               # parsed by the trainer
//! rank = 8
//!
//! [data]               # parsed by cgfed-data
//! seq_len = 64
//!
//! [federation]
//! rounds = 3
//! clients = 8
//! clients_per_round = 4
//! # min_clients = 1    # quorum: fewer valid updates and the round is skipped
//!
//! [trainer]            # plugin: name + its keys
//! name = "llama"
//!
//! [compressor]         # plugin
//! name = "none"
//!
//! [aggregator]         # plugin
//! name = "fedavg"
//!
//! # [downlink]         # optional: compress the server's broadcasts (see `downlink`)
//! # kind = "topk"
//! # ratio = 0.1
//! # error_feedback = true
//!
//! # [faults]          # optional: Byzantine clients, drop-outs, stragglers (see `faults`)
//! # byzantine_fraction = 0.25
//! # attack = "sign-flip"
//!
//! # [privacy]         # optional: client-level DP (see cgfed_aggregators::privacy)
//! # clip_norm = 0.1
//! # noise_multiplier = 1.0
//!
//! [eval]
//! every = 1                 # held-out loss every this many rounds (and after the last)
//! accuracy = ["cloze"]      # multiple-choice accuracy before the first round, every
//!                           # `accuracy_every` rounds and after the last, for dataset
//!                           # evaluation sets: cloze, letter (or [])
//! # accuracy_every = 2      # default: `every`
//! # accuracy_items = 200    # score only the first N evaluation items (default: all)
//! ```

use std::path::{Path, PathBuf};

use cgfed_core::config::{ensure, parse_table, PluginTable};
use cgfed_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[experiment]`: identity and reproducibility of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSection {
    /// Run name; the run directory is `<output_dir>/<name>`.
    pub name: String,
    /// Seed of everything random: model init, data split, client sampling, batches.
    #[serde(default)]
    pub seed: u64,
    /// Parent directory of run directories. Default `runs`.
    #[serde(default = "default_output_dir")]
    pub output_dir: PathBuf,
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// `[federation]`: the round loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Number of federated rounds (≥ 1).
    pub rounds: usize,
    /// Number of clients the training data is split over (≥ 1).
    pub clients: usize,
    /// Clients sampled per round, `1..=clients`.
    pub clients_per_round: usize,
    /// Quorum: a round with fewer valid updates than this is skipped (logged, counted in
    /// `skipped_rounds`), `1..=clients_per_round`. Default 1.
    #[serde(default = "one")]
    pub min_clients: usize,
}

/// `[eval]`: held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate every this many rounds (and always after the last). Default 1.
    #[serde(default = "one")]
    pub every: usize,
    /// Multiple-choice scorings computed before the first round, every
    /// [`accuracy_every`](Self::accuracy_every) rounds and after the last (when the
    /// evaluation set has multiple-choice items). Default `["cloze"]`.
    #[serde(default = "default_accuracy")]
    pub accuracy: Vec<cgfed_data::prompts::PromptFormat>,
    /// Score accuracy every this many training rounds (calibration rounds do not count)
    /// and after the last. Default: `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_every: Option<usize>,
    /// Score only the first this many evaluation items. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_items: Option<usize>,
}

fn default_accuracy() -> Vec<cgfed_data::prompts::PromptFormat> {
    vec![cgfed_data::prompts::PromptFormat::Cloze]
}

fn one() -> usize {
    1
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every: 1,
            accuracy: default_accuracy(),
            accuracy_every: None,
            accuracy_items: None,
        }
    }
}

/// The plugin used when a config omits a plugin table or its `name`.
pub const DEFAULT_PLUGINS: &[(&str, &str)] = &[
    ("trainer", "llama"),
    ("compressor", "none"),
    ("aggregator", "fedavg"),
];

fn default_trainer() -> toml::Value {
    toml::Value::String("llama".into())
}
fn default_compressor() -> toml::Value {
    toml::Value::String("none".into())
}
fn default_aggregator() -> toml::Value {
    toml::Value::String("fedavg".into())
}

/// A whole experiment, as written in TOML.
///
/// The `[model]`, `[lora]` and `[data]` tables are kept as TOML and parsed by the crates
/// that own them (the trainer, cgfed-data), so that core and runner stay independent of
/// their keys; plugin tables are `name` plus the plugin's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// `[experiment]`.
    pub experiment: ExperimentSection,
    /// `[model]`, given to the trainer.
    #[serde(default)]
    pub model: toml::Table,
    /// `[lora]`, given to the trainer.
    #[serde(default)]
    pub lora: toml::Table,
    /// `[data]`, given to cgfed-data.
    #[serde(default)]
    pub data: toml::Table,
    /// `[federation]`.
    pub federation: FederationSection,
    /// `[trainer]` plugin table (default `llama`).
    #[serde(default = "default_trainer")]
    pub trainer: toml::Value,
    /// `[compressor]` plugin table (default `none`).
    #[serde(default = "default_compressor")]
    pub compressor: toml::Value,
    /// `[aggregator]` plugin table (default `fedavg`).
    #[serde(default = "default_aggregator")]
    pub aggregator: toml::Value,
    /// `[downlink]` compressor table: compress the server's broadcasts (default: the dense
    /// global state to every sampled client; see [`crate::downlink`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downlink: Option<toml::Value>,
    /// `[faults]`: simulated Byzantine clients, drop-outs and stragglers (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<crate::faults::FaultsSection>,
    /// `[privacy]`: client-level differential privacy (clipping + Gaussian noise), parsed
    /// by [`cgfed_aggregators::privacy`] (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<toml::Table>,
    /// `[eval]`.
    #[serde(default)]
    pub eval: EvalSection,
}

impl ExperimentConfig {
    /// Parse a TOML document (no file context; see [`load_config`]).
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Self> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::config("", format!("invalid TOML: {e}")))?;
        Self::from_table(table, overrides)
    }

    /// Build from a parsed TOML table, `--set` overrides applied first.
    pub fn from_table(mut table: toml::Table, overrides: &[String]) -> Result<Self> {
        for key in ["variant", "report"] {
            if table.contains_key(key) {
                return Err(Error::config(
                    key,
                    "`[[variant]]` and `[report]` tables make this file a comparison: run it \
                     with `cgfed compare FILE`",
                ));
            }
        }
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        // A plugin table without `name` means the default plugin with these keys.
        for (key, default) in DEFAULT_PLUGINS {
            if let Some(toml::Value::Table(t)) = table.get_mut(*key) {
                if !t.contains_key("kind") {
                    t.entry("name")
                        .or_insert_with(|| toml::Value::String((*default).into()));
                }
            }
        }
        let cfg: ExperimentConfig = parse_table(&table, "")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check values and plugin tables (not plugin parameters: the factories do that).
    pub fn validate(&self) -> Result<()> {
        let f = &self.federation;
        ensure(f.rounds >= 1, "federation.rounds", "must be at least 1")?;
        ensure(f.clients >= 1, "federation.clients", "must be at least 1")?;
        ensure(
            (1..=f.clients).contains(&f.clients_per_round),
            "federation.clients_per_round",
            format!(
                "must be in 1..={} (federation.clients), got {}",
                f.clients, f.clients_per_round
            ),
        )?;
        ensure(
            (1..=f.clients_per_round).contains(&f.min_clients),
            "federation.min_clients",
            format!(
                "must be in 1..={} (federation.clients_per_round), got {}",
                f.clients_per_round, f.min_clients
            ),
        )?;
        if let Some(faults) = &self.faults {
            faults.validate()?;
        }
        self.privacy_config()?;
        ensure(self.eval.every >= 1, "eval.every", "must be at least 1")?;
        ensure(
            self.eval.accuracy_every != Some(0),
            "eval.accuracy_every",
            "must be at least 1; leave it out to score with every evaluation",
        )?;
        ensure(
            self.eval.accuracy_items != Some(0),
            "eval.accuracy_items",
            "must be at least 1; leave it out to score every item",
        )?;
        ensure(
            !self.experiment.name.is_empty()
                && !self.experiment.name.contains(['/', '\\'])
                && self.experiment.name != ".."
                && self.experiment.name != ".",
            "experiment.name",
            "must be a non-empty directory name without slashes",
        )?;
        self.trainer_table()?;
        self.compressor_table()?;
        self.aggregator_table()?;
        self.downlink_table()?;
        Ok(())
    }

    /// The `[trainer]` plugin table.
    pub fn trainer_table(&self) -> Result<PluginTable> {
        PluginTable::from_value("trainer", &self.trainer)
    }

    /// The `[compressor]` plugin table.
    pub fn compressor_table(&self) -> Result<PluginTable> {
        PluginTable::from_value("compressor", &self.compressor)
    }

    /// The `[downlink]` compressor table, if the config has one.
    pub fn downlink_table(&self) -> Result<Option<PluginTable>> {
        self.downlink
            .as_ref()
            .map(|v| PluginTable::from_value("downlink", v))
            .transpose()
    }

    /// The `[privacy]` settings, if the config has them.
    pub fn privacy_config(&self) -> Result<Option<cgfed_aggregators::privacy::DpConfig>> {
        self.privacy
            .as_ref()
            .map(cgfed_aggregators::privacy::DpConfig::from_table)
            .transpose()
    }

    /// The `[aggregator]` plugin table.
    pub fn aggregator_table(&self) -> Result<PluginTable> {
        PluginTable::from_value("aggregator", &self.aggregator)
    }

    /// The run directory: `<output_dir>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.experiment.output_dir.join(&self.experiment.name)
    }

    /// The resolved config as TOML (written to the run directory).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Other(format!("cannot write config: {e}")))
    }
}

/// Read, override and validate the config at `path`. Every error names the file.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    ExperimentConfig::from_toml_str(&text, overrides).map_err(|e| e.in_file(path))
}

/// Load the config at `path` and build the experiment; configuration errors found while
/// building (plugin names and parameters, `[model]`, `[data]`) also name the file.
pub fn load_experiment(path: &Path, overrides: &[String]) -> Result<crate::Experiment> {
    build_from_file(&load_config(path, overrides)?, path)
}

/// Build the experiment of `cfg`, read from the file at `path`: its configuration errors
/// (plugin names and parameters, `[model]`, `[data]`) name the file.
pub fn build_from_file(cfg: &ExperimentConfig, path: &Path) -> Result<crate::Experiment> {
    crate::Experiment::build(cfg).map_err(|e| match e {
        e
        @ (Error::Config { .. } | Error::UnknownPlugin { .. } | Error::DuplicatePlugin { .. }) => {
            e.in_file(path)
        }
        e => e,
    })
}

/// Apply one `key.path=value` override. The value is read as TOML (`3`, `0.5`, `true`,
/// `"x"`, `[1, 2]`, `{ name = "fp16" }`) and falls back to a plain string (`fp16`); the
/// bare words `nan` and `inf` are strings too.
pub fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (path, raw) = spec.split_once('=').ok_or_else(|| {
        Error::config(
            spec,
            "an override must look like `key.path=value`, e.g. `federation.rounds=3`",
        )
    })?;
    let path = path.trim();
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(Error::config(path, "empty key in override path"));
    }
    let value = parse_value(raw.trim());
    let mut cur = table;
    for (i, k) in keys.iter().enumerate() {
        if i + 1 == keys.len() {
            // `kind` and `name` are one key: setting either replaces the other.
            match *k {
                "name" => cur.remove("kind"),
                "kind" => cur.remove("name"),
                _ => None,
            };
            cur.insert((*k).to_string(), value);
            return Ok(());
        }
        let entry = cur
            .entry((*k).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // `--set compressor.level=3` on `compressor = "fp16"` turns the name into a table.
        if let toml::Value::String(name) = entry {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String(name.clone()));
            *entry = toml::Value::Table(t);
        }
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(Error::config(
                    keys[..=i].join("."),
                    format!(
                        "is a {}, not a table; cannot set `{path}`",
                        other.type_str()
                    ),
                ))
            }
        };
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    // TOML reads the bare words `nan` and `inf` as floats, which no key accepts; as
    // overrides they are names (`--set faults.attack=nan`).
    if matches!(raw, "nan" | "inf") {
        return toml::Value::String(raw.to_string());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// The keys whose values differ between two TOML documents, as `key: a → b` lines (at most
/// five, then a count); empty when they are equal.
pub fn diff_keys(a: &str, b: &str) -> Vec<String> {
    fn flatten(
        prefix: &str,
        v: &toml::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            v => {
                out.insert(prefix.to_string(), v.to_string());
            }
        }
    }
    let parse = |s: &str| {
        let mut out = std::collections::BTreeMap::new();
        match toml::from_str::<toml::Table>(s) {
            Ok(t) => flatten("", &toml::Value::Table(t), &mut out),
            Err(e) => {
                out.insert("(file)".into(), format!("unreadable: {e}"));
            }
        }
        out
    };
    let (a, b) = (parse(a), parse(b));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let none = "(unset)".to_string();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} in the run, {} now",
                a.get(k).unwrap_or(&none),
                b.get(k).unwrap_or(&none)
            )
        })
        .collect();
    let n = diffs.len();
    let mut out: Vec<String> = diffs.into_iter().take(5).collect();
    if n > 5 {
        out.push(format!("and {} more", n - 5));
    }
    out
}
