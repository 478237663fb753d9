//! [`ErrorFeedback`]: the client keeps what compression lost and adds it to its next update.

use candle_core::Device;

use crate::compressor::GradientCompressor;
use crate::context::RoundCtx;
use crate::error::{Error, Result};
use crate::payload::Payload;
use crate::state::ClientState;
use crate::update::Update;

/// Key of the residual in the client's [`ClientState`] (one flat f32 buffer in layout order).
pub const RESIDUAL_KEY: &str = "ef/residual";

/// Error feedback (EF-SGD, Karimireddy et al. 2019) around any compressor.
///
/// Round `t` for client `c`: `x' = x + e_c`, send `C(x')`, keep `e_c = x' − D(C(x'))`
/// (the client decodes its own payload). The residual lives in the client's
/// [`ClientState`], which the runner keeps while the client is not sampled and writes to
/// checkpoints, so it is applied the next time the client takes part, however many rounds
/// later. The wire format is the inner compressor's: the server decodes as usual.
pub struct ErrorFeedback {
    inner: Box<dyn GradientCompressor>,
}

impl ErrorFeedback {
    /// Wrap `inner`.
    pub fn new(inner: Box<dyn GradientCompressor>) -> Self {
        Self { inner }
    }

    /// The residual held in `state`, if any.
    pub fn residual(state: &ClientState) -> Option<&[f32]> {
        state.buffers.get(RESIDUAL_KEY).map(Vec::as_slice)
    }
}

impl ErrorFeedback {
    /// One EF step: `x' = x + e`, compress, decode, `e' = x' − D(C(x'))`.
    fn step(
        &self,
        update: &Update,
        residual: Option<&[f32]>,
        state: &mut ClientState,
        ctx: &RoundCtx,
        n: usize,
    ) -> Result<(Payload, Vec<f32>)> {
        if let Some(e) = residual {
            if e.len() != n {
                return Err(Error::InvalidInput(format!(
                    "error-feedback residual has {} values but the update has {n}; \
                     the trainable layout changed since it was saved",
                    e.len()
                )));
            }
        }
        let mut parts = Vec::with_capacity(ctx.layout.len());
        let mut off = 0;
        update.for_each_host(|_, spec, v| {
            let mut p = v.to_vec();
            if let Some(e) = residual {
                for (a, b) in p.iter_mut().zip(&e[off..off + v.len()]) {
                    *a += b;
                }
                if let Some(i) = p.iter().position(|v| !v.is_finite()) {
                    return Err(Error::InvalidInput(format!(
                        "tensor `{}` plus its error-feedback residual overflows at element {i}",
                        spec.name
                    )));
                }
            }
            off += v.len();
            parts.push(p);
            Ok(())
        })?;
        let host = RoundCtx {
            device: Device::Cpu,
            ..ctx.clone()
        };
        let corrected = Update::from_parts(&ctx.layout, parts, &Device::Cpu)?;
        let payload = self.inner.compress(&corrected, state, &host)?;
        let decoded = self.inner.decompress(&payload, &host)?;
        let mut next = Vec::with_capacity(n);
        corrected.for_each_host_pair(&decoded, |_, _, x, y| {
            next.extend(x.iter().zip(y).map(|(a, b)| a - b));
            Ok(())
        })?;
        Ok((payload, next))
    }
}

impl GradientCompressor for ErrorFeedback {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn describe(&self) -> String {
        format!("{}, error feedback", self.inner.describe())
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let n = update.numel();
        // The residual leaves the state while it is used and comes back (unchanged) if
        // anything fails, so an error never loses it.
        let old = state.buffers.remove(RESIDUAL_KEY);
        match self.step(update, old.as_deref(), state, ctx, n) {
            Ok((payload, residual)) => {
                state.buffers.insert(RESIDUAL_KEY.to_string(), residual);
                Ok(payload)
            }
            Err(e) => {
                if let Some(old) = old {
                    state.buffers.insert(RESIDUAL_KEY.to_string(), old);
                }
                Err(e)
            }
        }
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        self.inner.decompress(payload, ctx)
    }

    super::forward_hooks!(inner);
}
