//! [`HfTokenizer`]: a Hugging Face `tokenizers::Tokenizer` (from a `tokenizer.json` or
//! rebuilt from GGUF metadata) behind cgfed's [`TextTokenizer`] interface, with the model's
//! BOS/EOS ids and chat template.

use std::path::Path;

use cgfed_core::{Error, Result, TextTokenizer};

/// A real model's tokenizer.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl HfTokenizer {
    /// Wrap a tokenizer with its special ids.
    pub fn new(inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Option<u32>) -> Self {
        Self {
            inner,
            bos,
            eos,
            chat_template: None,
        }
    }

    /// Load a `tokenizer.json`; BOS/EOS are looked up among common special tokens
    /// (`<|im_start|>`/`<|im_end|>`, `<s>`/`</s>`, `<|endoftext|>`, `<|begin_of_text|>`/`<|end_of_text|>`)
    /// unless set later with [`HfTokenizer::with_special_ids`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            Error::InvalidInput(format!("{}: cannot load tokenizer: {e}", path.display()))
        })?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(&["<|begin_of_text|>", "<s>", "<|im_start|>", "<|endoftext|>"]);
        let eos = find(&["<|end_of_text|>", "</s>", "<|im_end|>", "<|endoftext|>"]);
        Ok(Self::new(inner, bos, eos))
    }

    /// Set BOS/EOS explicitly (e.g. from `config.json` or GGUF metadata).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos = bos;
        self.eos = eos;
        self
    }

    /// Attach the model's chat template (Jinja source).
    pub fn with_chat_template(mut self, template: Option<String>) -> Self {
        self.chat_template = template;
        self
    }

    /// The chat template, if the model ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::InvalidInput(format!("tokenizer cannot encode text: {e}")))
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::InvalidInput(format!("tokenizer cannot decode ids: {e}")))
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
