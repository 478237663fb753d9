//! `[faults]` in real runs on the tiny model: drop-outs, stragglers, the quorum, and
//! Byzantine payloads that must never reach the global model.

use crate::common;

use cgfed_plugins as _;
use cgfed_runner::{run_experiment, ClientStatus, Quiet};
use common::{read_metrics, small_config};

#[test]
fn dropouts_send_nothing_and_a_missed_quorum_skips_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "dropout",
        dir.path(),
        &[
            "federation.rounds=6",
            "federation.clients_per_round=3",
            "federation.min_clients=3",
            "faults.dropout=0.3",
        ],
    );
    let summary = run_experiment(&cfg, &mut Quiet).unwrap();
    let metrics = read_metrics(&cfg);
    let mut skipped = 0;
    for m in &metrics {
        let dropped: Vec<_> = m
            .clients
            .iter()
            .filter(|c| c.status == ClientStatus::Dropped)
            .collect();
        assert_eq!(m.dropped, dropped.len());
        assert!(dropped
            .iter()
            .all(|c| c.uplink_bytes == 0 && c.train_loss.is_none()));
        assert_eq!(m.participants + m.dropped, 3, "round {}", m.round);
        // Quorum 3 of 3: any drop-out skips the round, with the reason logged.
        assert_eq!(m.skipped, m.dropped > 0, "round {}", m.round);
        if m.skipped {
            skipped += 1;
            let reason = m.skip_reason.as_deref().unwrap();
            assert!(reason.contains("federation.min_clients = 3"), "{reason}");
        }
    }
    assert_eq!(summary.skipped_rounds, skipped);
    assert_eq!(
        summary.dropped_clients,
        metrics.iter().map(|m| m.dropped).sum::<usize>()
    );
    assert!(
        summary.dropped_clients > 0 && skipped < 6,
        "seeded draw should drop some, not all: {} dropped, {skipped} skipped",
        summary.dropped_clients
    );
    // A skipped round leaves the model alone: its eval loss equals the previous one.
    let mut prev = summary.initial_eval_loss;
    for m in &metrics {
        let e = m.eval_loss.unwrap();
        if m.skipped {
            assert_eq!(e, prev, "round {} was skipped but the model moved", m.round);
        }
        prev = e;
    }
}

#[test]
fn stragglers_send_partial_updates_or_miss_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let partial = small_config(
        "partial",
        dir.path(),
        &["faults.straggler_fraction=0.5", "faults.straggler_steps=1"],
    );
    run_experiment(&partial, &mut Quiet).unwrap();
    let late = small_config(
        "late",
        dir.path(),
        &[
            "faults.straggler_fraction=0.5",
            "faults.straggler_policy=drop",
        ],
    );
    run_experiment(&late, &mut Quiet).unwrap();
    let (p, l) = (read_metrics(&partial), read_metrics(&late));
    let mut seen = 0;
    for (mp, ml) in p.iter().zip(&l) {
        // Same seed: the same clients straggle in both runs.
        assert_eq!(mp.stragglers, ml.stragglers);
        for (cp, cl) in mp.clients.iter().zip(&ml.clients) {
            match cp.status {
                ClientStatus::Partial => {
                    seen += 1;
                    assert_eq!(cl.status, ClientStatus::Late);
                    assert!(cp.uplink_bytes > 0);
                    assert_eq!(cl.uplink_bytes, 0);
                }
                s => assert_eq!(cl.status, s),
            }
        }
    }
    assert!(seen > 0, "no straggler was drawn");
}

fn byzantine_run(
    attack: &str,
    aggregator: &str,
) -> (cgfed_runner::RunSummary, Vec<cgfed_runner::RoundMetrics>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        attack,
        dir.path(),
        &[
            "federation.clients_per_round=4",
            "faults.byzantine_fraction=0.25",
            &format!("faults.attack={attack}"),
            &format!("aggregator.name={aggregator}"),
        ],
    );
    let summary = run_experiment(&cfg, &mut Quiet).unwrap();
    (summary, read_metrics(&cfg))
}

#[test]
fn nan_and_inf_payloads_are_rejected_and_never_reach_the_model() {
    for attack in ["nan", "inf"] {
        let (summary, metrics) = byzantine_run(attack, "fedavg");
        assert_eq!(summary.byzantine_clients.len(), 1);
        let bad = summary.byzantine_clients[0];
        for m in &metrics {
            assert_eq!(m.byzantine, 1);
            assert_eq!(m.rejected_updates, 1, "{attack} round {}", m.round);
            for c in &m.clients {
                assert_eq!(c.byzantine, c.client == bad);
                assert_eq!(c.rejected, c.client == bad);
            }
            assert!(m.eval_loss.unwrap().is_finite());
        }
        assert!(
            summary.final_eval_loss < summary.initial_eval_loss,
            "{attack}"
        );
        assert_eq!(summary.rejected_updates, metrics.len());
    }
}

#[test]
fn random_bytes_are_rejected_or_decoded_to_finite_values() {
    // The dense decoder accepts any finite f32 bit pattern (values up to 3e38), so the
    // attacker's update usually gets through; the median of 4 ignores it.
    let (summary, metrics) = byzantine_run("random-bytes", "median");
    assert!(summary.final_eval_loss.is_finite());
    assert!(summary.final_eval_loss < summary.initial_eval_loss);
    assert!(metrics.iter().all(|m| m.participants >= 3));
}
