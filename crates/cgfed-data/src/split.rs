//! Cutting a token stream into examples, and the held-out split.
//!
//! The text is tokenized as one stream and cut into non-overlapping windows of
//! `seq_len - 1` tokens (a shorter tail is dropped). Each window becomes
//! `Example { tokens: [BOS] + window, loss_start: 1 }`, so every text token is a target and
//! each example has exactly `seq_len` tokens. A tokenizer without BOS gets windows of
//! `seq_len` text tokens instead, the first of which is context only.
//!
//! The windows are shuffled by the experiment seed ([`SPLIT_STREAM`]); the first
//! `round(eval_fraction × windows)` (at least 1, leaving at least 1) are held out and the
//! rest form the training pool. Caps take prefixes, so they never move a window between
//! the two sides: `max_eval_examples` keeps the first held-out windows (the others go
//! unused), `max_train_examples` the first training windows.

use cgfed_core::{Error, Example, Result};

use crate::config::DataConfig;
use crate::shuffle::{rng, shuffle, SPLIT_STREAM};

/// Cut `tokens` into non-overlapping examples of `seq_len` tokens (see the module docs).
/// `seq_len` must be at least 2; a shorter value gives no examples.
pub fn cut_windows(tokens: &[u32], seq_len: usize, bos: Option<u32>) -> Vec<Example> {
    if seq_len < 2 {
        return Vec::new();
    }
    match bos {
        Some(bos) => tokens
            .chunks_exact(seq_len - 1)
            .map(|w| {
                let mut t = Vec::with_capacity(seq_len);
                t.push(bos);
                t.extend_from_slice(w);
                Example {
                    tokens: t,
                    loss_start: 1,
                }
            })
            .collect(),
        None => tokens
            .chunks_exact(seq_len)
            .map(|w| Example {
                tokens: w.to_vec(),
                loss_start: 1,
            })
            .collect(),
    }
}

/// The held-out split of a set of windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The training pool (before partitioning among clients).
    pub train: Vec<Example>,
    /// The held-out evaluation examples.
    pub eval: Vec<Example>,
    /// Windows in neither set (cut off by `max_eval_examples` or `max_train_examples`).
    pub unused: usize,
}

/// Number of windows held out of `windows` for `eval_fraction`:
/// `round(eval_fraction × windows)`, clamped to `1..=windows-1` (needs `windows >= 2`).
pub fn heldout_count(windows: usize, eval_fraction: f64) -> usize {
    let n = (windows as f64 * eval_fraction).round() as usize;
    n.clamp(1, windows.saturating_sub(1).max(1))
}

/// Shuffle `windows` by `seed` and split them into held-out and training examples, using
/// `cfg.eval_fraction`, `cfg.max_eval_examples` and `cfg.max_train_examples`.
///
/// Fewer than 2 windows is a config error at `data.seq_len` (there must be something to
/// hold out and something to train on).
pub fn split_heldout(mut windows: Vec<Example>, cfg: &DataConfig, seed: u64) -> Result<Split> {
    let total = windows.len();
    if total < 2 {
        return Err(Error::config(
            "data.seq_len",
            format!(
                "the corpus gives only {total} example(s) of {} tokens; at least 2 are needed \
                 (one held out, one to train on): use a longer text or a smaller `data.seq_len`",
                cfg.seq_len
            ),
        ));
    }
    shuffle(&mut windows, &mut rng(seed, SPLIT_STREAM));
    let heldout = heldout_count(total, cfg.eval_fraction);
    let mut train = windows.split_off(heldout);
    let mut eval = windows;
    if let Some(cap) = cfg.max_eval_examples {
        eval.truncate(cap);
    }
    if let Some(cap) = cfg.max_train_examples {
        train.truncate(cap);
    }
    let unused = total - eval.len() - train.len();
    Ok(Split {
        train,
        eval,
        unused,
    })
}
