//! Downloadable model assets: the asset cache of [`cgfed_assets`], re-exported so that
//! `cgfed_model::assets::...` keeps working, plus the model-specific view of its registry
//! ([`model_assets`], [`find_model_asset`]): the file assets, which are checkpoints, as
//! opposed to the directory assets (data sets).

pub use cgfed_assets::*;

use cgfed_core::{Error, Result};

/// The assets that are model checkpoints (single files: GGUF), in registry order.
pub fn model_assets() -> impl Iterator<Item = &'static AssetSpec> {
    ASSETS.iter().filter(|a| !a.is_dir())
}

/// The model asset called `name`: an error for unknown names and for directory assets,
/// listing the model assets.
pub fn find_model_asset(name: &str) -> Result<&'static AssetSpec> {
    let spec = find_asset(name)?;
    if spec.is_dir() {
        let known: Vec<&str> = model_assets().map(|a| a.name).collect();
        return Err(Error::InvalidInput(format!(
            "asset \"{name}\" is a data directory, not a model; model assets: {}",
            known.join(", ")
        )));
    }
    Ok(spec)
}
