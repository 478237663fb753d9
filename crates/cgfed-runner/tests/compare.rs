//! `cgfed compare`'s engine: a comparison file's `[[variant]]`s merged over the base, run
//! on identical splits, seeds and initial model, finished variants skipped, interrupted
//! ones resumed, and the report built from the records.

use crate::common;

use cgfed_core::Error;
use cgfed_plugins as _;
use cgfed_runner::compare::{self, merge, CompareObserver};
use cgfed_runner::report::{self, RunRecord};
use cgfed_runner::{load_comparison, Observer, Quiet, RunStatus, RunSummary};
use common::StopAfter;

fn base(out: &std::path::Path) -> String {
    format!(
        r#"
[experiment]
name = "cmp"
seed = 5
output_dir = "{}"

[model]
preset = "tiny"

[lora]
rank = 4

[data]
seq_len = 32
max_eval_examples = 48
max_train_examples = 192

[federation]
rounds = 2
clients = 4
clients_per_round = 2

[trainer]
name = "llama"
lr = 0.01
local_steps = 3
batch_size = 8

[compressor]
name = "topk"
ratio = 0.5
"#,
        out.display().to_string().replace('\\', "/")
    )
}

const VARIANTS: &str = r#"
[report]
reference = "none"

[[variant]]
name = "none"
compressor = "none"

[[variant]]
name = "kbit4"
compressor = { name = "kbit", bits = 4 }

[[variant]]
name = "topk-ef"
compressor = { ratio = 0.1, error_feedback = true }
federation = { rounds = 3 }
"#;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("cmp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Records statuses; optionally stops variant `stop.0` after `stop.1` rounds.
#[derive(Default)]
struct Log {
    statuses: Vec<(String, RunStatus)>,
    done: Vec<String>,
    stop: Option<(usize, usize)>,
    current: usize,
    run: StopAfter,
}

impl CompareObserver for Log {
    fn on_variant(&mut self, index: usize, name: &str, status: &RunStatus) {
        self.current = index;
        self.statuses.push((name.to_string(), status.clone()));
        self.run = StopAfter {
            after: self.stop.filter(|s| s.0 == index).map(|s| s.1),
            seen: 0,
        };
    }
    fn run_observer(&mut self) -> &mut dyn Observer {
        &mut self.run
    }
    fn on_variant_done(&mut self, name: &str, _: &RunSummary) {
        self.done.push(name.to_string());
    }
}

fn kind(s: &RunStatus) -> String {
    match s {
        RunStatus::New => "new".into(),
        RunStatus::Finished(_) => "finished".into(),
        RunStatus::Interrupted { round, from, .. } => format!("interrupted {round} from {from}"),
    }
}

#[test]
fn variants_merge_over_the_base_and_plugin_tables_are_replaced_when_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &(base(dir.path()) + VARIANTS));
    let cmp = load_comparison(&path, &["federation.clients_per_round=1".into()]).unwrap();
    assert_eq!(cmp.names(), ["none", "kbit4", "topk-ef"]);
    assert_eq!(cmp.dir, dir.path().join("cmp"));
    let kbit = cmp.config(1).unwrap();
    let t = kbit.compressor_table().unwrap();
    assert_eq!(t.name, "kbit");
    assert!(
        !t.params.contains_key("ratio"),
        "topk's ratio leaked into kbit"
    );
    let topk = cmp.config(2).unwrap();
    let t = topk.compressor_table().unwrap();
    assert_eq!(t.name, "topk", "an unnamed table merges into the base's");
    assert_eq!(t.params["ratio"].as_float(), Some(0.1));
    assert_eq!(topk.federation.rounds, 3);
    assert_eq!(topk.federation.clients, 4, "federation keys merge");
    for i in 0..3 {
        let c = cmp.config(i).unwrap();
        assert_eq!(c.federation.clients_per_round, 1, "--set applies to all");
        assert_eq!(c.experiment.seed, 5);
        assert_eq!(c.run_dir(), dir.path().join("cmp").join(&cmp.names()[i]));
    }

    let a: toml::Table =
        toml::from_str("x = { a = 1, b = 2 }\ncompressor = { name = \"topk\", ratio = 0.1 }")
            .unwrap();
    let b: toml::Table = toml::from_str("x = { b = 3 }\ncompressor = \"fp16\"").unwrap();
    let m = merge(&a, &b);
    assert_eq!(m["x"]["a"].as_integer(), Some(1));
    assert_eq!(m["x"]["b"].as_integer(), Some(3));
    assert_eq!(m["compressor"].as_str(), Some("fp16"));
}

#[test]
fn bad_comparison_files_name_the_file_the_key_and_the_variant() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("", "at least one `[[variant]]`"),
        ("[[variant]]\ncompressor = \"fp16\"\n", "variant[0].name"),
        (
            "[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n",
            "names two variants",
        ),
        (
            "[[variant]]\nname = \"a\"\nexperiment = { name = \"x\" }\n",
            "variant[0].experiment.name",
        ),
        (
            "[[variant]]\nname = \"bad\"\nfederation = { rounds = 0 }\n",
            "in variant `bad`",
        ),
        (
            "[report]\nreference = \"zzz\"\n[[variant]]\nname = \"a\"\n",
            "report.reference",
        ),
        (
            "[report]\ncolour = 1\n[[variant]]\nname = \"a\"\n",
            "colour",
        ),
    ];
    for (tail, want) in cases {
        let path = write(dir.path(), &(base(dir.path()) + tail));
        let err = load_comparison(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("cmp.toml"), "{err}");
        assert!(err.contains(want), "want `{want}` in: {err}");
    }
    // A comparison file given to `cgfed run`'s loader says what to do.
    let path = write(dir.path(), &(base(dir.path()) + VARIANTS));
    let err = cgfed_runner::load_config(&path, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cgfed compare"), "{err}");
}

#[test]
fn run_all_skips_finished_variants_resumes_interrupted_ones_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &(base(dir.path()) + VARIANTS));
    let cmp = load_comparison(&path, &[]).unwrap();

    // Interrupt the second variant after one round.
    let mut log = Log {
        stop: Some((1, 1)),
        ..Default::default()
    };
    let err = cmp.run_all(&mut log).unwrap_err();
    assert!(matches!(err, Error::Interrupted { round: 1 }), "{err}");
    assert_eq!(log.done, ["none"]);

    let mut log = Log::default();
    let records = cmp.run_all(&mut log).unwrap();
    let statuses: Vec<String> = log.statuses.iter().map(|(_, s)| kind(s)).collect();
    assert_eq!(statuses, ["finished", "interrupted 1 from 1", "new"]);
    assert_eq!(log.done, ["none", "kbit4", "topk-ef"]);
    assert_eq!(records.len(), 3);

    // The same initial model and evaluation set everywhere.
    let initial: Vec<f64> = records
        .iter()
        .map(|r| r.summary.initial_eval_loss)
        .collect();
    assert!(initial.iter().all(|l| *l == initial[0]), "{initial:?}");
    // Dense, plus a few header bytes per payload.
    assert!((0.99..=1.0).contains(&records[0].summary.ratio));
    assert_eq!(records[2].rounds.len(), 3);

    // The interrupted variant equals an uninterrupted run of it.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh_path = write(fresh_dir.path(), &(base(fresh_dir.path()) + VARIANTS));
    let fresh = load_comparison(&fresh_path, &[]).unwrap();
    let cfg = fresh.config(1).unwrap();
    cgfed_runner::run_experiment(&cfg, &mut Quiet).unwrap();
    let again = RunRecord::load("kbit4", &cfg.run_dir()).unwrap();
    let strip = |r: &RunRecord| -> Vec<(Option<f64>, usize, Option<f64>)> {
        r.rounds
            .iter()
            .map(|m| (m.eval_loss, m.cum_uplink_bytes, m.quality.snr_db))
            .collect()
    };
    assert_eq!(strip(&records[1]), strip(&again));
    // The initial evaluation the comparison shared is the one the variant measures alone.
    assert_eq!(
        again.summary.initial_eval_loss,
        records[1].summary.initial_eval_loss
    );
    assert_eq!(
        again.summary.initial_accuracy,
        records[1].summary.initial_accuracy
    );

    // A third pass runs nothing.
    let mut log = Log::default();
    cmp.run_all(&mut log).unwrap();
    assert!(log
        .statuses
        .iter()
        .all(|(_, s)| matches!(s, RunStatus::Finished(_))));

    // The report from the manifest, as `cgfed report DIR` reads it.
    let (recs, section) = compare::records_in(&cmp.dir).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        ["none", "kbit4", "topk-ef"]
    );
    assert_eq!(section.unwrap().reference.as_deref(), Some("none"));
    let rep = report::build(&recs, &cmp.report_options()).unwrap();
    assert_eq!(rep.rows.len(), 3);
    let files = report::write(&rep, &recs, &cmp.dir).unwrap();
    assert!(files.iter().any(|f| f.ends_with("report.md")));
    // A run directory on its own is a record too.
    let (one, none) = compare::records_in(&cmp.dir.join("kbit4")).unwrap();
    assert!(none.is_none());
    assert_eq!(one[0].label, "kbit4");
}
