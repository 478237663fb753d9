//! The partition summary: numbers, JSON and the human table.

use cgfed_data::{build_federated_data, ByteTokenizer, DataConfig, PartitionMethod};

#[test]
fn summary_numbers_json_and_table() {
    let cfg = DataConfig {
        seq_len: 64,
        max_eval_examples: Some(100),
        max_train_examples: Some(1001),
        ..DataConfig::default()
    };
    let data = build_federated_data(&cfg, &ByteTokenizer, 4, 0).unwrap();
    let s = &data.summary;
    assert_eq!(s.corpus, "shakespeare-excerpt");
    assert_eq!(s.total_tokens, 341_371);
    assert_eq!(s.windows, 341_371 / 63);
    assert_eq!(s.method, PartitionMethod::Iid);
    assert_eq!(s.num_clients, 4);
    assert_eq!(s.client_sizes, vec![251, 250, 250, 250]);
    assert_eq!(s.eval_size, 100);
    assert_eq!(s.train_size(), 1001);
    assert_eq!(s.eval_size + s.train_size() + s.unused_windows, s.windows);

    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["method"], "iid");
    assert_eq!(
        json["client_sizes"],
        serde_json::json!([251, 250, 250, 250])
    );
    assert_eq!(json["eval_size"], 100);
    assert_eq!(json["total_tokens"], 341_371);

    let table = s.to_string();
    assert!(table.contains("shakespeare-excerpt"), "{table}");
    assert!(table.contains("partition iid over 4 clients"), "{table}");
    assert!(table.contains("251"), "{table}");
    assert_eq!(table.lines().count(), 3 + 1 + 4, "{table}");
}

#[test]
fn many_clients_are_summarised() {
    let cfg = DataConfig {
        max_train_examples: Some(205),
        ..DataConfig::default()
    };
    let data = build_federated_data(&cfg, &ByteTokenizer, 100, 0).unwrap();
    let table = data.summary.to_string();
    assert!(table.contains("2..=3 examples each"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
}
