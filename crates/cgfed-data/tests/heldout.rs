//! The held-out set never leaks into training; client shards are disjoint and cover the pool.

use std::collections::HashSet;

use cgfed_core::{Example, TextTokenizer};
use cgfed_data::corpus::SHAKESPEARE_EXCERPT;
use cgfed_data::split::{cut_windows, split_heldout};
use cgfed_data::{build_federated_data, ByteTokenizer, DataConfig};

fn sorted(mut v: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    v.sort_unstable();
    v
}

fn token_seqs<'a>(examples: impl IntoIterator<Item = &'a Example>) -> Vec<Vec<u32>> {
    examples.into_iter().map(|e| e.tokens.clone()).collect()
}

#[test]
fn corpus_windows_are_distinct_at_seq_len_64() {
    // Precondition of the token-sequence comparisons below.
    let tokens = ByteTokenizer.encode(SHAKESPEARE_EXCERPT).unwrap();
    let windows = cut_windows(&tokens, 64, Some(ByteTokenizer::BOS));
    let distinct: HashSet<_> = windows.iter().map(|e| &e.tokens).collect();
    assert_eq!(distinct.len(), windows.len());
}

#[test]
fn no_heldout_example_in_any_client() {
    let cfg = DataConfig::default();
    let data = build_federated_data(&cfg, &ByteTokenizer, 7, 3).unwrap();
    assert!(!data.eval.is_empty());
    let eval: HashSet<&Vec<u32>> = data.eval.iter().map(|e| &e.tokens).collect();
    for (c, shard) in data.clients.iter().enumerate() {
        for ex in shard {
            assert!(
                !eval.contains(&ex.tokens),
                "client {c} trains on a held-out example"
            );
        }
    }
}

#[test]
fn shards_are_disjoint_and_cover_the_pool() {
    let cfg = DataConfig {
        max_train_examples: Some(1000),
        ..DataConfig::default()
    };
    let seed = 11;
    let data = build_federated_data(&cfg, &ByteTokenizer, 6, seed).unwrap();

    // the pool, rebuilt from the public building blocks
    let tokens = ByteTokenizer.encode(SHAKESPEARE_EXCERPT).unwrap();
    let windows = cut_windows(&tokens, cfg.seq_len, Some(ByteTokenizer::BOS));
    let split = split_heldout(windows, &cfg, seed).unwrap();
    assert_eq!(split.train.len(), 1000);
    assert_eq!(token_seqs(&split.eval), token_seqs(&data.eval));

    let mut seen = HashSet::new();
    for shard in &data.clients {
        for ex in shard {
            assert!(
                seen.insert(ex.tokens.clone()),
                "an example is in two shards"
            );
        }
    }
    assert_eq!(
        sorted(token_seqs(data.clients.iter().flatten())),
        sorted(token_seqs(&split.train)),
        "the shards together are exactly the training pool"
    );
}

#[test]
fn examples_have_bos_and_full_length() {
    let cfg = DataConfig {
        seq_len: 17,
        ..DataConfig::default()
    };
    let data = build_federated_data(&cfg, &ByteTokenizer, 3, 0).unwrap();
    for ex in data.eval.iter().chain(data.clients.iter().flatten()) {
        assert_eq!(ex.tokens.len(), 17);
        assert_eq!(ex.tokens[0], ByteTokenizer::BOS);
        assert_eq!(ex.loss_start, 1);
        assert_eq!(ex.target_tokens(), 16);
        assert!(ex.tokens[1..].iter().all(|&t| t < 256));
    }
    let s = &data.summary;
    assert_eq!(s.windows, SHAKESPEARE_EXCERPT.len() / 16);
    assert_eq!(s.eval_size + s.train_size() + s.unused_windows, s.windows);
}

#[test]
fn eval_fraction_and_caps() {
    let tokens: Vec<u32> = (0..1000).collect();
    let windows = cut_windows(&tokens, 11, Some(5000)); // 100 windows of 10 tokens
    assert_eq!(windows.len(), 100);
    let cfg = DataConfig {
        seq_len: 11,
        eval_fraction: 0.25,
        ..DataConfig::default()
    };
    let full = split_heldout(windows.clone(), &cfg, 9).unwrap();
    assert_eq!(
        (full.eval.len(), full.train.len(), full.unused),
        (25, 75, 0)
    );

    // caps take prefixes: they never move a window from one side to the other
    let capped_cfg = DataConfig {
        max_eval_examples: Some(10),
        max_train_examples: Some(30),
        ..cfg.clone()
    };
    let capped = split_heldout(windows.clone(), &capped_cfg, 9).unwrap();
    assert_eq!(capped.eval[..], full.eval[..10]);
    assert_eq!(capped.train[..], full.train[..30]);
    assert_eq!(capped.unused, 60);

    // at least one example on each side
    let tiny = DataConfig {
        eval_fraction: 0.001,
        ..cfg.clone()
    };
    assert_eq!(
        split_heldout(windows.clone(), &tiny, 1).unwrap().eval.len(),
        1
    );
    let huge = DataConfig {
        eval_fraction: 0.999,
        ..cfg
    };
    assert_eq!(split_heldout(windows, &huge, 1).unwrap().train.len(), 1);
}
