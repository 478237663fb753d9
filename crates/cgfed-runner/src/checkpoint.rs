//! Run checkpoints, written after every round into `<run_dir>/checkpoint/` and swapped in
//! atomically (see [`dir`] for the directory and [`commit`] for the swap), so that
//! `cgfed run --resume` continues from the last completed round with identical results.
//!
//! The part that grows with the clients is the compressor state: every client's
//! [`ClientState`] (error-feedback residuals, PowerSGD warm starts, …), the server's
//! downlink state and the downlink bookkeeping, in `compressor_state.safetensors`.
//!
//! # File format
//!
//! A safetensors file: one little-endian f32 tensor per buffer, named
//! `client.<c>/<key>` (client `c`'s buffer `key`, e.g. `client.3/ef/residual`) or
//! `server/<key>` (downlink state), and one metadata entry `cgfed` holding JSON:
//! `{"version": 1, "round": r, "clients": n, "counters": {"<c>": {...}}, "server_counters":
//! {...}, "last_sync": [...], "broadcast": [...]}`. Clients with an empty state have no
//! entries. The file is written to a temporary name, synced and renamed, so a crash leaves
//! either the previous checkpoint or the new one, never a torn file.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use cgfed_core::{ClientState, Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

/// File name of the checkpoint inside `<run_dir>/checkpoint/`.
pub const FILE: &str = "compressor_state.safetensors";

/// Where a run keeps its compressor-state checkpoint.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint").join(FILE)
}

/// File name of the aggregator's state inside `<run_dir>/checkpoint/`.
pub const AGGREGATOR_FILE: &str = "aggregator_state.bin";

/// Where a run keeps its aggregator's state ([`Aggregator::save_state`]'s bytes, written
/// atomically after every round when the aggregator has state, e.g. FedAdam's moments).
///
/// [`Aggregator::save_state`]: cgfed_core::Aggregator::save_state
pub fn aggregator_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint").join(AGGREGATOR_FILE)
}

/// Everything the compressors remember between rounds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateCheckpoint {
    /// Rounds completed when it was written.
    pub round: usize,
    /// One state per client (index = client).
    pub clients: Vec<ClientState>,
    /// The server's downlink compressor state (its residual).
    pub server: ClientState,
    /// Per client: the round from which it has not yet received downlink broadcasts.
    pub last_sync: Vec<Option<usize>>,
    /// Per completed round: the bytes of that round's downlink broadcast.
    pub broadcast: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    version: u32,
    round: usize,
    clients: usize,
    counters: BTreeMap<String, BTreeMap<String, u64>>,
    server_counters: BTreeMap<String, u64>,
    last_sync: Vec<Option<usize>>,
    broadcast: Vec<usize>,
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_le_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl StateCheckpoint {
    /// Write atomically to `path` (temporary file, fsync, rename).
    ///
    /// # Errors
    /// I/O errors, with the path.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Vec<u8>, usize)> = Vec::new();
        let mut counters = BTreeMap::new();
        for (c, st) in self.clients.iter().enumerate() {
            for (k, v) in &st.buffers {
                tensors.push((format!("client.{c}/{k}"), le_bytes(v), v.len()));
            }
            if !st.counters.is_empty() {
                counters.insert(c.to_string(), st.counters.clone());
            }
        }
        for (k, v) in &self.server.buffers {
            tensors.push((format!("server/{k}"), le_bytes(v), v.len()));
        }
        let meta = Meta {
            version: 1,
            round: self.round,
            clients: self.clients.len(),
            counters,
            server_counters: self.server.counters.clone(),
            last_sync: self.last_sync.clone(),
            broadcast: self.broadcast.clone(),
        };
        let meta = serde_json::to_string(&meta)
            .map_err(|e| Error::Other(format!("cannot serialise checkpoint metadata: {e}")))?;
        let views = tensors
            .iter()
            .map(|(name, bytes, n)| {
                TensorView::new(Dtype::F32, vec![*n], bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Other(format!("checkpoint tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes =
            safetensors::serialize(views, Some(HashMap::from([("cgfed".to_string(), meta)])))
                .map_err(|e| Error::Other(format!("cannot serialise checkpoint: {e}")))?;
        write_atomic(path, &bytes)
    }

    /// Read a checkpoint written by [`save`](Self::save).
    ///
    /// # Errors
    /// I/O errors, a file that is not a cgfed checkpoint, tensors that are not 1-D f32 or
    /// name a client out of range.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad =
            |m: String| Error::Other(format!("{}: not a valid checkpoint: {m}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("cgfed"))
            .ok_or_else(|| bad("no `cgfed` metadata".into()))?;
        let meta: Meta = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
        if meta.version != 1 {
            return Err(bad(format!("version {}, expected 1", meta.version)));
        }
        let mut out = StateCheckpoint {
            round: meta.round,
            clients: vec![ClientState::default(); meta.clients],
            server: ClientState {
                buffers: BTreeMap::new(),
                counters: meta.server_counters,
            },
            last_sync: meta.last_sync,
            broadcast: meta.broadcast,
        };
        for (c, cs) in meta.counters {
            let i: usize = c.parse().map_err(|_| bad(format!("client `{c}`")))?;
            out.clients
                .get_mut(i)
                .ok_or_else(|| bad(format!("client {i} out of range")))?
                .counters = cs;
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 || view.shape().len() != 1 {
                return Err(bad(format!("tensor `{name}` is not a 1-D f32 tensor")));
            }
            let values = from_le_bytes(view.data());
            let (owner, key) = name
                .split_once('/')
                .ok_or_else(|| bad(format!("tensor `{name}` has no owner prefix")))?;
            let target = if owner == "server" {
                &mut out.server
            } else {
                let i: usize = owner
                    .strip_prefix("client.")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("tensor `{name}`")))?;
                out.clients
                    .get_mut(i)
                    .ok_or_else(|| bad(format!("client {i} out of range")))?
            };
            target.buffers.insert(key.to_string(), values);
        }
        Ok(out)
    }
}

/// Write `bytes` to `path` so that readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

// ---------------------------------------------------------------------------------------
// The whole checkpoint: one directory, swapped in atomically after every round.
// ---------------------------------------------------------------------------------------

/// The checkpoint directory of a run: `<run_dir>/checkpoint/`.
///
/// After every round the runner writes a complete new checkpoint into
/// `checkpoint.next/`, then renames `checkpoint/` to `checkpoint.old/`, `checkpoint.next/`
/// to `checkpoint/`, and removes `checkpoint.old/`. A crash at any point leaves one
/// complete checkpoint: `checkpoint/`, or `checkpoint.old/` between the two renames
/// ([`latest`] recovers it). The directory holds:
///
/// - [`PROGRESS_FILE`]: rounds completed, the initial evaluation, the calibration fit;
/// - [`GLOBAL_FILE`]: the global trainable state (f32 safetensors, one tensor per layout
///   entry);
/// - [`FILE`]: every client's compressor state and the downlink's (when any exists);
/// - [`AGGREGATOR_FILE`]: the aggregator's state (when it has one);
/// - [`COMPRESSOR_DIR`]`/`: the compressor's own server-side state
///   ([`GradientCompressor::save_checkpoint`], e.g. cgfedllm's fitted autoencoder).
///
/// [`GradientCompressor::save_checkpoint`]: cgfed_core::GradientCompressor::save_checkpoint
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// File name of the run's progress record inside the checkpoint.
pub const PROGRESS_FILE: &str = "progress.json";
/// File name of the global trainable state inside the checkpoint.
pub const GLOBAL_FILE: &str = "global_state.safetensors";
/// Directory of the compressor's own server-side state inside the checkpoint.
pub const COMPRESSOR_DIR: &str = "compressor";

fn sibling(run_dir: &Path, suffix: &str) -> PathBuf {
    run_dir.join(format!("checkpoint.{suffix}"))
}

/// The run's complete checkpoint directory, if it has one: `checkpoint/`, or
/// `checkpoint.old/` after a crash between the two renames of [`commit`] (it is renamed
/// back). A half-written `checkpoint.next/` is never used.
///
/// # Errors
/// I/O errors while recovering.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let cur = dir(run_dir);
    let old = sibling(run_dir, "old");
    if !cur.join(PROGRESS_FILE).exists() && old.join(PROGRESS_FILE).exists() {
        if cur.exists() {
            std::fs::remove_dir_all(&cur).map_err(|e| Error::io(&cur, e))?;
        }
        std::fs::rename(&old, &cur).map_err(|e| Error::io(&cur, e))?;
    }
    Ok(cur.join(PROGRESS_FILE).exists().then_some(cur))
}

/// Write a new checkpoint: `write` fills a fresh directory, which then replaces the
/// current checkpoint atomically (see [`dir`]).
///
/// # Errors
/// `write`'s errors and I/O errors, with the path.
pub fn commit(run_dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    latest(run_dir)?;
    let (cur, next, old) = (
        dir(run_dir),
        sibling(run_dir, "next"),
        sibling(run_dir, "old"),
    );
    for stale in [&next, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(|e| Error::io(stale, e))?;
        }
    }
    std::fs::create_dir_all(&next).map_err(|e| Error::io(&next, e))?;
    write(&next)?;
    sync_tree(&next)?;
    if cur.exists() {
        std::fs::rename(&cur, &old).map_err(|e| Error::io(&old, e))?;
    }
    std::fs::rename(&next, &cur).map_err(|e| Error::io(&cur, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// fsync every file under `dir` (what plugins wrote with plain writes included).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Where a resumed run stands: written last into every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Format version (1).
    pub version: u32,
    /// Rounds completed, calibration rounds included.
    pub round: usize,
    /// Calibration rounds of the run (the compressor asks for none once it is fitted, so
    /// the number is kept here).
    pub calibration_rounds: usize,
    /// Training rounds of the run.
    pub rounds: usize,
    /// Held-out loss before the first round.
    pub initial_eval_loss: f64,
    /// Multiple-choice accuracy before the first round.
    pub initial_accuracy: Vec<crate::accuracy::AccuracyReport>,
    /// The calibration fit's report (empty before the fit or without calibration).
    pub fit: BTreeMap<String, f64>,
    /// Wall-clock seconds spent on the run so far.
    pub wall_s: f64,
    /// Why this run cannot resume from its checkpoint, when it cannot (e.g. residuals merged
    /// into the base weights, which the checkpoint does not hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_resumable: Option<String>,
}

impl Progress {
    /// Write into the checkpoint directory `dir`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Other(format!("cannot serialise progress: {e}")))?;
        write_atomic(&dir.join(PROGRESS_FILE), &bytes)
    }

    /// Read from the checkpoint directory `dir`.
    ///
    /// # Errors
    /// I/O errors; a file that is not a progress record of this version.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(PROGRESS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let p: Progress = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{}: not a valid progress record: {e}",
                path.display()
            ))
        })?;
        if p.version != 1 {
            return Err(Error::Other(format!(
                "{}: version {}, expected 1",
                path.display(),
                p.version
            )));
        }
        Ok(p)
    }
}

/// Write `update` as f32 safetensors (one tensor per layout entry, its name and shape).
///
/// # Errors
/// Tensor or I/O errors.
pub fn save_update(path: &Path, update: &cgfed_core::Update) -> Result<()> {
    let parts = update.to_parts()?;
    let bytes: Vec<Vec<u8>> = parts.iter().map(|p| le_bytes(p)).collect();
    let views = update
        .layout()
        .specs()
        .iter()
        .zip(&bytes)
        .map(|(spec, b)| {
            TensorView::new(Dtype::F32, spec.shape.clone(), b)
                .map(|v| (spec.name.clone(), v))
                .map_err(|e| Error::Other(format!("checkpoint tensor {}: {e}", spec.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::Other(format!("cannot serialise {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Read an update written by [`save_update`]; it must have exactly `layout`.
///
/// # Errors
/// I/O errors; missing, extra or mis-shaped tensors.
pub fn load_update(
    path: &Path,
    layout: &cgfed_core::Layout,
    device: &cgfed_core::candle_core::Device,
) -> Result<cgfed_core::Update> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Other(format!("{}: {m}", path.display()));
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    if st.len() != layout.len() {
        return Err(bad(format!(
            "{} tensors, the run's layout has {}",
            st.len(),
            layout.len()
        )));
    }
    let parts = layout
        .specs()
        .iter()
        .map(|spec| {
            let view = st
                .tensor(&spec.name)
                .map_err(|_| bad(format!("no tensor `{}`", spec.name)))?;
            if view.dtype() != Dtype::F32 || view.shape() != spec.shape.as_slice() {
                return Err(bad(format!(
                    "tensor `{}` is {:?} {:?}, expected F32 {:?}",
                    spec.name,
                    view.dtype(),
                    view.shape(),
                    spec.shape
                )));
            }
            Ok(from_le_bytes(view.data()))
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    cgfed_core::Update::from_parts(layout, parts, device)
}

/// An exclusive lock on a run directory, held while a run writes into it (released when
/// dropped, or by the OS when the process dies, so a killed run never leaves it stale).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Lock `run_dir` (its `.lock` file) for this process.
///
/// # Errors
/// Another process holds it (the error names the directory and that process's id), or
/// I/O errors.
pub fn lock(run_dir: &Path) -> Result<RunLock> {
    let path = run_dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::Other(format!(
                "{} is in use by another cgfed process (pid {}); wait for it or stop it",
                run_dir.display(),
                holder.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0)
        .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(RunLock { _file: file })
}
