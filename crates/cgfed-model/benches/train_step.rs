//! Training-step benchmark: LoRA (r = 8 on q/k/v/o) + AdamW steps on random LLaMA models.
//!
//! ```text
//! cargo bench -p cgfed-model --bench train_step
//! CGFED_BENCH_CONFIGS=tiny,m4 cargo bench -p cgfed-model --bench train_step
//! CGFED_BENCH_DEVICE=cuda CGFED_BENCH_DTYPE=bf16 \
//!     cargo bench -p cgfed-model --features cuda --bench train_step
//! ```
//!
//! Environment variables (all optional):
//!
//! - `CGFED_BENCH_CONFIGS`: comma-separated subset of `tiny,m4,smollm2` (default: all three,
//!   always run in ascending size because peak RSS is process-wide);
//! - `CGFED_BENCH_STEPS`: timed steps per config (default 20 / 10 / 4);
//! - `CGFED_BENCH_SEQ`, `CGFED_BENCH_BATCH`: sequence length and batch size (128, 4);
//! - `CGFED_BENCH_DEVICE`: `cpu` (default), `auto`, `cuda`, `cuda:N`;
//! - `CGFED_BENCH_DTYPE`: `f32` (default), `f64`, `bf16`, `f16` (half precision on CUDA only);
//! - `RAYON_NUM_THREADS`: candle's CPU threads (default: all visible cores). On a machine
//!   whose cores other processes share, `1` can be several times faster than the default:
//!   every parallel op waits for its slowest thread, and a descheduled thread stalls it.
//!
//! One step is exactly what [`LlamaTrainer`]'s local run does per batch: forward to the mean
//! next-token loss, backward, AdamW step (plus reading the loss, which synchronises). The
//! model is built by [`LlamaTrainer::new`]; batching is outside the timed region.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use cgfed_core::{Example, Result};
use cgfed_model::batch::{mean_nll, Batch};
use cgfed_model::device::{check_dtype_for_device, describe_device, parse_device};
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};

/// One benchmarked shape.
struct BenchConfig {
    name: &'static str,
    spec: LlamaSpec,
    default_steps: usize,
}

fn configs() -> Vec<BenchConfig> {
    vec![
        BenchConfig {
            name: "tiny",
            spec: LlamaSpec::tiny(258),
            default_steps: 20,
        },
        BenchConfig {
            name: "m4",
            spec: LlamaSpec {
                vocab_size: 2000,
                hidden_size: 256,
                intermediate_size: 688,
                num_layers: 4,
                num_heads: 8,
                num_kv_heads: 4,
                ..LlamaSpec::tiny(2000)
            },
            default_steps: 10,
        },
        BenchConfig {
            name: "smollm2",
            // SmolLM2-135M's shape, random weights.
            spec: LlamaSpec {
                vocab_size: 49152,
                hidden_size: 576,
                intermediate_size: 1536,
                num_layers: 30,
                num_heads: 9,
                num_kv_heads: 3,
                rope_theta: 100_000.0,
                rms_norm_eps: 1e-5,
                max_seq_len: 2048,
                tie_embeddings: true,
            },
            default_steps: 4,
        },
    ]
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

struct Row {
    name: &'static str,
    params: usize,
    trainable: usize,
    steps: usize,
    /// Median step time.
    step: Duration,
    /// Fastest step (least disturbed by other processes on a shared machine).
    best: Duration,
    forward: Duration,
    backward: Duration,
    optimizer: Duration,
    tokens: usize,
    peak_mib: Option<f64>,
    build: Duration,
}

fn bench_one(
    cfg: &BenchConfig,
    steps: usize,
    seq: usize,
    batch_size: usize,
    device: &Device,
    dtype: DType,
) -> Result<Row> {
    let mut spec = cfg.spec.clone();
    spec.max_seq_len = spec.max_seq_len.max(seq);
    let params = spec.num_params();
    let t0 = Instant::now();
    let trainer = LlamaTrainer::new(
        spec.clone(),
        LoraConfig::default(), // r = 8, alpha 16, q/k/v/o
        TrainerConfig {
            batch_size,
            ..Default::default()
        },
        7,
        device.clone(),
        dtype,
    )?;
    sync(device)?;
    let build = t0.elapsed();
    let model = trainer.model();
    let vars: Vec<_> = model.trainable().into_iter().map(|(_, v)| v).collect();
    let trainable = vars.iter().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::new(
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
    let warmup = if steps >= 5 { 2 } else { 1 };
    for i in 0..warmup {
        step(i)?;
    }
    let phases = (0..steps)
        .map(|i| step(warmup + i))
        .collect::<Result<Vec<_>>>()?;
    let pick = |f: fn(&Phases) -> Duration| median(phases.iter().map(f).collect());

    Ok(Row {
        name: cfg.name,
        params,
        trainable,
        steps,
        step: pick(|p| p.total),
        best: phases.iter().map(|p| p.total).min().unwrap_or_default(),
        forward: pick(|p| p.forward),
        backward: pick(|p| p.backward),
        optimizer: pick(|p| p.optimizer),
        tokens,
        peak_mib: peak_rss_mib(),
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

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("train_step: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let device = parse_device(&std::env::var("CGFED_BENCH_DEVICE").unwrap_or("cpu".into()))?;
    let dtype = parse_dtype(&std::env::var("CGFED_BENCH_DTYPE").unwrap_or("f32".into()))?;
    check_dtype_for_device(dtype, &device)?;
    let seq = env_usize("CGFED_BENCH_SEQ").unwrap_or(128);
    let batch_size = env_usize("CGFED_BENCH_BATCH").unwrap_or(4);
    let wanted: Option<Vec<String>> = std::env::var("CGFED_BENCH_CONFIGS").ok().map(|s| {
        s.split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let all = configs();
    if let Some(w) = &wanted {
        if let Some(bad) = w.iter().find(|n| all.iter().all(|c| c.name != n.as_str())) {
            return Err(cgfed_core::Error::config(
                "CGFED_BENCH_CONFIGS",
                format!("unknown config \"{bad}\"; accepted: tiny, m4, smollm2"),
            ));
        }
    }
    let selected: Vec<&BenchConfig> = all
        .iter()
        .filter(|c| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| n == c.name))
        })
        .collect();

    let visible = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = candle_core::utils::get_num_threads();
    println!(
        "train_step: device {}, dtype {}, LoRA r=8 on q/k/v/o, AdamW, seq {seq}, batch {batch_size}, \
         candle CPU threads {threads} of {visible} visible (RAYON_NUM_THREADS)",
        describe_device(&device),
        dtype.as_str()
    );
    let mm = matmul_gflops(1024, 5, &device)?;
    println!("reference: candle f32 matmul 1024x1024x1024: {mm:.1} GFLOP/s (median of 5)\n");

    let resets = reset_peak_rss();
    println!(
        "{:<8} {:>8} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>6} {:>8}",
        "config",
        "params",
        "trainable",
        "steps",
        "step ms",
        "best ms",
        "fwd ms",
        "bwd ms",
        "opt ms",
        "tok/s",
        "GFLOP/s*",
        "% mm",
        "peak MiB"
    );
    for cfg in selected {
        let steps = env_usize("CGFED_BENCH_STEPS")
            .unwrap_or(cfg.default_steps)
            .max(1);
        if resets {
            reset_peak_rss();
        }
        let r = bench_one(cfg, steps, seq, batch_size, &device, dtype)?;
        let secs = r.step.as_secs_f64();
        // Upper-bound FLOPs of the base model: 2·P·T forward + 4·P·T backward.
        let flops = 6.0 * r.params as f64 * r.tokens as f64;
        let gflops = flops / secs / 1e9;
        println!(
            "{:<8} {:>8} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.0} {:>9.1} {:>5.0}% {:>8}",
            r.name,
            human(r.params),
            human(r.trainable),
            r.steps,
            ms(r.step),
            ms(r.best),
            ms(r.forward),
            ms(r.backward),
            ms(r.optimizer),
            r.tokens as f64 / secs,
            gflops,
            100.0 * gflops / mm,
            r.peak_mib.map_or("?".into(), |m| format!("{m:.0}")),
        );
        eprintln!(
            "  ({}: model built in {:.1} s)",
            r.name,
            r.build.as_secs_f64()
        );
    }
    let mm_after = matmul_gflops(1024, 5, &device)?;
    println!(
        "\nreference again after the runs: {mm_after:.1} GFLOP/s (a large change means other \
         processes competed for the cores; compare `best ms`)\n\
         step = forward + backward + AdamW (each phase synchronised), median of `steps` after \
         warm-up; best = fastest step; fwd/bwd/opt = median phase times; tok/s = target tokens \
         per median step.\n\
         * GFLOP/s = 6·P·T / median step time with P = base parameters (tied embedding counted \
         once, as the head), T = target tokens, i.e. 2·P·T forward + 4·P·T backward, ignoring \
         attention. That is an UPPER BOUND on the work LoRA needs (a frozen base needs no \
         weight gradients: ≈4·P·T), but about what candle does, since its backprop computes \
         the gradient of both matmul operands. % mm = that rate over the matmul reference.\n\
         peak MiB = VmHWM, {}",
        if resets {
            "reset before each config via /proc/self/clear_refs"
        } else {
            "process-wide (configs run in ascending size)"
        }
    );
    Ok(())
}
