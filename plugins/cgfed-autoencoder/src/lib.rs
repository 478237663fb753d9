//! # cgfed-autoencoder: CG-FedLLM
//!
//! The `cgfedllm` compressor: a learned autoencoder whose encoder runs on the clients and
//! whose decoder runs on the server (Wu et al., *CG-FedLLM*, arXiv 2405.13746), with the
//! paper's TGAP pre-training and an SNR-driven FAF phase. The method, what the paper leaves
//! open and what we chose are in `../shared/METHOD.md`; the measured evidence is in the
//! README's "CG-FedLLM" section.
//!
//! ## Lifecycle (driven by the runner through the core's hooks)
//!
//! 1. **TGAP.** The compressor asks for `tgap.rounds` calibration rounds and a D1/D2 split
//!    (`tgap.split` of each client's examples, default 30 %): those rounds are ordinary
//!    dense federated rounds on D1, their bytes counted and their metric lines marked
//!    `calibration`. Every client's delta after every local step of every calibration
//!    round is observed (the temporal ensemble, [`tgap::SnapshotStore`]). Then `fit`
//!    holds out the latest `tgap.heldout_rounds` rounds, trains the autoencoder (MSE on
//!    normalised inputs, Adam, `tgap.lr` = 2e-4, `tgap.iterations` steps of `tgap.batch`
//!    items) and reports the held-out SNR (dB and the paper's `‖x‖²/MSE`), cosine and
//!    relative error of the whole codec next to a zero predictor, the mean training
//!    snapshot, and the mean snapshot with the codec's own scales (`tgap_*` metrics on the
//!    last calibration line and in `summary.json`'s `calibration.fit`). The fitted
//!    autoencoder is then shipped to every client (downlink, its exact safetensors bytes).
//!    `cgfed tgap CONFIG` runs only this phase and saves the autoencoder
//!    (`ae.safetensors` + `ae.toml`); `load = "DIR"` uses a saved one instead of
//!    calibrating (the run still trains on D2 of the same split).
//! 2. **FAF.** The training rounds run on D2. A client encodes its update, decodes its own
//!    latent (it holds the decoder too), and sends each tensor whose reconstruction SNR is
//!    below `snr_threshold_db` through the `fallback` compressor instead, flagged in the
//!    payload. With `faf.finetune_steps > 0` the server fine-tunes the autoencoder on the
//!    chunks that arrived through the fallback and ships the refreshed weights to every
//!    client (downlink). Error feedback (`error_feedback = true`) works as for any
//!    compressor.
//!
//! ## Presets
//!
//! - `default` ([`nets::MlpAe`]): chunks of `chunk` = 1024 elements normalised by their
//!   RMS; a **linear path** started from chunk-PCA of the TGAP chunks plus a nonlinear
//!   residual branch (one hidden layer of `hidden` = 512 GELU units each way, output layers
//!   zero-initialised, a linear head, learned per-chunk position embeddings) that Adam
//!   trains; `latent` = 448 values per chunk sent as **1-bit codes** with one f32 scale
//!   (`latent_bits` = 1, a straight-through estimator in training). With the chunk's f32
//!   scale that is 4 + 4 + 56 = 64 bytes per 4096 dense bytes: exactly 64×.
//! - `paper`: the paper's ResNet-style conv autoencoder ([`nets::ConvAe`]) on all tensors
//!   packed into one image ([`geometry`]), latent 1/64 of the elements as f16 (or f32:
//!   `latent_dtype`), Tanh output, inputs scaled per tensor by max |x|.
//! - `pca`: chunk-PCA ([`nets::PcaAe`]), the linear autoencoder fitted in closed form on the
//!   same snapshots, with the same latent code as `default` (set `latent_bits = 0` for
//!   f16 coefficients): the learned preset's reference.
//!
//! Why the default looks like this (measured on SmolLM2-135M's LoRA updates, README
//! "CG-FedLLM"): the updates are dense, sign-like and only weakly related across rounds
//! and clients. What carries them at 64× is (a) normalising each chunk and sending its
//! scale, (b) an unbounded linear head, (c) many coarse latents rather than a few precise
//! ones — 448 one-bit latents reach a held-out cosine of 0.57–0.58 where 32 f16 latents
//! (the same bytes) reach 0.24–0.26 —, and (d) the **least-squares scale** (`scale =
//! "lsq"`, default except for `paper`): the client, holding the decoder, sends
//! `g = ⟨x, d⟩/‖d‖²` for each chunk's decoder output `d`, so
//! `‖x − g·d‖² = ‖x‖²(1 − cos²) ≤ ‖x‖²`. The codec is then a contraction, which is what
//! error feedback needs (a biased decoder with a fixed scale can amplify the residual
//! round after round: the divergence METHOD.md reports). The nonlinear branch is kept but
//! starts at zero: on a temporal ensemble of a dozen snapshots Adam overfits it (training
//! cosine up, held-out cosine down by ≈ 0.01), so the codec stays close to its PCA start.
//!
//! ## Keys (`[compressor] kind = "cgfedllm"`)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `preset` | `"default"` | `default`, `paper`, `pca` |
//! | `chunk` | 1024 | elements per chunk (default, pca) |
//! | `latent` | 448 | latent values per chunk (default, pca) |
//! | `latent_bits` | 1 (paper: 0) | bits per latent value, one f32 scale per latent row; 0: `latent_dtype` values |
//! | `hidden` | 512 | MLP width (default) |
//! | `positions` | true for default | learned per-chunk position embeddings |
//! | `latent_dtype` | `"f16"` | `f16`, `bf16`, `f32` (with `latent_bits = 0`) |
//! | `scale` | `"lsq"` (`"norm"` for paper) | per-block scale, see [`config::ScaleMode`] |
//! | `snr_threshold_db` | 0.0 | per-tensor fallback below this SNR; `-inf`: never |
//! | `fallback` | `"none"` | any compressor table, e.g. `{ kind = "topk", ratio = 0.05 }` |
//! | `load` | — | a `cgfed tgap` output directory |
//! | `tgap.rounds` | 3 | calibration rounds |
//! | `tgap.split` | 0.3 | D1 share of each client's examples |
//! | `tgap.heldout_rounds` | 1 | latest calibration rounds held out for validation |
//! | `tgap.iterations` | 200 | Adam steps |
//! | `tgap.batch` | 128 | items per step |
//! | `tgap.dump` | — | also write the snapshots to this safetensors file (for `examples/fit_snapshots.rs`) |
//! | `tgap.lr` | 2e-4 | Adam learning rate |
//! | `tgap.max_snapshots` | 512 | snapshots kept (evenly thinned beyond) |
//! | `tgap.seed` | 0 | initialisation and batch order |
//! | `faf.finetune_steps` | 0 | server fine-tuning steps per round on fallback chunks |
//! | `faf.lr` | 2e-4 | fine-tuning learning rate |
//!
//! ## Wire format
//!
//! See [`codec`]: flag bits, then per chunk its f32 scale and latent (or the image latent
//! and per-tensor scales), then the fallback's own payload for the flagged tensors. The
//! decoder validates lengths and finiteness before decoding and rejects trailing bytes.
//!
//! ## Per-round metrics
//!
//! Besides the runner's uplink bytes, ratio, SNR (both definitions) and cosine, every
//! training round reports `ae_latent_bytes`, `ae_scale_bytes`, `ae_flag_bytes`,
//! `ae_header_bytes`, `ae_fallback_bytes`, `ae_fallback_share` (share of elements sent by
//! the fallback), `ae_fallback_tensors`, and with fine-tuning `ae_finetune_loss`,
//! `ae_finetune_items` and `ae_refresh_bytes`.
//!
//! ## Limits
//!
//! A loaded autoencoder runs on the CPU; a calibrated one on the device of the run. The
//! `default` preset with position embeddings and the layout it was trained on go together
//! (another layout is an error); `pca` and `default` without positions work on any layout,
//! `paper` on any layout (it is fully convolutional).

pub mod artifact;
pub mod codec;
pub mod compressor;
pub mod config;
pub mod geometry;
pub mod nets;
pub mod tgap;

pub use compressor::{CgFedLlm, NAME};

use cgfed_core::{Factory, Param, Plugin};

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "CG-FedLLM: learned autoencoder (encoder on clients, decoder on the server), TGAP pre-training on dense calibration rounds, SNR-driven per-tensor fallback",
        params: &[
            Param { key: "preset", default: "\"default\"", help: "default (chunked MLP), paper (conv AE on the packed factors), pca (chunk-PCA)" },
            Param { key: "chunk", default: "1024", help: "elements per chunk (default, pca)" },
            Param { key: "latent", default: "448", help: "latent values per chunk (default, pca)" },
            Param { key: "latent_bits", default: "1", help: "bits per latent value with one f32 scale per chunk, 1..=8; 0: latent_dtype values (paper default)" },
            Param { key: "hidden", default: "512", help: "MLP hidden width (default)" },
            Param { key: "positions", default: "true", help: "learned per-chunk position embeddings (default preset)" },
            Param { key: "latent_dtype", default: "\"f16\"", help: "f16, bf16 or f32" },
            Param { key: "scale", default: "\"lsq\"", help: "lsq (least-squares gain per block) or norm (the input normalisation)" },
            Param { key: "snr_threshold_db", default: "0.0", help: "tensors self-decoding below this SNR go through the fallback; -inf: never" },
            Param { key: "fallback", default: "\"none\"", help: "the fallback compressor table (e.g. { kind = \"topk\", ratio = 0.05 })" },
            Param { key: "load", default: "-", help: "directory of a saved autoencoder (cgfed tgap) to use instead of calibrating" },
            Param { key: "tgap", default: "{ rounds = 3, split = 0.3, heldout_rounds = 1, iterations = 200, batch = 128, lr = 2e-4, max_snapshots = 512, seed = 0 }", help: "TGAP calibration and pre-training" },
            Param { key: "faf", default: "{ finetune_steps = 0, lr = 2e-4 }", help: "server-side fine-tuning on fallback blocks" },
        ],
        factory: Factory::Compressor(compressor::build),
    }
}
