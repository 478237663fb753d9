//! Fit a `cgfedllm` autoencoder offline on snapshots dumped by a calibration
//! (`tgap.dump = "snaps.safetensors"`), and print its TGAP report: compare architectures on
//! one temporal ensemble without re-running the federated rounds.
//!
//! ```text
//! cargo run -p cgfed-autoencoder --example fit_snapshots -- snaps.safetensors \
//!     'preset = "pca"' 'latent = 32'
//! ```
//!
//! Each further argument is one TOML line of the `[compressor]` table (`kind` implied).
//! With `FIT_SAVE=DIR` in the environment the fitted autoencoder is saved there, ready
//! for `load = "DIR"`. With `BASELINES=1` the baseline codecs (random-subset signs, top-k,
//! 8-bit) are measured on the same held-out snapshots with their exact payload bytes.

use std::sync::Arc;

use cgfed_autoencoder::{tgap, CgFedLlm};
use cgfed_core::candle_core::Device;
use cgfed_core::metrics::Reconstruction;
use cgfed_core::{
    registry, toml, ClientState, GradientCompressor, Phase, PluginTable, RoundCtx, Update,
};
use cgfed_quantize as _;
use cgfed_sparsify as _;

/// Baselines measured on the held-out snapshots (`BASELINES=1`).
const BASELINES: &[&str] = &[
    r#"kind = "randk"
ratio = 0.5
values = { kind = "sign", block_size = 512 }"#,
    r#"kind = "randk"
ratio = 0.45
values = { kind = "sign", block_size = 1024 }"#,
    r#"kind = "topk"
ratio = 0.014"#,
    r#"kind = "topk"
ratio = 0.035
values = { kind = "kbit", bits = 8 }"#,
    r#"kind = "kbit"
bits = 8"#,
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: fit_snapshots FILE [KEY = VALUE]..."))?;
    let lines: Vec<String> = args.collect();
    let params: toml::Table = toml::from_str(&lines.join("\n"))?;
    let (layout, snaps) = tgap::load_snapshots(std::path::Path::new(&path))?;
    let mut c = CgFedLlm::from_table(&PluginTable {
        key: "compressor".into(),
        name: "cgfedllm".into(),
        name_key: "kind",
        params,
    })?;
    let layout = Arc::new(layout);
    for s in &snaps {
        let ctx = RoundCtx {
            round: s.round,
            client: Some(0),
            seed: 0,
            phase: Phase::Calibration,
            layout: layout.clone(),
            device: Device::Cpu,
        };
        c.observe(
            &Update::from_parts(&layout, s.parts.clone(), &Device::Cpu)?,
            &ctx,
        )?;
    }
    if std::env::var("BASELINES").is_ok() {
        let last = snaps.iter().map(|s| s.round).max().unwrap_or(0);
        for text in BASELINES {
            let t: toml::Value = toml::from_str::<toml::Table>(text)?.into();
            let b = registry::build_compressor(&PluginTable::from_value("baseline", &t)?)?;
            let (mut cos, mut snr, mut bytes, mut n) = (0.0, 0.0, 0usize, 0usize);
            for (i, s) in snaps.iter().filter(|s| s.round == last).enumerate() {
                let ctx = RoundCtx {
                    round: 100 + i,
                    client: Some(i),
                    seed: 0,
                    phase: Phase::Train,
                    layout: layout.clone(),
                    device: Device::Cpu,
                };
                let u = Update::from_parts(&layout, s.parts.clone(), &Device::Cpu)?;
                let p = b.compress(&u, &mut ClientState::default(), &ctx)?;
                let y = b.decompress(&p, &ctx)?.to_flat()?;
                let q = Reconstruction::measure(&u.to_flat()?, &y);
                cos += q.cosine;
                snr += q.snr_db;
                bytes += p.len();
                n += 1;
            }
            let dense = layout.dense_bytes() as f64;
            println!(
                "baseline {:<50} cosine {:.4} snr_db {:.3} bytes {} ({:.1}x)",
                b.describe(),
                cos / n as f64,
                snr / n as f64,
                bytes / n,
                dense / (bytes / n) as f64
            );
        }
    }
    let report = c.fit()?;
    println!("{}", c.describe());
    if let Ok(dir) = std::env::var("FIT_SAVE") {
        for f in c.save_fitted(std::path::Path::new(&dir))? {
            println!("saved {}", f.display());
        }
    }
    for (k, v) in &report.metrics {
        println!("{k:<28} {v:.5}");
    }
    Ok(())
}
