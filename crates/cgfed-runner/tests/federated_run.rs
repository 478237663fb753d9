//! End-to-end federated runs of the tiny model: learning, byte accounting, determinism.

use crate::common;

use cgfed_core::Payload;
use cgfed_plugins as _;
use cgfed_runner::{run_experiment, Quiet, RoundMetrics};
use common::{read_metrics, small_config};

#[test]
fn three_rounds_with_none_and_fedavg_reduce_eval_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("none", dir.path(), &[]);
    let s = run_experiment(&cfg, &mut Quiet).unwrap();
    assert_eq!(s.rounds, 3);
    assert!(
        s.final_eval_loss < s.initial_eval_loss - 0.05,
        "eval loss did not go down: {} -> {}",
        s.initial_eval_loss,
        s.final_eval_loss
    );
    let m = read_metrics(&cfg);
    assert_eq!(m.len(), 3);
    assert!(m
        .iter()
        .all(|r| r.eval_loss.is_some() && r.participants == 2));
    for f in [
        "config.toml",
        "summary.json",
        "partition.json",
        "metrics.jsonl",
    ] {
        assert!(cfg.run_dir().join(f).is_file(), "{f} missing");
    }
}

fn check_byte_accounting(m: &[RoundMetrics], header: usize) -> usize {
    let mut cum = 0;
    for r in m {
        let sum: usize = r.clients.iter().map(|c| c.uplink_bytes).sum();
        assert_eq!(
            r.uplink_bytes, sum,
            "round uplink != sum of payload lengths"
        );
        cum += r.uplink_bytes;
        assert_eq!(r.cum_uplink_bytes, cum);
        for c in &r.clients {
            assert_eq!(c.dense_bytes % 4, 0, "dense bytes are whole f32s");
            assert!(c.uplink_bytes > header, "payload no longer than its header");
        }
    }
    cum
}

#[test]
fn none_payload_is_dense_plus_header() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("bytes-none", dir.path(), &["federation.rounds=2"]);
    let s = run_experiment(&cfg, &mut Quiet).unwrap();
    let m = read_metrics(&cfg);
    let total = check_byte_accounting(&m, Payload::header_len("none"));
    assert_eq!(s.total_uplink_bytes, total);
    for c in m.iter().flat_map(|r| &r.clients) {
        assert_eq!(c.uplink_bytes, c.dense_bytes + Payload::header_len("none"));
        assert_eq!(c.dense_bytes, 4 * s.update_numel);
        assert!((c.ratio - 1.0).abs() < 1e-3, "ratio {}", c.ratio);
        assert_eq!(c.quality.rel_err, Some(0.0), "dense f32 must be lossless");
    }
    // Downlink: the global state, dense, to each sampled client.
    for r in &m {
        assert_eq!(
            r.downlink_bytes,
            r.sampled.len() * (4 * s.update_numel + Payload::header_len("none"))
        );
    }
}

#[test]
fn fp16_halves_the_uplink_with_bounded_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "bytes-fp16",
        dir.path(),
        &["compressor.name=fp16", "federation.rounds=2"],
    );
    let s = run_experiment(&cfg, &mut Quiet).unwrap();
    let m = read_metrics(&cfg);
    check_byte_accounting(&m, Payload::header_len("fp16"));
    for c in m.iter().flat_map(|r| &r.clients) {
        assert_eq!(
            c.uplink_bytes,
            c.dense_bytes / 2 + Payload::header_len("fp16")
        );
        assert!((c.ratio - 2.0).abs() < 0.01, "ratio {}", c.ratio);
        let e = c.quality.rel_err.expect("finite relative error");
        assert!(e > 0.0 && e < 1e-3, "fp16 relative error {e}");
        assert!(c.quality.snr_db.expect("finite snr") > 60.0);
    }
    assert!((s.ratio - 2.0).abs() < 0.01);
}

/// Metrics without timings (which vary run to run).
fn without_timings(mut m: Vec<RoundMetrics>) -> Vec<RoundMetrics> {
    for r in &mut m {
        r.time_train_ms = 0.0;
        r.time_encode_ms = 0.0;
        r.time_decode_ms = 0.0;
        r.time_aggregate_ms = 0.0;
        r.time_eval_ms = 0.0;
    }
    m
}

#[test]
fn same_seed_gives_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let a = small_config("det-a", dir.path(), &["compressor.name=fp16"]);
    let b = small_config("det-b", dir.path(), &["compressor.name=fp16"]);
    run_experiment(&a, &mut Quiet).unwrap();
    run_experiment(&b, &mut Quiet).unwrap();
    let (ma, mb) = (
        without_timings(read_metrics(&a)),
        without_timings(read_metrics(&b)),
    );
    assert_eq!(ma, mb);
    // And a different seed changes them (the test can fail if seeds are ignored).
    let c = small_config(
        "det-c",
        dir.path(),
        &["compressor.name=fp16", "experiment.seed=4"],
    );
    run_experiment(&c, &mut Quiet).unwrap();
    assert_ne!(ma, without_timings(read_metrics(&c)));
}
