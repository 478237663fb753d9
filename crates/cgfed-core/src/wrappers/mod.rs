//! Wrappers any compressor can be put in, switched on from its config table:
//!
//! ```toml
//! [compressor]
//! kind = "topk"
//! ratio = 0.01
//! values = { kind = "kbit", bits = 8 }   # composition: the kept values as 8-bit
//! dense_fallback = true                  # per tensor: dense f32 when that is not larger
//! warmup_rounds = 2                      # rounds 0 and 1 send dense f32
//! error_feedback = true                  # per-client residual added to the next update
//! ```
//!
//! | key | default | wrapper |
//! |---|---|---|
//! | `values` | none | [`Compose`]: the first stage's values through a second compressor (the first must be [`crate::Staged`]: topk, approx-topk, randk, powersgd) |
//! | `dense_fallback` | `false` | [`DenseFallback`]: compress tensor by tensor, send a tensor dense when its compressed form is not smaller |
//! | `warmup_rounds` | `0` | [`Warmup`]: rounds with index below it send dense f32 |
//! | `error_feedback` | `false` | [`ErrorFeedback`]: add the client's residual before compressing, keep what did not get through |
//!
//! They nest in that order, error feedback outermost, so the residual catches the error of
//! everything inside it. [`build_compressor`] reads these keys, gives the rest of the table to
//! the plugin's factory, and wraps the result; the same keys work for the downlink.

/// The lifecycle hooks of [`GradientCompressor`] (calibration, `after_round`, artifacts)
/// forwarded to the wrapped compressor in field `$inner`.
macro_rules! forward_hooks {
    ($inner:ident) => {
        fn calibration_rounds(&self) -> usize {
            self.$inner.calibration_rounds()
        }

        fn calibration_split(&self) -> Option<f64> {
            self.$inner.calibration_split()
        }

        fn save_fitted(
            &self,
            dir: &std::path::Path,
        ) -> $crate::error::Result<Vec<std::path::PathBuf>> {
            self.$inner.save_fitted(dir)
        }

        fn observe(
            &mut self,
            update: &$crate::update::Update,
            ctx: &$crate::context::RoundCtx,
        ) -> $crate::error::Result<()> {
            self.$inner.observe(update, ctx)
        }

        fn fit(&mut self) -> $crate::error::Result<$crate::compressor::HookReport> {
            self.$inner.fit()
        }

        fn after_round(
            &mut self,
            received: &[($crate::payload::Payload, $crate::update::Update)],
            ctx: &$crate::context::RoundCtx,
        ) -> $crate::error::Result<$crate::compressor::HookReport> {
            self.$inner.after_round(received, ctx)
        }

        fn client_artifacts(&self) -> $crate::error::Result<Vec<u8>> {
            self.$inner.client_artifacts()
        }

        fn save_checkpoint(&self, dir: &std::path::Path) -> $crate::error::Result<()> {
            self.$inner.save_checkpoint(dir)
        }

        fn load_checkpoint(&mut self, dir: &std::path::Path) -> $crate::error::Result<()> {
            self.$inner.load_checkpoint(dir)
        }
    };
}
pub(crate) use forward_hooks;

mod compose;
mod dense_fallback;
mod error_feedback;
mod warmup;

pub use compose::Compose;
pub use dense_fallback::DenseFallback;
pub use error_feedback::{ErrorFeedback, RESIDUAL_KEY};
pub use warmup::Warmup;

use serde::Deserialize;

use crate::compressor::GradientCompressor;
use crate::config::{parse_table, PluginTable};
use crate::error::{Error, Result};
use crate::registry;

/// The wrapper keys every compressor table accepts (see the [module docs](self)).
pub const WRAPPER_KEYS: &[(&str, &str, &str)] = &[
    (
        "error_feedback",
        "false",
        "keep a per-client residual of what compression lost and add it to the next update",
    ),
    (
        "warmup_rounds",
        "0",
        "rounds with index below this send dense f32",
    ),
    (
        "dense_fallback",
        "false",
        "compress tensor by tensor and send a tensor dense when that is not larger",
    ),
    (
        "values",
        "none",
        "a second compressor for the values a first stage keeps, e.g. { kind = \"kbit\", bits = 8 }",
    ),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrapperConfig {
    #[serde(default)]
    error_feedback: bool,
    #[serde(default)]
    warmup_rounds: usize,
    #[serde(default)]
    dense_fallback: bool,
    #[serde(default)]
    values: Option<toml::Value>,
}

/// Split the wrapper keys off `table`: (their config, the plugin's own table).
fn split_keys(table: &PluginTable) -> Result<(WrapperConfig, PluginTable)> {
    let mut plugin = table.clone();
    let mut mine = toml::Table::new();
    for (key, _, _) in WRAPPER_KEYS {
        if let Some(v) = plugin.params.remove(*key) {
            mine.insert((*key).to_string(), v);
        }
    }
    Ok((parse_table(&mine, &table.key)?, plugin))
}

/// Build the compressor `table` names, inside the wrappers its keys ask for.
///
/// # Errors
/// Unknown compressor names, bad plugin or wrapper keys (naming the key path), a `values`
/// stage after a compressor that is not a first stage, wrapper keys inside `values`.
pub fn build_compressor(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let (cfg, plugin) = split_keys(table)?;
    let mut c = registry::build_plain_compressor(&plugin)?;
    if let Some(v) = &cfg.values {
        let key = format!("{}.values", table.key);
        let second_table = PluginTable::from_value(&key, v)?;
        let (inner_cfg, second_plain) = split_keys(&second_table)?;
        if inner_cfg.error_feedback
            || inner_cfg.warmup_rounds > 0
            || inner_cfg.dense_fallback
            || inner_cfg.values.is_some()
        {
            return Err(Error::config(
                key,
                "wrapper keys (error_feedback, warmup_rounds, dense_fallback, values) belong \
                 to the outer table, not to the values stage",
            ));
        }
        let second = registry::build_plain_compressor(&second_plain)?;
        c = Box::new(Compose::new(c, second).map_err(|e| match e {
            Error::InvalidInput(m) => Error::config(format!("{}.values", table.key), m),
            e => e,
        })?);
    }
    if cfg.dense_fallback {
        c = Box::new(DenseFallback::new(c)?);
    }
    if cfg.warmup_rounds > 0 {
        c = Box::new(Warmup::new(c, cfg.warmup_rounds));
    }
    if cfg.error_feedback {
        c = Box::new(ErrorFeedback::new(c));
    }
    Ok(c)
}
