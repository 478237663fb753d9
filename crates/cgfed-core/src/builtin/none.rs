//! `none`: the dense f32 reference compressor.
//!
//! Body: every element of the update as little-endian f32, in layout order. The payload is
//! [`crate::Layout::dense_bytes`] plus the header, so its ratio to dense is 1.0 within the
//! header. Decoding rejects a wrong length and non-finite values.

use serde::Deserialize;

use crate::compressor::GradientCompressor;
use crate::config::PluginTable;
use crate::context::RoundCtx;
use crate::error::Result;
use crate::payload::Payload;
use crate::registry::{Factory, Plugin};
use crate::state::ClientState;
use crate::update::Update;

/// Config of `none`: it has no keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoneConfig {}

/// Dense f32, no compression.
#[derive(Debug, Clone, Default)]
pub struct NoCompression;

impl GradientCompressor for NoCompression {
    fn name(&self) -> &str {
        "none"
    }

    fn compress(&self, update: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(self.name())?;
        p.reserve(4 * update.numel());
        update.for_each_host(|_, _, v| {
            p.put_f32s(v);
            Ok(())
        })?;
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(self.name())?;
        let parts = crate::wire::per_tensor(&mut r, &ctx.layout, crate::wire::ByteReader::f32s)?;
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let _: NoneConfig = table.parse()?;
    Ok(Box::new(NoCompression))
}

inventory::submit! {
    Plugin {
        name: "none",
        summary: "dense f32, no compression: the reference every comparison needs",
        params: &[],
        factory: Factory::Compressor(build),
    }
}
