//! The `cgfedllm` compressor: TGAP calibration through the core's hooks, SNR-driven
//! per-tensor fallback, optional server-side fine-tuning (FAF).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cgfed_core::candle_core::Device;
use cgfed_core::config::PluginTable;
use cgfed_core::{
    registry, ClientState, Error, GradientCompressor, HookReport, Layout, Payload, Result,
    RoundCtx, TensorSpec, Update,
};

use crate::artifact::{self, SavedMeta};
use crate::codec::{Codec, Items};
use crate::config::{Arch, CgConfig, Preset};
use crate::geometry::Chunking;
use crate::nets::{ConvAe, MlpAe, Net, PcaAe};
use crate::tgap::{self, Snapshot, SnapshotStore};

/// The registered name (and payload header).
pub const NAME: &str = "cgfedllm";

/// CG-FedLLM: a learned autoencoder compressor. See the [crate docs](crate).
pub struct CgFedLlm {
    cfg: CgConfig,
    arch: Arch,
    fallback: Box<dyn GradientCompressor>,
    codec: Option<Codec>,
    store: SnapshotStore,
    layout: Option<Layout>,
    /// Where the net is trained and run: the device of the first calibration snapshot.
    device: Device,
    /// The D1 share the loaded autoencoder was calibrated with (`None`: not loaded).
    loaded_split: Option<f64>,
    fit: BTreeMap<String, f64>,
}

impl std::fmt::Debug for CgFedLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgFedLlm")
            .field("arch", &self.arch)
            .field("fitted", &self.codec.is_some())
            .finish()
    }
}

/// A fresh, seeded net for `arch` on `layout`.
fn build_codec(arch: Arch, cfg: &CgConfig, layout: &Layout, device: &Device) -> Result<Codec> {
    let seed = cfg.tgap.seed;
    let positions = if arch.positions {
        Chunking::new(layout, arch.chunk).total
    } else {
        0
    };
    let net = match arch.preset {
        Preset::Default => Net::Mlp(MlpAe::new(
            arch.chunk,
            arch.latent,
            arch.hidden,
            positions,
            seed,
            device,
        )?),
        Preset::Pca => Net::Pca(PcaAe::new(arch.chunk, arch.latent, seed, device)?),
        Preset::Paper => Net::Conv(ConvAe::new(seed, device)?),
    };
    Ok(Codec {
        arch,
        dtype: cfg.latent_dtype,
        bits: arch.latent_bits,
        net,
        positions,
        device: device.clone(),
    })
}

impl CgFedLlm {
    /// Build from a `[compressor]` table.
    ///
    /// # Errors
    /// Config errors naming the key; an unloadable saved autoencoder.
    pub fn from_table(table: &PluginTable) -> Result<Self> {
        let cfg = CgConfig::from_table(table)?;
        let key = table.key.clone();
        let fb_key = format!("{key}.fallback");
        let fb_table = PluginTable::from_value(&fb_key, &cfg.fallback)?;
        if fb_table.name == NAME {
            return Err(Error::config(
                fb_key,
                "the fallback cannot be cgfedllm itself",
            ));
        }
        let fallback = registry::build_compressor(&fb_table)?;
        let base = Arch::defaults(cfg.preset.unwrap_or(Preset::Default));
        let mut out = Self {
            arch: Arch::resolve(&cfg, base, false, &key)?,
            fallback,
            codec: None,
            store: SnapshotStore::new(cfg.tgap.max_snapshots),
            layout: None,
            device: Device::Cpu,
            loaded_split: None,
            fit: BTreeMap::new(),
            cfg,
        };
        if let Some(dir) = out.cfg.load.clone() {
            let in_file = |e: Error| Error::config(format!("{key}.load"), e.to_string());
            let split = out.load_codec(&dir, &key).map_err(in_file)?;
            out.loaded_split = Some(split);
        }
        out.arch.validate(&key)?;
        Ok(out)
    }

    /// Load a saved autoencoder (`ae.safetensors` + `ae.toml` in `dir`) onto the CPU;
    /// returns the D1 share it was calibrated with.
    fn load_codec(&mut self, dir: &std::path::Path, key: &str) -> Result<f64> {
        let (meta, weights) = artifact::load(dir, &Device::Cpu)?;
        self.arch = Arch::resolve(&self.cfg, meta.arch, true, key)?;
        let mut codec = Codec {
            arch: self.arch,
            dtype: self.cfg.latent_dtype,
            bits: self.arch.latent_bits,
            net: placeholder_net(self.arch, meta.position_rows)?,
            positions: meta.position_rows,
            device: Device::Cpu,
        };
        codec.net.load(&weights)?;
        self.codec = Some(codec);
        self.fit = meta.fit;
        Ok(meta.split)
    }

    fn codec(&self) -> Result<&Codec> {
        self.codec.as_ref().ok_or_else(|| {
            Error::InvalidInput(
                "cgfedllm has no trained autoencoder yet: it needs its TGAP calibration rounds \
                 (tgap.rounds) or a saved one (load = \"DIR\")"
                    .into(),
            )
        })
    }

    /// Whether tensor `x` decodes below the SNR threshold as `y`.
    fn falls_back(&self, x: &[f32], y: &[f32]) -> bool {
        let (mut xx, mut ee) = (0.0f64, 0.0f64);
        for (a, b) in x.iter().zip(y) {
            xx += f64::from(*a).powi(2);
            ee += (f64::from(*a) - f64::from(*b)).powi(2);
        }
        if xx == 0.0 {
            return false;
        }
        let snr = if ee == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (xx / ee).log10()
        };
        snr < self.cfg.snr_threshold_db
    }

    /// The fitted autoencoder's weights as the safetensors bytes a client downloads.
    fn weights(&self) -> Result<Vec<u8>> {
        artifact::to_bytes(&self.codec()?.net.named())
    }

    /// Read the flag bits of a payload body.
    fn read_flags(r: &mut cgfed_core::wire::ByteReader<'_>, n: usize) -> Result<Vec<bool>> {
        let mut bits = r.bits(n, 1)?;
        let flags = (0..n)
            .map(|_| bits.take().map(|v| v == 1))
            .collect::<Result<Vec<bool>>>()?;
        bits.finish()?;
        Ok(flags)
    }
}

/// An initialised net with the saved architecture, to load weights into.
fn placeholder_net(arch: Arch, positions: usize) -> Result<Net> {
    let d = Device::Cpu;
    Ok(match arch.preset {
        Preset::Default => Net::Mlp(MlpAe::new(
            arch.chunk,
            arch.latent,
            arch.hidden,
            positions,
            0,
            &d,
        )?),
        Preset::Pca => Net::Pca(PcaAe::new(arch.chunk, arch.latent, 0, &d)?),
        Preset::Paper => Net::Conv(ConvAe::new(0, &d)?),
    })
}

/// The layout of the flagged tensors alone, in layout order.
fn sub_layout(layout: &Layout, flags: &[bool]) -> Result<Layout> {
    let specs: Vec<TensorSpec> = layout
        .specs()
        .iter()
        .zip(flags)
        .filter(|(_, f)| **f)
        .map(|(s, _)| s.clone())
        .collect();
    Layout::new(specs)
}

fn sub_ctx(ctx: &RoundCtx, layout: Layout) -> RoundCtx {
    RoundCtx {
        layout: Arc::new(layout),
        ..ctx.clone()
    }
}

impl GradientCompressor for CgFedLlm {
    fn name(&self) -> &str {
        NAME
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        update.check_same_layout(&ctx.layout)?;
        update.check_finite()?;
        let codec = self.codec()?;
        let parts = update.to_parts()?;
        let recon = codec.reconstruct(&parts, &ctx.layout)?;
        let flags: Vec<bool> = parts
            .iter()
            .zip(&recon.xhat)
            .map(|(x, y)| self.falls_back(x, y))
            .collect();
        let mut out = Payload::builder(NAME)?;
        {
            let mut w = out.bit_writer();
            for f in &flags {
                w.put(u32::from(*f), 1);
            }
            w.finish();
        }
        codec.write(&recon, &flags, &mut out);
        if flags.iter().any(|f| *f) {
            let sub = sub_layout(&ctx.layout, &flags)?;
            let vals: Vec<Vec<f32>> = parts
                .into_iter()
                .zip(&flags)
                .filter(|(_, f)| **f)
                .map(|(p, _)| p)
                .collect();
            let sub_update = Update::from_parts(&sub, vals, &ctx.device)?;
            let p = self
                .fallback
                .compress(&sub_update, state, &sub_ctx(ctx, sub))?;
            out.put_bytes(p.as_bytes());
        }
        Ok(out.finish())
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = payload.open(NAME)?;
        let flags = Self::read_flags(&mut r, ctx.layout.len())?;
        let codec = self.codec()?;
        let mut parts = codec.read(&mut r, &ctx.layout, &flags)?;
        if flags.iter().any(|f| *f) {
            let sub = sub_layout(&ctx.layout, &flags)?;
            let inner = Payload::from_bytes(r.rest().to_vec());
            let decoded = self
                .fallback
                .decompress(&inner, &sub_ctx(ctx, sub))
                .map_err(|e| match e {
                    Error::MalformedPayload(m) => {
                        Error::malformed(format!("cgfedllm fallback: {m}"))
                    }
                    e => e,
                })?;
            let mut fb = decoded.to_parts()?.into_iter();
            for (slot, f) in parts.iter_mut().zip(&flags) {
                if *f {
                    *slot = fb.next();
                }
            }
        } else {
            r.finish()?;
        }
        let parts: Vec<Vec<f32>> = parts
            .into_iter()
            .map(|p| p.ok_or_else(|| Error::malformed("cgfedllm: a tensor is missing")))
            .collect::<Result<_>>()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }

    fn calibration_rounds(&self) -> usize {
        if self.codec.is_some() {
            0
        } else {
            self.cfg.tgap.rounds
        }
    }

    fn calibration_split(&self) -> Option<f64> {
        Some(self.loaded_split.unwrap_or(self.cfg.tgap.split))
    }

    fn observe(&mut self, update: &Update, ctx: &RoundCtx) -> Result<()> {
        match &self.layout {
            Some(l) => update.check_same_layout(l)?,
            None => {
                self.layout = Some(update.layout().clone());
                // The net lives on the run's device from the first snapshot on.
                self.codec = None;
                self.store = SnapshotStore::new(self.cfg.tgap.max_snapshots);
                self.device = ctx.device.clone();
            }
        }
        self.store.push(Snapshot {
            round: ctx.round,
            parts: update.to_parts()?,
        });
        Ok(())
    }

    fn fit(&mut self) -> Result<HookReport> {
        let layout = self.layout.clone().ok_or_else(|| {
            Error::InvalidInput("cgfedllm: no calibration snapshot was observed".into())
        })?;
        let started = Instant::now();
        if let Some(path) = &self.cfg.tgap.dump {
            tgap::save_snapshots(path, &self.store.snaps, &layout)?;
        }
        let device = self.device.clone();
        let last = self.store.snaps.iter().map(|s| s.round).max().unwrap_or(0);
        let cut = (last + 1).saturating_sub(self.cfg.tgap.heldout_rounds);
        let (train, heldout): (Vec<&Snapshot>, Vec<&Snapshot>) =
            self.store.snaps.iter().partition(|s| s.round < cut);
        if train.is_empty() {
            return Err(Error::InvalidInput(format!(
                "cgfedllm: every snapshot is in the held-out rounds (tgap.heldout_rounds = {})",
                self.cfg.tgap.heldout_rounds
            )));
        }
        let mut codec = build_codec(self.arch, &self.cfg, &layout, &device)?;
        let items = tgap::items_of(&codec, &train, &layout)?;
        let held_items = tgap::items_of(&codec, &heldout, &layout)?;
        let t = &self.cfg.tgap;
        tgap::init_linear(&mut codec, &items, t.seed)?;
        let losses = tgap::train(
            &mut codec,
            &items,
            &layout,
            t.iterations,
            t.batch,
            t.lr,
            t.seed,
        )?;
        let mut m = BTreeMap::new();
        m.insert("tgap_snapshots".into(), self.store.snaps.len() as f64);
        m.insert("tgap_train_snapshots".into(), train.len() as f64);
        m.insert("tgap_heldout_snapshots".into(), heldout.len() as f64);
        m.insert("tgap_items".into(), items.positions.len() as f64);
        m.insert("tgap_iterations".into(), losses.len() as f64);
        if !losses.is_empty() {
            let tail = &losses[losses.len() - losses.len().div_ceil(10)..];
            m.insert("tgap_first_loss".into(), losses[0]);
            m.insert(
                "tgap_train_loss".into(),
                tail.iter().sum::<f64>() / tail.len() as f64,
            );
        }
        m.insert("tgap_train_mse".into(), tgap::mse(&codec, &items, &layout)?);
        if !held_items.positions.is_empty() {
            m.insert(
                "tgap_val_mse".into(),
                tgap::mse(&codec, &held_items, &layout)?,
            );
        }
        tgap::evaluate(&codec, &train, &heldout, &layout, &mut m)?;
        m.insert("ae_params".into(), codec.net.num_params() as f64);
        self.codec = Some(codec);
        let weights = self.weights()?;
        m.insert("ae_bytes".into(), weights.len() as f64);
        m.insert("tgap_fit_seconds".into(), started.elapsed().as_secs_f64());
        self.fit = m.clone();
        // The snapshots have served their purpose.
        self.store = SnapshotStore::new(self.cfg.tgap.max_snapshots);
        Ok(HookReport {
            metrics: m,
            broadcast_bytes: weights.len(),
        })
    }

    fn save_fitted(&self, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
        let codec = self.codec()?;
        let layout = self.layout.as_ref();
        let meta = SavedMeta {
            format: artifact::FORMAT.into(),
            arch: self.arch,
            latent_dtype: self.cfg.latent_dtype,
            position_rows: codec.positions,
            split: self.calibration_split().unwrap_or(self.cfg.tgap.split),
            layout: layout.map(artifact::layout_signature).unwrap_or_default(),
            fit: self.fit.clone(),
        };
        artifact::save(dir, &self.weights()?, &meta)
    }

    fn save_checkpoint(&self, dir: &std::path::Path) -> Result<()> {
        // Before `fit` there is nothing server-side worth keeping: a run interrupted during
        // calibration starts over.
        if self.codec.is_some() {
            self.save_fitted(dir)?;
        }
        Ok(())
    }

    fn load_checkpoint(&mut self, dir: &std::path::Path) -> Result<()> {
        if dir.join(artifact::WEIGHTS).exists() {
            self.load_codec(dir, "compressor")?;
        }
        Ok(())
    }

    fn after_round(
        &mut self,
        received: &[(Payload, Update)],
        ctx: &RoundCtx,
    ) -> Result<HookReport> {
        let mut report = HookReport::default();
        let Some(codec) = &self.codec else {
            return Ok(report);
        };
        let layout = &ctx.layout;
        let total = layout.numel().max(1) as f64;
        let n = layout.len();
        let (mut latent, mut scales, mut flag_b, mut header, mut fallback) = (0, 0, 0, 0, 0);
        let (mut share, mut tensors, mut parsed) = (0.0, 0usize, 0usize);
        let mut ft = Items::default();
        for (payload, decoded) in received {
            let Ok(mut r) = payload.open(NAME) else {
                continue;
            };
            let before = r.remaining();
            let Ok(flags) = Self::read_flags(&mut r, n) else {
                continue;
            };
            let Ok((l, s)) = codec.body_sizes(layout, &flags) else {
                continue;
            };
            parsed += 1;
            header += payload.len() - before;
            flag_b += n.div_ceil(8);
            latent += l;
            scales += s;
            fallback += before.saturating_sub(n.div_ceil(8) + l + s);
            let flagged: usize = layout
                .specs()
                .iter()
                .zip(&flags)
                .filter(|(_, f)| **f)
                .map(|(s, _)| s.numel())
                .sum();
            share += flagged as f64 / total;
            tensors += flags.iter().filter(|f| **f).count();
            if self.cfg.faf.finetune_steps > 0 && flags.iter().any(|f| *f) {
                let parts = decoded.to_parts()?;
                let (items, norms) = codec.items(&parts, layout)?;
                let len = codec.item_len(layout)?;
                if codec.arch.preset.chunked() {
                    let ch = Chunking::new(layout, codec.arch.chunk);
                    for (t, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
                        let first = ch.tensors[t].0;
                        let span = first..first + ch.chunks_of(t);
                        for (k, norm) in span.clone().zip(&norms[span]) {
                            if *norm > 0.0 {
                                ft.values
                                    .extend_from_slice(&items.values[k * len..(k + 1) * len]);
                                ft.positions.push(items.positions[k]);
                            }
                        }
                    }
                } else if flags.iter().all(|f| *f) {
                    ft.values.extend(items.values);
                    ft.positions.push(0);
                }
            }
        }
        if parsed > 0 {
            let m = &mut report.metrics;
            m.insert("ae_latent_bytes".into(), latent as f64);
            m.insert("ae_scale_bytes".into(), scales as f64);
            m.insert("ae_flag_bytes".into(), flag_b as f64);
            m.insert("ae_header_bytes".into(), header as f64);
            m.insert("ae_fallback_bytes".into(), fallback as f64);
            m.insert("ae_fallback_share".into(), share / parsed as f64);
            m.insert("ae_fallback_tensors".into(), tensors as f64);
        }
        if !ft.positions.is_empty() {
            let items = ft.positions.len();
            let faf = self.cfg.faf.clone();
            let seed = self.cfg.tgap.seed ^ (ctx.round as u64 + 1);
            let batch = self.cfg.tgap.batch;
            let codec = self.codec.as_mut().expect("checked above");
            let losses = tgap::train(codec, &ft, layout, faf.finetune_steps, batch, faf.lr, seed)?;
            if !losses.is_empty() {
                let tail = &losses[losses.len() - losses.len().div_ceil(4)..];
                report.metrics.insert(
                    "ae_finetune_loss".into(),
                    tail.iter().sum::<f64>() / tail.len() as f64,
                );
            }
            report
                .metrics
                .insert("ae_finetune_items".into(), items as f64);
            let bytes = self.weights()?.len();
            report
                .metrics
                .insert("ae_refresh_bytes".into(), bytes as f64);
            report.broadcast_bytes = bytes;
        }
        Ok(report)
    }

    fn client_artifacts(&self) -> Result<Vec<u8>> {
        // A calibrating run ships the autoencoder after `fit` (its broadcast); a loaded one
        // ships it before the first round.
        if self.loaded_split.is_some() {
            self.weights()
        } else {
            Ok(Vec::new())
        }
    }

    fn describe(&self) -> String {
        let a = &self.arch;
        let net = match a.preset {
            Preset::Default => format!(
                "MLP chunk {} → {} (hidden {}{})",
                a.chunk,
                a.latent,
                a.hidden,
                if a.positions { ", positions" } else { "" }
            ),
            Preset::Pca => format!("chunk-PCA {} → {}", a.chunk, a.latent),
            Preset::Paper => "paper conv AE, latent 1/64".into(),
        };
        let source = match &self.cfg.load {
            Some(p) => format!("loaded from {}", p.display()),
            None => format!("TGAP {} rounds", self.cfg.tgap.rounds),
        };
        let dtype = match a.latent_bits {
            Some(b) => format!("{b}-bit"),
            None => format!("{:?}", self.cfg.latent_dtype).to_lowercase(),
        };
        let scale = format!("{:?}", a.scale).to_lowercase();
        format!(
            "cgfedllm {} ({net}, {dtype} latent, {scale} scales, {source}; below {} dB: {})",
            a.preset.as_str(),
            self.cfg.snr_threshold_db,
            self.fallback.describe()
        )
    }
}

/// The registry's factory.
pub fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    Ok(Box::new(CgFedLlm::from_table(table)?))
}
