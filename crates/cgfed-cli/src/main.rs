//! `cgfed`: the command-line tool. Glue only: parse arguments, set up logging and progress,
//! call into cgfed-runner, print errors as a chain and map them to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use cgfed_plugins as _;
use clap::{Parser, Subcommand}; // link every plugin so the registry sees them

mod models;
mod progress;

/// Communication-efficient federated fine-tuning of LLaMA models.
#[derive(Debug, Parser)]
#[command(name = "cgfed", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the federated experiment described by CONFIG.
    Run {
        /// Experiment TOML file.
        config: PathBuf,
        /// Override a config key, e.g. `--set federation.rounds=3` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// No progress bar (the per-round table is still printed).
        #[arg(long)]
        no_progress: bool,
    },
    /// Evaluate the configured model on CONFIG's evaluation set with no training: held-out
    /// loss and perplexity, and multiple-choice accuracy (`[eval] accuracy`). Writes
    /// `eval.json` into the run directory.
    Eval {
        /// Experiment TOML file.
        config: PathBuf,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// TGAP only: run CONFIG's calibration rounds (dense, on D1), fit the compressor
    /// (cgfedllm's autoencoder) and save it, so later runs can `load` it instead of
    /// calibrating. Writes `ae.safetensors`, `ae.toml`, `metrics.jsonl` and `tgap.json`
    /// into OUT (default: the run directory's `tgap/`).
    Tgap {
        /// Experiment TOML file (its `[compressor]` must calibrate, e.g. cgfedllm).
        config: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Parse CONFIG and build every part of it without running a round.
    Check {
        /// Experiment TOML file.
        config: PathBuf,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// List every registered compressor, aggregator and trainer, and every asset.
    List,
    /// Download and verify a named asset (a model file or a data directory) into the cache
    /// ($CGFED_HOME, default ~/.cache/cgfed), e.g. `cgfed fetch smollm2-135m`; `cgfed list`
    /// shows them all.
    Fetch {
        /// Asset name.
        name: String,
    },
    /// Load MODEL (preset, asset name, .gguf file or HF directory) and print its mean NLL on
    /// a fixed English passage and a short greedy continuation.
    CheckModel {
        /// `tiny`, `small`, `smollm2-135m`, a .gguf file, or a Hugging Face directory.
        model: String,
        /// Device: auto, cpu, cuda, cuda:N.
        #[arg(long)]
        device: Option<String>,
        /// Tokens to generate.
        #[arg(long, default_value_t = 8)]
        max_new_tokens: usize,
    },
}

fn main() -> ExitCode {
    // mimalloc (linked by cgfed-alloc) keeping freed memory for reuse: a training step frees
    // and reallocates the same large tensors every step (see cgfed-alloc's docs).
    cgfed_alloc::configure();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            overrides,
            no_progress,
        } => {
            let (_, mut exp) = prepare(&config, &overrides)?;
            let mut observer = progress::Progress::new(!no_progress);
            let summary = exp.run(&mut observer).map_err(|e| {
                anyhow::Error::new(e).context(format!("run of {} failed", config.display()))
            })?;
            observer.finish(&summary);
            Ok(())
        }
        Command::Eval { config, overrides } => {
            let (cfg, mut exp) = prepare(&config, &overrides)?;
            println!("{}", exp.data().summary);
            let ev = exp.evaluate()?;
            print!("{}", progress::eval_report(&ev));
            let dir = cfg.run_dir();
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("eval.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&ev)?)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Tgap {
            config,
            out,
            overrides,
            no_progress,
        } => {
            let (cfg, mut exp) = prepare(&config, &overrides)?;
            let out = out.unwrap_or_else(|| cfg.run_dir().join("tgap"));
            let mut observer = progress::Progress::new(!no_progress);
            let summary = exp.calibrate(&out, &mut observer).map_err(|e| {
                anyhow::Error::new(e).context(format!("TGAP of {} failed", config.display()))
            })?;
            print!("{}", progress::tgap_report(&summary));
            println!("saved the autoencoder to {}", out.display());
            Ok(())
        }
        Command::Check { config, overrides } => {
            let exp = cgfed_runner::load_experiment(&config, &overrides)?;
            println!("{}: ok", config.display());
            println!("{exp:?}");
            println!("{}", exp.data().summary);
            Ok(())
        }
        Command::Fetch { name } => models::fetch(&name),
        Command::CheckModel {
            model,
            device,
            max_new_tokens,
        } => models::check(&model, device, max_new_tokens),
        Command::List => {
            cgfed_core::registry::check_unique()?;
            print!("{}", list_plugins());
            print!("{}", models::list_assets(&cgfed_assets::cgfed_home()));
            Ok(())
        }
    }
}

/// Load CONFIG, fetch the assets it names (with progress), and build the experiment.
fn prepare(
    config: &std::path::Path,
    overrides: &[String],
) -> anyhow::Result<(cgfed_runner::ExperimentConfig, cgfed_runner::Experiment)> {
    let cfg = cgfed_runner::load_config(config, overrides)?;
    models::prefetch_for(&cfg.model)?;
    models::prefetch_data(&cfg.data)?;
    let exp = cgfed_runner::load_experiment(config, overrides)?;
    Ok((cfg, exp))
}

/// The `cgfed list` text: one section per kind, one line per plugin, then its keys with
/// their defaults; the wrapper keys every compressor takes come once, after the compressors.
fn list_plugins() -> String {
    let mut out = String::new();
    for kind in ["compressor", "aggregator", "trainer"] {
        out.push_str(&format!("{kind}s:\n"));
        for p in cgfed_core::registry::plugins()
            .into_iter()
            .filter(|p| p.kind() == kind)
        {
            out.push_str(&format!("  {:<12} {}\n", p.name, p.summary));
            for k in p.params {
                out.push_str(&format!(
                    "      {:<16} {:<10} {}\n",
                    k.key, k.default, k.help
                ));
            }
        }
        if kind == "compressor" {
            out.push_str("  every compressor table (and [downlink]) also takes:\n");
            for (key, default, help) in cgfed_core::wrappers::WRAPPER_KEYS {
                out.push_str(&format!("      {key:<16} {default:<10} {help}\n"));
            }
        }
    }
    out
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
