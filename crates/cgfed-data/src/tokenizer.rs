//! Tokenizers of the data pipeline: [`ByteTokenizer`] (UTF-8 bytes plus BOS/EOS) and
//! [`build_tokenizer`], which picks one by the `data.tokenizer` key.

use std::sync::Arc;

use cgfed_core::{Result, TextTokenizer};

use crate::config::{DataConfig, TokenizerKind};
use cgfed_core::Error;

/// Bytes of U+FFFD REPLACEMENT CHARACTER, written for ids that are not text.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// A tokenizer with one id per UTF-8 byte: ids `0..=255` are the bytes, [`BOS`](Self::BOS)
/// = 256 and [`EOS`](Self::EOS) = 257, so [`vocab_size`](TextTokenizer::vocab_size) is 258.
///
/// It needs no vocabulary file, encodes any text, and gives a tiny embedding table, which
/// suits the small random LLaMA presets used in tests and quick experiments. One character
/// of English text is one token.
///
/// [`decode`](TextTokenizer::decode) is lossy and never fails: BOS and EOS are dropped, an
/// invalid UTF-8 byte sequence or an id outside the vocabulary becomes U+FFFD.
///
/// ```
/// use cgfed_core::TextTokenizer;
/// use cgfed_data::ByteTokenizer;
///
/// let tok = ByteTokenizer;
/// let ids = tok.encode("hé").unwrap();
/// assert_eq!(ids, vec![104, 0xC3, 0xA9]);
/// assert_eq!(tok.decode(&ids).unwrap(), "hé");
/// assert_eq!(tok.vocab_size(), 258);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Beginning-of-sequence id.
    pub const BOS: u32 = 256;
    /// End-of-sequence id.
    pub const EOS: u32 = 257;
    /// Number of ids: 256 bytes + BOS + EOS.
    pub const VOCAB_SIZE: usize = 258;
}

impl TextTokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len());
        for &id in ids {
            match u8::try_from(id) {
                Ok(b) => bytes.push(b),
                Err(_) if id == Self::BOS || id == Self::EOS => {}
                Err(_) => bytes.extend_from_slice(REPLACEMENT),
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }

    fn bos_id(&self) -> Option<u32> {
        Some(Self::BOS)
    }

    fn eos_id(&self) -> Option<u32> {
        Some(Self::EOS)
    }
}

/// The tokenizer named by `cfg.tokenizer` (`data.tokenizer`), given the model's own
/// tokenizer if it has one.
///
/// `auto` takes the model's tokenizer when there is one and [`ByteTokenizer`] otherwise;
/// `model` requires it; `bytes` always uses [`ByteTokenizer`], which is an error for a model
/// with its own vocabulary (its ids would not mean what the checkpoint learned). Unknown
/// names never get here: parsing the `[data]` table rejects them with an error at
/// `data.tokenizer` that lists the accepted names (see [`TokenizerKind`]).
pub fn build_tokenizer(
    cfg: &DataConfig,
    model_tokenizer: Option<Arc<dyn TextTokenizer>>,
) -> Result<Arc<dyn TextTokenizer>> {
    match (cfg.tokenizer, model_tokenizer) {
        (TokenizerKind::Auto | TokenizerKind::Model, Some(t)) => Ok(t),
        (TokenizerKind::Auto, None) => Ok(Arc::new(ByteTokenizer)),
        (TokenizerKind::Model, None) => Err(Error::config(
            "data.tokenizer",
            "\"model\": the model has no tokenizer of its own (random presets don't); use \"bytes\" or \"auto\"",
        )),
        (TokenizerKind::Bytes, None) => Ok(Arc::new(ByteTokenizer)),
        (TokenizerKind::Bytes, Some(t)) => Err(Error::config(
            "data.tokenizer",
            format!(
                "\"bytes\" does not fit a model with its own {}-token vocabulary; use \"auto\" or \"model\"",
                t.vocab_size()
            ),
        )),
    }
}
