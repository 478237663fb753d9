//! `cgfedllm` driven by the runner on the tiny model: TGAP calibration rounds on D1 (dense,
//! counted, marked), the fitted autoencoder shipped and used on D2, the SNR fallback,
//! `Experiment::calibrate` + `load`, and error feedback.

use crate::common;

use cgfed_core::Phase;
use cgfed_plugins as _;
use cgfed_runner::{run_experiment, Experiment, Quiet};
use common::{read_metrics, small_config};

/// A small autoencoder for the tiny model's 4-rank LoRA update.
const AE: &[&str] = &[
    "compressor.kind=cgfedllm",
    "compressor.chunk=256",
    "compressor.latent=16",
    "compressor.hidden=128",
    "compressor.tgap.rounds=3",
    "compressor.tgap.iterations=300",
    "compressor.tgap.batch=64",
    "compressor.tgap.lr=1e-3",
];

fn with(extra: &[&str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = AE.to_vec();
    for e in extra {
        v.push(Box::leak(e.to_string().into_boxed_str()));
    }
    v
}

#[test]
fn tgap_calibrates_on_d1_then_compresses_on_d2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "cg",
        dir.path(),
        &with(&["compressor.snr_threshold_db=-inf"]),
    );
    let summary = run_experiment(&cfg, &mut Quiet).unwrap();
    let metrics = read_metrics(&cfg);
    assert_eq!(metrics.len(), 3 + 3);
    let cal = summary.calibration.as_ref().expect("calibration summary");
    assert_eq!(cal.rounds, 3);
    assert_eq!(cal.split, Some(0.3));
    // 256 training examples over 4 clients, 30 % of each in D1.
    assert_eq!(cal.d1_examples + cal.d2_examples, 256);
    assert!(
        (cal.d1_examples as f64 - 0.3 * 256.0).abs() <= 4.0,
        "{cal:?}"
    );
    let numel = metrics[0].dense_bytes / metrics[0].participants / 4;
    for (i, m) in metrics.iter().enumerate() {
        let calibration = i < 3;
        assert_eq!(
            m.phase == Phase::Calibration,
            calibration,
            "round {}",
            m.round
        );
        for c in m.clients.iter().filter(|c| c.uplink_bytes > 0) {
            if calibration {
                // Dense, counted in the totals, trained on D1.
                assert_eq!(c.uplink_bytes, 4 * numel + 6);
                assert!(
                    c.num_examples < 40,
                    "a D1 shard has {} examples",
                    c.num_examples
                );
            } else {
                assert!(
                    c.num_examples > 40,
                    "a D2 shard has {} examples",
                    c.num_examples
                );
                assert!(c.ratio > 20.0, "ratio {}", c.ratio);
            }
        }
    }
    assert_eq!(
        cal.uplink_bytes,
        metrics[..3].iter().map(|m| m.uplink_bytes).sum::<usize>()
    );
    assert_eq!(
        summary.total_uplink_bytes,
        metrics.iter().map(|m| m.uplink_bytes).sum::<usize>()
    );
    // The fit is reported, and it beats the input-blind predictors on held-out rounds.
    let fit = &cal.fit;
    let get = |k: &str| *fit.get(k).unwrap_or_else(|| panic!("no {k} in {fit:?}"));
    assert!(get("tgap_heldout_snr_db") > 0.0);
    assert!(
        get("tgap_heldout_cosine") > get("tgap_mean_gain_cosine"),
        "{fit:?}"
    );
    // 4 clients × 2 per round × 6 local steps: 12 snapshots per round, one round held out.
    assert_eq!(get("tgap_snapshots"), 36.0);
    assert_eq!(get("tgap_heldout_snapshots"), 12.0);
    // The fitted autoencoder goes to all 4 clients, after the last calibration round.
    let ae = get("ae_bytes") as usize;
    assert!(metrics[2].downlink_bytes >= 4 * ae);
    assert!(metrics[2].extra.contains_key("tgap_heldout_cosine"));
    // Training rounds: the byte breakdown adds up to the uplink.
    for m in &metrics[3..] {
        let e = |k: &str| m.extra.get(k).copied().unwrap_or_else(|| panic!("{k}"));
        assert_eq!(e("ae_fallback_share"), 0.0);
        let parts = e("ae_latent_bytes")
            + e("ae_scale_bytes")
            + e("ae_flag_bytes")
            + e("ae_header_bytes")
            + e("ae_fallback_bytes");
        assert_eq!(parts as usize, m.uplink_bytes, "round {}", m.round);
        assert!(m.quality.cosine.unwrap() > 0.0);
        assert!(m.eval_loss.unwrap().is_finite());
    }
    assert!(summary.final_eval_loss < summary.initial_eval_loss);
}

#[test]
fn a_high_threshold_sends_every_tensor_through_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "cg-fb",
        dir.path(),
        &with(&[
            "compressor.snr_threshold_db=300.0",
            "compressor.tgap.iterations=20",
            "compressor.faf.finetune_steps=5",
        ]),
    );
    run_experiment(&cfg, &mut Quiet).unwrap();
    for m in read_metrics(&cfg)
        .iter()
        .filter(|m| m.phase == Phase::Train)
    {
        assert_eq!(m.extra["ae_fallback_share"], 1.0);
        // Dense fallback: the decode is exact.
        assert!(m.quality.snr_db.is_none() || m.quality.snr_db.unwrap() > 100.0);
        // FAF fine-tuned on them and shipped the refreshed autoencoder to all 4 clients.
        assert!(m.extra["ae_finetune_loss"].is_finite());
        assert!(m.downlink_bytes >= 4 * m.extra["ae_refresh_bytes"] as usize);
    }
}

#[test]
fn calibrate_saves_and_a_run_loads_instead_of_calibrating() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config("cg-save", dir.path(), AE);
    let out = dir.path().join("ae");
    let mut exp = Experiment::build(&cfg).unwrap();
    let cal = exp.calibrate(&out, &mut Quiet).unwrap();
    assert_eq!(cal.rounds, 3);
    for f in ["ae.safetensors", "ae.toml", "metrics.jsonl", "tgap.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let load = format!(
        "compressor.load={}",
        out.display().to_string().replace('\\', "/")
    );
    let cfg2 = small_config(
        "cg-load",
        dir.path(),
        &with(&[
            &load,
            "compressor.tgap.rounds=0",
            "compressor.snr_threshold_db=-inf",
        ]),
    );
    let summary = run_experiment(&cfg2, &mut Quiet).unwrap();
    let metrics = read_metrics(&cfg2);
    assert!(metrics.iter().all(|m| m.phase == Phase::Train));
    assert_eq!(metrics.len(), 3);
    let c2 = summary.calibration.unwrap();
    assert_eq!((c2.rounds, c2.split), (0, Some(0.3)));
    assert_eq!(
        c2.d2_examples, cal.d2_examples,
        "the loaded run trains on the same D2"
    );
    // The loaded autoencoder is shipped to the 4 clients before round 1.
    let ae = std::fs::metadata(out.join("ae.safetensors")).unwrap().len() as usize;
    assert!(metrics[0].downlink_bytes >= 4 * ae);
    assert!(metrics[1].downlink_bytes < ae);
}

#[test]
fn error_feedback_stays_stable_with_the_learned_codec() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(
        "cg-ef",
        dir.path(),
        &with(&[
            "compressor.error_feedback=true",
            "compressor.snr_threshold_db=-inf",
            "federation.rounds=5",
        ]),
    );
    let summary = run_experiment(&cfg, &mut Quiet).unwrap();
    assert!(summary.final_eval_loss.is_finite());
    assert!(
        summary.final_eval_loss < summary.initial_eval_loss,
        "{} -> {}",
        summary.initial_eval_loss,
        summary.final_eval_loss
    );
}
