//! # cgfed-plugins
//!
//! Umbrella crate that links every plugin, so that their `inventory` registrations are not
//! dropped by the linker. Binaries and integration tests that look plugins up by name write:
//!
//! ```
//! use cgfed_plugins as _;
//! ```
//!
//! and a new plugin crate adds one `extern crate` line here.

extern crate cgfed_aggregators as _;
extern crate cgfed_autoencoder as _;
extern crate cgfed_lowrank as _;
extern crate cgfed_model as _;
extern crate cgfed_quantize as _;
extern crate cgfed_sparsify as _;

/// Names of the plugin crates linked by this umbrella (for `cgfed list` and tests).
pub const LINKED_CRATES: &[&str] = &[
    "cgfed-core",
    "cgfed-model",
    "cgfed-quantize",
    "cgfed-sparsify",
    "cgfed-lowrank",
    "cgfed-aggregators",
    "cgfed-autoencoder",
];

/// Call from `main` (or a test) to make sure this crate, and so every plugin, is linked.
pub fn link() {}
