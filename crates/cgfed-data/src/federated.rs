//! [`build_federated_data`]: corpus → tokens → examples → held-out split → client shards.

use cgfed_core::{Example, Result, TextTokenizer};

use crate::config::DataConfig;
use crate::partition::partition;
use crate::split::{cut_windows, split_heldout};
use crate::summary::PartitionSummary;

/// The data of one federated experiment.
#[derive(Debug, Clone)]
pub struct FederatedData {
    /// Each client's training examples, by client index.
    pub clients: Vec<Vec<Example>>,
    /// Held-out examples for evaluation (never in any client's data).
    pub eval: Vec<Example>,
    /// Sizes, for logs and reports.
    pub summary: PartitionSummary,
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
/// ([`Error::Io`](cgfed_core::Error::Io) with its path), a corpus too small for `seq_len`
/// (key `data.seq_len`), too few training examples for `num_clients`
/// (key `federation.clients` / `data.min_examples_per_client`).
pub fn build_federated_data(
    cfg: &DataConfig,
    tokenizer: &dyn TextTokenizer,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData> {
    cfg.validate()?;
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
    };
    Ok(FederatedData {
        clients,
        eval: split.eval,
        summary,
    })
}
