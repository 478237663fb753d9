//! `fp16`: every element as IEEE half precision, round to nearest.
//!
//! Body: little-endian f16 values in layout order, so the payload is half the dense f32
//! size plus the header (ratio ≈ 2.0). Values beyond ±65504 are rejected rather than
//! silently turned into infinities; the relative round-off per element is at most 2⁻¹¹
//! for normal values (values below 6.1e-5 lose relative precision as subnormals).

use cgfed_core::{
    config::PluginTable, ClientState, Error, Factory, GradientCompressor, Payload, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

/// Largest finite f16 value.
pub const F16_MAX: f32 = 65504.0;

/// Config of `fp16`: no keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fp16Config {}

/// Half-precision compressor.
#[derive(Debug, Clone, Default)]
pub struct Fp16;

impl GradientCompressor for Fp16 {
    fn name(&self) -> &str {
        "fp16"
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(self.name())?;
        p.reserve(2 * update.numel());
        update.for_each_host(|_, spec, part| {
            if let Some(v) = part.iter().find(|v| v.abs() > F16_MAX) {
                return Err(Error::InvalidInput(format!(
                    "tensor `{}` has value {v} beyond the f16 range ±{F16_MAX}",
                    spec.name
                )));
            }
            p.put_f16s(part);
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(self.name())?;
        let parts =
            cgfed_core::wire::per_tensor(&mut r, &ctx.layout, cgfed_core::wire::ByteReader::f16s)?;
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let _: Fp16Config = table.parse()?;
    Ok(Box::new(Fp16))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "fp16",
        summary: "IEEE half precision, 2 bytes per element (ratio ~2)",
        params: &[],
        factory: Factory::Compressor(build),
    }
}
