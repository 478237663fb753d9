//! [`PartitionSummary`]: what the data pipeline built, for logs and reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::PartitionMethod;

/// Sizes of everything [`build_federated_data`](crate::build_federated_data) produced.
/// Serializes to JSON for run records; [`Display`](fmt::Display) prints a short table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// The built-in corpus name or the text file path.
    pub corpus: String,
    /// Tokens in the whole corpus (before cutting into windows).
    pub total_tokens: usize,
    /// Tokens per example, BOS included.
    pub seq_len: usize,
    /// Examples cut from the corpus.
    pub windows: usize,
    /// Windows in neither the training pool nor the evaluation set (cut off by caps).
    pub unused_windows: usize,
    /// How the pool was partitioned.
    pub method: PartitionMethod,
    /// Number of clients.
    pub num_clients: usize,
    /// Examples per client, by client index.
    pub client_sizes: Vec<usize>,
    /// Held-out evaluation examples.
    pub eval_size: usize,
}

impl PartitionSummary {
    /// Training examples over all clients.
    pub fn train_size(&self) -> usize {
        self.client_sizes.iter().sum()
    }
}

/// Clients listed one per line up to this many; above it, min / max only.
const MAX_LISTED_CLIENTS: usize = 16;

impl fmt::Display for PartitionSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "corpus {}: {} tokens -> {} examples of {} tokens",
            self.corpus, self.total_tokens, self.windows, self.seq_len
        )?;
        writeln!(
            f,
            "eval {} | train {} | unused {}",
            self.eval_size,
            self.train_size(),
            self.unused_windows
        )?;
        write!(
            f,
            "partition {} over {} clients",
            self.method, self.num_clients
        )?;
        if self.client_sizes.len() > MAX_LISTED_CLIENTS {
            let min = self.client_sizes.iter().min().copied().unwrap_or(0);
            let max = self.client_sizes.iter().max().copied().unwrap_or(0);
            return write!(f, ": {min}..={max} examples each");
        }
        write!(f, "\n  client  examples")?;
        for (i, n) in self.client_sizes.iter().enumerate() {
            write!(f, "\n  {i:>6}  {n:>8}")?;
        }
        Ok(())
    }
}
