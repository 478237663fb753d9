//! `[data]` parsing and validation: errors name `data.<key>` and the accepted values.

use cgfed_core::Error;
use cgfed_data::{CorpusSource, DataConfig, PartitionMethod, TokenizerKind, DEFAULT_CORPUS};

fn parse(src: &str) -> cgfed_core::Result<DataConfig> {
    let table: toml::Table = toml::from_str(src).expect("test TOML is valid");
    DataConfig::from_table(&table)
}

fn err(src: &str) -> String {
    match parse(src) {
        Ok(cfg) => panic!("{src:?} was accepted: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_table_gives_documented_defaults() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg, DataConfig::default());
    assert_eq!(cfg.corpus, None);
    assert_eq!(cfg.path, None);
    assert_eq!(cfg.tokenizer, TokenizerKind::Auto);
    assert_eq!(cfg.seq_len, 64);
    assert_eq!(cfg.eval_fraction, 0.1);
    assert_eq!(cfg.max_eval_examples, None);
    assert_eq!(cfg.max_train_examples, None);
    assert_eq!(cfg.partition, PartitionMethod::Iid);
    assert_eq!(cfg.min_examples_per_client, 1);
    assert_eq!(cfg.source(), CorpusSource::Builtin(DEFAULT_CORPUS.into()));
}

#[test]
fn every_key_parses() {
    let cfg = parse(
        r#"
        corpus = "shakespeare-excerpt"
        tokenizer = "bytes"
        seq_len = 128
        eval_fraction = 0.2
        max_eval_examples = 50
        max_train_examples = 500
        partition = "iid"
        min_examples_per_client = 3
        "#,
    )
    .unwrap();
    assert_eq!(cfg.seq_len, 128);
    assert_eq!(cfg.max_eval_examples, Some(50));
    assert_eq!(cfg.max_train_examples, Some(500));
    assert_eq!(cfg.min_examples_per_client, 3);
    let cfg = parse(r#"path = "some/file.txt""#).unwrap();
    assert_eq!(cfg.source(), CorpusSource::File("some/file.txt".into()));
}

#[test]
fn unknown_key_is_named() {
    let msg = err("seq_length = 32");
    assert!(msg.contains("data.seq_length"), "{msg}");
    assert!(msg.contains("seq_len"), "lists accepted keys: {msg}");
}

#[test]
fn bad_partition_lists_every_method() {
    let msg = err(r#"partition = "pathological""#);
    assert!(msg.contains("data.partition"), "{msg}");
    for m in ["iid", "dirichlet", "by-field", "shards"] {
        assert!(msg.contains(m), "{m}: {msg}");
    }
}

#[test]
fn dataset_keys_are_checked() {
    for (toml, key, want) in [
        (r#"train = "nope:test""#, "data.train", "unknown dataset"),
        (
            r#"train = "arc-easy:train""#,
            "data.train",
            "no split `train`",
        ),
        (
            r#"eval = "arc-easy:validation""#,
            "data.eval",
            "needs `data.train`",
        ),
        (
            "train = \"mmlu:test[:80%]\"\neval = \"mmlu:test[50%:]\"",
            "data.eval",
            "overlaps",
        ),
        (
            "train = \"arc-easy:test\"\ncorpus = \"shakespeare-excerpt\"",
            "data.train",
            "not both",
        ),
        ("dirichlet_alpha = 0.0", "data.dirichlet_alpha", "> 0"),
        (
            "shards_per_client = 0",
            "data.shards_per_client",
            "at least 1",
        ),
        (r#"prompt_format = "essay""#, "data.prompt_format", "cloze"),
        (r#"chat = "maybe""#, "data.chat", "auto"),
    ] {
        let msg = err(toml);
        assert!(msg.contains(key) && msg.contains(want), "{toml}: {msg}");
    }
    let ok = parse("train = \"mmlu:test[:80%]\"\neval = \"mmlu:test[80%:]\"\npartition = \"by-field\"\npartition_field = \"subject\"");
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn bad_tokenizer_lists_bytes() {
    let e = parse(r#"tokenizer = "gpt2""#).unwrap_err();
    assert!(
        matches!(e, Error::Config { ref key, .. } if key == "data.tokenizer"),
        "{e}"
    );
    assert!(e.to_string().contains("bytes"), "{e}");
}

#[test]
fn eval_fraction_out_of_range() {
    for v in ["0.0", "1.0", "1.5", "-0.1", "nan", "inf"] {
        let msg = err(&format!("eval_fraction = {v}"));
        assert!(msg.contains("data.eval_fraction"), "{v}: {msg}");
    }
    assert!(parse("eval_fraction = 0.5").is_ok());
}

#[test]
fn seq_len_out_of_range() {
    for v in ["0", "1", "4097", "-3"] {
        let msg = err(&format!("seq_len = {v}"));
        assert!(msg.contains("data.seq_len"), "{v}: {msg}");
    }
    assert!(parse("seq_len = 2").is_ok());
    assert!(parse("seq_len = 4096").is_ok());
}

#[test]
fn zero_caps_and_minimum_are_rejected() {
    for key in [
        "max_eval_examples",
        "max_train_examples",
        "min_examples_per_client",
    ] {
        let msg = err(&format!("{key} = 0"));
        assert!(msg.contains(&format!("data.{key}")), "{msg}");
    }
}

#[test]
fn wrong_type_is_named() {
    let msg = err(r#"seq_len = "64""#);
    assert!(msg.contains("data.seq_len"), "{msg}");
}

#[test]
fn unknown_corpus_lists_builtins() {
    let msg = err(r#"corpus = "hamlet""#);
    assert!(msg.contains("data.corpus"), "{msg}");
    assert!(msg.contains("shakespeare-excerpt"), "{msg}");
}

#[test]
fn corpus_and_path_are_exclusive() {
    let msg = err(r#"
        corpus = "shakespeare-excerpt"
        path = "mine.txt"
        "#);
    assert!(
        msg.contains("data.path") && msg.contains("data.corpus"),
        "{msg}"
    );
    let msg = err(r#"path = """#);
    assert!(msg.contains("data.path"), "{msg}");
}

#[test]
fn serializes_back_to_an_equal_config() {
    let cfg = parse("seq_len = 48\nmax_train_examples = 10").unwrap();
    let text = toml::to_string(&cfg).unwrap();
    let back = parse(&text).unwrap();
    assert_eq!(cfg, back, "{text}");
}
