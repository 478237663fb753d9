//! `bf16`: every element as bfloat16 (the top 16 bits of an f32, round to nearest even).
//!
//! Body: little-endian bf16 values in layout order — half the dense f32 size plus the
//! header (ratio ≈ 2.0), like `fp16`, but with f32's exponent range (no overflow below
//! ±3.4e38, no subnormal loss for tiny updates) and 8 significant bits instead of 11:
//! relative round-off per element at most 2⁻⁹.

use cgfed_core::{
    config::PluginTable, ClientState, Factory, GradientCompressor, Payload, Plugin, Result,
    RoundCtx, Update,
};
use serde::Deserialize;

/// Config of `bf16`: no keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bf16Config {}

/// bfloat16 compressor.
#[derive(Debug, Clone, Default)]
pub struct Bf16;

impl GradientCompressor for Bf16 {
    fn name(&self) -> &str {
        "bf16"
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(self.name())?;
        p.reserve(2 * update.numel());
        update.for_each_host(|_, _, v| {
            p.put_bf16s(v);
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(self.name())?;
        let parts =
            cgfed_core::wire::per_tensor(&mut r, &ctx.layout, cgfed_core::wire::ByteReader::bf16s)?;
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let _: Bf16Config = table.parse()?;
    Ok(Box::new(Bf16))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: "bf16",
        summary: "bfloat16, 2 bytes per element, f32's range (ratio ~2)",
        params: &[],
        factory: Factory::Compressor(build),
    }
}
