//! Fused differentiable ops: candle custom ops whose backward is written by hand, so a
//! training step allocates less and skips work candle's generic autograd would do (e.g.
//! gradients of frozen weights). Each op is tested against the slow differentiable
//! composition it replaces: values and gradients within stated tolerances.

pub mod causal_softmax;
pub mod cross_entropy;
mod kernel;
pub mod linear;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;
