//! The byte tokenizer: round trips, id range, special tokens, lossy decoding.

use cgfed_core::TextTokenizer;
use cgfed_data::{build_tokenizer, ByteTokenizer, DataConfig};

fn round_trip(text: &str) {
    let tok = ByteTokenizer;
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.len(), text.len(), "one id per UTF-8 byte of {text:?}");
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    assert!(
        ids.iter().all(|&id| id < 256),
        "text never encodes to BOS/EOS"
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);
}

#[test]
fn round_trips_ascii() {
    round_trip("");
    round_trip("O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father.\t~");
    let all_ascii: String = (0u8..128).map(char::from).collect();
    round_trip(&all_ascii);
}

#[test]
fn round_trips_multibyte_utf8() {
    round_trip("héllo wörld, ça va ?");
    round_trip("日本語のテキスト");
    round_trip("emoji 🦀🎭 and math ∑∫√ and Ελληνικά");
    assert_eq!(ByteTokenizer.encode("é").unwrap(), vec![0xC3, 0xA9]);
}

#[test]
fn special_tokens_and_vocab() {
    let tok = ByteTokenizer;
    assert_eq!(tok.vocab_size(), 258);
    assert_eq!(tok.bos_id(), Some(256));
    assert_eq!(tok.eos_id(), Some(257));
    assert!((tok.bos_id().unwrap() as usize) < tok.vocab_size());
    assert!((tok.eos_id().unwrap() as usize) < tok.vocab_size());
    let mut ids = vec![ByteTokenizer::BOS];
    ids.extend(tok.encode("to be").unwrap());
    ids.push(ByteTokenizer::EOS);
    assert_eq!(
        tok.decode(&ids).unwrap(),
        "to be",
        "BOS/EOS decode to nothing"
    );
}

#[test]
fn decode_is_lossy_not_failing() {
    let tok = ByteTokenizer;
    // a truncated two-byte sequence and a stray continuation byte
    assert_eq!(tok.decode(&[b'a' as u32, 0xC3]).unwrap(), "a\u{FFFD}");
    assert_eq!(tok.decode(&[0x80, b'b' as u32]).unwrap(), "\u{FFFD}b");
    // ids outside the vocabulary
    assert_eq!(
        tok.decode(&[b'x' as u32, 258, 1_000_000]).unwrap(),
        "x\u{FFFD}\u{FFFD}"
    );
}

#[test]
fn build_tokenizer_default_is_bytes() {
    let tok = build_tokenizer(&DataConfig::default(), None).unwrap();
    assert_eq!(tok.vocab_size(), ByteTokenizer::VOCAB_SIZE);
    assert_eq!(
        tok.decode(&tok.encode("Macbeth").unwrap()).unwrap(),
        "Macbeth"
    );
}

#[test]
fn model_tokenizer_choice() {
    use cgfed_data::TokenizerKind;
    use std::sync::Arc;
    let model: Arc<dyn cgfed_core::TextTokenizer> = Arc::new(ByteTokenizer);
    let mut cfg = DataConfig::default();
    // auto: the model's when present
    assert!(Arc::ptr_eq(
        &build_tokenizer(&cfg, Some(model.clone())).unwrap(),
        &model
    ));
    cfg.tokenizer = TokenizerKind::Model;
    let msg = build_tokenizer(&cfg, None).err().unwrap().to_string();
    assert!(
        msg.contains("data.tokenizer") && msg.contains("no tokenizer"),
        "{msg}"
    );
    cfg.tokenizer = TokenizerKind::Bytes;
    let msg = build_tokenizer(&cfg, Some(model))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("data.tokenizer") && msg.contains("auto"),
        "{msg}"
    );
}
