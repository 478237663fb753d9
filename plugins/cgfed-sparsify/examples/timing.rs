//! Rough single-threaded timings of the sparsifiers (run with `--release`):
//!
//! ```text
//! cargo run --release -p cgfed-sparsify --example timing
//! ```
//!
//! A 4096×4096 f32 update (16.8M elements) and a SmolLM2-135M-like LoRA update (rank 8 on
//! q, k, v, o of 30 layers: 240 tensors). Prints the best of a few runs of compress and
//! decompress, the payload size in bits per element, and the kept count of `approx-topk`.

use std::time::{Duration, Instant};

use cgfed_core::testkit;
use cgfed_core::{registry, ClientState, Layout, PluginTable, TensorSpec};
use cgfed_sparsify as _;

fn table(toml_src: &str) -> PluginTable {
    let v: cgfed_core::toml::Value = cgfed_core::toml::from_str(toml_src).expect("toml");
    PluginTable::from_value("compressor", &v).expect("table")
}

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn lora_layout() -> Layout {
    let mut specs = Vec::new();
    for l in 0..30 {
        for (m, out) in [("q", 576), ("k", 192), ("v", 192), ("o", 576)] {
            specs.push(TensorSpec {
                name: format!("layers.{l}.{m}.lora_A"),
                shape: vec![8, 576],
            });
            specs.push(TensorSpec {
                name: format!("layers.{l}.{m}.lora_B"),
                shape: vec![out, 8],
            });
        }
    }
    Layout::new(specs).expect("layout")
}

fn main() {
    let big = Layout::new(vec![TensorSpec {
        name: "w".into(),
        shape: vec![4096, 4096],
    }])
    .expect("layout");
    let lora = lora_layout();
    let configs = [
        "kind = \"topk\"",
        "kind = \"topk\"\nscope = \"update\"",
        "kind = \"topk\"\nratio = 0.001",
        "kind = \"topk\"\nk = 10",
        "kind = \"approx-topk\"",
        "kind = \"approx-topk\"\nscope = \"update\"",
        "kind = \"randk\"",
        "kind = \"randk\"\nunbiased = true",
        "kind = \"topk\"\nvalues = { kind = \"none\" }",
    ];
    for (lname, layout, runs) in [("4096x4096", &big, 5), ("lora-240", &lora, 20)] {
        let x = testkit::random_update(layout, 1, 1e-3);
        let ctx = testkit::ctx(layout, 1, 0, 0);
        if layout.len() == 1 && std::env::args().nth(1).is_none() {
            let v = x.to_flat().expect("host");
            let k = v.len().div_ceil(100);
            let t = best(3, || {
                let mut keys: Vec<(u32, u32)> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (x.abs().to_bits(), i as u32))
                    .collect();
                let n = keys.len();
                keys.select_nth_unstable_by(n - k, |a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                std::hint::black_box(&keys);
            });
            println!(
                "{lname:>10}  baseline select_nth_unstable_by (key, idx): {:7.1} ms",
                t.as_secs_f64() * 1e3
            );
            let t = best(3, || {
                x.check_finite().expect("finite");
            });
            println!(
                "{lname:>10}  core check_finite alone:                    {:7.1} ms",
                t.as_secs_f64() * 1e3
            );
        }
        let only = std::env::args().nth(1);
        for cfg in configs {
            if only.as_ref().is_some_and(|o| !cfg.contains(o.as_str())) {
                continue;
            }
            let c = registry::build_compressor(&table(cfg)).expect("build");
            let mut p = None;
            let tc = best(runs, || {
                p = Some(
                    c.compress(&x, &mut ClientState::default(), &ctx)
                        .expect("compress"),
                );
            });
            let p = p.expect("ran");
            let td = best(runs, || {
                std::hint::black_box(c.decompress(&p, &ctx).expect("decompress"));
            });
            let extra = if c.name() == "approx-topk" {
                let a = cgfed_sparsify::ApproxTopK::new(match cfg.contains("update") {
                    true => cgfed_sparsify::ApproxTopKConfig {
                        scope: cgfed_sparsify::Scope::Update,
                        ..Default::default()
                    },
                    false => Default::default(),
                })
                .expect("cfg");
                let kept = a.kept(&p, &ctx).expect("kept");
                let k: usize = match cfg.contains("update") {
                    true => cgfed_sparsify::keep_count(0.01, None, layout.numel()),
                    false => layout
                        .specs()
                        .iter()
                        .map(|s| cgfed_sparsify::keep_count(0.01, None, s.numel()))
                        .sum(),
                };
                // The kept count over 10 rounds (other samples).
                let rel: Vec<f64> = (0..10)
                    .map(|r| {
                        let cx = testkit::ctx(layout, 1, r, 0);
                        let q = c
                            .compress(&x, &mut ClientState::default(), &cx)
                            .expect("compress");
                        a.kept(&q, &cx).expect("kept") as f64 / k as f64 - 1.0
                    })
                    .collect();
                let mean = rel.iter().sum::<f64>() / rel.len() as f64;
                let sd = (rel.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / (rel.len() - 1) as f64)
                    .sqrt();
                format!(
                    "  kept {kept} (k {k}, {:+.2}%; 10 rounds: mean {:+.2}%, sd {:.2}%)",
                    100.0 * (kept as f64 / k as f64 - 1.0),
                    100.0 * mean,
                    100.0 * sd
                )
            } else {
                String::new()
            };
            println!(
                "{lname:>10}  {:<40} compress {:7.2} ms  decompress {:7.2} ms  {:6.3} bits/elem{extra}",
                c.describe(),
                tc.as_secs_f64() * 1e3,
                td.as_secs_f64() * 1e3,
                8.0 * p.len() as f64 / layout.numel() as f64
            );
        }
    }
}
