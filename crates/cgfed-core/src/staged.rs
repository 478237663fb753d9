//! Two-stage compression: a first stage decides *what* travels (which indices, a shared
//! random subset, low-rank factors) and hands the resulting dense values to a second stage
//! that decides *how* they are written (f32, 8-bit, 1-bit signs, …).
//!
//! A compressor that can be a first stage implements [`Staged`] and returns itself from
//! [`GradientCompressor::as_staged`](crate::GradientCompressor::as_staged). Its own
//! payload is then the structure followed by the values as f32 ([`compress_f32`],
//! [`decompress_f32`]), and the core's composition wrapper
//! ([`crate::wrappers::Compose`]) can put any compressor in place of the f32 values
//! (`[compressor] kind = "topk"`, `values = { kind = "kbit", bits = 8 }`).
//!
//! # Rules for a first stage
//!
//! - [`Staged::split`] appends the structure to the payload and returns the values as an
//!   [`Update`] whose layout the decoder can rebuild from the structure and the round
//!   context alone ([`Staged::read_structure`]). Values layouts never contain a tensor with
//!   zero elements (leave it out; the structure says so).
//! - The structure is self-delimiting: `read_structure` consumes exactly what `split` wrote.
//! - Callers have checked that the update has `ctx.layout` and is finite.

use std::any::Any;
use std::sync::Arc;

use candle_core::Device;

use crate::context::RoundCtx;
use crate::error::{Error, Result};
use crate::payload::{Payload, PayloadBuilder};
use crate::state::ClientState;
use crate::update::{Layout, Update};
use crate::wire::ByteReader;

/// What [`Staged::read_structure`] recovered from the wire: the layout of the values that
/// follow, and the stage's own decoded structure (indices, …) for [`Staged::join`].
pub struct Structure {
    /// Layout of the values the second stage decodes.
    pub values_layout: Layout,
    data: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Structure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Structure")
            .field("values_layout", &self.values_layout)
            .finish_non_exhaustive()
    }
}

impl Structure {
    /// A structure with values laid out as `values_layout` and stage data `data`.
    pub fn new<T: Any + Send + Sync>(values_layout: Layout, data: T) -> Self {
        Self {
            values_layout,
            data: Box::new(data),
        }
    }

    /// The stage data, as the type it was stored with.
    ///
    /// # Errors
    /// [`Error::Other`] if it holds another type (a programming error in the stage).
    pub fn data<T: Any>(&self) -> Result<&T> {
        self.data
            .downcast_ref::<T>()
            .ok_or_else(|| Error::Other("staged structure holds an unexpected type".into()))
    }
}

/// The first stage of a two-stage compressor (see the [module docs](self)).
pub trait Staged: Send + Sync {
    /// Append the structure of `update` to `out` and return the values to encode.
    fn split(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
        out: &mut PayloadBuilder,
    ) -> Result<Update>;

    /// Read the structure written by [`split`](Self::split), validating every count and
    /// index ([`Error::MalformedPayload`] otherwise).
    fn read_structure(&self, r: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure>;

    /// Rebuild the update (layout `ctx.layout`, on `ctx.device`) from the structure and the
    /// decoded values (layout `structure.values_layout`).
    fn join(&self, structure: &Structure, values: &Update, ctx: &RoundCtx) -> Result<Update>;
}

/// The context a second stage runs in: `ctx` with the values layout, on the CPU.
pub fn values_ctx(ctx: &RoundCtx, values_layout: &Layout) -> RoundCtx {
    RoundCtx {
        layout: Arc::new(values_layout.clone()),
        device: Device::Cpu,
        ..ctx.clone()
    }
}

/// A first stage's own payload: header `name`, the structure, then the values as f32.
pub fn compress_f32(
    stage: &dyn Staged,
    name: &str,
    update: &Update,
    state: &mut ClientState,
    ctx: &RoundCtx,
) -> Result<Payload> {
    update.check_same_layout(&ctx.layout)?;
    update.check_finite()?;
    let mut p = Payload::builder(name)?;
    let values = stage.split(update, state, ctx, &mut p)?;
    p.reserve(4 * values.numel());
    values.for_each_host(|_, _, v| {
        p.put_f32s(v);
        Ok(())
    })?;
    Ok(p.finish())
}

/// Decode a payload written by [`compress_f32`].
pub fn decompress_f32(
    stage: &dyn Staged,
    name: &str,
    payload: &Payload,
    ctx: &RoundCtx,
) -> Result<Update> {
    let mut r = payload.open(name)?;
    let s = stage.read_structure(&mut r, ctx)?;
    let vals = r.f32s(s.values_layout.numel())?;
    r.finish()?;
    let values = Update::from_flat(&s.values_layout, &vals, &Device::Cpu)?;
    stage.join(&s, &values, ctx)
}
