//! [`Compose`]: a first stage's values through a second compressor (top-k then 8-bit).

use crate::compressor::GradientCompressor;
use crate::context::RoundCtx;
use crate::error::{Error, Result};
use crate::payload::{Payload, MAX_NAME_LEN};
use crate::staged::{values_ctx, Staged};
use crate::state::ClientState;
use crate::update::Update;

/// Two compressors in sequence: `first` (a [`Staged`] compressor) writes its structure
/// (indices, …) and hands its values to `second`, whose body follows.
///
/// Wire: header `first+second` (e.g. `topk+kbit`), the first stage's structure, then the
/// second stage's body (its payload without its header). The second stage runs on the
/// values layout (one tensor per original tensor that kept any values, same name) in a
/// context whose random streams are its own, so random-k followed by QSGD draws
/// independent numbers. Client state is shared; each stage keys its own entries.
pub struct Compose {
    first: Box<dyn GradientCompressor>,
    second: Box<dyn GradientCompressor>,
    name: String,
}

impl Compose {
    /// `first` then `second`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `first` is not a first stage
    /// ([`GradientCompressor::as_staged`] is `None`) or the combined name is too long.
    pub fn new(
        first: Box<dyn GradientCompressor>,
        second: Box<dyn GradientCompressor>,
    ) -> Result<Self> {
        if first.as_staged().is_none() {
            return Err(Error::InvalidInput(format!(
                "`{}` cannot hand its values to another compressor; first stages: \
                 topk, approx-topk, randk, powersgd (any compressor whose as_staged() is Some)",
                first.name()
            )));
        }
        let name = format!("{}+{}", first.name(), second.name());
        if name.len() > MAX_NAME_LEN {
            return Err(Error::InvalidInput(format!(
                "composed name \"{name}\" is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        Ok(Self {
            first,
            second,
            name,
        })
    }

    fn stage(&self) -> Result<&dyn Staged> {
        self.first
            .as_staged()
            .ok_or_else(|| Error::Other(format!("`{}` lost its first stage", self.first.name())))
    }
}

impl GradientCompressor for Compose {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("{} then {}", self.first.describe(), self.second.describe())
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let mut p = Payload::builder(&self.name)?;
        let values = self.stage()?.split(update, state, ctx, &mut p)?;
        let vctx = values_ctx(ctx, values.layout());
        let inner = self.second.compress(&values, state, &vctx)?;
        p.put_bytes(inner.body(self.second.name())?);
        Ok(p.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(&self.name)?;
        let stage = self.stage()?;
        let s = stage.read_structure(&mut r, ctx)?;
        let inner = Payload::from_body(self.second.name(), r.rest())?;
        let values = self
            .second
            .decompress(&inner, &values_ctx(ctx, &s.values_layout))?;
        stage.join(&s, &values, ctx)
    }

    super::forward_hooks!(first);
}
