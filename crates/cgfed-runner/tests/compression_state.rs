//! Per-client compressor state in real runs: error-feedback residuals kept while a client is
//! not sampled and written to the checkpoint every round; downlink compression with the
//! server's own residual and exact catch-up byte accounting.

use crate::common;

use std::collections::BTreeMap;

use cgfed_core::{ClientState, Payload};
use cgfed_plugins as _;
use cgfed_runner::checkpoint::{self, StateCheckpoint};
use cgfed_runner::{run_experiment, Experiment, Observer, Quiet, RoundMetrics};
use common::{read_metrics, small_config};

/// Records the checkpoint file after every round.
#[derive(Default)]
struct Snapshots {
    path: std::path::PathBuf,
    after: Vec<StateCheckpoint>,
}

impl Observer for Snapshots {
    fn on_round(&mut self, _: &RoundMetrics) {
        self.after
            .push(StateCheckpoint::load(&self.path).expect("checkpoint after every round"));
    }
}

#[test]
fn error_feedback_residuals_survive_unsampled_rounds_and_are_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "ef",
        dir.path(),
        &[
            "federation.rounds=5",
            "compressor.kind=topk",
            "compressor.ratio=0.05",
            "compressor.error_feedback=true",
        ],
    );
    let mut exp = Experiment::build(&cfg).unwrap();
    let mut obs = Snapshots {
        path: checkpoint::path(&cfg.run_dir()),
        ..Default::default()
    };
    let summary = exp.run(&mut obs).unwrap();
    assert!(
        summary.compressor.contains("error feedback"),
        "{}",
        summary.compressor
    );
    let m = read_metrics(&cfg);
    let numel = summary.update_numel;
    let empty = ClientState::default();
    let mut ever_sampled = [false; 4];
    let mut unsampled_checks = 0;
    for (r, round) in m.iter().enumerate() {
        let now = &obs.after[r];
        assert_eq!(now.round, r + 1);
        for (c, seen) in ever_sampled.iter_mut().enumerate() {
            let before = if r == 0 {
                &empty
            } else {
                &obs.after[r - 1].clients[c]
            };
            if round.sampled.contains(&c) {
                *seen = true;
                let e = now.clients[c].buffers.get("ef/residual").expect("residual");
                assert_eq!(e.len(), numel);
                assert!(e.iter().any(|v| *v != 0.0), "top-5% leaves a residual");
                assert_ne!(
                    &now.clients[c], before,
                    "a sampled client's residual changes"
                );
            } else {
                // Not sampled: the residual waits, unchanged, for the client's next round.
                assert_eq!(&now.clients[c], before, "round {} client {c}", r + 1);
                if *seen {
                    unsampled_checks += 1;
                }
            }
        }
        // Top-k at 5 % of every tensor: the decoded updates hold about 5 % non-zeros.
        let d = round.density.unwrap();
        assert!((0.04..0.08).contains(&d), "density {d}");
        assert!(round.clients.iter().all(|c| c.nonzero > 0));
    }
    assert!(
        unsampled_checks > 0,
        "some client sat out a round after taking part"
    );
    // The checkpoint on disk is the experiment's state after the last round, bit for bit.
    assert_eq!(obs.after.last().unwrap(), &exp.state_checkpoint(5));
    assert_eq!(
        exp.client_state(m[4].sampled[0]),
        &obs.after[4].clients[m[4].sampled[0]]
    );
    assert!(!checkpoint::path(&cfg.run_dir())
        .with_extension("tmp")
        .exists());
}

#[test]
fn downlink_none_matches_the_dense_default_with_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let base = small_config("dl-default", dir.path(), &["federation.rounds=4"]);
    let with = small_config(
        "dl-none",
        dir.path(),
        &["federation.rounds=4", "downlink.kind=none"],
    );
    let a = run_experiment(&base, &mut Quiet).unwrap();
    let b = run_experiment(&with, &mut Quiet).unwrap();
    // The broadcast is the exact delta, so the model, and every loss, is the same.
    assert_eq!(a.final_eval_loss, b.final_eval_loss);
    assert_eq!(a.total_uplink_bytes, b.total_uplink_bytes);
    assert!(b.total_downlink_bytes <= a.total_downlink_bytes);
    assert_eq!(b.downlink_compressor.as_deref(), Some("none"));
    for r in read_metrics(&with) {
        let d = r.downlink.expect("downlink metrics");
        assert_eq!(
            d.broadcast_bytes,
            Payload::header_len("none") + d.dense_bytes
        );
        assert_eq!(d.quality.snr_db, None, "exact broadcast: infinite SNR");
    }
}

#[test]
fn compressed_downlink_counts_what_each_client_missed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "dl-topk",
        dir.path(),
        &[
            "federation.rounds=6",
            "downlink.kind=topk",
            "downlink.ratio=0.1",
            "downlink.error_feedback=true",
        ],
    );
    let mut exp = Experiment::build(&cfg).unwrap();
    let s = exp.run(&mut Quiet).unwrap();
    assert!(s.final_eval_loss < s.initial_eval_loss, "{s:?}");
    let m = read_metrics(&cfg);
    let dense_state = Payload::header_len("none") + m[0].clients[0].dense_bytes;
    // Replay the catch-up rule: first round dense, then the missed broadcasts (or dense).
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    let mut broadcasts = Vec::new();
    for (r, round) in m.iter().enumerate() {
        let want: usize = round
            .sampled
            .iter()
            .map(|c| {
                let cost = match last.get(c) {
                    None => dense_state,
                    Some(&from) => broadcasts[from..r].iter().sum::<usize>().min(dense_state),
                };
                last.insert(*c, r);
                cost
            })
            .sum();
        assert_eq!(round.downlink_bytes, want, "round {}", r + 1);
        let d = round.downlink.as_ref().expect("downlink metrics");
        assert!(d.broadcast_bytes < d.dense_bytes / 4, "top-10% broadcast");
        let cos = d.quality.cosine.unwrap();
        assert!(cos > 0.3 && cos < 1.0, "cosine {cos}");
        broadcasts.push(d.broadcast_bytes);
    }
    // A client that skipped rounds paid less than the dense state to catch up.
    assert!(m
        .iter()
        .skip(1)
        .any(|r| r.downlink_bytes < r.sampled.len() * dense_state));
    // The server's residual is in the checkpoint.
    let ck = StateCheckpoint::load(&checkpoint::path(&cfg.run_dir())).unwrap();
    assert_eq!(ck.server.buffers["ef/residual"].len(), s.update_numel);
    assert_eq!(ck.broadcast, broadcasts);
    assert_eq!(ck, exp.state_checkpoint(6));
}

#[test]
fn checkpoint_roundtrips_and_rejects_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint").join(checkpoint::FILE);
    let mut a = ClientState::default();
    a.buffers
        .insert("ef/residual".into(), vec![1.0, -2.5, 3e-30]);
    a.buffers.insert("powersgd/q/l0.q".into(), vec![0.5; 6]);
    a.counters.insert("rounds".into(), 3);
    let ck = StateCheckpoint {
        round: 7,
        clients: vec![ClientState::default(), a],
        server: ClientState {
            buffers: [("ef/residual".to_string(), vec![4.0])].into(),
            counters: [("n".to_string(), 1)].into(),
        },
        last_sync: vec![None, Some(6)],
        broadcast: vec![10, 0, 12, 13, 14, 15, 16],
    };
    ck.save(&path).unwrap();
    assert_eq!(StateCheckpoint::load(&path).unwrap(), ck);
    assert!(!path.with_extension("tmp").exists());
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = StateCheckpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a valid checkpoint"), "{err}");
}
