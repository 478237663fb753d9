//! Aggregators in real runs: server-optimizer state is checkpointed every round, and the
//! exact LoRA product's base residual is charged as downlink to every client that has not
//! received it yet.

use crate::common;

use cgfed_core::{registry, PluginTable};
use cgfed_plugins as _;
use cgfed_runner::checkpoint::aggregator_path;
use cgfed_runner::{run_experiment, Quiet};
use common::{read_metrics, small_config};

#[test]
fn stateful_aggregators_checkpoint_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("adam", dir.path(), &["aggregator.name=fedadam"]);
    let summary = run_experiment(&cfg, &mut Quiet).unwrap();
    assert!(
        summary.aggregator.starts_with("fedadam (server_lr 0.01"),
        "{}",
        summary.aggregator
    );
    let bytes = std::fs::read(aggregator_path(&cfg.run_dir())).unwrap();
    let mut fresh =
        registry::build_aggregator(&PluginTable::named("aggregator", "fedadam")).unwrap();
    fresh.load_state(&bytes).unwrap();
    assert_eq!(
        fresh.save_state().unwrap(),
        bytes,
        "state does not round-trip"
    );
    let mut other =
        registry::build_aggregator(&PluginTable::named("aggregator", "fedavgm")).unwrap();
    assert!(
        other.load_state(&bytes).is_err(),
        "fedavgm accepted fedadam's state"
    );

    let plain = small_config("plain", dir.path(), &[]);
    run_experiment(&plain, &mut Quiet).unwrap();
    assert!(!aggregator_path(&plain.run_dir()).exists());
}

#[test]
fn exact_lora_residual_is_paid_on_the_downlink() {
    let dir = tempfile::tempdir().unwrap();
    let sets = |lora: &'static str| {
        vec![
            "federation.clients=2",
            "federation.clients_per_round=2",
            if lora == "product" {
                "aggregator.lora=product"
            } else {
                "aggregator.lora=factors"
            },
        ]
    };
    let product = small_config("product", dir.path(), &sets("product"));
    let factors = small_config("factors", dir.path(), &sets("factors"));
    run_experiment(&product, &mut Quiet).unwrap();
    run_experiment(&factors, &mut Quiet).unwrap();
    let (p, f) = (read_metrics(&product), read_metrics(&factors));
    assert_eq!(
        p[0].downlink_bytes, f[0].downlink_bytes,
        "round 1 has no residual yet"
    );
    for r in 1..p.len() {
        let residual = p[r - 1].extra["base_residual_bytes"] as usize;
        assert!(residual > 0);
        // Both clients are sampled every round and each missed exactly last round's.
        assert_eq!(
            p[r].downlink_bytes,
            f[r].downlink_bytes + 2 * residual,
            "round {}",
            r + 1
        );
        let err = p[r].extra["lora_fedit_rel_err"];
        assert!(err > 0.0 && err < 1.0, "FedIT relative error {err}");
    }
    assert!(f
        .iter()
        .all(|m| !m.extra.contains_key("base_residual_bytes")));
}
