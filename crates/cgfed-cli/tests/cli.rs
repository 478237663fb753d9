//! The `cgfed` binary: `list` shows every plugin, `run` works end to end and fails cleanly.

use std::process::Command;

fn cgfed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cgfed"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cgfed runs")
}

#[test]
fn list_shows_every_plugin_crate() {
    let out = cgfed(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // one registration from each plugin crate: core built-in, quantize, aggregators, model
    for (kind, name) in [
        ("compressors:", "none"),
        ("compressors:", "fp16"),
        ("compressors:", "kbit"),
        ("compressors:", "topk"),
        ("compressors:", "randk"),
        ("compressors:", "powersgd"),
        ("aggregators:", "fedavg"),
        ("trainers:", "llama"),
    ] {
        assert!(text.contains(kind), "{text}");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "`cgfed list` lacks {name}:\n{text}"
        );
    }
    // Keys with defaults, and the wrapper keys once.
    assert!(text.contains("error_feedback"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("ratio")),
        "{text}"
    );
}

#[test]
fn run_writes_the_run_directory_and_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = format!("experiment.output_dir=\"{}\"", dir.path().display());
    let out = cgfed(&[
        "run",
        "configs/tiny.toml",
        "--no-progress",
        "--set",
        "federation.rounds=2",
        "--set",
        "data.max_train_examples=128",
        "--set",
        &out_dir,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("round") && stdout.contains("eval_loss"),
        "{stdout}"
    );
    let run = dir.path().join("tiny");
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert!(run.join("summary.json").is_file());
}

#[test]
fn bad_config_exits_nonzero_naming_file_and_key() {
    let out = cgfed(&["run", "configs/tiny.toml", "--set", "compressor.name=topkk"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("configs/tiny.toml"), "{err}");
    assert!(
        err.contains("compressor.name")
            && err.contains("registered: approx-topk, bf16, cgfedllm, fp16, kbit, none, powersgd"),
        "{err}"
    );
    let out = cgfed(&["run", "configs/does-not-exist.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.toml"));
}

#[test]
fn eval_prints_loss_and_accuracy_and_writes_eval_json() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.jsonl");
    std::fs::write(
        &train,
        (0..8)
            .map(|i| {
                format!(
                    "{{\"prompt\": \"{i} + 1 =\", \"completion\": \" {}\"}}\n",
                    i + 1
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    let exam = dir.path().join("exam.csv");
    std::fs::write(
        &exam,
        "id,question,A,B,C,D,answer\n1,1 + 1?,1,2,3,4,B\n2,2 + 2?,4,5,6,7,A\n3,3 + 3?,5,6,7,8,B\n",
    )
    .unwrap();
    let config = dir.path().join("eval.toml");
    std::fs::write(
        &config,
        format!(
            "[experiment]\nname = \"tiny\"\noutput_dir = {:?}\n\n[model]\npreset = \"tiny\"\n\n\
             [data]\ntrain = {:?}\neval = {:?}\nseq_len = 32\n\n\
             [federation]\nrounds = 1\nclients = 2\nclients_per_round = 2\n\n\
             [eval]\naccuracy = [\"cloze\", \"letter\"]\n",
            dir.path().display().to_string(),
            train.display().to_string(),
            exam.display().to_string()
        ),
    )
    .unwrap();
    let out = cgfed(&["eval", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("eval loss"), "{stdout}");
    assert!(stdout.contains("cloze accuracy on 3 items"), "{stdout}");
    assert!(stdout.contains("letter accuracy on 3 items"), "{stdout}");
    let json = std::fs::read_to_string(dir.path().join("tiny/eval.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["accuracy"].as_array().unwrap().len(), 2);
    assert!(v["loss"].as_f64().unwrap().is_finite());
}

/// A two-variant comparison of the tiny model in `dir`.
fn tiny_comparison(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cmp.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[experiment]
name = "cmp"
output_dir = "{}"

[model]
preset = "tiny"

[data]
seq_len = 32
max_eval_examples = 32
max_train_examples = 128

[federation]
rounds = 2
clients = 4
clients_per_round = 2

[trainer]
local_steps = 2
batch_size = 8

[[variant]]
name = "dense"
compressor = "none"

[[variant]]
name = "kbit4"
compressor = {{ name = "kbit", bits = 4 }}
"#,
            dir.display().to_string().replace('\\', "/")
        ),
    )
    .unwrap();
    path
}

#[test]
fn compare_runs_every_variant_writes_the_report_and_skips_finished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_comparison(dir.path());
    let out = cgfed(&["compare", path.to_str().unwrap(), "--no-progress"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmp = dir.path().join("cmp");
    for f in [
        "comparison.json",
        "report.md",
        "report.json",
        "loss_vs_uplink.svg",
        "loss_vs_uplink.png",
        "dense/summary.json",
        "kbit4/summary.json",
    ] {
        assert!(cmp.join(f).is_file(), "{f} missing:\n{stdout}");
    }
    // The terminal table names both variants on rows of their own.
    for v in ["dense", "kbit4"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(v)),
            "{v}:\n{stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cmp.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), 2);

    // Again: both are skipped, and `cgfed report` re-renders elsewhere.
    let out = cgfed(&["compare", path.to_str().unwrap(), "--no-progress"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        stdout.matches("finished earlier, skipped").count(),
        2,
        "{stdout}"
    );
    let other = dir.path().join("rendered");
    let out = cgfed(&[
        "report",
        cmp.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
        "--target",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(other.join("report.md")).unwrap();
    assert!(md.contains("kbit4") && md.contains("100"), "{md}");
    // A directory that is not a run says so.
    let out = cgfed(&["report", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("summary.json"));
}

#[test]
fn run_resume_finishes_a_run_and_leaves_a_finished_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = format!("experiment.output_dir=\"{}\"", dir.path().display());
    let args = [
        "run",
        "configs/tiny.toml",
        "--no-progress",
        "--resume",
        "--set",
        "federation.rounds=2",
        "--set",
        "data.max_train_examples=128",
        "--set",
        &out_dir,
    ];
    let out = cgfed(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("nothing to resume"), "{stdout}");
    let metrics = dir.path().join("tiny").join("metrics.jsonl");
    let before = std::fs::read(&metrics).unwrap();
    let out = cgfed(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("already finished"), "{stdout}");
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    // Resuming with another config is refused, naming the key.
    let mut changed = args.to_vec();
    changed[5] = "federation.rounds=3";
    let out = cgfed(&changed);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("federation.rounds"), "{err}");
}

/// `metrics.jsonl` of a run directory without timings.
fn untimed_metrics(dir: &std::path::Path) -> Vec<serde_json::Value> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.starts_with("time_") && !k.ends_with("_seconds"));
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v = serde_json::from_str(l).unwrap();
            strip(&mut v);
            v
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let args = |name: &str| -> Vec<String> {
        [
            "run",
            "configs/tiny.toml",
            "--no-progress",
            "--set",
            "federation.rounds=16",
            "--set",
            "data.max_train_examples=128",
            "--set",
            "compressor={ name = \"topk\", ratio = 0.1, error_feedback = true }",
            "--set",
            &format!("experiment.output_dir=\"{}\"", dir.path().display()),
            "--set",
            &format!("experiment.name=\"{name}\""),
        ]
        .map(String::from)
        .to_vec()
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let whole = args("whole");
    assert!(cgfed(&refs(&whole)).status.success());

    // Kill the same run (SIGKILL, no chance to clean up) once it has checkpointed round 2.
    let cut = args("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cgfed"))
        .args(&cut)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = dir.path().join("cut");
    let progress = run.join("checkpoint").join("progress.json");
    let started = std::time::Instant::now();
    loop {
        let round = std::fs::read(&progress)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["round"].as_u64())
            .unwrap_or(0);
        if round >= 2 {
            break;
        }
        assert!(started.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !run.join("summary.json").exists(),
        "the run finished before it was killed"
    );

    let mut resume = cut.clone();
    resume.insert(2, "--resume".into());
    let out = cgfed(&refs(&resume));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resuming from round"), "{stdout}");
    assert_eq!(
        untimed_metrics(&run),
        untimed_metrics(&dir.path().join("whole"))
    );
}
