//! [`Warmup`]: dense f32 for the first rounds, then the wrapped compressor.

use crate::builtin::none::NoCompression;
use crate::compressor::GradientCompressor;
use crate::context::RoundCtx;
use crate::error::Result;
use crate::payload::Payload;
use crate::state::ClientState;
use crate::update::Update;

/// Rounds with index `< rounds` send dense f32 (the `none` body under this compressor's
/// header); later rounds use the inner compressor. Both ends know the round, so nothing
/// else travels.
pub struct Warmup {
    inner: Box<dyn GradientCompressor>,
    rounds: usize,
}

impl Warmup {
    /// Dense for rounds `0..rounds`, then `inner`.
    pub fn new(inner: Box<dyn GradientCompressor>, rounds: usize) -> Self {
        Self { inner, rounds }
    }

    fn dense(&self, ctx: &RoundCtx) -> bool {
        ctx.round < self.rounds
    }
}

impl GradientCompressor for Warmup {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn describe(&self) -> String {
        format!(
            "{}, dense warm-up {} rounds",
            self.inner.describe(),
            self.rounds
        )
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        if self.dense(ctx) {
            let p = NoCompression.compress(update, state, ctx)?;
            Payload::from_body(self.name(), p.body(NoCompression.name())?)
        } else {
            self.inner.compress(update, state, ctx)
        }
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        if self.dense(ctx) {
            let body = payload.body(self.name())?;
            NoCompression.decompress(&Payload::from_body(NoCompression.name(), body)?, ctx)
        } else {
            self.inner.decompress(payload, ctx)
        }
    }

    super::forward_hooks!(inner);
}
