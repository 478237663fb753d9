//! The tokenizer rebuilt from GGUF metadata: a synthetic byte-level BPE vocabulary, and
//! SmolLM2's real one when the asset is in the cache (`cgfed fetch smollm2-135m`).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use cgfed_core::TextTokenizer;
use cgfed_model::assets::{asset_path, find_asset, is_present};
use cgfed_model::gguf_tokenizer::tokenizer_from_gguf;

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
fn byte_chars() -> Vec<char> {
    let keep = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if keep(b) {
                char::from_u32(b).expect("latin-1")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("bmp")
            }
        })
        .collect()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// Two control tokens, the 256 byte tokens, and the merges `h e`, `l l`, `he ll`,
/// `hell o`, `Ġ w`, `1 2`.
fn synthetic(pre: &str) -> HashMap<String, Value> {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_end|>".into()];
    tokens.extend(byte_chars().iter().map(|c| c.to_string()));
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "1 2"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![Value::I32(3), Value::I32(3)];
    types.extend((2..tokens.len()).map(|_| Value::I32(1)));
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    HashMap::from([
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), strings(&token_refs)),
        ("tokenizer.ggml.merges".into(), strings(&merges)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        (
            "tokenizer.chat_template".into(),
            Value::String("{{ messages }}".into()),
        ),
    ])
}

#[test]
fn synthetic_vocab_round_trips() -> anyhow::Result<()> {
    let md = synthetic("smollm");
    let tok = tokenizer_from_gguf(&md)?.expect("metadata has a tokenizer");
    assert_eq!(tok.vocab_size(), 2 + 256 + 6);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));

    let ids = tok.encode("hello world")?;
    let hello = tok.token_id("hello").expect("merged token");
    let space_w = tok.token_id("Ġw").expect("merged token");
    assert_eq!(ids[0], hello);
    assert_eq!(ids[1], space_w);
    assert_eq!(ids.len(), 2 + 4, "o r l d stay single bytes: {ids:?}");
    for text in [
        "hello world",
        "héllo, wörld! ✓",
        "tabs\tand\nnewlines  ",
        "42 apples",
    ] {
        assert_eq!(tok.decode(&tok.encode(text)?)?, text);
    }
    // Control tokens are special: matched whole in text and kept by decode.
    assert_eq!(tok.encode("hello<|im_end|>")?, vec![hello, 1]);
    assert_eq!(tok.decode(&[hello, 1])?, "hello<|im_end|>");
    // `smollm` splits off each digit before BPE, so the merge `1 2` never applies;
    // plain `gpt2` keeps a run of digits in one pre-token.
    assert_eq!(tok.encode("123")?.len(), 3);
    let gpt2 = tokenizer_from_gguf(&synthetic("gpt2"))?.expect("tokenizer");
    assert_eq!(
        gpt2.encode("123")?,
        vec![
            gpt2.token_id("12").expect("merged"),
            gpt2.token_id("3").expect("byte")
        ]
    );
    Ok(())
}

#[test]
fn unsupported_or_absent_tokenizer() -> anyhow::Result<()> {
    assert!(tokenizer_from_gguf(&HashMap::new())?.is_none());
    let mut md = synthetic("smollm");
    md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    let err = tokenizer_from_gguf(&md).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.model `llama`"), "{err}");
    let md = synthetic("qwen2");
    let err = tokenizer_from_gguf(&md).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.pre `qwen2`"), "{err}");
    let mut md = synthetic("gpt2");
    md.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(10_000));
    let err = tokenizer_from_gguf(&md).unwrap_err().to_string();
    assert!(err.contains("eos_token_id"), "{err}");
    let mut md = synthetic("gpt2");
    md.insert("tokenizer.ggml.merges".into(), strings(&["nospace"]));
    let err = tokenizer_from_gguf(&md).unwrap_err().to_string();
    assert!(err.contains("merges"), "{err}");
    Ok(())
}

#[test]
fn smollm2_tokenizer_when_present() -> anyhow::Result<()> {
    let spec = find_asset("smollm2-135m")?;
    if !is_present(spec) {
        println!("skipped: SmolLM2 asset not present; run `cgfed fetch smollm2-135m`");
        return Ok(());
    }
    let path = asset_path(spec);
    let mut f = std::fs::File::open(&path)?;
    let content = Content::read(&mut f)?;
    let tok = tokenizer_from_gguf(&content.metadata)?.expect("SmolLM2 ships a tokenizer");
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.eos_id(), tok.token_id("<|im_end|>"));
    assert_eq!(tok.bos_id(), tok.token_id("<|im_start|>"));
    assert!(tok
        .chat_template()
        .is_some_and(|t| t.contains("<|im_start|>")));
    for text in ["Hello world", "The sun rises in the east"] {
        let ids = tok.encode(text)?;
        println!("{text:?} -> {ids:?}");
        assert_eq!(
            ids.len(),
            text.split(' ').count(),
            "one token per common word"
        );
        assert_eq!(tok.decode(&ids)?, text);
    }
    let ids = tok.encode("In 2024")?;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| tok.decode(&[i]))
        .collect::<cgfed_core::Result<_>>()?;
    assert_eq!(pieces, ["In", " ", "2", "0", "2", "4"]);
    let chat = tok.encode("<|im_start|>user\nHi<|im_end|>")?;
    assert_eq!(chat.first(), tok.bos_id().as_ref());
    assert_eq!(chat.last(), tok.eos_id().as_ref());
    Ok(())
}
