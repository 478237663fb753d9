//! [`PartitionSummary`]: what the data pipeline built, for logs and reports.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::PartitionMethod;

/// Sizes of everything [`build_federated_data`](crate::build_federated_data) produced.
/// Serializes to JSON for run records; [`Display`](fmt::Display) prints a short table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
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
    /// The field the label histograms count (datasets), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_field: Option<String>,
    /// Per client, how many examples have each value of `partition_field`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_labels: Vec<BTreeMap<String, usize>>,
    /// Training items dropped because the evaluation set holds the same item.
    pub dropped_duplicates: usize,
    /// Items dropped because their completion does not fit in `seq_len` tokens.
    pub too_long: usize,
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
        if self.partition_field.is_some() {
            writeln!(
                f,
                "datasets {}: {} items -> {} tokens in examples of at most {} tokens",
                self.corpus, self.windows, self.total_tokens, self.seq_len
            )?;
        } else {
            writeln!(
                f,
                "corpus {}: {} tokens -> {} examples of {} tokens",
                self.corpus, self.total_tokens, self.windows, self.seq_len
            )?;
        }
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
        let field = self.partition_field.as_deref().unwrap_or("");
        write!(f, "\n  client  examples")?;
        if !field.is_empty() {
            write!(f, "  {field} (top 4)")?;
        }
        for (i, n) in self.client_sizes.iter().enumerate() {
            write!(f, "\n  {i:>6}  {n:>8}")?;
            if let Some(h) = self.client_labels.get(i) {
                let mut top: Vec<(&String, &usize)> = h.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let s: Vec<String> = top
                    .iter()
                    .take(4)
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                write!(f, "  {}", s.join(" "))?;
                if top.len() > 4 {
                    write!(f, " (+{} more)", top.len() - 4)?;
                }
            }
        }
        if self.dropped_duplicates > 0 || self.too_long > 0 {
            write!(
                f,
                "\n  dropped: {} training items also in the evaluation set, {} too long for seq_len",
                self.dropped_duplicates, self.too_long
            )?;
        }
        Ok(())
    }
}
