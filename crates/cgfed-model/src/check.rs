//! A quick sanity check of a loaded model ([`check_model`]): mean NLL on a fixed English
//! passage and a short greedy continuation of a fixed prompt.
//!
//! SmolLM2-135M-Instruct (GGUF Q4_1) scores 1.59 nats/token on [`CHECK_PASSAGE`] and
//! continues [`CHECK_PROMPT`] with " west." (candle-transformers' `quantized_llama` on the
//! same file agrees within ≈0.01 nats/token on similar passages); a broken loader (wrong
//! Q/K permutation, tokenizer or dequantization) scores far worse, random weights
//! ≈`ln(vocab)`.

use candle_core::{IndexOp, Tensor, D};
use candle_nn::ops::log_softmax;
use cgfed_core::{Error, Result, TextTokenizer};

use crate::model::Llama;

/// The passage scored by [`check_model`]: ordinary encyclopedic English, 80 tokens with
/// SmolLM2's tokenizer.
pub const CHECK_PASSAGE: &str = "Paris is the capital and largest city of France. It is \
located on the Seine River, in the north of the country. Paris is known for its museums and \
monuments, including the Louvre and the Eiffel Tower. Millions of tourists visit the city \
every year. The city is also famous for its food, fashion, and art. Many famous painters and \
writers have lived and worked in Paris.";

/// The prompt continued greedily by [`check_model`].
pub const CHECK_PROMPT: &str = "The sun rises in the east and sets in the";

/// What [`check_model`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Mean negative log-likelihood (nats per predicted token) of [`CHECK_PASSAGE`].
    pub nll: f64,
    /// Number of predicted tokens the mean is over.
    pub tokens: usize,
    /// The prompt ([`CHECK_PROMPT`]).
    pub prompt: String,
    /// The decoded greedy continuation (without the prompt).
    pub continuation: String,
}

/// Score [`CHECK_PASSAGE`] and greedily continue [`CHECK_PROMPT`] by up to
/// `max_new_tokens` tokens (stopping at EOS), on plain text without BOS. Same as
/// [`check_model_with_bos`] with `add_bos = false` (right for SmolLM2, whose GGUF says
/// `tokenizer.ggml.add_bos_token = false`).
pub fn check_model(
    model: &Llama,
    tok: &dyn TextTokenizer,
    max_new_tokens: usize,
) -> Result<CheckReport> {
    check_model_with_bos(model, tok, max_new_tokens, false)
}

/// [`check_model`], prepending the tokenizer's BOS id to both texts when `add_bos` is
/// true and the tokenizer has one (see
/// [`GgufModel::add_bos_token`](crate::gguf::GgufModel::add_bos_token)).
///
/// Decoding re-runs the full forward pass for each new token (no KV cache): meant for a
/// handful of tokens.
pub fn check_model_with_bos(
    model: &Llama,
    tok: &dyn TextTokenizer,
    max_new_tokens: usize,
    add_bos: bool,
) -> Result<CheckReport> {
    let bos = if add_bos { tok.bos_id() } else { None };
    let with_bos =
        |text: &str| -> Result<Vec<u32>> { Ok(bos.into_iter().chain(tok.encode(text)?).collect()) };
    let max_len = model.spec().max_seq_len;
    let device = model.device();

    let ids = with_bos(CHECK_PASSAGE)?;
    if ids.len() < 2 || ids.len() > max_len {
        return Err(Error::InvalidInput(format!(
            "the check passage is {} tokens; the model accepts 2..={max_len}",
            ids.len()
        )));
    }
    let n = ids.len();
    let input = Tensor::new(&ids[..n - 1], device)?.unsqueeze(0)?;
    let targets = Tensor::new(&ids[1..], device)?.unsqueeze(1)?;
    let logits = model
        .forward(&input)?
        .squeeze(0)?
        .to_dtype(candle_core::DType::F64)?;
    let logp = log_softmax(&logits, D::Minus1)?;
    let total: f64 = logp.gather(&targets, 1)?.sum_all()?.to_scalar()?;
    let tokens = n - 1;
    let nll = -total / tokens as f64;

    let mut seq = with_bos(CHECK_PROMPT)?;
    let prompt_len = seq.len();
    for _ in 0..max_new_tokens {
        if seq.len() >= max_len {
            break;
        }
        let input = Tensor::new(seq.as_slice(), device)?.unsqueeze(0)?;
        let logits = model.forward(&input)?.i((0, seq.len() - 1))?;
        let next: u32 = logits.argmax(0)?.to_scalar()?;
        if Some(next) == tok.eos_id() {
            break;
        }
        seq.push(next);
    }
    let continuation = tok.decode(&seq[prompt_len..])?;
    Ok(CheckReport {
        nll,
        tokens,
        prompt: CHECK_PROMPT.to_string(),
        continuation,
    })
}
