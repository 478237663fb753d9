//! `cgfed`: the command-line tool. Glue only: parse arguments, set up logging and progress,
//! call into cgfed-runner, print errors as a chain and map them to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use cgfed_plugins as _; // link every plugin so the registry sees them
use cgfed_runner::RunStatus;
use clap::{Parser, Subcommand};

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
        /// Continue the run in the run directory from its last checkpoint (identical
        /// results); a finished run is left alone, a missing one starts from scratch.
        #[arg(long)]
        resume: bool,
    },
    /// Run every `[[variant]]` of CONFIG side by side (same data splits, seeds and initial
    /// model), each in `<output_dir>/<name>/<variant>/`: finished variants are skipped,
    /// interrupted ones resume. Then write the comparison report (`report.md`,
    /// `report.json`, plots as SVG and PNG) and print its table.
    Compare {
        /// Comparison TOML file (a base experiment plus `[[variant]]` tables).
        config: PathBuf,
        /// Override a config key in every variant (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// No progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Re-render the report from finished runs: each DIR is a comparison directory (its
    /// variants) or a run directory; runs of different configs can be compared.
    Report {
        /// Comparison or run directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the report (default: the single comparison directory given, or
        /// `runs/report`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Report title.
        #[arg(long)]
        title: Option<String>,
        /// The run the others are measured against (a label; default: the first).
        #[arg(long)]
        reference: Option<String>,
        /// Absolute target eval loss for rounds/bytes to target (default: the reference's
        /// final loss + `--target-within`).
        #[arg(long)]
        target: Option<f64>,
        /// Relative slack over the reference's final loss for the target (default 0.02).
        #[arg(long)]
        target_within: Option<f64>,
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
            resume,
        } => {
            if resume {
                let cfg = cgfed_runner::load_config(&config, &overrides)?;
                match cgfed_runner::run_status(&cfg)? {
                    RunStatus::Finished(summary) => {
                        println!("{}: already finished", cfg.run_dir().display());
                        progress::Progress::new(false).finish(&summary);
                        return Ok(());
                    }
                    RunStatus::Interrupted { round, total, from } => println!(
                        "{}: stopped after round {round} of {total}; {}",
                        cfg.run_dir().display(),
                        if from == 0 {
                            "before its calibration fit, so it starts over".to_string()
                        } else {
                            format!("resuming from round {}", from + 1)
                        }
                    ),
                    RunStatus::New => println!(
                        "{}: nothing to resume; starting from the first round",
                        cfg.run_dir().display()
                    ),
                }
            }
            let (_, mut exp) = prepare(&config, &overrides)?;
            let mut observer = progress::Progress::new(!no_progress);
            let done = if resume {
                exp.resume(&mut observer)
            } else {
                exp.run(&mut observer)
            };
            let summary = done.map_err(|e| {
                anyhow::Error::new(e).context(format!("run of {} failed", config.display()))
            })?;
            observer.finish(&summary);
            Ok(())
        }
        Command::Compare {
            config,
            overrides,
            no_progress,
        } => compare(&config, &overrides, no_progress),
        Command::Report {
            dirs,
            out,
            title,
            reference,
            target,
            target_within,
        } => report(&dirs, out, title, reference, target, target_within),
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
        Command::Check { config, overrides } if is_comparison(&config) => {
            let cmp = cgfed_runner::load_comparison(&config, &overrides)?;
            for (i, v) in cmp.variants.iter().enumerate() {
                let cfg = cmp.config(i)?;
                // Every variant's plugins with their keys; the whole experiment once.
                let c = cgfed_core::registry::build_compressor(&cfg.compressor_table()?)
                    .map_err(|e| e.in_file(&config))?;
                cgfed_core::registry::build_aggregator(&cfg.aggregator_table()?)
                    .map_err(|e| e.in_file(&config))?;
                println!("  variant {:<16} {}", v.name, c.describe());
            }
            let exp = cgfed_runner::Experiment::build(&cmp.config(0)?)?;
            println!("{}: ok ({} variants)", config.display(), cmp.variants.len());
            println!("{}", exp.data().summary);
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

/// Whether the TOML file at `path` is a comparison (has `[[variant]]` tables).
fn is_comparison(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("variant"))
}

/// `cgfed compare`: every variant in turn, then the report.
fn compare(
    config: &std::path::Path,
    overrides: &[String],
    no_progress: bool,
) -> anyhow::Result<()> {
    let cmp = cgfed_runner::load_comparison(config, overrides)?;
    // Fetch what every variant needs first (once), with progress.
    for i in 0..cmp.variants.len() {
        let cfg = cmp.config(i)?;
        models::prefetch_for(&cfg.model)?;
        models::prefetch_data(&cfg.data)?;
    }
    println!(
        "comparison {} ({} variants: {}) -> {}",
        cmp.name,
        cmp.variants.len(),
        cmp.names().join(", "),
        cmp.dir.display()
    );
    let mut observer = progress::CompareProgress::new(!no_progress, cmp.variants.len());
    let records = cmp.run_all(&mut observer).map_err(|e| {
        anyhow::Error::new(e).context(format!("comparison {} failed", config.display()))
    })?;
    println!();
    render(&records, &cmp.report_options(), &cmp.dir)
}

/// Build the report of `records`, write it into `out` and print its table and files.
fn render(
    records: &[cgfed_runner::report::RunRecord],
    opts: &cgfed_runner::report::ReportOptions,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let report = cgfed_runner::report::build(records, opts)?;
    let files = cgfed_runner::report::write(&report, records, out)?;
    print!("{}", cgfed_runner::report::terminal_table(&report));
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// `cgfed report`: re-render from finished runs.
fn report(
    dirs: &[PathBuf],
    out: Option<PathBuf>,
    title: Option<String>,
    reference: Option<String>,
    target: Option<f64>,
    target_within: Option<f64>,
) -> anyhow::Result<()> {
    let mut records = Vec::new();
    let mut section = None;
    for d in dirs {
        let (r, s) = cgfed_runner::compare::records_in(d)?;
        records.extend(r);
        section = section.or(s);
    }
    // Runs from different comparisons may share a label: qualify repeated ones.
    let labels: Vec<String> = records.iter().map(|r| r.label.clone()).collect();
    for r in &mut records {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            if let Some(parent) = r.dir.parent().and_then(|p| p.file_name()) {
                r.label = format!("{}/{}", parent.to_string_lossy(), r.label);
            }
        }
    }
    let single_comparison = dirs.len() == 1 && section.is_some();
    let mut section = if single_comparison {
        section.unwrap_or_default()
    } else {
        Default::default()
    };
    section.title = title.or(section.title);
    section.reference = reference.or(section.reference);
    section.target_eval_loss = target.or(section.target_eval_loss);
    section.target_within = target_within.or(section.target_within);
    let default_title = if single_comparison {
        dirs[0]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    } else {
        None
    }
    .unwrap_or_else(|| "comparison".into());
    let opts = cgfed_runner::compare::report_options(&section, &default_title);
    let out = out.unwrap_or_else(|| {
        if single_comparison {
            dirs[0].clone()
        } else {
            PathBuf::from("runs/report")
        }
    });
    render(&records, &opts, &out)
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
