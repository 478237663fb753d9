//! Pieces shared by the three compressors: keep counts, the selection scope, sparse
//! structures (one index set per tensor) and the sparse join.

use cgfed_core::payload::PayloadBuilder;
use cgfed_core::wire::indices;
use cgfed_core::{candle_core::Device, Error, Layout, Result, TensorSpec, Update};
use serde::Deserialize;

/// How many of `n` elements a compressor keeps: `min(n, k)` when an absolute `k` is given,
/// else `k(n) = min(n, max(1, ⌈ratio·n⌉))` (0 for `n = 0`).
///
/// `ratio·n` is computed in f64, and a product within a relative 10⁻¹² above an integer
/// counts as that integer, so that `0.07` of 100 is 7 (not 8, as the f64 product
/// `7.000000000000001` would give).
///
/// ```
/// use cgfed_sparsify::keep_count;
/// assert_eq!(keep_count(0.01, None, 1000), 10);
/// assert_eq!(keep_count(0.01, None, 1001), 11);
/// assert_eq!(keep_count(0.07, None, 100), 7);
/// assert_eq!(keep_count(0.01, None, 7), 1);
/// assert_eq!(keep_count(0.5, Some(3), 10), 3);
/// assert_eq!(keep_count(0.5, Some(30), 10), 10);
/// assert_eq!(keep_count(0.5, None, 0), 0);
/// ```
pub fn keep_count(ratio: f64, k: Option<usize>, n: usize) -> usize {
    let want = match k {
        Some(k) => k,
        None => {
            let x = ratio * n as f64;
            let x = x - 1e-12 * x.max(1.0);
            if x.is_finite() && x > 0.0 {
                (x.ceil() as usize).max(1)
            } else {
                1
            }
        }
    };
    want.min(n)
}

/// Where the `k` kept elements are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each tensor of `n` elements keeps `k(n)` of its own (`scope = "tensor"`).
    #[default]
    Tensor,
    /// The whole update of `N` elements keeps `k(N)`, wherever they are; a tensor may keep
    /// none (`scope = "update"`).
    Update,
}

impl Scope {
    /// `"tensor"` or `"update"`, as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tensor => "tensor",
            Scope::Update => "update",
        }
    }
}

/// Error unless `ratio` is in `(0, 1]`.
pub(crate) fn check_ratio(ratio: f64, key: String) -> Result<()> {
    cgfed_core::config::ensure(
        ratio.is_finite() && ratio > 0.0 && ratio <= 1.0,
        key,
        format!("must be a fraction in (0, 1], got {ratio}"),
    )
}

/// The decoded structure of a sparse first stage: the kept positions of every tensor of
/// the layout (increasing; empty for a tensor that keeps nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sets(pub Vec<Vec<u32>>);

impl Sets {
    /// Kept count per tensor.
    pub fn counts(&self) -> Vec<usize> {
        self.0.iter().map(Vec::len).collect()
    }
}

/// The values layout of `sets` over `layout`: one tensor `[count]` per tensor that keeps
/// at least one element, with the same name.
pub(crate) fn values_layout(layout: &Layout, sets: &Sets) -> Result<Layout> {
    Layout::new(
        layout
            .specs()
            .iter()
            .zip(&sets.0)
            .filter(|(_, s)| !s.is_empty())
            .map(|(spec, s)| TensorSpec {
                name: spec.name.clone(),
                shape: vec![s.len()],
            })
            .collect(),
    )
}

/// Append one index set per tensor ([`indices::put_indices`], count included; an empty set
/// is one byte).
pub(crate) fn write_sets(out: &mut PayloadBuilder, layout: &Layout, sets: &Sets) -> Result<()> {
    for (spec, set) in layout.specs().iter().zip(&sets.0) {
        indices::put_indices(out, set, spec.numel())?;
    }
    Ok(())
}

/// Bytes the sparsifiers spend on the index set `set` of a tensor of `n` elements, count
/// included: [`indices::cheapest`]`(set, n)` (1 for an empty set).
pub fn index_set_len(set: &[u32], n: usize) -> usize {
    indices::cheapest(set, n).1
}

/// The values at `sets` of `update` (host f32), as an update with [`values_layout`].
pub(crate) fn gather_values(update: &Update, sets: &Sets) -> Result<Update> {
    let vlayout = values_layout(update.layout(), sets)?;
    let mut parts = Vec::with_capacity(vlayout.len());
    update.for_each_host(|i, spec, x| {
        let set = sets.0.get(i).map(Vec::as_slice).unwrap_or(&[]);
        if !set.is_empty() {
            let mut v = Vec::with_capacity(set.len());
            for &p in set {
                v.push(x.get(p as usize).copied().ok_or_else(|| {
                    Error::Other(format!("position {p} outside tensor `{}`", spec.name))
                })?);
            }
            parts.push(v);
        }
        Ok(())
    })?;
    Update::from_parts(&vlayout, parts, &Device::Cpu)
}

/// Rebuild a dense update with `layout` on `device` from `sets` and `values` (laid out as
/// `expected`), multiplying tensor `i`'s values by `scale(i)` (finite results only).
pub(crate) fn join_sparse(
    layout: &Layout,
    sets: &Sets,
    expected: &Layout,
    values: &Update,
    device: &Device,
    scale: impl Fn(usize) -> Option<f32>,
) -> Result<Update> {
    if values.layout() != expected {
        return Err(Error::malformed(format!(
            "decoded values have {} tensors of {} elements, the structure says {} of {}",
            values.len(),
            values.numel(),
            expected.len(),
            expected.numel()
        )));
    }
    if sets.0.len() != layout.len() {
        return Err(Error::malformed(format!(
            "{} index sets for {} tensors",
            sets.0.len(),
            layout.len()
        )));
    }
    // Values of the tensors that keep elements, in order.
    let mut vals: Vec<Vec<f32>> = Vec::with_capacity(expected.len());
    values.for_each_host(|_, spec, v| {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::malformed(format!(
                "non-finite value {} in `{}` at {i}",
                v[i], spec.name
            )));
        }
        vals.push(v.to_vec());
        Ok(())
    })?;
    let mut next = vals.into_iter();
    let mut parts = Vec::with_capacity(layout.len());
    for (i, (spec, set)) in layout.specs().iter().zip(&sets.0).enumerate() {
        let n = spec.numel();
        let mut dense = vec![0f32; n];
        if !set.is_empty() {
            let v = next
                .next()
                .ok_or_else(|| Error::malformed("fewer value tensors than index sets"))?;
            if v.len() != set.len() {
                return Err(Error::malformed(format!(
                    "`{}` keeps {} positions but {} values arrived",
                    spec.name,
                    set.len(),
                    v.len()
                )));
            }
            let s = scale(i);
            for (&p, &x) in set.iter().zip(&v) {
                let x = match s {
                    Some(s) => x * s,
                    None => x,
                };
                if !x.is_finite() {
                    return Err(Error::malformed(format!(
                        "value of `{}` at {p} overflows when scaled",
                        spec.name
                    )));
                }
                let slot = dense.get_mut(p as usize).ok_or_else(|| {
                    Error::malformed(format!("position {p} outside `{}` ({n})", spec.name))
                })?;
                *slot = x;
            }
        }
        parts.push(dense);
    }
    Update::from_parts(layout, parts, device)
}
