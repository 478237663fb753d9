//! `Experiment::resume`: a run interrupted after round k and resumed from its checkpoint
//! gives the same metrics, summary and final state as one that was never interrupted
//! (timings aside), with every kind of state the checkpoint holds: error-feedback
//! residuals, an adaptive server optimizer, downlink compression with its residual, and
//! cgfedllm's fitted (and FAF-fine-tuned) autoencoder.

use crate::common;

use cgfed_core::Error;
use cgfed_plugins as _;
use cgfed_runner::checkpoint;
use cgfed_runner::{run_status, Experiment, ExperimentConfig, Quiet, RunStatus};
use common::{small_config, StopAfter};
use serde_json::Value;

/// `v` without wall-clock timings (`time_*` keys, `*_seconds`, `wall_s`), recursively.
fn untimed(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| {
                    !k.starts_with("time_") && !k.ends_with("_seconds") && k != "wall_s"
                });
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn metrics_lines(cfg: &ExperimentConfig) -> Vec<Value> {
    std::fs::read_to_string(cfg.run_dir().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| untimed(serde_json::from_str(l).unwrap()))
        .collect()
}

fn summary(cfg: &ExperimentConfig) -> Value {
    let s: Value =
        serde_json::from_slice(&std::fs::read(cfg.run_dir().join("summary.json")).unwrap())
            .unwrap();
    let mut s = untimed(s);
    // Where the adapter went differs between the two directories.
    s.as_object_mut().unwrap().remove("adapter_dir");
    s
}

fn global_state(cfg: &ExperimentConfig) -> Vec<u8> {
    std::fs::read(checkpoint::dir(&cfg.run_dir()).join(checkpoint::GLOBAL_FILE)).unwrap()
}

/// Run `extra` uninterrupted in one directory and interrupted after `k` rounds (then
/// resumed by a freshly built experiment, as after a crash) in another; compare.
fn interrupted_equals_uninterrupted(extra: &[&str], k: usize, crash_debris: bool) {
    let dir = tempfile::tempdir().unwrap();
    let whole = small_config("whole", dir.path(), extra);
    Experiment::build(&whole).unwrap().run(&mut Quiet).unwrap();

    let cut = small_config("cut", dir.path(), extra);
    let err = Experiment::build(&cut)
        .unwrap()
        .run(&mut StopAfter::new(k))
        .unwrap_err();
    assert!(
        matches!(err, Error::Interrupted { round } if round == k),
        "{err}"
    );
    assert!(!cut.run_dir().join("summary.json").exists());
    let total = metrics_lines(&whole).len();
    match run_status(&cut).unwrap() {
        RunStatus::Interrupted {
            round,
            total: t,
            from,
        } => {
            assert_eq!((round, t, from), (k, total, k))
        }
        other => panic!("{other:?}"),
    }
    if crash_debris {
        // A crash after round k+1's metrics line but before its checkpoint, and in the
        // middle of writing the next checkpoint.
        let path = cut.run_dir().join("metrics.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        let next = std::fs::read_to_string(whole.run_dir().join("metrics.jsonl")).unwrap();
        text.push_str(next.lines().nth(k).unwrap());
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let half = cut.run_dir().join("checkpoint.next");
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(half.join(checkpoint::PROGRESS_FILE), b"{ torn").unwrap();
    }

    let resumed = Experiment::build(&cut).unwrap().resume(&mut Quiet).unwrap();
    assert_eq!(resumed.rounds, total);
    assert_eq!(metrics_lines(&cut), metrics_lines(&whole));
    let (mut a, mut b) = (summary(&cut), summary(&whole));
    for s in [&mut a, &mut b] {
        s.as_object_mut().unwrap().remove("name");
    }
    assert_eq!(a, b);
    assert_eq!(global_state(&cut), global_state(&whole));
    for file in [checkpoint::FILE, checkpoint::AGGREGATOR_FILE] {
        let (x, y) = (
            checkpoint::dir(&cut.run_dir()).join(file),
            checkpoint::dir(&whole.run_dir()).join(file),
        );
        assert_eq!(x.exists(), y.exists(), "{file}");
        if x.exists() {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{file}"
            );
        }
    }
    assert!(!cut.run_dir().join("checkpoint.next").exists());
}

#[test]
fn resumes_error_feedback_fedadam_and_downlink_state_exactly() {
    interrupted_equals_uninterrupted(
        &[
            "federation.rounds=4",
            "compressor.kind=topk",
            "compressor.ratio=0.05",
            "compressor.error_feedback=true",
            "aggregator.name=fedadam",
            "downlink.kind=kbit",
            "downlink.bits=4",
            "downlink.error_feedback=true",
        ],
        2,
        false,
    );
}

#[test]
fn resumes_after_a_crash_between_metrics_line_and_checkpoint() {
    interrupted_equals_uninterrupted(
        &[
            "federation.rounds=3",
            "compressor.kind=qsgd",
            "compressor.error_feedback=true",
        ],
        1,
        true,
    );
}

const CG: &[&str] = &[
    "federation.rounds=3",
    "compressor.kind=cgfedllm",
    "compressor.chunk=256",
    "compressor.latent=16",
    "compressor.hidden=64",
    "compressor.tgap.rounds=2",
    "compressor.tgap.iterations=40",
    "compressor.tgap.batch=32",
    "compressor.snr_threshold_db=200",
    "compressor.faf.finetune_steps=5",
];

#[test]
fn resumes_cgfedllm_after_its_fit_with_the_fine_tuned_autoencoder() {
    // 2 calibration rounds + 3 training rounds; stop after the first training round, whose
    // FAF fine-tuning changed the autoencoder.
    interrupted_equals_uninterrupted(CG, 3, false);
}

#[test]
fn a_run_interrupted_during_calibration_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("cal", dir.path(), CG);
    let err = Experiment::build(&cfg)
        .unwrap()
        .run(&mut StopAfter::new(1))
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted { round: 1 }), "{err}");
    assert_eq!(
        run_status(&cfg).unwrap(),
        RunStatus::Interrupted {
            round: 1,
            total: 5,
            from: 0
        }
    );
    let s = Experiment::build(&cfg).unwrap().resume(&mut Quiet).unwrap();
    assert_eq!(s.rounds, 5);
    assert_eq!(metrics_lines(&cfg).len(), 5);
}

#[test]
fn a_finished_run_is_not_run_again_and_a_changed_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("done", dir.path(), &["federation.rounds=2"]);
    let first = Experiment::build(&cfg).unwrap().run(&mut Quiet).unwrap();
    let before = std::fs::read(cfg.run_dir().join("metrics.jsonl")).unwrap();
    assert!(matches!(run_status(&cfg).unwrap(), RunStatus::Finished(_)));
    let again = Experiment::build(&cfg).unwrap().resume(&mut Quiet).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        std::fs::read(cfg.run_dir().join("metrics.jsonl")).unwrap(),
        before
    );

    let changed = small_config("done", dir.path(), &["federation.rounds=3"]);
    let err = run_status(&changed).unwrap_err().to_string();
    assert!(
        err.contains("federation.rounds: 2 in the run, 3 now"),
        "{err}"
    );
    let err = Experiment::build(&changed)
        .unwrap()
        .resume(&mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("different config"), "{err}");
}

#[test]
fn a_crash_between_the_checkpoint_renames_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let write = |round: usize| {
        checkpoint::commit(run, |d| {
            std::fs::write(d.join(checkpoint::PROGRESS_FILE), round.to_string())
                .map_err(|e| Error::io(d, e))
        })
        .unwrap()
    };
    write(1);
    write(2);
    let cur = checkpoint::dir(run);
    assert_eq!(
        std::fs::read_to_string(cur.join(checkpoint::PROGRESS_FILE)).unwrap(),
        "2"
    );
    // The first rename of the next commit happened, the second did not.
    std::fs::rename(&cur, run.join("checkpoint.old")).unwrap();
    let found = checkpoint::latest(run).unwrap().expect("recovered");
    assert_eq!(found, cur);
    assert_eq!(
        std::fs::read_to_string(cur.join(checkpoint::PROGRESS_FILE)).unwrap(),
        "2"
    );
    assert!(!run.join("checkpoint.old").exists());
    write(3);
    assert_eq!(
        std::fs::read_to_string(cur.join(checkpoint::PROGRESS_FILE)).unwrap(),
        "3"
    );
    assert_eq!(
        std::fs::read_dir(run).unwrap().count(),
        1,
        "only checkpoint/ is left"
    );
}

#[test]
fn a_run_that_merged_residuals_into_the_base_says_it_cannot_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("merged", dir.path(), &["aggregator.lora=product"]);
    let err = Experiment::build(&cfg)
        .unwrap()
        .run(&mut StopAfter::new(1))
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted { round: 1 }), "{err}");
    let err = Experiment::build(&cfg)
        .unwrap()
        .resume(&mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot resume") && err.contains("base weights"),
        "{err}"
    );
}

#[test]
fn a_run_directory_in_use_by_another_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("busy", dir.path(), &["federation.rounds=1"]);
    std::fs::create_dir_all(cfg.run_dir()).unwrap();
    let held = checkpoint::lock(&cfg.run_dir()).unwrap();
    for resume in [false, true] {
        let mut exp = Experiment::build(&cfg).unwrap();
        let err = if resume {
            exp.resume(&mut Quiet)
        } else {
            exp.run(&mut Quiet)
        }
        .unwrap_err()
        .to_string();
        assert!(err.contains("in use by another cgfed process"), "{err}");
    }
    drop(held);
    Experiment::build(&cfg).unwrap().run(&mut Quiet).unwrap();
}
