//! [`DenseFallback`]: tensor by tensor, dense f32 wherever compression would not save bytes.

use crate::compressor::GradientCompressor;
use crate::context::{mix_seed, RoundCtx};
use crate::error::{Error, Result};
use crate::payload::{Payload, MAX_NAME_LEN};
use crate::state::ClientState;
use crate::update::{Layout, Update};
use crate::wire::varint;

/// Compresses each tensor on its own with the inner compressor and sends it dense f32
/// instead when the compressed body (plus its length) is not smaller than `4·numel`.
///
/// Wire: header `fallback:<inner>`, a bitmap of one bit per tensor in layout order
/// (set = compressed, padding bits zero), then per tensor either `varint(len)` and the
/// inner body, or `numel` f32 values.
///
/// The inner compressor sees one-tensor layouts, so a compressor with a whole-update scope
/// (global top-k) works per tensor here. Each tensor's context gets its own seed
/// (`mix_seed(seed, tensor index)`), so shared-seed schemes draw independent subsets.
pub struct DenseFallback {
    inner: Box<dyn GradientCompressor>,
    name: String,
}

impl DenseFallback {
    /// Wrap `inner`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the wrapped name gets too long for a header.
    pub fn new(inner: Box<dyn GradientCompressor>) -> Result<Self> {
        let name = format!("fallback:{}", inner.name());
        if name.len() > MAX_NAME_LEN {
            return Err(Error::InvalidInput(format!(
                "name \"{name}\" is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        Ok(Self { inner, name })
    }

    fn tensor_ctx(ctx: &RoundCtx, index: usize, layout: Layout) -> RoundCtx {
        RoundCtx {
            seed: mix_seed(&[ctx.seed, index as u64]),
            layout: std::sync::Arc::new(layout),
            ..ctx.clone()
        }
    }
}

impl GradientCompressor for DenseFallback {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("{} per tensor, dense fallback", self.inner.describe())
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let specs = ctx.layout.specs();
        let mut flags = vec![0u8; specs.len().div_ceil(8)];
        let mut bodies: Vec<Option<Vec<u8>>> = Vec::with_capacity(specs.len());
        for (i, (name, t)) in update.iter().enumerate() {
            let one = Update::new(vec![(name.to_string(), t.clone())])?;
            let tctx = Self::tensor_ctx(ctx, i, one.layout().clone());
            let p = self.inner.compress(&one, state, &tctx)?;
            let body = p.body(self.inner.name())?;
            if varint::len(body.len() as u64) + body.len() < 4 * specs[i].numel() {
                flags[i / 8] |= 1 << (i % 8);
                bodies.push(Some(body.to_vec()));
            } else {
                bodies.push(None);
            }
        }
        let mut p = Payload::builder(&self.name)?;
        p.put_bytes(&flags);
        for (body, (_, t)) in bodies.iter().zip(update.iter()) {
            match body {
                Some(b) => {
                    p.put_varint(b.len() as u64);
                    p.put_bytes(b);
                }
                None => {
                    let one = Update::new(vec![(String::new(), t.clone())])?;
                    one.for_each_host(|_, _, v| {
                        p.put_f32s(v);
                        Ok(())
                    })?;
                }
            }
        }
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(&self.name)?;
        let specs = ctx.layout.specs();
        let flags = r.bytes(specs.len().div_ceil(8))?;
        if !specs.len().is_multiple_of(8) && flags[flags.len() - 1] >> (specs.len() % 8) != 0 {
            return Err(Error::malformed(
                "fallback flags set beyond the last tensor",
            ));
        }
        let mut parts = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if flags[i / 8] >> (i % 8) & 1 == 1 {
                let len = r.varint_at_most(r.remaining(), "compressed tensor length")?;
                let body = r.bytes(len)?;
                let layout = Layout::new(vec![spec.clone()])?;
                let tctx = Self::tensor_ctx(ctx, i, layout);
                let inner = Payload::from_body(self.inner.name(), body)?;
                let mut got = self.inner.decompress(&inner, &tctx)?.to_parts()?;
                parts.push(got.pop().unwrap_or_default());
            } else {
                parts.push(r.f32s(spec.numel())?);
            }
        }
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }

    super::forward_hooks!(inner);
}
