//! The IID partition: near-equal shard sizes and the minimum-size check.

use cgfed_core::{Error, Example};
use cgfed_data::partition::{iid_shard_sizes, partition, partition_iid};
use cgfed_data::{build_federated_data, ByteTokenizer, DataConfig, PartitionMethod};

fn pool(n: usize) -> Vec<Example> {
    (0..n as u32)
        .map(|i| Example {
            tokens: vec![256, i],
            loss_start: 1,
        })
        .collect()
}

#[test]
fn sizes_differ_by_at_most_one() {
    for n in [1usize, 7, 10, 99, 100, 101, 1000] {
        for k in 1..=n.min(13) {
            let shards = partition_iid(pool(n), k, 1, 5).unwrap();
            let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
            assert_eq!(sizes, iid_shard_sizes(n, k));
            assert_eq!(sizes.iter().sum::<usize>(), n);
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "n={n} k={k}: {sizes:?}");
        }
    }
    assert_eq!(iid_shard_sizes(10, 4), vec![3, 3, 2, 2]);
}

#[test]
fn partition_shuffles() {
    let shards = partition(pool(100), PartitionMethod::Iid, 2, 1, 0).unwrap();
    let first: Vec<u32> = shards[0].iter().map(|e| e.tokens[1]).collect();
    assert_ne!(
        first,
        (0..50).collect::<Vec<u32>>(),
        "not just contiguous chunks"
    );
}

#[test]
fn min_examples_per_client_violation_names_the_key() {
    // 10 examples over 3 clients: smallest shard 3
    assert!(partition_iid(pool(10), 3, 3, 0).is_ok());
    let err = partition_iid(pool(10), 3, 4, 0).unwrap_err();
    assert!(matches!(err, Error::Config { ref key, .. } if key == "data.min_examples_per_client"));
    let msg = err.to_string();
    assert!(msg.contains("data.min_examples_per_client"), "{msg}");
    assert!(msg.contains("federation.clients"), "{msg}");
}

#[test]
fn more_clients_than_examples_is_an_error() {
    let err = partition_iid(pool(5), 6, 1, 0).unwrap_err();
    assert!(err.to_string().contains("federation.clients"), "{err}");
    let err = partition_iid(pool(5), 0, 1, 0).unwrap_err();
    assert!(err.to_string().contains("federation.clients"), "{err}");
}

#[test]
fn build_reports_a_too_small_pool() {
    let cfg = DataConfig {
        max_train_examples: Some(20),
        min_examples_per_client: 5,
        ..DataConfig::default()
    };
    assert!(build_federated_data(&cfg, &ByteTokenizer, 4, 0).is_ok());
    let err = build_federated_data(&cfg, &ByteTokenizer, 5, 0).unwrap_err();
    assert!(
        err.to_string().contains("data.min_examples_per_client"),
        "{err}"
    );
}
