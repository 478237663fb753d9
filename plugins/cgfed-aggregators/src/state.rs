//! Server-optimizer state (momentum `v`, Adam's `m` and `v`) and its checkpoint format.
//!
//! # Format
//!
//! A safetensors file: one little-endian f32 tensor per slot and trainable tensor, named
//! `<slot>/<tensor>` (e.g. `m/layers.0.q_proj.lora_A`) with the tensor's shape, and one
//! metadata entry `cgfed_aggregator` holding JSON `{"version": 1, "aggregator": "<name>",
//! "steps": <rounds aggregated>}`. Every slot covers the same layout. A state saved before
//! the first round has no tensors; empty bytes also mean "no state yet" (the convention of
//! stateless aggregators).

use std::collections::{BTreeMap, HashMap};

use cgfed_core::{Error, Layout, Result, TensorSpec};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

const META_KEY: &str = "cgfed_aggregator";
const VERSION: u32 = 1;

/// Per-coordinate buffers over one layout (one flat vector per named slot) and the number
/// of rounds aggregated.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotState {
    /// The layout every slot covers.
    pub layout: Layout,
    /// One flat buffer per slot, in the order of the slot names the aggregator uses.
    pub slots: Vec<Vec<f32>>,
    /// Rounds aggregated so far.
    pub steps: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    version: u32,
    aggregator: String,
    steps: u64,
}

impl SlotState {
    /// The state for `layout`: the existing one, or a fresh one whose slot `i` is filled with
    /// `init[i]`.
    ///
    /// # Errors
    /// [`Error::LayoutMismatch`] when the existing state covers another layout.
    pub fn ensure<'a>(
        state: &'a mut Option<SlotState>,
        layout: &Layout,
        init: &[f32],
    ) -> Result<&'a mut SlotState> {
        if let Some(s) = state {
            if s.layout != *layout {
                return Err(layout_mismatch(&s.layout, layout));
            }
        }
        Ok(state.get_or_insert_with(|| SlotState {
            layout: layout.clone(),
            slots: init.iter().map(|&v| vec![v; layout.numel()]).collect(),
            steps: 0,
        }))
    }

    /// Serialise `state` (see the module docs).
    pub fn save(aggregator: &str, names: &[&str], state: Option<&SlotState>) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        if let Some(s) = state {
            for (slot, values) in names.iter().zip(&s.slots) {
                let mut off = 0;
                for spec in s.layout.specs() {
                    let n = spec.numel();
                    let bytes = values[off..off + n]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect();
                    tensors.push((format!("{slot}/{}", spec.name), spec.shape.clone(), bytes));
                    off += n;
                }
            }
        }
        let meta = serde_json::to_string(&Meta {
            version: VERSION,
            aggregator: aggregator.to_string(),
            steps: state.map_or(0, |s| s.steps),
        })
        .map_err(|e| Error::Other(format!("{aggregator} state metadata: {e}")))?;
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Other(format!("{aggregator} state tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(HashMap::from([(META_KEY.to_string(), meta)])))
            .map_err(|e| Error::Other(format!("cannot serialise {aggregator} state: {e}")))
    }

    /// Read a state written by [`save`](Self::save) for `aggregator` with these slot names.
    /// `None`: no state yet (empty bytes, or saved before the first round).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bytes that are not such a state: not safetensors, no or
    /// bad metadata, another aggregator's state, unknown slots, non-f32 or non-finite
    /// values, slots over different layouts.
    pub fn load(aggregator: &str, names: &[&str], bytes: &[u8]) -> Result<Option<SlotState>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let bad = |m: String| Error::InvalidInput(format!("not a valid {aggregator} state: {m}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad(format!("no `{META_KEY}` metadata")))?;
        let meta: Meta = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
        if meta.version != VERSION {
            return Err(bad(format!("version {}, expected {VERSION}", meta.version)));
        }
        if meta.aggregator != aggregator {
            return Err(bad(format!("it was saved by `{}`", meta.aggregator)));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        // slot -> tensor name -> (shape, values), sorted by tensor name like a Layout.
        type Slot = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
        let mut slots: Vec<Slot> = vec![BTreeMap::new(); names.len()];
        for (name, view) in st.tensors() {
            let (slot, tensor) = name
                .split_once('/')
                .ok_or_else(|| bad(format!("tensor `{name}` has no slot prefix")))?;
            let i = names
                .iter()
                .position(|s| *s == slot)
                .ok_or_else(|| bad(format!("unknown slot `{slot}` (expected {names:?})")))?;
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, not F32",
                    view.dtype()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("tensor `{name}` holds non-finite values")));
            }
            slots[i].insert(tensor.to_string(), (view.shape().to_vec(), values));
        }
        if slots.iter().all(BTreeMap::is_empty) {
            return Ok(None);
        }
        let layout_of = |s: &Slot| {
            Layout::new(
                s.iter()
                    .map(|(n, (shape, _))| TensorSpec {
                        name: n.clone(),
                        shape: shape.clone(),
                    })
                    .collect(),
            )
        };
        let layout = layout_of(&slots[0])?;
        for (s, name) in slots.iter().zip(names) {
            if layout_of(s)? != layout {
                return Err(bad(format!(
                    "slot `{name}` covers other tensors than slot `{}`",
                    names[0]
                )));
            }
        }
        Ok(Some(SlotState {
            layout,
            slots: slots
                .into_iter()
                .map(|s| s.into_values().flat_map(|(_, v)| v).collect())
                .collect(),
            steps: meta.steps,
        }))
    }

    /// Replace `state` with the one in `bytes`.
    ///
    /// # Errors
    /// Those of [`load`](Self::load), and [`Error::LayoutMismatch`] when `state` already
    /// covers another layout than the loaded one.
    pub fn restore(
        state: &mut Option<SlotState>,
        aggregator: &str,
        names: &[&str],
        bytes: &[u8],
    ) -> Result<()> {
        let loaded = Self::load(aggregator, names, bytes)?;
        if let (Some(old), Some(new)) = (state.as_ref(), loaded.as_ref()) {
            if old.layout != new.layout {
                return Err(layout_mismatch(&old.layout, &new.layout));
            }
        }
        *state = loaded;
        Ok(())
    }
}

fn layout_mismatch(have: &Layout, got: &Layout) -> Error {
    let names = |l: &Layout| {
        l.specs()
            .iter()
            .map(|s| format!("{} {:?}", s.name, s.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::LayoutMismatch(format!(
        "server optimizer state covers [{}], the update has [{}]",
        names(have),
        names(got)
    ))
}
