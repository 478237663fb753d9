//! Shared helpers: a `cgfedllm` fitted on synthetic, structured updates.
#![allow(dead_code)]

use std::sync::Arc;

use cgfed_autoencoder::CgFedLlm;
use cgfed_core::candle_core::Device;
use cgfed_core::{
    toml, GradientCompressor, Layout, Phase, PluginTable, RoundCtx, TensorSpec, Update,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A LoRA-like layout: A 4×96 and B 80×4 of two modules.
pub fn lora_layout() -> Layout {
    let s = |n: &str, sh: &[usize]| TensorSpec {
        name: n.into(),
        shape: sh.to_vec(),
    };
    Layout::new(vec![
        s("m0.lora_A", &[4, 96]),
        s("m0.lora_B", &[80, 4]),
        s("m1.lora_A", &[4, 96]),
        s("m1.lora_B", &[80, 4]),
    ])
    .unwrap()
}

/// A context for `layout`.
pub fn ctx(layout: &Layout, round: usize, client: Option<usize>) -> RoundCtx {
    RoundCtx {
        round,
        client,
        seed: 5,
        phase: Phase::Train,
        layout: Arc::new(layout.clone()),
        device: Device::Cpu,
    }
}

/// Structured updates: each element is a mix of 3 fixed smooth patterns (shared by every
/// update) with random weights, plus 5 % noise, at a random overall scale.
pub fn structured(layout: &Layout, seed: u64) -> Update {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w: [f32; 3] = [
        rng.random_range(-1.0..1.0),
        rng.random_range(-1.0..1.0),
        rng.random_range(-1.0..1.0),
    ];
    let scale = 10f32.powf(rng.random_range(-4.0..-2.0));
    let parts: Vec<Vec<f32>> = layout
        .specs()
        .iter()
        .enumerate()
        .map(|(t, s)| {
            (0..s.numel())
                .map(|i| {
                    let p = i as f32 * 0.37 + t as f32;
                    let v = w[0] * p.sin() + w[1] * (0.5 * p).cos() + w[2] * (0.13 * p).sin();
                    scale * (v + 0.05 * rng.random_range(-1.0..1.0))
                })
                .collect()
        })
        .collect();
    Update::from_parts(layout, parts, &Device::Cpu).unwrap()
}

/// A `cgfedllm` table from TOML key lines.
pub fn table(extra: &str) -> PluginTable {
    let t: toml::Table = toml::from_str(extra).expect("test table is TOML");
    PluginTable {
        key: "compressor".into(),
        name: "cgfedllm".into(),
        name_key: "kind",
        params: t,
    }
}

/// Build `cgfedllm` from `extra`, observe `rounds` × 6 structured updates of `layout`
/// (rounds 0..rounds), and fit it.
pub fn fitted(extra: &str, layout: &Layout, rounds: usize) -> (CgFedLlm, cgfed_core::HookReport) {
    let mut c = CgFedLlm::from_table(&table(extra)).expect("valid table");
    for r in 0..rounds {
        for k in 0..6 {
            let u = structured(layout, (r * 100 + k) as u64);
            c.observe(&u, &ctx(layout, r, Some(k))).unwrap();
        }
    }
    let report = c.fit().expect("fit");
    (c, report)
}

/// Small, fast settings for the chunked presets.
pub const SMALL: &str = r#"
chunk = 32
latent = 8
hidden = 64
tgap = { rounds = 3, iterations = 300, batch = 64, lr = 3e-3 }
"#;
