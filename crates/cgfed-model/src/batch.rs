//! Batches of [`Example`]s, the next-token loss on them, and deterministic batch sampling.
//!
//! An example of `n` tokens feeds its first `n - 1` tokens to the model; position `j`
//! predicts token `j + 1`, and token `j + 1` is a target when `j + 1 >= max(loss_start, 1)`.
//! Examples are right-padded to the longest input of the batch; padded positions are never
//! targets, and with causal attention they cannot influence the real positions before them.

use candle_core::{Device, Tensor};
use cgfed_core::{Error, Example, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::Llama;
use crate::ops::cross_entropy::cross_entropy_sum;

/// Token id used for padding (any valid id works: padded positions are masked out).
pub const PAD_ID: u32 = 0;

/// Error unless every example fits the model: at most `max_seq_len` tokens, every id
/// below `vocab_size`. Messages name the example index.
pub fn check_examples(data: &[Example], vocab_size: usize, max_seq_len: usize) -> Result<()> {
    for (i, ex) in data.iter().enumerate() {
        if ex.tokens.len() > max_seq_len {
            return Err(Error::InvalidInput(format!(
                "example {i} has {} tokens, more than model.max_seq_len = {max_seq_len}; \
                 truncate or split it, or raise model.max_seq_len",
                ex.tokens.len()
            )));
        }
        if let Some((p, &id)) = ex
            .tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab_size)
        {
            return Err(Error::InvalidInput(format!(
                "example {i}: token id {id} at position {p} is out of range for the model's \
                 vocabulary of {vocab_size} ids (does the tokenizer match the model?)"
            )));
        }
    }
    Ok(())
}

/// A padded batch with its target positions.
///
/// # Shapes
/// `ids` `[batch, seq]` u32 (`seq` = longest input, i.e. longest example minus one);
/// `rows` `[n]` u32: flat indices `b * seq + j` of the positions that predict a target;
/// `targets` `[n]` u32: the token each of those positions must predict.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input token ids `[batch, seq]`.
    pub ids: Tensor,
    /// Flat positions that carry a target `[n]`.
    pub rows: Tensor,
    /// The target token of each row `[n]`.
    pub targets: Tensor,
    /// `n`, the number of target tokens.
    pub num_targets: usize,
}

impl Batch {
    /// Pad `examples` into a batch. Error if no example has a target token (every example
    /// needs at least two tokens and `loss_start < len`).
    pub fn new(examples: &[&Example], device: &Device) -> Result<Self> {
        let seq = examples
            .iter()
            .map(|e| e.tokens.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let mut ids = Vec::with_capacity(examples.len() * seq);
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (b, ex) in examples.iter().enumerate() {
            let input = &ex.tokens[..ex.tokens.len().saturating_sub(1)];
            ids.extend_from_slice(input);
            ids.resize((b + 1) * seq, PAD_ID);
            for tgt_pos in ex.loss_start.max(1)..ex.tokens.len() {
                rows.push((b * seq + tgt_pos - 1) as u32);
                targets.push(ex.tokens[tgt_pos]);
            }
        }
        if targets.is_empty() {
            return Err(Error::InvalidInput(
                "batch has no target tokens (examples need at least two tokens and \
                 loss_start < len)"
                    .into(),
            ));
        }
        let n = targets.len();
        Ok(Self {
            ids: Tensor::from_vec(ids, (examples.len(), seq), device)?,
            rows: Tensor::from_vec(rows, n, device)?,
            targets: Tensor::from_vec(targets, n, device)?,
            num_targets: n,
        })
    }
}

/// Sum of the negative log-likelihoods of the batch's targets: a differentiable scalar.
/// Divide by [`Batch::num_targets`] for the mean.
///
/// Only the target rows go through the output head and the (fused) cross-entropy.
pub fn nll_sum(model: &Llama, batch: &Batch) -> Result<Tensor> {
    let h = model.hidden(&batch.ids)?;
    let hidden = model.spec().hidden_size;
    let h = h.reshape(((), hidden))?.index_select(&batch.rows, 0)?;
    cross_entropy_sum(&model.head(&h)?, &batch.targets)
}

/// Mean next-token loss of the batch (a differentiable scalar).
pub fn mean_nll(model: &Llama, batch: &Batch) -> Result<Tensor> {
    Ok((nll_sum(model, batch)? / batch.num_targets as f64)?)
}

/// Deterministic batch order: a seeded shuffle of the examples that have targets, taken
/// `batch_size` at a time and reshuffled when exhausted (epochs without replacement).
/// The batch size is capped at the number of such examples.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    eligible: Vec<usize>,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
    rng: ChaCha8Rng,
}

impl BatchSampler {
    /// A sampler over `data` seeded by `seed`. Error if no example has a target token.
    pub fn new(data: &[Example], batch_size: usize, seed: u64) -> Result<Self> {
        let eligible: Vec<usize> = (0..data.len())
            .filter(|&i| data[i].target_tokens() > 0)
            .collect();
        if eligible.is_empty() {
            return Err(Error::InvalidInput(format!(
                "none of the {} examples has a target token (examples need at least two \
                 tokens and loss_start < len)",
                data.len()
            )));
        }
        let batch_size = batch_size.clamp(1, eligible.len());
        Ok(Self {
            order: Vec::new(),
            eligible,
            pos: 0,
            batch_size,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Indices of the next batch.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.batch_size);
        while out.len() < self.batch_size {
            if self.pos == self.order.len() {
                self.order = self.eligible.clone();
                self.order.shuffle(&mut self.rng);
                self.pos = 0;
            }
            let take = (self.batch_size - out.len()).min(self.order.len() - self.pos);
            out.extend_from_slice(&self.order[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }
}
