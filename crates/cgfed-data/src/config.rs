//! [`DataConfig`], the `[data]` table of an experiment, and the names it accepts
//! ([`TokenizerKind`], [`PartitionMethod`]).
//!
//! Every key, with its default:
//!
//! ```toml
//! [data]
//! # A built-in corpus by name (see `cgfed_data::corpus::BUILTIN_CORPORA`). Leave it out and
//! # set `path` to use your own text instead; setting both is an error.
//! corpus = "shakespeare-excerpt"  # or "shakespeare": all plays, from an asset fetched on first use
//! # path = "my-text.txt"         # a UTF-8 text file (relative to the working directory)
//! tokenizer = "auto"              # accepted: auto (the model's own, else bytes), model, bytes
//! seq_len = 64                    # tokens per example, BOS included; 2..=4096
//! eval_fraction = 0.1             # share of windows held out for evaluation; in (0, 1)
//! # max_eval_examples = 200       # cap on the evaluation set (no cap when left out)
//! # max_train_examples = 2000     # cap on the training pool before partitioning
//! partition = "iid"               # accepted: iid, dirichlet, by-field, shards
//! partition_field = "label"       # what dirichlet / by-field / shards split on: `label`
//!                                 # (the answer letter) or an item field (`subject`, `category`…)
//! dirichlet_alpha = 0.5           # Dirichlet concentration; small = skewed; > 0
//! shards_per_client = 2           # shards each client gets (`shards`); >= 1
//! min_examples_per_client = 1     # every client gets at least this many examples; >= 1
//!
//! # Datasets (instead of a corpus): fine-tune on one split, evaluate on a disjoint one.
//! # train = "arc-easy:test"        # a named split (`cgfed_data::datasets::DATASETS`), with an
//! # eval = "arc-easy:validation"   #   optional slice `[a:b]`/`[:80%]`
//! # train = "data/train.jsonl"    # or your own file: JSONL ({"text"}, {"prompt","completion"},
//!                                 #   {"messages"}) or CSV (C-Eval or MMLU layout)
//! bad_rows = "error"              # a malformed row in a file: error (file + line) or skip
//! prompt_format = "cloze"         # multiple choice as: cloze (answer text), letter
//! chat = "auto"                   # the model's chat template: auto (when it has one), on, off
//! ```
//!
//! With `train` set, the examples are prompt/completion pairs with the loss on the
//! completion, at most `seq_len` tokens each (the prompt is cut from the left); without
//! `eval`, `eval_fraction` of the training split is held out instead.

use std::fmt;
use std::path::PathBuf;

use cgfed_core::config::{ensure, parse_table};
use cgfed_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::corpus::{self, CorpusSource};
use crate::datasets::{is_dataset_spec, DatasetSpec};

/// `data.train` / `data.eval`: a named dataset split, or a user file with an accepted
/// extension (`.jsonl`, `.json`, `.csv`).
fn check_source(text: &str, key: &str) -> Result<()> {
    if is_dataset_spec(text) {
        return DatasetSpec::parse(text, key).map(|_| ());
    }
    let ext = std::path::Path::new(text)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext {
        Some(e) if crate::userdata::ACCEPTED_EXTENSIONS.contains(&e.as_str()) => Ok(()),
        _ => DatasetSpec::parse(text, key)
            .map(|_| ())
            .map_err(|e| match e {
                Error::Config { key, message } => Error::Config {
                    key,
                    message: format!(
                        "{message}; or give a data file ({})",
                        crate::userdata::ACCEPTED_EXTENSIONS
                            .iter()
                            .map(|e| format!(".{e}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
                other => other,
            }),
    }
}

/// The built-in corpus used when neither `data.corpus` nor `data.path` is set.
pub const DEFAULT_CORPUS: &str = "shakespeare-excerpt";

/// Which tokenizer turns text into ids (`data.tokenizer`).
///
/// An enum so that the accepted names are listed in every error; new tokenizers (e.g. one
/// provided by the model) are added as variants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// The model's own tokenizer when it has one (real checkpoints), else `bytes` (random
    /// presets). The default.
    #[default]
    Auto,
    /// The model's own tokenizer; an error for models without one.
    Model,
    /// [`ByteTokenizer`](crate::ByteTokenizer): one id per UTF-8 byte, plus BOS and EOS.
    Bytes,
}

impl TokenizerKind {
    /// Every accepted name, as written in TOML.
    pub const ACCEPTED: &'static [&'static str] = &["auto", "model", "bytes"];

    /// The name as written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerKind::Auto => "auto",
            TokenizerKind::Model => "model",
            TokenizerKind::Bytes => "bytes",
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the training pool is split among clients (`data.partition`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionMethod {
    /// Shuffle the pool and deal it into shards whose sizes differ by at most one.
    #[default]
    Iid,
    /// Per value of `partition_field`, client shares drawn from Dirichlet(`dirichlet_alpha`).
    Dirichlet,
    /// Each value of `partition_field` goes whole to one client (e.g. MMLU subjects).
    ByField,
    /// Sorted by `partition_field`, cut into shards, `shards_per_client` shards each.
    Shards,
}

impl PartitionMethod {
    /// Every accepted name, as written in TOML.
    pub const ACCEPTED: &'static [&'static str] = &["iid", "dirichlet", "by-field", "shards"];

    /// The name as written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionMethod::Iid => "iid",
            PartitionMethod::Dirichlet => "dirichlet",
            PartitionMethod::ByField => "by-field",
            PartitionMethod::Shards => "shards",
        }
    }
}

/// Whether prompts go through the model's chat template (`data.chat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatMode {
    /// When the tokenizer has a chat template (instruct models).
    #[default]
    Auto,
    /// Always (an error if the tokenizer has no template).
    On,
    /// Never: plain prompts.
    Off,
}

impl fmt::Display for PartitionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[data]` table: which text, how it is tokenized and cut into examples, how much is
/// held out, and how the rest is shared among clients.
///
/// Build it with [`from_table`](Self::from_table) (parse + [`validate`](Self::validate)),
/// or start from [`Default`] in code. The module docs list every key with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A built-in corpus by name. `None` (left out) means [`DEFAULT_CORPUS`] unless `path`
    /// is set. Setting both `corpus` and `path` is an error, so it is always clear which
    /// text an experiment used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    /// A UTF-8 text file to use instead of a built-in corpus (CRLF line endings are read as
    /// LF). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The tokenizer. Default: `auto`.
    pub tokenizer: TokenizerKind,
    /// Tokens per example, including the BOS token; `2..=4096`. Default: 64.
    pub seq_len: usize,
    /// Share of the corpus windows held out for evaluation, in `(0, 1)`. Default: 0.1.
    pub eval_fraction: f64,
    /// At most this many evaluation examples (the first ones of the held-out set; the rest
    /// of the held-out windows are left unused, never trained on). Default: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_eval_examples: Option<usize>,
    /// At most this many training examples in the pool before partitioning, to keep runs
    /// small. Default: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_train_examples: Option<usize>,
    /// How the training pool is split among clients. Default: `iid`.
    pub partition: PartitionMethod,
    /// The item field `dirichlet`, `by-field` and `shards` split on. Default: `label`.
    pub partition_field: String,
    /// Dirichlet concentration for `dirichlet`. Default: 0.5.
    pub dirichlet_alpha: f64,
    /// Shards per client for `shards`. Default: 2.
    pub shards_per_client: usize,
    /// A dataset split to fine-tune on (`name:split[slice]`). Default: none (use the corpus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<String>,
    /// A dataset split to evaluate on, disjoint from `train`. Default: none (hold out
    /// `eval_fraction` of `train`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
    /// How multiple-choice items are prompted. Default: `cloze`.
    pub prompt_format: crate::prompts::PromptFormat,
    /// Whether to use the model's chat template. Default: `auto`.
    pub chat: ChatMode,
    /// What a malformed row of a user data file does: `error` (stop, naming the file and
    /// line) or `skip` (count it and go on). Default: `error`.
    pub bad_rows: crate::userdata::BadRows,
    /// Smallest shard a client may get; building the data fails if a client would get
    /// fewer. At least 1. Default: 1.
    pub min_examples_per_client: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            corpus: None,
            path: None,
            tokenizer: TokenizerKind::Auto,
            seq_len: 64,
            eval_fraction: 0.1,
            max_eval_examples: None,
            max_train_examples: None,
            partition: PartitionMethod::Iid,
            partition_field: "label".to_string(),
            dirichlet_alpha: 0.5,
            shards_per_client: 2,
            train: None,
            eval: None,
            prompt_format: crate::prompts::PromptFormat::Cloze,
            chat: ChatMode::Auto,
            bad_rows: crate::userdata::BadRows::Error,
            min_examples_per_client: 1,
        }
    }
}

impl DataConfig {
    /// Largest accepted `seq_len`.
    pub const MAX_SEQ_LEN: usize = 4096;

    /// Parse the `[data]` table and [`validate`](Self::validate) it. Errors name the key
    /// (`data.seq_len`, ...) and the accepted values.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        let cfg: Self = parse_table(table, "data")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every value; an error names the key `data.<key>` and what is accepted.
    pub fn validate(&self) -> Result<()> {
        if let Some(name) = &self.corpus {
            ensure(
                self.path.is_none(),
                "data.path",
                format!(
                    "set either `data.corpus` (a built-in corpus, now \"{name}\") or \
                     `data.path` (a text file), not both"
                ),
            )?;
            if !corpus::is_corpus(name) {
                return Err(Error::config(
                    "data.corpus",
                    format!(
                        "unknown corpus \"{name}\"; built-in: {} (or set `data.path` to a \
                         UTF-8 text file instead)",
                        corpus::builtin_names().join(", ")
                    ),
                ));
            }
        }
        if let Some(path) = &self.path {
            ensure(
                !path.as_os_str().is_empty(),
                "data.path",
                "is empty; give the path of a UTF-8 text file",
            )?;
        }
        ensure(
            (2..=Self::MAX_SEQ_LEN).contains(&self.seq_len),
            "data.seq_len",
            format!(
                "{} is out of range; accepted: 2..={} (tokens per example, BOS included)",
                self.seq_len,
                Self::MAX_SEQ_LEN
            ),
        )?;
        ensure(
            self.eval_fraction.is_finite() && self.eval_fraction > 0.0 && self.eval_fraction < 1.0,
            "data.eval_fraction",
            format!(
                "{} is out of range; accepted: a number strictly between 0 and 1 (e.g. 0.1)",
                self.eval_fraction
            ),
        )?;
        ensure(
            self.max_eval_examples != Some(0),
            "data.max_eval_examples",
            "must be at least 1; leave it out for no cap",
        )?;
        ensure(
            self.max_train_examples != Some(0),
            "data.max_train_examples",
            "must be at least 1; leave it out for no cap",
        )?;
        ensure(
            self.min_examples_per_client >= 1,
            "data.min_examples_per_client",
            "must be at least 1 (every client needs data to train on)",
        )?;
        ensure(
            self.dirichlet_alpha.is_finite() && self.dirichlet_alpha > 0.0,
            "data.dirichlet_alpha",
            format!(
                "{} is out of range; accepted: a number > 0 (e.g. 0.5)",
                self.dirichlet_alpha
            ),
        )?;
        ensure(
            self.shards_per_client >= 1,
            "data.shards_per_client",
            "must be at least 1",
        )?;
        ensure(
            !self.partition_field.trim().is_empty(),
            "data.partition_field",
            "is empty; accepted: label or an item field such as subject, category",
        )?;
        if let Some(train) = &self.train {
            ensure(
                self.corpus.is_none() && self.path.is_none(),
                "data.train",
                "set either a dataset (`data.train`) or a text (`data.corpus` / `data.path`), not both",
            )?;
            check_source(train, "data.train")?;
            if let Some(eval) = &self.eval {
                check_source(eval, "data.eval")?;
                if is_dataset_spec(train) && is_dataset_spec(eval) {
                    let e = DatasetSpec::parse(eval, "data.eval")?;
                    let t = DatasetSpec::parse(train, "data.train")?;
                    if e.name == t.name && e.split == t.split {
                        let (a, b) = (t.slice.range(1_000_000), e.slice.range(1_000_000));
                        ensure(
                            a.end <= b.start || b.end <= a.start,
                            "data.eval",
                            format!(
                                "`{eval}` overlaps `data.train` = `{train}`; use disjoint slices \
                                 (e.g. `[:80%]` and `[80%:]`) or another split"
                            ),
                        )?;
                    }
                }
            }
        } else if self.eval.is_some() {
            return Err(Error::config(
                "data.eval",
                "needs `data.train` (a dataset to fine-tune on); a corpus holds out `eval_fraction` instead",
            ));
        }
        Ok(())
    }

    /// Where the text comes from: `path` if set, else `corpus`, else [`DEFAULT_CORPUS`].
    pub fn source(&self) -> CorpusSource {
        match (&self.path, &self.corpus) {
            (Some(path), _) => CorpusSource::File(path.clone()),
            (None, Some(name)) => CorpusSource::Builtin(name.clone()),
            (None, None) => CorpusSource::Builtin(DEFAULT_CORPUS.to_string()),
        }
    }
}
