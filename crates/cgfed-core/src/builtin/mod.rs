//! Plugins that ship with the core because every comparison needs them.

pub mod none;
