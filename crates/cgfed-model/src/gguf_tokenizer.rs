//! Rebuilding a Hugging Face tokenizer from GGUF `tokenizer.ggml.*` metadata
//! ([`tokenizer_from_gguf`]).
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers
//! `tokenizer.ggml.pre` = `smollm` (each digit split off, then GPT-2's byte-level split, as
//! SmolLM2's `tokenizer.json`) and `gpt2` / `default` (GPT-2's byte-level split only).
//!
//! The tokenizer is: a BPE model over `tokenizer.ggml.tokens` (id = position) and
//! `tokenizer.ggml.merges` (`"a b"` strings), no normalizer, the pre-tokenizer above
//! (byte-level with `add_prefix_space = false`), a byte-level decoder, and every token of
//! `tokenizer.ggml.token_type` 3 (control) registered as a special added token (type 4,
//! user-defined, as a plain added token). BOS/EOS come from
//! `tokenizer.ggml.{bos,eos}_token_id`, the chat template from `tokenizer.chat_template`.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use cgfed_core::{Error, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::gguf::{meta, meta_opt, meta_str, meta_usize, value_usize};
use crate::tokenizer::HfTokenizer;

/// GGUF token type of control (special) tokens.
pub const TOKEN_TYPE_CONTROL: usize = 3;
/// GGUF token type of user-defined added tokens.
pub const TOKEN_TYPE_USER_DEFINED: usize = 4;

/// The tokenizer described by GGUF metadata: `None` when the file has no
/// `tokenizer.ggml.model`; an error for a tokenizer model or pre-tokenizer this function
/// does not support, or inconsistent metadata.
pub fn tokenizer_from_gguf(md: &HashMap<String, Value>) -> Result<Option<HfTokenizer>> {
    if !md.contains_key("tokenizer.ggml.model") {
        return Ok(None);
    }
    let model = meta_str(md, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::InvalidInput(format!(
            "tokenizer.ggml.model `{model}` is not supported (only `gpt2`, byte-level BPE)"
        )));
    }
    let tokens = string_array(md, "tokenizer.ggml.tokens")?;
    let merges = string_array(md, "tokenizer.ggml.merges")?;
    let types: Vec<usize> = match md.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                value_usize(v).ok_or_else(|| {
                    Error::InvalidInput(
                        "metadata `tokenizer.ggml.token_type` must hold non-negative integers"
                            .into(),
                    )
                })
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(Error::InvalidInput(format!(
                "metadata `tokenizer.ggml.token_type` must be an array, got {:?}",
                v.value_type()
            )))
        }
    };
    if types.len() != tokens.len() {
        return Err(Error::InvalidInput(format!(
            "metadata `tokenizer.ggml.token_type` has {} entries for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let pre = meta_opt(md, "tokenizer.ggml.pre", |md, k| {
        meta_str(md, k).map(str::to_string)
    })?
    .unwrap_or_else(|| "default".into());

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(Error::InvalidInput(
            "metadata `tokenizer.ggml.tokens` holds duplicate tokens".into(),
        ));
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "metadata `tokenizer.ggml.merges`[{i}] = {m:?} is not two tokens \
                         separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::InvalidInput(format!("cannot build the BPE tokenizer: {e}")))?;

    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "gpt2" | "gpt-2" | "default" => byte_level.into(),
        other => {
            return Err(Error::InvalidInput(format!(
                "tokenizer.ggml.pre `{other}` is not supported (supported: smollm, gpt2, default)"
            )))
        }
    };
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
        .map(|(s, _)| AddedToken::from(s.to_string(), true))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
        .map(|(s, _)| AddedToken::from(s.to_string(), false))
        .collect();
    tok.add_special_tokens(special)
        .map_err(|e| Error::InvalidInput(format!("cannot add special tokens: {e}")))?;
    tok.add_tokens(user)
        .map_err(|e| Error::InvalidInput(format!("cannot add user-defined tokens: {e}")))?;

    let id = |key: &str| -> Result<Option<u32>> {
        let Some(v) = meta_opt(md, key, meta_usize)? else {
            return Ok(None);
        };
        if v >= tokens.len() {
            return Err(Error::InvalidInput(format!(
                "metadata `{key}` = {v} is out of range for {} tokens",
                tokens.len()
            )));
        }
        Ok(Some(v as u32))
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let eos = id("tokenizer.ggml.eos_token_id")?;
    let template = meta_opt(md, "tokenizer.chat_template", |md, k| {
        meta_str(md, k).map(str::to_string)
    })?;
    Ok(Some(
        HfTokenizer::new(tok, bos, eos).with_chat_template(template),
    ))
}

/// Whether the model expects a BOS token in front of every sequence
/// (`tokenizer.ggml.add_bos_token`; absent means no).
pub fn add_bos_token(md: &HashMap<String, Value>) -> Result<bool> {
    Ok(meta_opt(md, "tokenizer.ggml.add_bos_token", crate::gguf::meta_bool)?.unwrap_or(false))
}

fn string_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Vec<&'a str>> {
    let err = || Error::InvalidInput(format!("metadata `{key}` must be an array of strings"));
    match meta(md, key)? {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(err()),
            })
            .collect(),
        _ => Err(err()),
    }
}
