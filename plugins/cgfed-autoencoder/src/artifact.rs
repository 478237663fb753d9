//! A saved autoencoder: `ae.safetensors` (every weight, f32) and `ae.toml` (architecture,
//! wire precision, the layout it was fitted on, the TGAP split and report). The weights'
//! safetensors bytes are also what each client downloads (`client_artifacts`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cgfed_core::candle_core::{Device, Tensor};
use cgfed_core::{Error, Layout, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::codec::host;
use crate::config::{Arch, LatentDtype};

/// The format tag in `ae.toml`.
pub const FORMAT: &str = "cgfed-autoencoder/1";
/// Weights file name.
pub const WEIGHTS: &str = "ae.safetensors";
/// Metadata file name.
pub const META: &str = "ae.toml";

/// `ae.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMeta {
    /// [`FORMAT`].
    pub format: String,
    /// The architecture.
    pub arch: Arch,
    /// Latent precision it was fitted for.
    pub latent_dtype: LatentDtype,
    /// Position-embedding rows (0: none).
    pub position_rows: usize,
    /// The D1 share of the calibration it was fitted on.
    pub split: f64,
    /// Tensor names and shapes of the layout it was fitted on.
    pub layout: Vec<(String, Vec<usize>)>,
    /// The TGAP report.
    pub fit: BTreeMap<String, f64>,
}

/// The names and shapes of a layout.
pub fn layout_signature(layout: &Layout) -> Vec<(String, Vec<usize>)> {
    layout
        .specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect()
}

/// Serialise named tensors as safetensors (f32).
pub fn to_bytes(named: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .iter()
        .map(|(n, t)| {
            let bytes: Vec<u8> = host(t)?.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((n.clone(), t.dims().to_vec(), bytes))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Other(format!("safetensors view `{n}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None).map_err(|e| Error::Other(format!("safetensors: {e}")))
}

/// Parse safetensors bytes into f32 tensors on `device`.
///
/// # Errors
/// Not safetensors, or a tensor that is not f32.
pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::InvalidInput(format!("not a safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            )));
        }
        let vals: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, Tensor::from_vec(vals, view.shape(), device)?);
    }
    Ok(out)
}

/// Write `ae.safetensors` and `ae.toml` into `dir`.
///
/// # Errors
/// I/O errors.
pub fn save(dir: &Path, weights: &[u8], meta: &SavedMeta) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let w = dir.join(WEIGHTS);
    let m = dir.join(META);
    let text = toml::to_string_pretty(meta)
        .map_err(|e| Error::Other(format!("cannot write {}: {e}", m.display())))?;
    for (path, bytes) in [(&w, weights), (&m, text.as_bytes())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    }
    Ok(vec![w, m])
}

/// Read a saved autoencoder's metadata and weights from `dir`.
///
/// # Errors
/// Missing files, another format, unparsable contents.
pub fn load(dir: &Path, device: &Device) -> Result<(SavedMeta, HashMap<String, Tensor>)> {
    let m = dir.join(META);
    let text = std::fs::read_to_string(&m).map_err(|e| Error::io(&m, e))?;
    let meta: SavedMeta =
        toml::from_str(&text).map_err(|e| Error::InvalidInput(format!("{}: {e}", m.display())))?;
    if meta.format != FORMAT {
        return Err(Error::InvalidInput(format!(
            "{}: format `{}`, expected `{FORMAT}`",
            m.display(),
            meta.format
        )));
    }
    let w = dir.join(WEIGHTS);
    let bytes = std::fs::read(&w).map_err(|e| Error::io(&w, e))?;
    let weights = from_bytes(&bytes, device)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", w.display())))?;
    Ok((meta, weights))
}
