//! The `custom-cgfed` binary on `examples/custom-compressor/ternary.toml` (2 rounds, run
//! directory in a temporary folder): it succeeds, the summary names the ternary compressor,
//! and every uplink byte is accounted for by the documented payload length.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// This test builds the experiment in-process too, so it links the plugins itself (the
// registry pitfall applies to test binaries as well).
use cgfed_plugins as _;
use custom_compressor::Ternary;

const ROUNDS: usize = 2;

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ternary.toml")
}

fn custom_cgfed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custom-cgfed"))
        .args(args)
        .output()
        .expect("the binary starts")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn runs_ternary_from_toml_with_exact_byte_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [
        format!("experiment.output_dir={}", dir.path().display()),
        format!("federation.rounds={ROUNDS}"),
    ];
    let cfg_path = config();
    let cfg = cfg_path.to_str().unwrap();
    let out = custom_cgfed(&[cfg, "--set", &overrides[0], "--set", &overrides[1]]);
    assert!(out.status.success(), "custom-cgfed failed\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("round ")).count(),
        ROUNDS,
        "one line per round\n{stdout}"
    );
    assert!(stdout.contains("final eval loss"), "{stdout}");

    let run_dir = dir.path().join("ternary");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["compressor"], "ternary(block 256), error feedback",
        "{summary}"
    );
    assert_eq!(summary["rounds"], ROUNDS);
    assert_eq!(summary["rejected_updates"], 0);
    let final_loss = summary["final_eval_loss"].as_f64().unwrap();
    assert!(final_loss.is_finite() && final_loss > 0.0, "{final_loss}");

    // The exact uplink: the documented payload length for the model's trainable layout,
    // times the clients per round, times the rounds (no faults, no calibration).
    use cgfed_plugins as _;
    use custom_compressor as _;
    let mut exp = cgfed_runner::load_experiment(&cfg_path, &overrides).unwrap();
    let layout = exp.trainer_mut().layout().clone();
    let per_payload = Ternary::default().payload_len(&layout);
    let fed = cgfed_runner::load_config(&cfg_path, &overrides)
        .unwrap()
        .federation;
    let clients = fed.clients_per_round;
    assert_eq!(
        summary["total_uplink_bytes"].as_u64().unwrap() as usize,
        per_payload * clients * ROUNDS,
        "{summary}"
    );
    assert_eq!(
        summary["total_dense_bytes"].as_u64().unwrap() as usize,
        layout.dense_bytes() * clients * ROUNDS
    );
    let ratio = summary["ratio"].as_f64().unwrap();
    assert!(ratio > 10.0 && ratio < 32.0 / 2.125, "ratio {ratio}");

    // Every client line in metrics.jsonl is one payload of exactly that length.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let mut lines = 0;
    for line in metrics.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        for c in m["clients"].as_array().unwrap() {
            assert_eq!(c["uplink_bytes"].as_u64().unwrap() as usize, per_payload);
        }
        assert!(m["eval_loss"].as_f64().unwrap().is_finite());
        lines += 1;
    }
    assert_eq!(lines, ROUNDS);
    // Error feedback keeps per-client residuals, checkpointed after every round.
    assert!(run_dir
        .join("checkpoint/compressor_state.safetensors")
        .is_file());
}

#[test]
fn bad_keys_fail_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = format!("experiment.output_dir={}", dir.path().display());
    let cfg_path = config();
    let cfg = cfg_path.to_str().unwrap();
    let out = custom_cgfed(&[cfg, "--set", &out_dir, "--set", "compressor.blocks=64"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("compressor.blocks") && err.contains("block_size"),
        "{err}"
    );
    let out = custom_cgfed(&[cfg, "--set", &out_dir, "--set", "compressor.block_size=0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("compressor.block_size"));
}

#[test]
fn lists_ternary_next_to_the_builtins() {
    let out = custom_cgfed(&["--list"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in [
        "ternary",
        "kbit",
        "topk",
        "none",
        "block_size",
        "error_feedback",
    ] {
        assert!(stdout.contains(name), "{name} missing from\n{stdout}");
    }
    let out = custom_cgfed(&[]);
    assert_eq!(out.status.code(), Some(2), "no config: usage");
}
