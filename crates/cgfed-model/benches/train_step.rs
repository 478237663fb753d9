//! Training-step benchmark: forward + backward + AdamW (the trainer's `FusedAdamW`) on random LLaMA models, full
//! fine-tuning and LoRA (r = 8 on q/k/v/o), at 1 and 2 CPU threads, against PyTorch targets.
//!
//! ```text
//! cargo bench -p cgfed-model --bench train_step
//! CGFED_BENCH_CONFIGS=s,m CGFED_BENCH_MODES=lora CGFED_BENCH_THREADS=1 \
//!     cargo bench -p cgfed-model --bench train_step
//! CGFED_BENCH_DEVICE=cuda CGFED_BENCH_DTYPE=bf16 \
//!     cargo bench -p cgfed-model --features cuda --bench train_step
//! ```
//!
//! Configs (dim / layers / heads / kv-heads / ffn / vocab, seq, batch; RoPE θ 10000 and
//! untied head unless said):
//!
//! | name      | shape                                        | seq | batch | steps |
//! |-----------|----------------------------------------------|-----|-------|-------|
//! | `s`       | 64 / 2 / 4 / 4 / 172 / 256                   |  64 |     8 |    20 |
//! | `m`       | 128 / 4 / 4 / 4 / 344 / 1024                 | 128 |     8 |    10 |
//! | `l`       | 256 / 4 / 8 / 8 / 688 / 2000                 | 128 |     8 |     8 |
//! | `xl`      | 512 / 8 / 8 / 8 / 1376 / 2000                | 128 |     4 |     4 |
//! | `smollm2` | 576 / 30 / 9 / 3 / 1536 / 49152, tied, θ 1e5 | 128 |     4 |     2 |
//!
//! Environment variables (all optional):
//!
//! - `CGFED_BENCH_CONFIGS`: comma-separated subset of `s,m,l,xl,smollm2` (default: all);
//! - `CGFED_BENCH_MODES`: subset of `full,lora` (default both; `lora` = r 8, alpha 16 on
//!   q/k/v/o, `full` = every base weight trainable, `[lora] mode = "full"`);
//! - `CGFED_BENCH_THREADS`: comma-separated CPU thread counts (default `1,2`). candle's CPU
//!   thread count is fixed per process (`RAYON_NUM_THREADS`, read by
//!   `candle_core::utils::get_num_threads`), so on the CPU the bench re-executes itself
//!   (`std::env::current_exe()`) once per (threads, config, mode) with `RAYON_NUM_THREADS`
//!   set, and collects the children's rows; each row's peak RSS is thus its own process's;
//! - `CGFED_BENCH_REPEAT`: child runs per (threads, config, mode), default 1; with more, the
//!   row shown is the run with the median step time (`runs` column);
//! - `CGFED_BENCH_INPROC=1`: no children: run every selected config and mode in this
//!   process with its thread count (`RAYON_NUM_THREADS` as set), e.g. under a profiler;
//! - `CGFED_BENCH_STEPS`: timed steps per run (default per config, above; after half as
//!   many warm-up steps, at least 1 and at most 5);
//! - `CGFED_BENCH_SEQ`, `CGFED_BENCH_BATCH`: override every config's sequence length and
//!   batch size (the PyTorch ratios are then meaningless);
//! - `CGFED_BENCH_DEVICE`: `cpu` (default), `auto`, `cuda`, `cuda:N` (not `cpu`: no
//!   children, one run per config and mode);
//! - `CGFED_BENCH_DTYPE`: `f32` (default), `f64`, `bf16`, `f16` (half precision on CUDA only).
//!
//! One step is exactly what [`LlamaTrainer`]'s local run does per batch: forward to the mean
//! next-token loss, backward, AdamW step (plus reading the loss, which synchronises). The
//! model is built by [`LlamaTrainer::new`]; batching is outside the timed region.
//!
//! `docs/perf-train-step.md` has results, the method and a profile.

// The `cgfed` binary's allocator and its settings (crates/cgfed-alloc), so the benchmark
// measures what a run does.
use cgfed_alloc as _;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{Optimizer, ParamsAdamW};
use cgfed_core::{Example, Result};
use cgfed_model::batch::{mean_nll, Batch};
use cgfed_model::device::{check_dtype_for_device, describe_device, parse_device};
use cgfed_model::optim::FusedAdamW;
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, LoraMode, TrainerConfig};

/// One benchmarked shape.
struct BenchConfig {
    name: &'static str,
    spec: LlamaSpec,
    seq: usize,
    batch: usize,
    default_steps: usize,
}

/// A plain shape: RoPE θ 10000, ε 1e-5, untied head.
fn shape(
    dim: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    vocab: usize,
) -> LlamaSpec {
    LlamaSpec {
        vocab_size: vocab,
        hidden_size: dim,
        intermediate_size: ffn,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_seq_len: 2048,
        tie_embeddings: false,
    }
}

fn configs() -> Vec<BenchConfig> {
    let c = |name, spec, seq, batch, default_steps| BenchConfig {
        name,
        spec,
        seq,
        batch,
        default_steps,
    };
    vec![
        c("s", shape(64, 2, 4, 4, 172, 256), 64, 8, 20),
        c("m", shape(128, 4, 4, 4, 344, 1024), 128, 8, 10),
        c("l", shape(256, 4, 8, 8, 688, 2000), 128, 8, 8),
        c("xl", shape(512, 8, 8, 8, 1376, 2000), 128, 4, 4),
        c(
            "smollm2",
            // SmolLM2-135M's shape, random weights.
            LlamaSpec {
                rope_theta: 100_000.0,
                tie_embeddings: true,
                ..shape(576, 30, 9, 3, 1536, 49152)
            },
            128,
            4,
            2,
        ),
    ]
}

const MODES: [&str; 2] = ["full", "lora"];

/// PyTorch 2.x eager f32 tokens/s on the same machine kind (forward + backward + AdamW),
/// as given by the issue. S–XL were given without a mode: the same number is the target of
/// both modes there.
fn torch_target(config: &str, mode: &str, threads: usize) -> Option<f64> {
    match (threads, config, mode) {
        (2, "s", _) => Some(52_700.0),
        (2, "m", _) => Some(14_000.0),
        (2, "l", _) => Some(5_450.0),
        (2, "xl", _) => Some(840.0),
        (2, "smollm2", "full") => Some(145.0),
        (2, "smollm2", "lora") => Some(225.0),
        (1, "m", _) => Some(9_000.0),
        (1, "smollm2", "lora") => Some(133.0),
        _ => None,
    }
}

fn lora_config(mode: &str) -> LoraConfig {
    LoraConfig {
        mode: if mode == "full" {
            LoraMode::Full
        } else {
            LoraMode::Lora
        },
        ..LoraConfig::default() // r = 8, alpha 16, q/k/v/o
    }
}

/// Useful model FLOPs of one step: matmuls only (linear layers incl. LoRA adapters and the
/// head over the target rows, attention scores and values), forward `F`; backward `2F` in
/// full fine-tuning (input and weight gradients), and in LoRA mode input gradients of the
/// frozen linears (`F_lin`) plus both gradients of attention and adapters. Elementwise
/// ops, norms, softmax and AdamW are not counted.
fn step_flops(spec: &LlamaSpec, mode: &str, batch: usize, seq: usize, rows: usize) -> f64 {
    let (h, f, kv, v, l) = (
        spec.hidden_size as f64,
        spec.intermediate_size as f64,
        spec.kv_dim() as f64,
        spec.vocab_size as f64,
        spec.num_layers as f64,
    );
    let tokens = (batch * seq) as f64;
    let lin =
        2.0 * tokens * l * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * f) + 2.0 * rows as f64 * v * h;
    let attn = l * 4.0 * batch as f64 * (seq as f64).powi(2) * h;
    if mode == "full" {
        3.0 * (lin + attn)
    } else {
        let r = 8.0;
        let adapters = 2.0 * tokens * l * r * ((h + h) + (h + kv) + (h + kv) + (h + h));
        2.0 * lin + 3.0 * (attn + adapters)
    }
}

fn env_usize(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(cgfed_core::Error::config(
            "CGFED_BENCH_DTYPE",
            format!("unknown dtype \"{other}\"; accepted: f32, f64, bf16, f16"),
        )),
    }
}

/// Peak resident set size of this process so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Reset `VmHWM` to the current RSS (Linux ≥ 4.0); false where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// Median time of `reps` `n×n×n` f32 matmuls, in GFLOP/s.
fn matmul_gflops(n: usize, reps: usize, device: &Device) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    a.matmul(&b)?; // warm-up
    sync(device)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        sync(device)?;
        times.push(t.elapsed());
        drop(c);
    }
    Ok(2.0 * (n as f64).powi(3) / median(times).as_secs_f64() / 1e9)
}

/// Random examples of `seq + 1` tokens (so `seq` inputs, `seq` targets each).
fn examples(vocab: usize, seq: usize, count: usize) -> Vec<Example> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| Example {
            tokens: (0..=seq)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % vocab as u64) as u32
                })
                .collect(),
            loss_start: 1,
        })
        .collect()
}

/// Wall time of one step and of its phases.
struct Phases {
    total: Duration,
    forward: Duration,
    backward: Duration,
    optimizer: Duration,
}

/// One run's result; children send it to the parent as one `@row` line.
struct Row {
    name: String,
    mode: String,
    threads: usize,
    /// Child runs this row is the median of (parent only).
    runs: usize,
    params: usize,
    trainable: usize,
    steps: usize,
    /// Median step time, s.
    step: f64,
    /// Fastest step (least disturbed by other processes on a shared machine), s.
    best: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
    tokens: usize,
    /// Useful FLOPs of one step ([`step_flops`]).
    flops: f64,
    /// Peak RSS of the run (VmHWM), MiB; NaN when unknown.
    peak_mib: f64,
    /// f32 matmul reference measured just before the run, GFLOP/s.
    mm: f64,
    build: f64,
}

impl Row {
    fn to_line(&self) -> String {
        format!(
            "@row {} {} {} {} {} {} {:e} {:e} {:e} {:e} {:e} {} {:e} {:e} {:e} {:e}",
            self.name,
            self.mode,
            self.threads,
            self.params,
            self.trainable,
            self.steps,
            self.step,
            self.best,
            self.forward,
            self.backward,
            self.optimizer,
            self.tokens,
            self.flops,
            self.peak_mib,
            self.mm,
            self.build
        )
    }

    fn from_line(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.strip_prefix("@row ")?.split_whitespace().collect();
        if f.len() != 16 {
            return None;
        }
        let u = |i: usize| f[i].parse::<usize>().ok();
        let x = |i: usize| f[i].parse::<f64>().ok();
        Some(Row {
            name: f[0].to_string(),
            mode: f[1].to_string(),
            threads: u(2)?,
            runs: 1,
            params: u(3)?,
            trainable: u(4)?,
            steps: u(5)?,
            step: x(6)?,
            best: x(7)?,
            forward: x(8)?,
            backward: x(9)?,
            optimizer: x(10)?,
            tokens: u(11)?,
            flops: x(12)?,
            peak_mib: x(13)?,
            mm: x(14)?,
            build: x(15)?,
        })
    }
}

struct Setup {
    device: Device,
    dtype: DType,
    seq: Option<usize>,
    batch: Option<usize>,
    steps: Option<usize>,
}

fn bench_one(cfg: &BenchConfig, mode: &str, s: &Setup) -> Result<Row> {
    let (device, dtype) = (&s.device, s.dtype);
    let seq = s.seq.unwrap_or(cfg.seq);
    let batch_size = s.batch.unwrap_or(cfg.batch);
    let steps = s.steps.unwrap_or(cfg.default_steps).max(1);
    let mm = matmul_gflops(1024, 5, device)?;
    reset_peak_rss();
    let mut spec = cfg.spec.clone();
    spec.max_seq_len = spec.max_seq_len.max(seq);
    let params = spec.num_params();
    let t0 = Instant::now();
    let trainer = LlamaTrainer::new(
        spec.clone(),
        lora_config(mode),
        TrainerConfig {
            batch_size,
            ..Default::default()
        },
        7,
        device.clone(),
        dtype,
    )?;
    sync(device)?;
    let build = t0.elapsed().as_secs_f64();
    let model = trainer.model();
    let vars: Vec<_> = model.trainable().into_iter().map(|(_, v)| v).collect();
    let trainable = vars.iter().map(|v| v.elem_count()).sum();
    let mut opt = FusedAdamW::new(
        vars,
        ParamsAdamW {
            lr: trainer.config().lr,
            ..Default::default()
        },
    )?;
    let data = examples(spec.vocab_size, seq, batch_size * 4);
    let batches = data
        .chunks(batch_size)
        .map(|c| Batch::new(&c.iter().collect::<Vec<_>>(), device))
        .collect::<Result<Vec<_>>>()?;
    let tokens = batches[0].num_targets;

    // One step, timed by phase (synchronising the device between phases).
    let mut step = |i: usize| -> Result<Phases> {
        let b = &batches[i % batches.len()];
        let t = Instant::now();
        let loss = mean_nll(model, b)?;
        let _ = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        sync(device)?;
        let forward = t.elapsed();
        let grads = loss.backward()?;
        sync(device)?;
        let backward = t.elapsed() - forward;
        opt.step(&grads)?;
        sync(device)?;
        let total = t.elapsed();
        Ok(Phases {
            total,
            forward,
            backward,
            optimizer: total - forward - backward,
        })
    };
    // Half the timed steps (1–5) first: the allocator's pools and the kernels' buffers
    // settle over the first few steps (10 timed steps after 2 warm-ups left M's median
    // 20 % above its steady state at 2 threads).
    let warmup = (steps / 2).clamp(1, 5);
    for i in 0..warmup {
        step(i)?;
    }
    let phases = (0..steps)
        .map(|i| step(warmup + i))
        .collect::<Result<Vec<_>>>()?;
    let pick = |f: fn(&Phases) -> Duration| median(phases.iter().map(f).collect()).as_secs_f64();

    Ok(Row {
        name: cfg.name.to_string(),
        mode: mode.to_string(),
        threads: candle_core::utils::get_num_threads(),
        runs: 1,
        params,
        trainable,
        steps,
        step: pick(|p| p.total),
        best: phases
            .iter()
            .map(|p| p.total)
            .min()
            .unwrap_or_default()
            .as_secs_f64(),
        forward: pick(|p| p.forward),
        backward: pick(|p| p.backward),
        optimizer: pick(|p| p.optimizer),
        tokens,
        flops: step_flops(&spec, mode, batch_size, seq, tokens),
        peak_mib: peak_rss_mib().unwrap_or(f64::NAN),
        mm,
        build,
    })
}

fn human(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

fn ms(s: f64) -> String {
    let ms = s * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

const HEADER: &str =
    "config  mode thr   params trainable steps  step ms  best ms   fwd ms   bwd ms   \
                      opt ms    tok/s GFLOP/s   mm GF  % mm peak MiB  torch tok/s  ratio";

fn print_row(r: &Row) {
    let gflops = r.flops / r.step / 1e9;
    let tps = r.tokens as f64 / r.step;
    let target = torch_target(&r.name, &r.mode, r.threads);
    println!(
        "{:<7} {:>4} {:>3} {:>4} {:>8} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.0} {:>7.1} {:>7.1} {:>4.0}% {:>9} {:>12} {:>6}",
        r.name,
        r.mode,
        r.threads,
        r.runs,
        human(r.params),
        human(r.trainable),
        r.steps,
        ms(r.step),
        ms(r.best),
        ms(r.forward),
        ms(r.backward),
        ms(r.optimizer),
        tps,
        gflops,
        r.mm,
        100.0 * gflops / r.mm,
        if r.peak_mib.is_finite() {
            format!("{:.0}", r.peak_mib)
        } else {
            "?".into()
        },
        target.map_or("-".into(), |t| format!("{t:.0}")),
        target.map_or("-".into(), |t| format!("{:.2}", tps / t)),
    );
    let _ = std::io::stdout().flush();
}

fn list_env(key: &str, accepted: &[&str]) -> Result<Vec<String>> {
    let Ok(s) = std::env::var(key) else {
        return Ok(accepted.iter().map(|s| s.to_string()).collect());
    };
    let wanted: Vec<String> = s
        .split(',')
        .map(|x| x.trim().to_ascii_lowercase())
        .filter(|x| !x.is_empty())
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !accepted.contains(&w.as_str())) {
        return Err(cgfed_core::Error::config(
            key,
            format!("unknown value \"{bad}\"; accepted: {}", accepted.join(", ")),
        ));
    }
    // Keep the canonical order (ascending size).
    Ok(accepted
        .iter()
        .filter(|a| wanted.iter().any(|w| w == *a))
        .map(|s| s.to_string())
        .collect())
}

fn main() {
    cgfed_alloc::configure();
    if let Err(e) = run() {
        eprintln!("train_step: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let device = parse_device(&std::env::var("CGFED_BENCH_DEVICE").unwrap_or("cpu".into()))?;
    let dtype = parse_dtype(&std::env::var("CGFED_BENCH_DTYPE").unwrap_or("f32".into()))?;
    check_dtype_for_device(dtype, &device)?;
    let all = configs();
    let names: Vec<&str> = all.iter().map(|c| c.name).collect();
    let selected = list_env("CGFED_BENCH_CONFIGS", &names)?;
    let modes = list_env("CGFED_BENCH_MODES", &MODES)?;
    let setup = Setup {
        device,
        dtype,
        seq: env_usize("CGFED_BENCH_SEQ"),
        batch: env_usize("CGFED_BENCH_BATCH"),
        steps: env_usize("CGFED_BENCH_STEPS"),
    };
    let child = std::env::var_os("CGFED_BENCH_CHILD").is_some();
    let inproc =
        child || std::env::var_os("CGFED_BENCH_INPROC").is_some() || !setup.device.is_cpu();

    if child {
        for cfg in all.iter().filter(|c| selected.iter().any(|s| s == c.name)) {
            for mode in &modes {
                println!("{}", bench_one(cfg, mode, &setup)?.to_line());
            }
        }
        return Ok(());
    }

    let visible = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = match std::env::var("CGFED_BENCH_THREADS") {
        Ok(s) if !inproc => s
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| {
                x.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        cgfed_core::Error::config(
                            "CGFED_BENCH_THREADS",
                            format!("\"{x}\" is not a positive thread count"),
                        )
                    })
            })
            .collect::<Result<_>>()?,
        _ if inproc => vec![candle_core::utils::get_num_threads()],
        _ => vec![1, 2],
    };
    println!(
        "train_step: device {}, dtype {}, AdamW, modes {}, threads {:?} ({}) of {visible} visible",
        describe_device(&setup.device),
        dtype.as_str(),
        modes.join("/"),
        threads,
        if inproc {
            "in-process"
        } else {
            "one child process per run, RAYON_NUM_THREADS"
        },
    );
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before: {}", l.trim());
    }
    println!("\n{HEADER}");
    let mut rows = Vec::new();
    let repeat = env_usize("CGFED_BENCH_REPEAT").unwrap_or(1).max(1);
    let exe = std::env::current_exe().map_err(|e| cgfed_core::Error::io("current_exe", e))?;
    for &n in &threads {
        for cfg in all.iter().filter(|c| selected.iter().any(|s| s == c.name)) {
            for mode in &modes {
                let mut runs = Vec::new();
                for _ in 0..if inproc { 1 } else { repeat } {
                    runs.push(if inproc {
                        bench_one(cfg, mode, &setup)?
                    } else {
                        let out = Command::new(&exe)
                            .args(std::env::args_os().skip(1))
                            .env("CGFED_BENCH_CHILD", "1")
                            .env("RAYON_NUM_THREADS", n.to_string())
                            .env("CGFED_BENCH_CONFIGS", cfg.name)
                            .env("CGFED_BENCH_MODES", mode)
                            .stderr(Stdio::inherit())
                            .output()
                            .map_err(|e| cgfed_core::Error::io(&exe, e))?;
                        let stdout = String::from_utf8_lossy(&out.stdout);
                        match stdout.lines().find_map(Row::from_line) {
                            Some(r) if out.status.success() => r,
                            _ => {
                                return Err(cgfed_core::Error::InvalidInput(format!(
                                    "child run {} {mode} with {n} threads failed ({}): {stdout}",
                                    cfg.name, out.status
                                )))
                            }
                        }
                    });
                }
                runs.sort_by(|a, b| a.step.total_cmp(&b.step));
                let n_runs = runs.len();
                let mut row = runs.swap_remove(n_runs / 2);
                row.runs = n_runs;
                print_row(&row);
                eprintln!(
                    "  ({} {}: model built in {:.1} s)",
                    row.name, row.mode, row.build
                );
                rows.push(row);
            }
        }
    }
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("\nload average after: {}", l.trim());
    }
    // A run whose matmul reference per thread is well below the best one saw fewer free
    // cores than threads: its step time says more about the other processes than about us.
    let best = rows
        .iter()
        .map(|r| r.mm / r.threads as f64)
        .fold(0.0, f64::max);
    let contended: Vec<String> = rows
        .iter()
        .filter(|r| r.mm / (r.threads as f64) < 0.75 * best)
        .map(|r| format!("{} {} {}t ({:.0} GF)", r.name, r.mode, r.threads, r.mm))
        .collect();
    if !contended.is_empty() {
        println!(
            "CONTENDED (matmul reference < 75% of the best per-thread {best:.0} GFLOP/s × threads; \
             rerun): {}",
            contended.join(", ")
        );
    }
    println!(
        "\nstep = forward + backward + AdamW (each phase synchronised), median of `steps` after \
         warm-up; best = fastest step; fwd/bwd/opt = median phase times; tok/s = target tokens \
         per median step.\n\
         GFLOP/s = useful matmul FLOPs per step / median step: forward F = 2·T·(linear weights \
         incl. LoRA) + 2·rows·V·H (head) + 4·B·S²·H·layers (attention); backward 2F in full \
         mode, F_linear + 2·(F_attention + F_adapters) in LoRA mode (frozen weights need no \
         weight gradient). mm GF = candle f32 1024³ matmul, median of 5, measured by the same \
         process just before its run; % mm = GFLOP/s over that.\n\
         peak MiB = VmHWM of the run's process, reset before the model is built.\n\
         torch tok/s = PyTorch 2.x eager f32 target for this machine kind (S–XL were given \
         without a mode and apply to both); ratio = tok/s / torch tok/s (> 1: faster)."
    );
    Ok(())
}
