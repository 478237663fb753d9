//! Config errors name the file, the key path and the accepted values.

use cgfed_plugins as _;
use cgfed_runner::{load_config, Experiment, ExperimentConfig};

const BASE: &str = r#"
[experiment]
name = "t"

[federation]
rounds = 1
clients = 2
clients_per_round = 1
"#;

fn err(text: &str, overrides: &[&str]) -> String {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match ExperimentConfig::from_toml_str(text, &o) {
        Ok(cfg) => match Experiment::build(&cfg) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_key_names_its_path() {
    let msg = err(&BASE.replace("rounds = 1", "rounds = 1\nroundz = 2"), &[]);
    assert!(msg.contains("federation.roundz"), "{msg}");
    assert!(
        msg.contains("clients_per_round"),
        "should list accepted keys: {msg}"
    );
    let msg = err(&format!("{BASE}\n[evaluation]\nevery = 1\n"), &[]);
    assert!(msg.contains("evaluation"), "{msg}");
}

#[test]
fn wrong_type_names_its_path() {
    let msg = err(&BASE.replace("rounds = 1", "rounds = \"three\""), &[]);
    assert!(msg.contains("federation.rounds"), "{msg}");
    let msg = err(BASE, &["experiment.seed=minus-one"]);
    assert!(msg.contains("experiment.seed"), "{msg}");
}

#[test]
fn unknown_plugin_lists_registered_names() {
    let msg = err(BASE, &["compressor.name=topkk"]);
    assert!(msg.contains("compressor.name"), "{msg}");
    assert!(msg.contains("unknown compressor \"topkk\""), "{msg}");
    assert!(msg.contains("fp16") && msg.contains("none"), "{msg}");
    let msg = err(BASE, &["aggregator=fedmedian"]);
    assert!(
        msg.contains("aggregator.name") && msg.contains("fedavg"),
        "{msg}"
    );
    let msg = err(BASE, &["trainer.name=gpt"]);
    assert!(
        msg.contains("trainer.name") && msg.contains("llama"),
        "{msg}"
    );
}

#[test]
fn plugin_parameter_errors_name_the_plugin_key() {
    let msg = err(BASE, &["compressor.name=fp16", "compressor.bits=8"]);
    assert!(msg.contains("compressor.bits"), "{msg}");
    let msg = err(BASE, &["aggregator.weighting=median"]);
    assert!(
        msg.contains("aggregator.weighting") && msg.contains("uniform"),
        "{msg}"
    );
    let msg = err(BASE, &["model.hiden_size=32"]);
    assert!(msg.contains("model.hiden_size"), "{msg}");
    let msg = err(BASE, &["data.seq_length=32"]);
    assert!(msg.contains("data.seq_length"), "{msg}");
}

#[test]
fn bad_values_name_the_key_and_range() {
    let msg = err(BASE, &["federation.clients_per_round=5"]);
    assert!(
        msg.contains("federation.clients_per_round") && msg.contains("1..=2"),
        "{msg}"
    );
    let msg = err(BASE, &["federation.rounds=0"]);
    assert!(msg.contains("federation.rounds"), "{msg}");
    let msg = err(BASE, &["experiment.device=cpu"]);
    assert!(
        msg.contains("experiment.device") && msg.contains("output_dir"),
        "{msg}"
    );
}

#[test]
fn errors_from_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BASE.replace("rounds = 1", "roundz = 1")).unwrap();
    let msg = load_config(&path, &[]).unwrap_err().to_string();
    assert!(msg.contains("broken.toml"), "{msg}");
    assert!(msg.contains("federation"), "{msg}");
    std::fs::write(&path, "[experiment\nname = ").unwrap();
    let msg = load_config(&path, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml") && msg.contains("invalid TOML"),
        "{msg}"
    );
    let msg = load_config(&dir.path().join("missing.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing.toml"), "{msg}");
}

#[test]
fn overrides_set_nested_keys_and_reject_bad_syntax() {
    let cfg = ExperimentConfig::from_toml_str(
        BASE,
        &[
            "federation.rounds=7".into(),
            "compressor=fp16".into(),
            "data.seq_len=16".into(),
        ],
    )
    .unwrap();
    assert_eq!(cfg.federation.rounds, 7);
    assert_eq!(cfg.compressor_table().unwrap().name, "fp16");
    assert_eq!(
        cfg.data.get("seq_len").and_then(|v| v.as_integer()),
        Some(16)
    );
    let msg = err(BASE, &["federation.rounds"]);
    assert!(msg.contains("key.path=value"), "{msg}");
    let msg = err(BASE, &["federation.rounds.x=1"]);
    assert!(
        msg.contains("federation.rounds") && msg.contains("not a table"),
        "{msg}"
    );
}

#[test]
fn bad_fault_settings_name_the_key_and_the_accepted_values() {
    for (set, key, hint) in [
        ("faults.dropout=1.5", "faults.dropout", "[0, 1]"),
        (
            "faults.byzantine_fraction=-0.1",
            "faults.byzantine_fraction",
            "[0, 1]",
        ),
        (
            "faults.straggler_steps=0",
            "faults.straggler_steps",
            "at least 1",
        ),
        ("faults.attack=flip", "faults.attack", "sign-flip"),
        (
            "faults.straggler_policy=wait",
            "faults.straggler_policy",
            "partial",
        ),
        ("faults.lambda=0", "faults.lambda", "> 0"),
        ("faults.noise_std=0", "faults.noise_std", "> 0"),
        (
            "federation.min_clients=2",
            "federation.min_clients",
            "1..=1",
        ),
        (
            "federation.min_clients=0",
            "federation.min_clients",
            "1..=1",
        ),
    ] {
        let msg = err(BASE, &[set]);
        assert!(msg.contains(key) && msg.contains(hint), "{set}: {msg}");
    }
    // λ belongs to the sign-flip and scale attacks only.
    let msg = err(BASE, &["faults.attack=gaussian", "faults.lambda=3"]);
    assert!(
        msg.contains("faults.lambda") && msg.contains("sign-flip"),
        "{msg}"
    );
    // The bare words nan and inf are attack names, not floats.
    let cfg = ExperimentConfig::from_toml_str(BASE, &["faults.attack=nan".into()]).unwrap();
    assert_eq!(cfg.faults.unwrap().attack, cgfed_runner::Attack::Nan);
}
