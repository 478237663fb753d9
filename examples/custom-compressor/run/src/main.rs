//! `custom-cgfed`: a cgfed binary that links a third-party compressor plugin (the example
//! `ternary` of `custom-compressor`) next to the built-ins, and runs an experiment from TOML.
//!
//! ```sh
//! cargo run -p custom-compressor-run -- examples/custom-compressor/ternary.toml
//! cargo run -p custom-compressor-run -- examples/custom-compressor/ternary.toml --set federation.rounds=5
//! cargo run -p custom-compressor-run -- --list     # the registered compressors, ternary included
//! ```
//!
//! Prints one line per round and, at the end, the final eval loss, the total uplink bytes
//! and the compression ratio; the run directory (`summary.json`, `metrics.jsonl`, …) is the
//! same as `cgfed run` writes.

use std::path::PathBuf;
use std::process::ExitCode;

// The registry pitfall: plugins register themselves with `inventory`, i.e. with static
// constructors in their own crate. Rust links a library crate only if something in the
// binary refers to it, and a crate that is merely listed in Cargo.toml is dropped by the
// linker together with its registrations, so `ternary` would silently be "unknown". These
// two lines reference both crates and keep every registration alive.
use cgfed_plugins as _; // the built-in compressors, aggregators and the `llama` trainer
use custom_compressor as _; // our `ternary`

use anyhow::Context;
use cgfed_runner::{Observer, RoundMetrics, RunInfo};

const USAGE: &str =
    "usage: custom-cgfed CONFIG.toml [--set key.path=value]... | custom-cgfed --list";

/// Prints one line per round.
struct Lines;

impl Observer for Lines {
    fn on_start(&mut self, info: &RunInfo) {
        println!(
            "{}: {} rounds, compressor {}, aggregator {}; initial eval loss {:.4}",
            info.name, info.rounds, info.compressor, info.aggregator, info.initial_eval_loss
        );
    }

    fn on_round(&mut self, m: &RoundMetrics) {
        let loss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!(
            "round {:>2}: train_loss {} eval_loss {} uplink {} B from {} clients (ratio {:.2}) snr {}",
            m.round,
            loss(m.train_loss),
            loss(m.eval_loss),
            m.uplink_bytes,
            m.participants,
            m.ratio,
            m.quality
                .snr_db
                .map_or("exact".to_string(), |v| format!("{v:.2} dB"))
        );
    }
}

/// What the command line asks for.
enum Command {
    Run {
        config: PathBuf,
        overrides: Vec<String>,
    },
    List,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut overrides = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => return Ok(Command::List),
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--set" => overrides.push(
                args.next()
                    .ok_or_else(|| format!("--set needs a key.path=value\n{USAGE}"))?,
            ),
            s if s.starts_with("--set=") => overrides.push(s["--set=".len()..].to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            _ if config.is_some() => return Err(format!("more than one config file\n{USAGE}")),
            _ => config = Some(PathBuf::from(a)),
        }
    }
    let config = config.ok_or_else(|| USAGE.to_string())?;
    Ok(Command::Run { config, overrides })
}

/// Every registered compressor with its keys, like `cgfed list`.
fn list() {
    println!("compressors:");
    for p in cgfed_core::registry::plugins() {
        if p.kind() != "compressor" {
            continue;
        }
        println!("  {:<12} {}", p.name, p.summary);
        for k in p.params {
            println!("      {:<16} {:<10} {}", k.key, k.default, k.help);
        }
    }
    println!("  every compressor table also takes:");
    for (key, default, help) in cgfed_core::wrappers::WRAPPER_KEYS {
        println!("      {key:<16} {default:<10} {help}");
    }
}

fn run(config: &std::path::Path, overrides: &[String]) -> anyhow::Result<()> {
    cgfed_core::registry::check_unique()?; // two plugins with one name: an error, not a guess
    let cfg = cgfed_runner::load_config(config, overrides)?;
    let summary = cgfed_runner::run_experiment(&cfg, &mut Lines)
        .with_context(|| format!("running {}", config.display()))?;
    println!(
        "{}: final eval loss {:.4} (initial {:.4}); uplink {} B in total, ratio {:.2} vs dense f32 ({} B); compressor {}",
        summary.name,
        summary.final_eval_loss,
        summary.initial_eval_loss,
        summary.total_uplink_bytes,
        summary.ratio,
        summary.total_dense_bytes,
        summary.compressor
    );
    println!("run directory: {}", cfg.run_dir().display());
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Ok(Command::List) => {
            list();
            ExitCode::SUCCESS
        }
        Ok(Command::Run { config, overrides }) => match run(&config, &overrides) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
