//! Multiple-choice accuracy in a run and in `Experiment::evaluate`, on the tiny model with a
//! user exam file (C-Eval CSV layout) as the evaluation set and prompt/completion JSONL as
//! training data: reported before and after, in [0, 1], deterministic, with the letter
//! scoring next to the cloze one.

use cgfed_plugins as _;
use cgfed_runner::{run_experiment, Experiment, ExperimentConfig, Quiet};

fn config(dir: &std::path::Path) -> ExperimentConfig {
    let train = dir.join("train.jsonl");
    let mut lines = String::new();
    for i in 0..64 {
        lines.push_str(&format!(
            "{{\"prompt\": \"Question: {i} plus one?\\nAnswer:\", \"completion\": \" {}\"}}\n",
            i + 1
        ));
    }
    std::fs::write(&train, lines).unwrap();
    let exam = dir.join("exam.csv");
    let mut csv = String::from("id,question,A,B,C,D,answer\n");
    for i in 0..12 {
        let key = ["A", "B", "C", "D"][i % 4];
        csv.push_str(&format!(
            "{i},{i} plus one?,{},{},{},{},{key}\n",
            i + 1 + (i % 4 != 0) as usize * 10,
            i + 1 + (i % 4 != 1) as usize * 20,
            i + 1 + (i % 4 != 2) as usize * 30,
            i + 1 + (i % 4 != 3) as usize * 40,
        ));
    }
    std::fs::write(&exam, csv).unwrap();
    let text = format!(
        r#"
[experiment]
name = "acc"
seed = 1
output_dir = {out:?}

[model]
preset = "tiny"

[data]
train = {train:?}
eval = {exam:?}
seq_len = 48

[federation]
rounds = 2
clients = 2
clients_per_round = 2

[trainer]
name = "llama"
lr = 0.01
local_steps = 2
batch_size = 8

[eval]
accuracy = ["cloze", "letter"]
"#,
        out = dir.join("runs").display().to_string(),
        train = train.display().to_string(),
        exam = exam.display().to_string(),
    );
    ExperimentConfig::from_toml_str(&text, &[]).expect("valid config")
}

#[test]
fn accuracy_is_reported_before_and_after_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let s = run_experiment(&cfg, &mut Quiet).unwrap();
    for m in [&s.initial_accuracy, &s.final_accuracy] {
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["acc_cloze", "acc_cloze_norm", "acc_letter"]);
        assert!(m.values().all(|v| (0.0..=1.0).contains(v)), "{m:?}");
    }
    assert_eq!(s.accuracy_reports.len(), 2);
    assert!(s
        .accuracy_reports
        .iter()
        .all(|r| r.items == 12 && (r.chance - 0.25).abs() < 1e-12));

    // `evaluate` without training, twice: identical.
    let mut exp = Experiment::build(&cfg).unwrap();
    let a = exp.evaluate().unwrap();
    let b = exp.evaluate().unwrap();
    assert_eq!(a.loss, b.loss);
    assert_eq!(a.accuracy, b.accuracy);
    // Before training, `evaluate` sees the run's initial state.
    assert!((a.loss - s.initial_eval_loss).abs() < 1e-9);
    let flat = cgfed_runner::flat_accuracy(&a.accuracy);
    assert_eq!(flat, s.initial_accuracy);
}

#[test]
fn accuracy_items_caps_the_scored_items_and_empty_list_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.eval.accuracy_items = Some(5);
    let mut exp = Experiment::build(&cfg).unwrap();
    let ev = exp.evaluate().unwrap();
    assert!(ev.accuracy.iter().all(|r| r.items == 5));
    cfg.eval.accuracy = vec![];
    let mut exp = Experiment::build(&cfg).unwrap();
    assert!(exp.evaluate().unwrap().accuracy.is_empty());
}
