//! Compressor-state checkpoints: every client's [`ClientState`] (error-feedback residuals,
//! PowerSGD warm starts, …), the server's downlink state and the downlink bookkeeping,
//! written after every round to `<run_dir>/checkpoint/compressor_state.safetensors`.
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
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
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
