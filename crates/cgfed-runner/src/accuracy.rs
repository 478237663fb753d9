//! Multiple-choice accuracy of the global model by log-likelihood scoring
//! ([`Trainer::score`]): every option of every item is scored as a continuation of the
//! item's prompt, and the best-scoring option is the model's answer.
//!
//! Two scorings (`[eval] accuracy`):
//! - `cloze`: the options' answer texts after `Question: …\nAnswer:`; reported both raw
//!   (`acc_cloze`: highest total log-probability) and length-normalised
//!   (`acc_cloze_norm`: highest log-probability per character of the answer, OLMES's
//!   `acc_per_char`, which does not favour short answers);
//! - `letter`: the options listed with letters, the continuation ` A`, ` B`, …
//!   (`acc_letter`).
//!
//! Items with a `category` field (MMLU) also get a per-category breakdown. The result is
//! deterministic (scoring is batched but batch-independent, see the trainer).

use std::collections::BTreeMap;

use cgfed_core::{Result, ScoreRequest, TextTokenizer, Trainer};
use cgfed_data::prompts::{PromptFormat, Prompter};
use cgfed_data::records::McItem;
use serde::{Deserialize, Serialize};

/// Accuracy of one scoring on a set of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// `cloze` or `letter`.
    pub scoring: String,
    /// Items scored.
    pub items: usize,
    /// Metric name → accuracy in `[0, 1]` (`acc_cloze`, `acc_cloze_norm` or `acc_letter`).
    pub metrics: BTreeMap<String, f64>,
    /// Category → (metric name → accuracy), for items with a `category` field.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub by_category: BTreeMap<String, BTreeMap<String, f64>>,
    /// Expected accuracy of guessing uniformly (mean of 1 / options).
    pub chance: f64,
}

/// Scores `items` with `trainer` in `format` and returns the accuracies.
///
/// # Errors
/// Tokenizer, template or scoring errors (e.g. a trainer without scoring support).
pub fn mc_accuracy(
    trainer: &mut dyn Trainer,
    tok: &dyn TextTokenizer,
    items: &[McItem],
    format: PromptFormat,
    chat_template: Option<&str>,
) -> Result<AccuracyReport> {
    let prompter = Prompter::new(format, chat_template)?;
    let mut requests = Vec::new();
    let mut chars = Vec::new();
    for item in items {
        let context = tok.encode(&prompter.mc_context(item)?)?;
        for c in 0..item.choices.len() {
            let cont = prompter.mc_continuation(item, c);
            chars.push(cont.trim().chars().count().max(1));
            requests.push(ScoreRequest::new(context.clone(), tok.encode(&cont)?));
        }
    }
    let scores = trainer.score(&requests)?;
    let names: &[&str] = match format {
        PromptFormat::Cloze => &["acc_cloze", "acc_cloze_norm"],
        PromptFormat::Letter => &["acc_letter"],
    };
    // Per item: is the argmax (raw, per char) the answer?
    let mut at = 0;
    let mut hits: Vec<[bool; 2]> = Vec::with_capacity(items.len());
    for item in items {
        let n = item.choices.len();
        let raw: Vec<f64> = scores[at..at + n].iter().map(|s| s.logprob).collect();
        let norm: Vec<f64> = raw
            .iter()
            .zip(&chars[at..at + n])
            .map(|(l, &c)| l / c as f64)
            .collect();
        hits.push([argmax(&raw) == item.answer, argmax(&norm) == item.answer]);
        at += n;
    }
    let rate = |idx: &[usize], k: usize| -> f64 {
        if idx.is_empty() {
            return 0.0;
        }
        idx.iter().filter(|&&i| hits[i][k]).count() as f64 / idx.len() as f64
    };
    let all: Vec<usize> = (0..items.len()).collect();
    let metrics = names
        .iter()
        .enumerate()
        .map(|(k, n)| (n.to_string(), rate(&all, k)))
        .collect();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(c) = item.fields.get("category") {
            groups.entry(c.clone()).or_default().push(i);
        }
    }
    let by_category = groups
        .into_iter()
        .map(|(c, idx)| {
            let m = names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.to_string(), rate(&idx, k)))
                .collect();
            (c, m)
        })
        .collect();
    let chance = if items.is_empty() {
        0.0
    } else {
        items
            .iter()
            .map(|i| 1.0 / i.choices.len().max(1) as f64)
            .sum::<f64>()
            / items.len() as f64
    };
    Ok(AccuracyReport {
        scoring: format.as_str().to_string(),
        items: items.len(),
        metrics,
        by_category,
        chance,
    })
}

/// Index of the largest value (the first one on ties); 0 for an empty slice.
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
