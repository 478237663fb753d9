//! [`Update`]: the ordered named tensors a client sends (or the server applies), and
//! [`Layout`]: their names and shapes, known to both ends of the wire.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name and shape of one tensor of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Canonical name, e.g. `layers.3.self_attn.q_proj.lora_A`.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements (product of the dimensions; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The names and shapes of the tensors of an update, sorted by name.
///
/// Both the client and the server know the layout (it is the shape of the trainable state),
/// so payloads carry values only; decoders take the layout from the [`crate::RoundCtx`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Layout {
    specs: Vec<TensorSpec>,
}

impl Layout {
    /// Build a layout; sorts by name and rejects duplicate names.
    pub fn new(mut specs: Vec<TensorSpec>) -> Result<Self> {
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = specs.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::InvalidInput(format!(
                "duplicate tensor name `{}` in layout",
                w[0].name
            )));
        }
        Ok(Self { specs })
    }

    /// The tensor specs in canonical (name) order.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// True when the layout has no tensors.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Total number of elements over all tensors.
    pub fn numel(&self) -> usize {
        self.specs.iter().map(TensorSpec::numel).sum()
    }

    /// Size of the update as dense f32 (the `dense_bytes` metric).
    pub fn dense_bytes(&self) -> usize {
        4 * self.numel()
    }
}

/// Ordered named tensors: a client's update (delta of every trainable tensor), a global
/// adapter state, or a decoded payload.
///
/// Order is canonical (sorted by name) so flattening is deterministic. Tensors may live on
/// any device; [`Update::to_flat`] copies to host f32.
#[derive(Debug, Clone)]
pub struct Update {
    tensors: Vec<(String, Tensor)>,
    layout: Arc<Layout>,
}

impl Update {
    /// Build from named tensors; sorts by name and rejects duplicates.
    pub fn new(mut tensors: Vec<(String, Tensor)>) -> Result<Self> {
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let layout = Layout::new(
            tensors
                .iter()
                .map(|(n, t)| TensorSpec {
                    name: n.clone(),
                    shape: t.dims().to_vec(),
                })
                .collect(),
        )?;
        Ok(Self {
            tensors,
            layout: Arc::new(layout),
        })
    }

    /// Build from flat host values in the order of `layout` (the inverse of [`Update::to_flat`]).
    ///
    /// # Shapes
    /// `values.len()` must equal `layout.numel()`.
    pub fn from_flat(layout: &Layout, values: &[f32], device: &Device) -> Result<Self> {
        if values.len() != layout.numel() {
            return Err(Error::LayoutMismatch(format!(
                "{} values for a layout of {} elements",
                values.len(),
                layout.numel()
            )));
        }
        let mut off = 0;
        let mut tensors = Vec::with_capacity(layout.len());
        for spec in layout.specs() {
            let n = spec.numel();
            let t = Tensor::from_slice(&values[off..off + n], spec.shape.as_slice(), device)?;
            tensors.push((spec.name.clone(), t));
            off += n;
        }
        Ok(Self {
            tensors,
            layout: Arc::new(layout.clone()),
        })
    }

    /// Build from per-tensor host values in the order of `layout`.
    pub fn from_parts(layout: &Layout, parts: Vec<Vec<f32>>, device: &Device) -> Result<Self> {
        if parts.len() != layout.len() {
            return Err(Error::LayoutMismatch(format!(
                "{} tensors for a layout of {}",
                parts.len(),
                layout.len()
            )));
        }
        let mut tensors = Vec::with_capacity(layout.len());
        for (spec, vals) in layout.specs().iter().zip(parts) {
            if vals.len() != spec.numel() {
                return Err(Error::LayoutMismatch(format!(
                    "tensor `{}` has {} values, its shape {:?} needs {}",
                    spec.name,
                    vals.len(),
                    spec.shape,
                    spec.numel()
                )));
            }
            tensors.push((
                spec.name.clone(),
                Tensor::from_vec(vals, spec.shape.as_slice(), device)?,
            ));
        }
        Ok(Self {
            tensors,
            layout: Arc::new(layout.clone()),
        })
    }

    /// An all-zero update with the given layout.
    pub fn zeros(layout: &Layout, device: &Device) -> Result<Self> {
        let tensors = layout
            .specs()
            .iter()
            .map(|s| {
                Ok((
                    s.name.clone(),
                    Tensor::zeros(s.shape.as_slice(), DType::F32, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tensors,
            layout: Arc::new(layout.clone()),
        })
    }

    /// Names and shapes.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The named tensors in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i].1)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// Device of the first tensor (CPU for an empty update).
    pub fn device(&self) -> Device {
        self.tensors
            .first()
            .map(|(_, t)| t.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// Every tensor as host f32 values, one `Vec` per tensor in canonical order.
    pub fn to_parts(&self) -> Result<Vec<Vec<f32>>> {
        self.tensors
            .iter()
            .map(|(_, t)| Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    /// Call `f(index, spec, values)` for every tensor in canonical order with its values as
    /// host f32, borrowed without a copy when the tensor is a contiguous f32 CPU tensor
    /// (the usual case for updates) and copied otherwise. Compressors use it to read large
    /// updates without duplicating them.
    pub fn for_each_host(
        &self,
        mut f: impl FnMut(usize, &TensorSpec, &[f32]) -> Result<()>,
    ) -> Result<()> {
        for (i, ((_, t), spec)) in self.tensors.iter().zip(self.layout.specs()).enumerate() {
            with_host(t, |v| f(i, spec, v))?;
        }
        Ok(())
    }

    /// Like [`for_each_host`](Self::for_each_host) over two updates of the same layout at
    /// once: `f(index, spec, mine, theirs)`.
    ///
    /// # Errors
    /// [`Error::LayoutMismatch`] when the layouts differ, and whatever `f` returns.
    pub fn for_each_host_pair(
        &self,
        other: &Update,
        mut f: impl FnMut(usize, &TensorSpec, &[f32], &[f32]) -> Result<()>,
    ) -> Result<()> {
        self.check_same_layout(other.layout())?;
        for (i, (((_, a), (_, b)), spec)) in self
            .tensors
            .iter()
            .zip(&other.tensors)
            .zip(self.layout.specs())
            .enumerate()
        {
            with_host(a, |va| with_host(b, |vb| f(i, spec, va, vb)))?;
        }
        Ok(())
    }

    /// All values concatenated in canonical order as host f32.
    pub fn to_flat(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.numel());
        for part in self.to_parts()? {
            out.extend_from_slice(&part);
        }
        Ok(out)
    }

    /// Error unless `other` has exactly this update's names and shapes.
    pub fn check_same_layout(&self, other: &Layout) -> Result<()> {
        if self.layout.as_ref() == other {
            return Ok(());
        }
        let mine = self.layout.specs();
        let theirs = other.specs();
        let diff = mine
            .iter()
            .zip(theirs)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("`{}` {:?} vs `{}` {:?}", a.name, a.shape, b.name, b.shape))
            .unwrap_or_else(|| format!("{} tensors vs {}", mine.len(), theirs.len()));
        Err(Error::LayoutMismatch(diff))
    }

    /// Apply `f` to every pair of same-named tensors of `self` and `other`.
    pub fn zip_map(
        &self,
        other: &Update,
        f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Update> {
        self.check_same_layout(other.layout())?;
        let tensors = self
            .tensors
            .iter()
            .zip(&other.tensors)
            .map(|((n, a), (_, b))| Ok((n.clone(), f(a, b)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Update {
            tensors,
            layout: self.layout.clone(),
        })
    }

    /// Apply `f` to every tensor.
    pub fn map(&self, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> Result<Update> {
        let tensors = self
            .tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), f(t)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Update {
            tensors,
            layout: self.layout.clone(),
        })
    }

    /// `self + other`, tensor by tensor.
    pub fn add(&self, other: &Update) -> Result<Update> {
        self.zip_map(other, |a, b| a + b)
    }

    /// `self - other`, tensor by tensor.
    pub fn sub(&self, other: &Update) -> Result<Update> {
        self.zip_map(other, |a, b| a - b)
    }

    /// `self * s`, tensor by tensor.
    pub fn scale(&self, s: f64) -> Result<Update> {
        self.map(|t| t.affine(s, 0.0))
    }

    /// Error naming the first tensor that holds a NaN or an infinity.
    pub fn check_finite(&self) -> Result<()> {
        self.for_each_host(
            |_, spec, values| match values.iter().position(|v| !v.is_finite()) {
                Some(i) => Err(Error::InvalidInput(format!(
                    "tensor `{}` has a non-finite value ({}) at element {i}",
                    spec.name, values[i]
                ))),
                None => Ok(()),
            },
        )
    }

    /// Move every tensor to `device`.
    pub fn to_device(&self, device: &Device) -> Result<Update> {
        self.map(|t| t.to_device(device))
    }
}

/// Call `f` with `t`'s values as host f32: borrowed when `t` is a contiguous f32 CPU tensor,
/// copied otherwise.
fn with_host<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return f(&cpu.as_slice::<f32>()?[start..end]);
        }
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    f(&v)
}
