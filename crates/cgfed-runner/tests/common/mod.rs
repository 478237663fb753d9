//! Shared helpers for the runner's integration tests.
#![allow(dead_code)]

use cgfed_runner::ExperimentConfig;

/// A small, fast experiment: tiny model, 4 clients, 2 per round.
pub fn small_config(name: &str, out: &std::path::Path, extra: &[&str]) -> ExperimentConfig {
    let text = format!(
        r#"
[experiment]
name = "{name}"
seed = 3
output_dir = "{}"

[model]
preset = "tiny"

[lora]
rank = 4

[data]
seq_len = 32
max_eval_examples = 64
max_train_examples = 256

[federation]
rounds = 3
clients = 4
clients_per_round = 2

[trainer]
name = "llama"
lr = 0.01
local_steps = 6
batch_size = 8
"#,
        out.display().to_string().replace('\\', "/")
    );
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::from_toml_str(&text, &overrides).expect("test config is valid")
}

/// Read `metrics.jsonl` of a finished run.
pub fn read_metrics(cfg: &ExperimentConfig) -> Vec<cgfed_runner::RoundMetrics> {
    let text = std::fs::read_to_string(cfg.run_dir().join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// An observer that stops a run after `after` rounds (never with `None`).
#[derive(Debug, Default)]
pub struct StopAfter {
    /// Rounds after which `keep_going` answers `false`.
    pub after: Option<usize>,
    /// Rounds seen so far.
    pub seen: usize,
}

impl StopAfter {
    /// Stop after `after` rounds.
    pub fn new(after: usize) -> Self {
        Self {
            after: Some(after),
            seen: 0,
        }
    }
}

impl cgfed_runner::Observer for StopAfter {
    fn on_round(&mut self, _: &cgfed_runner::RoundMetrics) {
        self.seen += 1;
    }
    fn keep_going(&mut self) -> bool {
        self.after.is_none_or(|a| self.seen < a)
    }
}
