//! Shared by the quantizer tests: `first-half`, a minimal first stage registered for the
//! composition tests (kbit, qsgd and sign as second stages).
#![allow(dead_code)]

use cgfed_core::candle_core::Device;
use cgfed_core::staged::{compress_f32, decompress_f32};
use cgfed_core::testkit;
use cgfed_core::wire::ByteReader;
use cgfed_core::{
    registry, ClientState, GradientCompressor, Layout, Payload, PluginTable, Result, RoundCtx,
    Staged, Structure, TensorSpec, Update,
};

/// A minimal first stage for the tests: keeps the first `ceil(n/2)` elements of every
/// tensor (its structure is the tensor count as a varint).
pub struct FirstHalf;

pub fn half_layout(layout: &Layout) -> Layout {
    layout_of_owned(
        layout
            .specs()
            .iter()
            .filter(|s| s.numel() > 0)
            .map(|s| (s.name.clone(), vec![s.numel().div_ceil(2)]))
            .collect(),
    )
}

pub fn layout_of_owned(specs: Vec<(String, Vec<usize>)>) -> Layout {
    Layout::new(
        specs
            .into_iter()
            .map(|(name, shape)| TensorSpec { name, shape })
            .collect(),
    )
    .unwrap()
}

impl Staged for FirstHalf {
    fn split(
        &self,
        update: &Update,
        _: &mut ClientState,
        _: &RoundCtx,
        out: &mut cgfed_core::payload::PayloadBuilder,
    ) -> Result<Update> {
        out.put_varint(update.len() as u64);
        let parts: Vec<Vec<f32>> = update
            .to_parts()?
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| p[..p.len().div_ceil(2)].to_vec())
            .collect();
        Update::from_parts(&half_layout(update.layout()), parts, &Device::Cpu)
    }

    fn read_structure(&self, r: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure> {
        let n = r.varint_at_most(ctx.layout.len(), "tensor count")?;
        if n != ctx.layout.len() {
            return Err(cgfed_core::Error::malformed("tensor count"));
        }
        Ok(Structure::new(half_layout(&ctx.layout), ()))
    }

    fn join(&self, _: &Structure, values: &Update, ctx: &RoundCtx) -> Result<Update> {
        let mut vals = values.to_parts()?.into_iter();
        let parts = ctx
            .layout
            .specs()
            .iter()
            .map(|s| {
                let mut full = vec![0f32; s.numel()];
                if s.numel() > 0 {
                    let v = vals.next().unwrap_or_default();
                    full[..v.len()].copy_from_slice(&v);
                }
                full
            })
            .collect();
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

impl GradientCompressor for FirstHalf {
    fn name(&self) -> &str {
        "first-half"
    }
    fn compress(&self, u: &Update, s: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        compress_f32(self, "first-half", u, s, ctx)
    }
    fn decompress(&self, p: &Payload, ctx: &RoundCtx) -> Result<Update> {
        decompress_f32(self, "first-half", p, ctx)
    }
    fn as_staged(&self) -> Option<&dyn Staged> {
        Some(self)
    }
}

fn build_first_half(_: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    Ok(Box::new(FirstHalf))
}

cgfed_core::inventory::submit! {
    cgfed_core::Plugin {
        name: "first-half",
        summary: "test first stage: the first half of every tensor",
        params: &[],
        factory: cgfed_core::Factory::Compressor(build_first_half),
    }
}

pub fn composed(values: &str) -> Box<dyn GradientCompressor> {
    let t: cgfed_core::toml::Table =
        cgfed_core::toml::from_str(&format!("kind = \"first-half\"\nvalues = {values}")).unwrap();
    let t = cgfed_core::toml::Value::Table(t);
    registry::build_compressor(&PluginTable::from_value("compressor", &t).unwrap()).unwrap()
}

/// The compressor table of `kind` with `params`, the inside of an inline table
/// (`bits = 4, block_size = 16`).
pub fn table(kind: &str, params: &str) -> PluginTable {
    let doc: cgfed_core::toml::Table = cgfed_core::toml::from_str(
        &format!("t = {{ kind = \"{kind}\", {params} }}").replace(", }", " }"),
    )
    .unwrap();
    let t = doc["t"].as_table().unwrap().clone();
    PluginTable::from_value("compressor", &cgfed_core::toml::Value::Table(t)).unwrap()
}

/// `kind` built from `params` (see [`table`]).
pub fn build(kind: &str, params: &str) -> Box<dyn GradientCompressor> {
    registry::build_compressor(&table(kind, params)).unwrap()
}

/// The error building `kind` from `params` gives (panics if it builds).
pub fn config_error(kind: &str, params: &str) -> String {
    registry::build_compressor(&table(kind, params))
        .err()
        .expect("config should be rejected")
        .to_string()
}

pub fn layout_of(shapes: &[(&str, &[usize])]) -> Layout {
    layout_of_owned(
        shapes
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect(),
    )
}

pub fn ctx(layout: &Layout) -> RoundCtx {
    testkit::ctx(layout, 1, 0, 0)
}

pub fn roundtrip(c: &dyn GradientCompressor, layout: &Layout, x: &[f32]) -> (Payload, Vec<f32>) {
    let cx = ctx(layout);
    let u = Update::from_flat(layout, x, &Device::Cpu).unwrap();
    let p = c.compress(&u, &mut ClientState::default(), &cx).unwrap();
    let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
    (p, y)
}

pub fn decode(c: &dyn GradientCompressor, layout: &Layout, bytes: Vec<u8>) -> Result<Update> {
    c.decompress(&Payload::from_bytes(bytes), &ctx(layout))
}

pub fn assert_malformed(r: Result<Update>, what: &str) {
    match r {
        Err(cgfed_core::Error::MalformedPayload(m)) => eprintln!("{what}: {m}"),
        Err(e) => panic!("{what}: wrong error kind {e}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

/// `‖Σ_t D(C_t) − T·x‖ / ‖x‖` after `rounds` rounds on a fixed update `x`: with error
/// feedback this is exactly `‖e_T‖/‖x‖`, the residual the client holds.
pub fn residual(c: &dyn GradientCompressor, layout: &Layout, rounds: usize) -> f64 {
    let x = testkit::random_values(layout.numel(), 31, 0.05);
    let u = Update::from_flat(layout, &x, &Device::Cpu).unwrap();
    let mut state = ClientState::default();
    let mut sum = vec![0f64; x.len()];
    for round in 0..rounds {
        let cx = testkit::ctx(layout, 2, round, 0);
        let p = c.compress(&u, &mut state, &cx).unwrap();
        let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
        for (s, v) in sum.iter_mut().zip(y) {
            *s += v as f64;
        }
    }
    let t = rounds as f64;
    let err: f64 = sum
        .iter()
        .zip(&x)
        .map(|(s, &v)| (s - t * v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    err / norm
}
