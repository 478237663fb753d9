//! Shared pieces of the cgfed fuzz targets (see `fuzz/README.md`).
//!
//! # Input of the `decoders` target
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | compressor config: `CONFIGS[b % CONFIGS.len()]` |
//! | 1 | low nibble: layout `layouts()[(b & 15) % len]`; high nibble: the round index (0..=15), which the `warmup` configs switch on |
//! | 2.. | the payload, header included |
//!
//! `decompress` must not panic; when it returns `Ok` the update must have the context's
//! layout and finite values.
//!
//! # Input of the `indices` target
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | bit 0 clear: `n` = u16 little-endian from bytes 1..3; set: `n` = u32 little-endian from bytes 1..5 |
//! | then | the index set as `cgfed_core::wire::indices::put_indices` writes it |
//!
//! `read_indices` must not panic; an `Ok` set must be strictly increasing, below `n`, and
//! survive a re-encode (`put_indices` writes exactly `cheapest(..).1` bytes, which read back
//! to the same set).

use std::sync::{Arc, OnceLock};

use cgfed_core::candle_core::Device;
use cgfed_core::wire::{indices, ByteReader};
use cgfed_core::{
    registry, toml, GradientCompressor, Layout, Payload, Phase, PluginTable, RoundCtx, TensorSpec,
};
use cgfed_plugins as _;

/// The compressor configs the first input byte picks from, as `[compressor]` tables.
pub const CONFIGS: &[&str] = &[
    r#"kind = "none""#,
    r#"kind = "fp16""#,
    r#"kind = "bf16""#,
    r#"kind = "topk""#,
    r#"kind = "topk"
ratio = 0.25"#,
    r#"kind = "topk"
ratio = 0.1
scope = "update""#,
    r#"kind = "topk"
k = 3"#,
    r#"kind = "approx-topk"
ratio = 0.1"#,
    r#"kind = "approx-topk"
ratio = 0.05
scope = "update""#,
    r#"kind = "randk"
ratio = 0.1"#,
    r#"kind = "randk"
ratio = 0.5
unbiased = true"#,
    r#"kind = "kbit""#,
    r#"kind = "kbit"
bits = 4
block_size = 16"#,
    r#"kind = "kbit"
bits = 1
block_size = 5"#,
    r#"kind = "kbit"
bits = 3
block_size = 64
rounding = "stochastic""#,
    r#"kind = "qsgd""#,
    r#"kind = "qsgd"
levels = 3
bucket_size = 8"#,
    r#"kind = "qsgd"
levels = 1000
bucket_size = 7
norm = "max""#,
    r#"kind = "sign""#,
    r#"kind = "sign"
block_size = 4"#,
    r#"kind = "powersgd""#,
    r#"kind = "powersgd"
rank = 1"#,
    r#"kind = "powersgd"
rank = 2
power_iterations = 2
warm_start = false"#,
    // compositions (core `Compose` wrapper)
    r#"kind = "topk"
ratio = 0.25
values = { kind = "kbit", bits = 8 }"#,
    r#"kind = "topk"
ratio = 0.1
values = { kind = "bf16" }"#,
    r#"kind = "topk"
scope = "update"
ratio = 0.2
values = { kind = "qsgd", levels = 15, bucket_size = 16 }"#,
    r#"kind = "approx-topk"
ratio = 0.2
values = { kind = "kbit", bits = 4, block_size = 8 }"#,
    r#"kind = "randk"
ratio = 0.25
values = { kind = "sign", block_size = 64 }"#,
    r#"kind = "randk"
ratio = 0.3
values = { kind = "fp16" }"#,
    r#"kind = "powersgd"
rank = 2
values = { kind = "bf16" }"#,
    r#"kind = "powersgd"
values = { kind = "kbit", bits = 6, block_size = 32 }"#,
    // dense fallback, warm-up, error feedback (core wrappers)
    r#"kind = "topk"
ratio = 0.3
dense_fallback = true"#,
    r#"kind = "kbit"
bits = 2
dense_fallback = true"#,
    r#"kind = "powersgd"
dense_fallback = true"#,
    r#"kind = "randk"
ratio = 0.25
values = { kind = "sign" }
dense_fallback = true"#,
    r#"kind = "topk"
ratio = 0.1
warmup_rounds = 2"#,
    r#"kind = "qsgd"
levels = 7
bucket_size = 16
warmup_rounds = 1
dense_fallback = true"#,
    r#"kind = "topk"
ratio = 0.1
error_feedback = true"#,
    r#"kind = "sign"
error_feedback = true
warmup_rounds = 1"#,
];

fn spec(name: &str, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        shape: shape.to_vec(),
    }
}

/// The layouts the second input byte picks from: LoRA-like matrices, vectors, a scalar.
pub fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        [
            vec![spec("a.lora_A", &[4, 32]), spec("a.lora_B", &[32, 4])],
            vec![spec("bias", &[7])],
            vec![spec("scalar", &[1])],
            vec![
                spec("l0.q.lora_A", &[8, 48]),
                spec("l0.q.lora_B", &[48, 8]),
                spec("l0.v.lora_A", &[8, 48]),
                spec("l0.v.lora_B", &[16, 8]),
                spec("norm", &[13]),
            ],
            vec![spec("w", &[64, 64])],
            vec![
                spec("m.lora_A", &[2, 300]),
                spec("m.lora_B", &[300, 2]),
                spec("v", &[3]),
                spec("s", &[1]),
            ],
            vec![spec("col", &[129, 1]), spec("row", &[1, 9])],
        ]
        .into_iter()
        .map(|s| Layout::new(s).unwrap_or_else(|e| panic!("static layout: {e}")))
        .collect()
    })
}

/// The compressors of [`CONFIGS`], built once through the registry (with the core
/// wrappers); `Err` holds why a config did not build (e.g. a plugin not registered yet).
pub fn compressors() -> &'static [Result<Box<dyn GradientCompressor>, String>] {
    static BUILT: OnceLock<Vec<Result<Box<dyn GradientCompressor>, String>>> = OnceLock::new();
    BUILT.get_or_init(|| CONFIGS.iter().map(|t| build(t)).collect())
}

/// Build one `[compressor]` table given as TOML.
pub fn build(table: &str) -> Result<Box<dyn GradientCompressor>, String> {
    let t: toml::Table = toml::from_str(table).map_err(|e| e.to_string())?;
    PluginTable::from_value("compressor", &toml::Value::Table(t))
        .and_then(|t| registry::build_compressor(&t))
        .map_err(|e| e.to_string())
}

/// The round context of layout `layout` in round `round` (fixed seed and client).
pub fn ctx(layout: &Layout, round: usize) -> RoundCtx {
    RoundCtx {
        round,
        client: Some(3),
        seed: 7,
        phase: Phase::Train,
        layout: Arc::new(layout.clone()),
        device: Device::Cpu,
    }
}

/// The second input byte for layout `layout` (an index into [`layouts`]) and `round`.
pub fn layout_byte(layout: usize, round: usize) -> u8 {
    (((round & 15) << 4) | (layout & 15)) as u8
}

/// The `decoders` target: decode `data` (see the crate docs) and check the result.
pub fn decode_case(data: &[u8]) {
    let [c, l, payload @ ..] = data else { return };
    let comps = compressors();
    let Ok(comp) = &comps[*c as usize % comps.len()] else {
        return;
    };
    let layouts = layouts();
    let layout = &layouts[(*l & 15) as usize % layouts.len()];
    let ctx = ctx(layout, (*l >> 4) as usize);
    let payload = Payload::from_bytes(payload.to_vec());
    if let Ok(u) = comp.decompress(&payload, &ctx) {
        if let Err(e) = u.check_same_layout(layout) {
            panic!(
                "{}: decoded update has the wrong layout: {e}",
                comp.describe()
            );
        }
        if let Err(e) = u.check_finite() {
            panic!("{}: decoded update is not finite: {e}", comp.describe());
        }
    }
}

/// Split an `indices` input into `n` and the encoded set (see the crate docs).
pub fn split_indices_input(data: &[u8]) -> Option<(usize, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        let (n, rest) = rest.split_first_chunk::<2>()?;
        Some((u16::from_le_bytes(*n) as usize, rest))
    } else {
        let (n, rest) = rest.split_first_chunk::<4>()?;
        Some((u32::from_le_bytes(*n) as usize, rest))
    }
}

/// The `indices` target: read an index set and check it (see the crate docs).
pub fn indices_case(data: &[u8]) {
    let Some((n, body)) = split_indices_input(data) else {
        return;
    };
    let mut r = ByteReader::new(body);
    let Ok(set) = indices::read_indices(&mut r, n) else {
        return;
    };
    assert!(r.position() <= body.len());
    assert!(set.len() <= n, "{} indices of {n}", set.len());
    if let Some(w) = set.windows(2).find(|w| w[0] >= w[1]) {
        panic!("not strictly increasing: {} then {}", w[0], w[1]);
    }
    if let Some(&last) = set.last() {
        assert!((last as usize) < n, "index {last} out of range for {n}");
    }
    // Re-encode: exactly `cheapest` bytes, which read back to the same set.
    let mut b = match Payload::builder("i") {
        Ok(b) => b,
        Err(e) => panic!("builder: {e}"),
    };
    if let Err(e) = indices::put_indices(&mut b, &set, n) {
        panic!("a set read_indices accepted does not re-encode: {e}");
    }
    let bytes = b.finish().into_bytes();
    let again = &bytes[Payload::header_len("i")..];
    assert_eq!(
        again.len(),
        indices::cheapest(&set, n).1,
        "put_indices length"
    );
    assert!(
        again.len() <= r.position(),
        "the cheapest code ({} B) is longer than the input's ({} B)",
        again.len(),
        r.position()
    );
    let mut r2 = ByteReader::new(again);
    match indices::read_indices(&mut r2, n) {
        Ok(back) => assert_eq!(back, set, "re-encoded set reads back differently"),
        Err(e) => panic!("re-encoded set does not read back: {e}"),
    }
    if let Err(e) = r2.finish() {
        panic!("re-encoded set leaves bytes: {e}");
    }
}
