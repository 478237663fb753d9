//! Criterion benchmarks of every registered compressor, built by name through the registry.
//!
//! # Running
//!
//! ```sh
//! # full run (criterion, about 5-10 minutes); single-threaded on purpose:
//! RAYON_NUM_THREADS=1 cargo bench -p cgfed-plugins --bench compressors
//! # one config or one workload only (criterion's filter, a regex on the benchmark id):
//! RAYON_NUM_THREADS=1 cargo bench -p cgfed-plugins --bench compressors -- 'lora/topk'
//! # smoke run: every encode and decode once, no statistics (about a minute):
//! CGFED_BENCH_QUICK=1 cargo bench -p cgfed-plugins --bench compressors
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does, or the binary by hand) it does a
//! smoke run on the LoRA workload only; `CGFED_BENCH_QUICK=1` adds the 4096×4096 one.
//! The compressors are single-threaded code; `RAYON_NUM_THREADS` is set to 1 by the bench
//! itself when it is not set, so candle or rayon never add threads behind the measurement.
//!
//! # What is measured
//!
//! Two updates (values roughly Gaussian, from the xorshift generator of
//! `cgfed_core::testkit::random_values`):
//!
//! - `dense4096`: one 4096×4096 f32 matrix (16,777,216 elements);
//! - `lora`: the SmolLM2-135M LoRA r=8 update, 30 layers × {q,k,v,o}_proj ×
//!   {`lora_A` [8, 576], `lora_B` [576, 8] (q, o) or [192, 8] (k, v)}: 240 tensors,
//!   921,600 elements.
//!
//! For every compressor config in [`CONFIGS`], criterion times `encode` (`compress`) and
//! `decode` (`decompress`), with [`Throughput::Elements`] = elements of the update. Once per
//! config, outside the timed loop, the bench prints the payload bytes, bits per element
//! (`8·bytes/numel`), the ratio to dense f32, the relative error `‖x − x̂‖/‖x‖` of the
//! first round (fresh client state), and one untimed-by-criterion encode and decode time.
//! For `topk` (ratio 0.01 and 0.001, scope tensor) it also prints the payload against the
//! information bound `Σ_i log₂ C(n_i, k_i) + 32·k_i` bits and the index part alone. A
//! summary table of every config that ran closes the output.
//!
//! Stateful configs (error feedback, PowerSGD's warm start) keep one client state across
//! the timed iterations, so they are measured in their steady state.

use std::cell::{OnceCell, RefCell};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgfed_core::candle_core::Device;
use cgfed_core::wire::indices;
use cgfed_core::{
    metrics, registry, toml, ClientState, GradientCompressor, Layout, Payload, Phase, PluginTable,
    RoundCtx, TensorSpec, Update,
};
use cgfed_plugins as _;
use criterion::{Criterion, SamplingMode, Throughput};

/// One compressor config: a label for benchmark ids and the `[compressor]` table as TOML.
struct Config {
    label: &'static str,
    table: &'static str,
    /// `Some(ratio)` for the top-k configs whose size is compared with the information bound.
    info_bound_ratio: Option<f64>,
}

const fn cfg(label: &'static str, table: &'static str) -> Config {
    Config {
        label,
        table,
        info_bound_ratio: None,
    }
}

/// Every config the bench runs, in order.
const CONFIGS: &[Config] = &[
    cfg("none", r#"kind = "none""#),
    cfg("fp16", r#"kind = "fp16""#),
    cfg("bf16", r#"kind = "bf16""#),
    Config {
        label: "topk-0.01",
        table: r#"kind = "topk"
ratio = 0.01
scope = "tensor""#,
        info_bound_ratio: Some(0.01),
    },
    Config {
        label: "topk-0.001",
        table: r#"kind = "topk"
ratio = 0.001
scope = "tensor""#,
        info_bound_ratio: Some(0.001),
    },
    cfg(
        "topk-0.01-update",
        r#"kind = "topk"
ratio = 0.01
scope = "update""#,
    ),
    cfg(
        "approx-topk-0.01",
        r#"kind = "approx-topk"
ratio = 0.01"#,
    ),
    cfg(
        "randk-0.01",
        r#"kind = "randk"
ratio = 0.01"#,
    ),
    cfg(
        "kbit-8",
        r#"kind = "kbit"
bits = 8
block_size = 64"#,
    ),
    cfg(
        "kbit-4",
        r#"kind = "kbit"
bits = 4
block_size = 64"#,
    ),
    cfg(
        "qsgd-127",
        r#"kind = "qsgd"
levels = 127
bucket_size = 512"#,
    ),
    cfg("sign", r#"kind = "sign""#),
    cfg(
        "powersgd-4",
        r#"kind = "powersgd"
rank = 4"#,
    ),
    cfg(
        "topk-0.01+kbit8",
        r#"kind = "topk"
ratio = 0.01
values = { kind = "kbit", bits = 8 }"#,
    ),
    cfg(
        "randk-0.01+sign",
        r#"kind = "randk"
ratio = 0.01
values = { kind = "sign", block_size = 64 }"#,
    ),
    cfg(
        "topk-0.01+ef",
        r#"kind = "topk"
ratio = 0.01
error_feedback = true"#,
    ),
];

/// An update to compress, with its context.
struct Workload {
    name: &'static str,
    update: Update,
    values: Vec<f32>,
    ctx: RoundCtx,
    big: bool,
}

/// The values of `cgfed_core::testkit::random_values` (xorshift, sum of four uniforms).
fn random_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * scale)
        .collect()
}

fn spec(name: String, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name,
        shape: shape.to_vec(),
    }
}

/// The SmolLM2-135M LoRA r=8 layout (240 tensors, 921,600 elements).
fn lora_layout() -> Layout {
    let mut specs = Vec::with_capacity(240);
    for layer in 0..30 {
        for (proj, out) in [
            ("q_proj", 576),
            ("k_proj", 192),
            ("v_proj", 192),
            ("o_proj", 576),
        ] {
            let base = format!("layers.{layer}.self_attn.{proj}");
            specs.push(spec(format!("{base}.lora_A"), &[8, 576]));
            specs.push(spec(format!("{base}.lora_B"), &[out, 8]));
        }
    }
    Layout::new(specs).unwrap_or_else(|e| panic!("LoRA layout: {e}"))
}

fn workload(name: &'static str, layout: Layout, seed: u64, big: bool) -> Workload {
    let values = random_values(layout.numel(), seed, 1e-3);
    let update =
        Update::from_flat(&layout, &values, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ctx = RoundCtx {
        round: 0,
        client: Some(0),
        seed: 42,
        phase: Phase::Train,
        layout: Arc::new(layout),
        device: Device::Cpu,
    };
    Workload {
        name,
        update,
        values,
        ctx,
        big,
    }
}

fn dense4096() -> Workload {
    let layout = Layout::new(vec![spec("w".to_string(), &[4096, 4096])])
        .unwrap_or_else(|e| panic!("4096x4096 layout: {e}"));
    workload("dense4096", layout, 1, true)
}

fn lora() -> Workload {
    workload("lora", lora_layout(), 2, false)
}

/// Build a config through the registry (with the core wrappers); `None` with a note when
/// its plugin is not registered (yet) or rejects the table.
fn build(c: &Config) -> Option<Box<dyn GradientCompressor>> {
    let table: toml::Table = match toml::from_str(c.table) {
        Ok(t) => t,
        Err(e) => panic!("config {}: bad TOML: {e}", c.label),
    };
    let built = PluginTable::from_value("compressor", &toml::Value::Table(table))
        .and_then(|t| registry::build_compressor(&t));
    match built {
        Ok(b) => Some(b),
        Err(e) => {
            println!("note: skipping {}: {e}", c.label);
            None
        }
    }
}

/// What the once-per-config measurement found.
#[derive(Clone)]
struct Row {
    workload: &'static str,
    label: &'static str,
    bytes: usize,
    numel: usize,
    rel_err: f64,
    encode: Duration,
    decode: Duration,
}

/// The first-round payload of a config and its report row.
struct Prepared {
    payload: Payload,
    row: Row,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One encode and one decode with a fresh client state; prints the report line.
fn prepare(w: &Workload, c: &Config, comp: &dyn GradientCompressor) -> Option<Prepared> {
    let mut state = ClientState::default();
    let t = Instant::now();
    let payload = match comp.compress(&w.update, &mut state, &w.ctx) {
        Ok(p) => p,
        Err(e) => {
            println!("note: {}/{}: compress failed: {e}", w.name, c.label);
            return None;
        }
    };
    let encode = t.elapsed();
    let t = Instant::now();
    let decoded = match comp.decompress(&payload, &w.ctx) {
        Ok(u) => u,
        Err(e) => {
            println!("note: {}/{}: decompress failed: {e}", w.name, c.label);
            return None;
        }
    };
    let decode = t.elapsed();
    let x_hat = match decoded.to_flat() {
        Ok(v) => v,
        Err(e) => {
            println!(
                "note: {}/{}: decoded update unreadable: {e}",
                w.name, c.label
            );
            return None;
        }
    };
    let numel = w.values.len();
    let bytes = payload.len();
    let rel_err = metrics::rel_err(&w.values, &x_hat);
    println!(
        "[{}] {:<18} {:>11} B  {:>8.4} bits/elem  {:>8.2}x vs f32  rel_err {:.4}  \
         encode {:.2} ms  decode {:.2} ms  ({})",
        w.name,
        c.label,
        bytes,
        8.0 * bytes as f64 / numel as f64,
        (4 * numel) as f64 / bytes as f64,
        rel_err,
        ms(encode),
        ms(decode),
        comp.describe(),
    );
    if let Some(ratio) = c.info_bound_ratio {
        info_bound(w, ratio, bytes, &x_hat);
    }
    Some(Prepared {
        payload,
        row: Row {
            workload: w.name,
            label: c.label,
            bytes,
            numel,
            rel_err,
            encode,
            decode,
        },
    })
}

/// `k(n) = min(n, max(1, ceil(ratio·n)))`, topk's per-tensor count.
fn keep_count(n: usize, ratio: f64) -> usize {
    ((ratio * n as f64).ceil() as usize).clamp(1, n)
}

/// Compare a scope-`tensor` top-k payload with the information bound; the kept positions
/// are read off the decoded update (its non-zeros).
fn info_bound(w: &Workload, ratio: f64, bytes: usize, x_hat: &[f32]) {
    let (mut bound_idx_bits, mut k_total, mut idx_bytes, mut kept) = (0f64, 0usize, 0usize, 0);
    let mut off = 0;
    for s in w.ctx.layout.specs() {
        let n = s.numel();
        let k = keep_count(n, ratio);
        bound_idx_bits += indices::information_bound_bits(n, k);
        k_total += k;
        let positions: Vec<u32> = x_hat[off..off + n]
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, _)| i as u32)
            .collect();
        kept += positions.len();
        idx_bytes += indices::cheapest(&positions, n).1;
        off += n;
    }
    let bound_bits = bound_idx_bits + 32.0 * k_total as f64;
    let header = Payload::header_len("topk");
    println!(
        "    info bound: Σ log2 C(n,k) + 32k = {:.0} B; payload {} B = bound {:+.2}%  \
         (k = {k_total}, non-zeros decoded = {kept})",
        bound_bits / 8.0,
        bytes,
        100.0 * (8.0 * bytes as f64 / bound_bits - 1.0),
    );
    println!(
        "    index part: {} B = {:.3} bits/index vs bound {:.0} B = {:.3} bits/index ({:+.2}%); \
         header {header} + index {idx_bytes} + 4k {} = {} B{}",
        idx_bytes,
        8.0 * idx_bytes as f64 / k_total as f64,
        bound_idx_bits / 8.0,
        bound_idx_bits / k_total as f64,
        100.0 * (8.0 * idx_bytes as f64 / bound_idx_bits - 1.0),
        4 * k_total,
        header + idx_bytes + 4 * k_total,
        if header + idx_bytes + 4 * k_total == bytes {
            " (= payload)"
        } else {
            " (differs from the payload!)"
        },
    );
}

/// Criterion: encode and decode of every config on `w`.
fn bench_workload(c: &mut Criterion, w: &Workload, rows: &RefCell<Vec<Row>>) {
    let mut group = c.benchmark_group(w.name);
    group
        .throughput(Throughput::Elements(w.values.len() as u64))
        .sample_size(10);
    if w.big {
        group
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    } else {
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
    }
    for cfg in CONFIGS {
        let Some(comp) = build(cfg) else { continue };
        let prepared: OnceCell<Option<Prepared>> = OnceCell::new();
        // criterion calls these closures only when the filter selects the benchmark, so the
        // report (one compress + decompress) runs lazily, once, for the selected configs.
        let get = || {
            prepared.get_or_init(|| {
                let p = prepare(w, cfg, comp.as_ref());
                if let Some(p) = &p {
                    rows.borrow_mut().push(p.row.clone());
                }
                p
            })
        };
        group.bench_function(format!("{}/encode", cfg.label), |b| {
            if get().is_none() {
                return;
            }
            let mut state = ClientState::default();
            b.iter(|| {
                black_box(comp.compress(black_box(&w.update), &mut state, &w.ctx)).map(|p| p.len())
            })
        });
        group.bench_function(format!("{}/decode", cfg.label), |b| {
            let Some(p) = get() else { return };
            b.iter(|| black_box(comp.decompress(black_box(&p.payload), &w.ctx)).map(|u| u.len()))
        });
    }
    group.finish();
}

/// Each encode and decode once (no statistics), for configs whose `workload/label`
/// contains `filter`.
fn quick(w: &Workload, filter: Option<&str>, rows: &RefCell<Vec<Row>>) {
    for cfg in CONFIGS {
        let id = format!("{}/{}", w.name, cfg.label);
        if filter.is_some_and(|f| !id.contains(f)) {
            continue;
        }
        let Some(comp) = build(cfg) else { continue };
        if let Some(p) = prepare(w, cfg, comp.as_ref()) {
            rows.borrow_mut().push(p.row);
        }
    }
}

fn summary(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("summary (first round, fresh state; times: one call each, not criterion's estimate)");
    println!(
        "{:<10} {:<18} {:>12} {:>10} {:>10} {:>9} {:>11} {:>11} {:>10}",
        "update",
        "config",
        "bytes",
        "bits/elem",
        "x vs f32",
        "rel_err",
        "encode ms",
        "decode ms",
        "Melem/s enc"
    );
    for r in rows {
        println!(
            "{:<10} {:<18} {:>12} {:>10.4} {:>10.2} {:>9.4} {:>11.2} {:>11.2} {:>10.1}",
            r.workload,
            r.label,
            r.bytes,
            8.0 * r.bytes as f64 / r.numel as f64,
            (4 * r.numel) as f64 / r.bytes as f64,
            r.rel_err,
            ms(r.encode),
            ms(r.decode),
            r.numel as f64 / r.encode.as_secs_f64() / 1e6,
        );
    }
}

fn main() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Single-threaded measurement; set before any thread pool exists.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let quick_env = std::env::var("CGFED_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let rows = RefCell::new(Vec::new());
    if bench_mode && !quick_env {
        let mut c = Criterion::default().configure_from_args();
        for make in [dense4096 as fn() -> Workload, lora] {
            let w = make();
            bench_workload(&mut c, &w, &rows);
        }
        c.final_summary();
    } else {
        let filter = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str);
        if !quick_env {
            println!(
                "smoke run (no --bench): LoRA update only; CGFED_BENCH_QUICK=1 adds 4096x4096"
            );
        }
        if quick_env {
            quick(&dense4096(), filter, &rows);
        }
        quick(&lora(), filter, &rows);
    }
    summary(&rows.borrow());
}
