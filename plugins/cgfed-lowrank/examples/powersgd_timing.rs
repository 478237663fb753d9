//! Rough single-thread timing of `powersgd` on a 4096 × 4096 f32 update and on a
//! SmolLM2-135M-like LoRA update (240 tensors). Run with
//! `cargo run --release -p cgfed-lowrank --example powersgd_timing`.

use std::time::Instant;

use cgfed_core::candle_core::Device;
use cgfed_core::metrics::rel_err;
use cgfed_core::{
    registry, ClientState, GradientCompressor, Layout, Phase, PluginTable, RoundCtx, TensorSpec,
    Update,
};
use cgfed_lowrank as _;

fn ctx(layout: &Layout, round: usize) -> RoundCtx {
    RoundCtx {
        round,
        client: Some(0),
        seed: 1,
        phase: Phase::Train,
        layout: std::sync::Arc::new(layout.clone()),
        device: Device::Cpu,
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn time(c: &dyn GradientCompressor, layout: &Layout, what: &str) -> anyhow::Result<()> {
    let xv = values(layout.numel(), 3);
    let x = Update::from_flat(layout, &xv, &Device::Cpu)?;
    let mut state = ClientState::default();
    let (mut best_c, mut best_d) = (f64::MAX, f64::MAX);
    let mut err = 0.0;
    let mut bytes = 0;
    for round in 0..20 {
        let cx = ctx(layout, round);
        let t = Instant::now();
        let p = c.compress(&x, &mut state, &cx)?;
        best_c = best_c.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let y = c.decompress(&p, &cx)?;
        best_d = best_d.min(t.elapsed().as_secs_f64());
        err = rel_err(&xv, &y.to_flat()?);
        bytes = p.len();
    }
    println!(
        "{what} {}: compress {:.1} ms, decompress {:.1} ms, {bytes} bytes ({:.4} bits/element), rel err {err:.3}",
        c.describe(),
        best_c * 1e3,
        best_d * 1e3,
        8.0 * bytes as f64 / layout.numel() as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let big = Layout::new(vec![TensorSpec {
        name: "w".into(),
        shape: vec![4096, 4096],
    }])?;
    let mut specs = Vec::new();
    for layer in 0..30 {
        for (proj, out) in [("q", 576), ("k", 192), ("v", 192), ("o", 576)] {
            let base = format!("layers.{layer}.{proj}_proj");
            specs.push(TensorSpec {
                name: format!("{base}.lora_A"),
                shape: vec![8, 576],
            });
            specs.push(TensorSpec {
                name: format!("{base}.lora_B"),
                shape: vec![out, 8],
            });
        }
    }
    let lora = Layout::new(specs)?;
    for params in [
        "rank = 1",
        "rank = 2",
        "rank = 4",
        "rank = 8",
        "rank = 4\npower_iterations = 2",
    ] {
        let mut table = PluginTable::named("compressor", "powersgd");
        table.params = params.parse()?;
        let c = registry::build_compressor(&table)?;
        time(c.as_ref(), &big, "4096x4096")?;
        time(c.as_ref(), &lora, "SmolLM2 LoRA")?;
    }
    Ok(())
}
