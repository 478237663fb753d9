//! Log-likelihood scoring of continuations ([`score_requests`]), the engine behind
//! [`Trainer::score`](cgfed_core::Trainer::score) for [`LlamaTrainer`](crate::LlamaTrainer):
//! multiple-choice evaluation (ARC, MMLU, …) scores each answer option as a continuation of
//! the question.
//!
//! # What is computed
//!
//! A request becomes the sequence `s = [BOS] + context + continuation` (BOS only when the
//! model uses one). The model reads `s[..len-1]`; position `j` predicts `s[j + 1]`, and the
//! positions that predict continuation tokens are the ones scored:
//! `logprob = Σ log_softmax(logits[j])[s[j + 1]]` over them, and `greedy` says whether each
//! of those tokens is its row's maximum (ties count).
//!
//! # Fitting the model
//!
//! The model reads `len(s) - 1` tokens, at most `max_seq_len`. A context that is too long
//! loses its oldest tokens (BOS stays first). A continuation longer than `max_seq_len` can
//! never fit and is an error naming the request, as is an empty continuation, a token id
//! outside the vocabulary, or an empty context when the model has no BOS (the first
//! continuation token would have nothing to be predicted from).
//!
//! # Batching and padding
//!
//! Requests are sorted by model input length, longest first (ties by request index, so the
//! grouping is deterministic), and cut greedily into batches whose padded size
//! `rows × longest input` stays within a token budget (the trainer uses
//! `trainer.batch_size × model.max_seq_len`, the size of a full training batch, so scoring
//! never needs more activation memory than training; a single request always forms a
//! batch). Longest first makes the biggest batch come first, so an out-of-memory shows at
//! once.
//!
//! Rows are **right**-padded with [`PAD_ID`]. With causal attention a position only sees
//! keys at or before it, so padding after a row's last real token cannot reach any real
//! position, and the real positions keep their absolute RoPE positions `0..n`: the logits are
//! those of the unpadded sequence without any attention mask. This is the same layout and
//! the same forward ([`Llama::hidden`]) as training and [`evaluate`](cgfed_core::Trainer::evaluate)
//! (see [`crate::batch`]). Left padding would need [`Llama::forward_masked`]'s padding bias.
//!
//! Each batch runs the model once. Only the hidden states of the scored positions go through
//! the output head (never a `[batch, seq, vocab]` tensor), in chunks of at most
//! [`HEAD_CHUNK_ELEMS`] logits, and log-softmax is taken over those rows in f32. Per-request
//! sums are accumulated in f64 and returned in the requests' order.
//!
//! candle has no global no-grad switch: the forward builds no gradients (nothing calls
//! `backward`), and everything it allocated is dropped with the batch.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::log_softmax;
use cgfed_core::{Error, Result, Score, ScoreRequest};

use crate::batch::PAD_ID;
use crate::model::Llama;

/// The most logits (`rows × vocab`) one output-head call materialises while scoring:
/// 2²⁴ (64 MiB in f32). Scored rows beyond that go through the head in several chunks.
pub const HEAD_CHUNK_ELEMS: usize = 1 << 24;

/// One request laid out for the model.
struct Prepared {
    /// Index of the request in the caller's slice.
    index: usize,
    /// Model input: `s[..len-1]`.
    input: Vec<u32>,
    /// Position in `input` of the first row that predicts a continuation token.
    first: usize,
    /// The continuation (the targets of rows `first..input.len()`).
    targets: Vec<u32>,
}

/// Lay out request `index` as `[BOS] + context (left-truncated) + continuation`, minus the
/// last token.
fn prepare(
    index: usize,
    req: &ScoreRequest,
    bos: Option<u32>,
    vocab_size: usize,
    max_seq_len: usize,
) -> Result<Prepared> {
    let n = req.continuation.len();
    if n == 0 {
        return Err(Error::InvalidInput(format!(
            "score request {index}: the continuation is empty; there is nothing to score"
        )));
    }
    if n > max_seq_len {
        return Err(Error::InvalidInput(format!(
            "score request {index}: the continuation alone has {n} tokens, more than \
             model.max_seq_len = {max_seq_len} can score; shorten it"
        )));
    }
    for (what, ids) in [
        ("context", &req.context),
        ("continuation", &req.continuation),
    ] {
        if let Some((p, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab_size)
        {
            return Err(Error::InvalidInput(format!(
                "score request {index}: {what} token id {id} at position {p} is out of range \
                 for the model's vocabulary of {vocab_size} ids (does the tokenizer match the \
                 model?)"
            )));
        }
    }
    let bos_len = usize::from(bos.is_some());
    if bos_len == 0 && req.context.is_empty() {
        return Err(Error::InvalidInput(format!(
            "score request {index}: the context is empty and the model uses no BOS token, so \
             the first continuation token has nothing to be predicted from; give a context"
        )));
    }
    // The input is bos + kept context + continuation minus its last token: at most
    // max_seq_len tokens. `n <= max_seq_len` leaves room for at least one prefix token.
    let room = max_seq_len + 1 - n - bos_len;
    let kept = &req.context[req.context.len().saturating_sub(room)..];
    let mut input = Vec::with_capacity(bos_len + kept.len() + n - 1);
    input.extend(bos);
    input.extend_from_slice(kept);
    let first = input.len() - 1;
    input.extend_from_slice(&req.continuation[..n - 1]);
    debug_assert!(input.len() <= max_seq_len && first + n == input.len());
    Ok(Prepared {
        index,
        input,
        first,
        targets: req.continuation.clone(),
    })
}

/// Group `order` (indices into `prepared`, longest input first) into batches whose padded
/// size `rows × longest input` is at most `token_budget` (one request at least).
fn group(prepared: &[Prepared], order: &[usize], token_budget: usize) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut width = 0;
    // Requests with the same input (e.g. one context scored against single-token
    // continuations ` A`, ` B`, …) share one row: only distinct inputs count.
    let mut distinct: std::collections::HashSet<&[u32]> = std::collections::HashSet::new();
    for &i in order {
        let input = prepared[i].input.as_slice();
        match batches.last_mut() {
            Some(b) if distinct.contains(input) => b.push(i),
            Some(b) if (distinct.len() + 1) * width <= token_budget => {
                distinct.insert(input);
                b.push(i)
            }
            _ => {
                width = input.len();
                distinct.clear();
                distinct.insert(input);
                batches.push(vec![i]);
            }
        }
    }
    batches
}

/// Score `requests` with `model`, prepending `bos` when it is `Some`, in batches of at most
/// `token_budget` padded tokens (see the [module docs](self)). Results are in the order of
/// `requests`; an empty slice gives an empty result.
///
/// The model must be in evaluation mode ([`Llama::train_seed`] is `None`, so no LoRA
/// dropout): an error otherwise. Deterministic.
pub fn score_requests(
    model: &Llama,
    bos: Option<u32>,
    requests: &[ScoreRequest],
    token_budget: usize,
) -> Result<Vec<Score>> {
    if model.train_seed().is_some() {
        return Err(Error::InvalidInput(
            "scoring needs the model in evaluation mode (no training seed / dropout)".into(),
        ));
    }
    let spec = model.spec();
    if let Some(b) = bos.filter(|&b| b as usize >= spec.vocab_size) {
        return Err(Error::InvalidInput(format!(
            "BOS id {b} is out of range for the model's vocabulary of {} ids",
            spec.vocab_size
        )));
    }
    let prepared = requests
        .iter()
        .enumerate()
        .map(|(i, r)| prepare(i, r, bos, spec.vocab_size, spec.max_seq_len))
        .collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    order.sort_by(|&a, &b| {
        prepared[b]
            .input
            .len()
            .cmp(&prepared[a].input.len())
            .then(a.cmp(&b))
    });
    let mut out: Vec<Option<Score>> = vec![None; requests.len()];
    for batch in group(&prepared, &order, token_budget) {
        let items: Vec<&Prepared> = batch.iter().map(|&i| &prepared[i]).collect();
        for (p, score) in items.iter().zip(score_batch(model, &items)?) {
            out[p.index] = Some(score);
        }
    }
    out.into_iter()
        .collect::<Option<Vec<Score>>>()
        .ok_or_else(|| Error::Other("scoring lost a request (a bug)".into()))
}

/// One forward over a right-padded batch; the scores of its items, in its order.
fn score_batch(model: &Llama, items: &[&Prepared]) -> Result<Vec<Score>> {
    let device = model.device();
    let width = items.iter().map(|p| p.input.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(items.len() * width);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    // One batch row per distinct input; requests with the same input read the same row.
    let mut row_of: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
    for p in items {
        let next = row_of.len();
        let b = *row_of.entry(p.input.as_slice()).or_insert_with(|| {
            ids.extend_from_slice(&p.input);
            ids.resize((next + 1) * width, PAD_ID);
            next
        });
        for (k, &t) in p.targets.iter().enumerate() {
            rows.push((b * width + p.first + k) as u32);
            targets.push(t);
        }
    }
    let ids = Tensor::from_vec(ids, (row_of.len(), width), device)?;
    let hidden = model.hidden(&ids)?;
    let hidden = hidden.reshape(((), model.spec().hidden_size))?;
    let (logprobs, greedy) = score_rows(model, &hidden, &rows, &targets, device)?;

    let mut scores = Vec::with_capacity(items.len());
    let mut at = 0;
    for p in items {
        let n = p.targets.len();
        scores.push(Score {
            logprob: logprobs[at..at + n].iter().map(|&v| f64::from(v)).sum(),
            tokens: n,
            greedy: greedy[at..at + n].iter().all(|&g| g),
        });
        at += n;
    }
    Ok(scores)
}

/// For each flat row of `hidden` `[batch·seq, hidden]` in `rows`: the log-probability of
/// its target and whether the target is the row's maximum. Only those rows go through the
/// head, in chunks of at most [`HEAD_CHUNK_ELEMS`] logits.
fn score_rows(
    model: &Llama,
    hidden: &Tensor,
    rows: &[u32],
    targets: &[u32],
    device: &Device,
) -> Result<(Vec<f32>, Vec<bool>)> {
    let chunk = (HEAD_CHUNK_ELEMS / model.spec().vocab_size.max(1)).max(1);
    let mut logprobs = Vec::with_capacity(rows.len());
    let mut greedy = Vec::with_capacity(rows.len());
    for (r, t) in rows.chunks(chunk).zip(targets.chunks(chunk)) {
        let idx = Tensor::new(r, device)?;
        let tgt = Tensor::new(t, device)?.unsqueeze(1)?;
        let h = hidden.index_select(&idx, 0)?;
        let logits = model.head(&h)?.detach().to_dtype(DType::F32)?;
        let lp = log_softmax(&logits, D::Minus1)?;
        let picked = lp.gather(&tgt, 1)?.squeeze(1)?;
        let best = lp.max(D::Minus1)?;
        let is_max = picked.ge(&best)?;
        logprobs.extend(picked.to_vec1::<f32>()?);
        greedy.extend(is_max.to_vec1::<u8>()?.into_iter().map(|v| v != 0));
    }
    Ok((logprobs, greedy))
}
