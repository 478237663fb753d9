//! The `[compressor]` table of `cgfedllm`: architecture, wire precision, TGAP, FAF.

use std::path::PathBuf;

use cgfed_core::config::{ensure, PluginTable};
use cgfed_core::Result;
use serde::{Deserialize, Serialize};

/// Which autoencoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Chunked MLP autoencoder (the measured default, see the crate docs).
    Default,
    /// The paper's ResNet-style conv autoencoder on all factors packed into one image.
    Paper,
    /// Chunk-PCA: a linear autoencoder fitted in closed form on the TGAP snapshots.
    Pca,
}

impl Preset {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::Paper => "paper",
            Preset::Pca => "pca",
        }
    }

    /// Whether the preset works on chunks (default, pca) rather than one packed image.
    pub fn chunked(self) -> bool {
        self != Preset::Paper
    }
}

/// How the latent values are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatentDtype {
    /// IEEE half precision, 2 bytes (default).
    F16,
    /// bfloat16, 2 bytes.
    Bf16,
    /// f32, 4 bytes.
    F32,
}

impl LatentDtype {
    /// Bytes per latent value.
    pub fn bytes(self) -> usize {
        match self {
            LatentDtype::F32 => 4,
            _ => 2,
        }
    }

    /// Round `v` to this precision (what the receiver will read).
    pub fn round(self, v: f32) -> f32 {
        match self {
            LatentDtype::F16 => half::f16::from_f32(v).to_f32(),
            LatentDtype::Bf16 => half::bf16::from_f32(v).to_f32(),
            LatentDtype::F32 => v,
        }
    }
}

/// What the per-block scale on the wire is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMode {
    /// The least-squares gain of the block's decoder output, `⟨x, d⟩ / ‖d‖²`, computed
    /// by the client (which holds the decoder). The codec is then a contraction,
    /// `‖x − g·d‖² = ‖x‖²(1 − cos²) ≤ ‖x‖²`, which keeps error feedback stable.
    Lsq,
    /// The input normalisation (chunk RMS, or a tensor's max |x| for the paper preset):
    /// the decoder's output is used as it comes.
    Norm,
}

/// TGAP: calibration rounds and the autoencoder's pre-training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TgapConfig {
    /// Dense calibration rounds on D1 (0 only together with `load`).
    pub rounds: usize,
    /// Share of each client's examples in D1.
    pub split: f64,
    /// The latest calibration rounds whose snapshots are held out for validation.
    pub heldout_rounds: usize,
    /// Adam iterations (ignored by `pca`, fitted in closed form).
    pub iterations: usize,
    /// Items (chunks, or packed images for `paper`) per Adam step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// At most this many snapshots are kept (evenly thinned beyond it).
    pub max_snapshots: usize,
    /// Seed of the autoencoder's initialisation and batch order.
    pub seed: u64,
    /// Also write the observed snapshots to this safetensors file when fitting, to fit
    /// other architectures on the same temporal ensemble offline
    /// (`cargo run --example fit_snapshots`).
    pub dump: Option<PathBuf>,
}

impl Default for TgapConfig {
    fn default() -> Self {
        Self {
            rounds: 3,
            split: 0.3,
            heldout_rounds: 1,
            iterations: 200,
            batch: 128,
            lr: 2e-4,
            max_snapshots: 512,
            seed: 0,
            dump: None,
        }
    }
}

/// FAF: the federated phase's SNR-driven fallback and server-side fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FafConfig {
    /// Server Adam steps on the blocks that arrived through the fallback, per round
    /// (0: no fine-tuning). Each fine-tuning round ships the refreshed autoencoder to
    /// every client (downlink).
    pub finetune_steps: usize,
    /// Fine-tuning learning rate.
    pub lr: f64,
}

impl Default for FafConfig {
    fn default() -> Self {
        Self {
            finetune_steps: 0,
            lr: 2e-4,
        }
    }
}

/// The `cgfedllm` compressor's parameters (see the crate docs for the table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgConfig {
    /// `default`, `paper` or `pca` (`None` in the table: `default`, or the saved one).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Elements per chunk (default, pca).
    #[serde(default)]
    pub chunk: Option<usize>,
    /// Latent values per chunk (default, pca).
    #[serde(default)]
    pub latent: Option<usize>,
    /// Hidden width of the MLP (default).
    #[serde(default)]
    pub hidden: Option<usize>,
    /// Learned per-chunk position embeddings (default): ties the autoencoder to the layout.
    #[serde(default)]
    pub positions: Option<bool>,
    /// Latent precision on the wire.
    #[serde(default = "default_latent_dtype")]
    pub latent_dtype: LatentDtype,
    /// Quantise each latent row to this many bits (1..=8) with one f32 scale per row,
    /// instead of sending the values as `latent_dtype` (0: send `latent_dtype` values);
    /// training then uses a straight-through estimator of the quantiser. `None`: the
    /// preset's (1 for default and pca, 0 for paper) or the saved autoencoder's.
    #[serde(default)]
    pub latent_bits: Option<u32>,
    /// Per-block scale (`None`: `lsq`, `norm` for the paper preset).
    #[serde(default)]
    pub scale: Option<ScaleMode>,
    /// A tensor whose self-decoded SNR (dB) is below this is sent by the fallback;
    /// `-inf` never falls back.
    #[serde(default)]
    pub snr_threshold_db: f64,
    /// The fallback compressor (any registered one, wrappers allowed), e.g. `"none"`
    /// (dense f32) or `{ kind = "topk", ratio = 0.05 }`.
    #[serde(default = "default_fallback")]
    pub fallback: toml::Value,
    /// Load a saved autoencoder (a `cgfed tgap` output directory) instead of calibrating.
    #[serde(default)]
    pub load: Option<PathBuf>,
    /// TGAP settings.
    #[serde(default)]
    pub tgap: TgapConfig,
    /// FAF settings.
    #[serde(default)]
    pub faf: FafConfig,
}

fn default_latent_dtype() -> LatentDtype {
    LatentDtype::F16
}

fn default_fallback() -> toml::Value {
    toml::Value::String("none".into())
}

/// The architecture, resolved: what a saved autoencoder records and a load must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    /// The preset.
    pub preset: Preset,
    /// Elements per chunk (chunked presets).
    pub chunk: usize,
    /// Latent values per chunk (chunked presets).
    pub latent: usize,
    /// MLP hidden width.
    pub hidden: usize,
    /// Position embeddings.
    pub positions: bool,
    /// Per-block scale.
    pub scale: ScaleMode,
    /// Bits per latent value (`None`: `latent_dtype` values).
    #[serde(default)]
    pub latent_bits: Option<u32>,
}

impl Arch {
    /// Defaults for `preset`.
    pub fn defaults(preset: Preset) -> Self {
        Self {
            preset,
            chunk: 1024,
            latent: 448,
            hidden: 512,
            positions: preset == Preset::Default,
            scale: if preset == Preset::Paper {
                ScaleMode::Norm
            } else {
                ScaleMode::Lsq
            },
            latent_bits: (preset != Preset::Paper).then_some(1),
        }
    }

    /// The configured architecture: the table's keys over `base` (the preset's defaults,
    /// or a saved autoencoder's architecture, which a key may then not contradict).
    ///
    /// # Errors
    /// A key that contradicts the saved architecture (`saved` is true), naming it.
    pub fn resolve(cfg: &CgConfig, base: Arch, saved: bool, key: &str) -> Result<Arch> {
        let mut a = base;
        if let Some(p) = cfg.preset {
            if saved {
                ensure(
                    p == a.preset,
                    format!("{key}.preset"),
                    format!("the loaded autoencoder is `{}`", a.preset.as_str()),
                )?;
            } else if p != a.preset {
                a = Arch::defaults(p);
            }
        }
        let pick = |v: Option<usize>, cur: usize, name: &str| -> Result<usize> {
            match v {
                Some(v) if saved && v != cur => Err(cgfed_core::Error::config(
                    format!("{key}.{name}"),
                    format!("the loaded autoencoder has {name} = {cur}, not {v}"),
                )),
                Some(v) => Ok(v),
                None => Ok(cur),
            }
        };
        a.chunk = pick(cfg.chunk, a.chunk, "chunk")?;
        a.latent = pick(cfg.latent, a.latent, "latent")?;
        a.hidden = pick(cfg.hidden, a.hidden, "hidden")?;
        if let Some(p) = cfg.positions {
            ensure(
                !saved || p == a.positions,
                format!("{key}.positions"),
                format!("the loaded autoencoder has positions = {}", a.positions),
            )?;
            a.positions = p;
        }
        if let Some(s) = cfg.scale {
            a.scale = s;
        }
        if let Some(b) = cfg.latent_bits {
            a.latent_bits = (b > 0).then_some(b);
        }
        Ok(a)
    }

    /// Check the ranges.
    ///
    /// # Errors
    /// The first key out of range.
    pub fn validate(&self, key: &str) -> Result<()> {
        if self.preset.chunked() {
            ensure(
                (8..=65_536).contains(&self.chunk),
                format!("{key}.chunk"),
                format!("must be in 8..=65536, got {}", self.chunk),
            )?;
            ensure(
                self.latent >= 1 && self.latent < self.chunk,
                format!("{key}.latent"),
                format!("must be in 1..chunk ({}), got {}", self.chunk, self.latent),
            )?;
        }
        if self.preset == Preset::Default {
            ensure(
                (1..=16_384).contains(&self.hidden),
                format!("{key}.hidden"),
                format!("must be in 1..=16384, got {}", self.hidden),
            )?;
        }
        ensure(
            !(self.preset == Preset::Pca && self.positions),
            format!("{key}.positions"),
            "the pca preset has no position embeddings",
        )
    }
}

impl CgConfig {
    /// Parse and validate the table (architecture checks happen once it is resolved).
    ///
    /// # Errors
    /// Unknown keys, wrong types, values out of range, each naming its key.
    pub fn from_table(table: &PluginTable) -> Result<Self> {
        let cfg: CgConfig = table.parse()?;
        let k = &table.key;
        let t = &cfg.tgap;
        ensure(
            !cfg.snr_threshold_db.is_nan(),
            format!("{k}.snr_threshold_db"),
            "must be a number (-inf disables the fallback)",
        )?;
        ensure(
            t.split > 0.0 && t.split < 1.0,
            format!("{k}.tgap.split"),
            format!("must be in (0, 1), got {}", t.split),
        )?;
        if cfg.load.is_none() {
            ensure(
                t.rounds >= 1,
                format!("{k}.tgap.rounds"),
                "must be at least 1 unless `load` names a saved autoencoder",
            )?;
            ensure(
                t.heldout_rounds < t.rounds,
                format!("{k}.tgap.heldout_rounds"),
                format!(
                    "must be less than tgap.rounds ({}) so some snapshots remain to train on",
                    t.rounds
                ),
            )?;
        }
        if let Some(b) = cfg.latent_bits {
            ensure(
                b <= 8,
                format!("{k}.latent_bits"),
                format!("must be in 0..=8 (0: latent_dtype values), got {b}"),
            )?;
        }
        ensure(
            t.batch >= 1,
            format!("{k}.tgap.batch"),
            "must be at least 1",
        )?;
        ensure(
            t.max_snapshots >= 2,
            format!("{k}.tgap.max_snapshots"),
            "must be at least 2",
        )?;
        for (lr, name) in [(t.lr, "tgap.lr"), (cfg.faf.lr, "faf.lr")] {
            ensure(
                lr > 0.0 && lr.is_finite(),
                format!("{k}.{name}"),
                format!("must be positive, got {lr}"),
            )?;
        }
        Ok(cfg)
    }
}
