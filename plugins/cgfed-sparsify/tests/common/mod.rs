//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cgfed_core::candle_core::Device;
use cgfed_core::{
    registry, ClientState, GradientCompressor, Layout, Payload, PluginTable, RoundCtx, TensorSpec,
    Update,
};

/// A plugin table parsed from TOML source, at key `compressor`.
pub fn table(src: &str) -> PluginTable {
    let v: cgfed_core::toml::Value = cgfed_core::toml::from_str(src).expect("toml");
    PluginTable::from_value("compressor", &v).expect("table")
}

/// Build a compressor (with the core wrappers) from TOML source.
pub fn build(src: &str) -> Box<dyn GradientCompressor> {
    registry::build_compressor(&table(src)).unwrap_or_else(|e| panic!("{src}: {e}"))
}

/// The error message of building from TOML source (which must fail).
pub fn build_err(src: &str) -> String {
    match registry::build_compressor(&table(src)) {
        Ok(_) => panic!("{src}: built"),
        Err(e) => e.to_string(),
    }
}

/// A layout from `(name, shape)` pairs.
pub fn layout(specs: &[(&str, &[usize])]) -> Layout {
    Layout::new(
        specs
            .iter()
            .map(|(n, s)| TensorSpec {
                name: n.to_string(),
                shape: s.to_vec(),
            })
            .collect(),
    )
    .expect("layout")
}

/// An update from flat values.
pub fn update(layout: &Layout, v: &[f32]) -> Update {
    Update::from_flat(layout, v, &Device::Cpu).expect("update")
}

/// Compress then decompress; returns the payload and the flat decode.
pub fn roundtrip(c: &dyn GradientCompressor, x: &Update, ctx: &RoundCtx) -> (Payload, Vec<f32>) {
    let p = c
        .compress(x, &mut ClientState::default(), ctx)
        .expect("compress");
    let y = c.decompress(&p, ctx).expect("decompress");
    (p, y.to_flat().expect("host"))
}

/// Header bytes followed by `body`.
pub fn with_header(name: &str, body: &[u8]) -> Payload {
    Payload::from_body(name, body).expect("header")
}

/// Varint bytes of `v`.
pub fn varint(v: u64) -> Vec<u8> {
    let mut b = Vec::new();
    cgfed_core::wire::varint::encode(v, &mut b);
    b
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reference top-k positions of `x` (stable sort by |x| descending), sorted.
pub fn naive_top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[b].abs().total_cmp(&x[a].abs()));
    let mut kept = order[..k.min(x.len())].to_vec();
    kept.sort_unstable();
    kept
}

/// Positions of the non-zero values.
pub fn support(y: &[f32]) -> Vec<usize> {
    (0..y.len()).filter(|&i| y[i] != 0.0).collect()
}

/// Error feedback over `rounds` rounds on a fixed update: relative distance between the
/// sum of the decoded payloads and the sum of the true updates.
pub fn accumulated_error(c: &dyn GradientCompressor, x: &Update, rounds: usize) -> f64 {
    let layout = x.layout().clone();
    let xv = x.to_flat().expect("host");
    let mut state = ClientState::default();
    let mut sum = vec![0f64; xv.len()];
    for r in 0..rounds {
        let ctx = cgfed_core::testkit::ctx(&layout, 3, r, 0);
        let p = c.compress(x, &mut state, &ctx).expect("compress");
        let y = c
            .decompress(&p, &ctx)
            .expect("decode")
            .to_flat()
            .expect("host");
        for (s, v) in sum.iter_mut().zip(&y) {
            *s += *v as f64;
        }
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (s, v) in sum.iter().zip(&xv) {
        let want = rounds as f64 * *v as f64;
        num += (s - want).powi(2);
        den += want.powi(2);
    }
    (num / den).sqrt()
}

/// Every documented param default of plugin `name` as a TOML table source.
pub fn defaults_source(name: &str) -> String {
    let p = registry::find("compressor", name).expect("registered");
    let mut src = format!("kind = \"{name}\"\n");
    for param in p.params {
        if param.default != "-" {
            src.push_str(&format!("{} = {}\n", param.key, param.default));
        }
    }
    src
}
