//! The [`TextTokenizer`] trait, so data pipelines and models can agree on token ids without
//! depending on each other.

use crate::error::Result;

/// Text to token ids and back.
pub trait TextTokenizer: Send + Sync {
    /// Token ids of `text`, without BOS/EOS.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Text of `ids` (lossy for ids that are not text).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Number of ids (every id is `< vocab_size`).
    fn vocab_size(&self) -> usize;
    /// Beginning-of-sequence id, if the tokenizer has one.
    fn bos_id(&self) -> Option<u32>;
    /// End-of-sequence id, if the tokenizer has one.
    fn eos_id(&self) -> Option<u32>;
    /// The model's chat template (Jinja source, as in HF `tokenizer_config.json` or GGUF
    /// `tokenizer.chat_template`), if it has one. Default: none.
    fn chat_template(&self) -> Option<&str> {
        None
    }
}
