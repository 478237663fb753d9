//! `powersgd`: rank-`r` factors from one power-iteration step (Vogels et al. 2019,
//! "PowerSGD: practical low-rank gradient compression").
//!
//! # Algorithm
//!
//! Every tensor of rank ≥ 2 is viewed as the row-major matrix `M` of `n = shape[0]` rows
//! and `m = numel / n` columns. When `(n + m)·r < n·m` it is sent as two factors:
//!
//! 1. `Q` (`m × r`) starts as the client's `Q` of the last round (warm start, kept in its
//!    [`ClientState`] under [`q_state_key`]`(name)` as `m·r` f32, row-major) or, without
//!    one (first round, `warm_start = false`, a changed shape), as a Gaussian matrix drawn
//!    from `ctx.rng_seed(mix_seed([stream_of("powersgd"), tensor index]))`;
//! 2. each column of `Q` is scaled to unit norm (a zero column is redrawn), `P = M·Q`
//!    (`n × r`), and `P`'s columns are orthonormalised (modified Gram–Schmidt in f64,
//!    twice; a column numerically in the span of the previous ones becomes zero — never
//!    NaN);
//! 3. `Q = Mᵀ·P`; steps 2–3 repeat `power_iterations` times;
//! 4. `P` and `Q` are sent and the final `Q` is stored for the next round.
//!
//! The decoder rebuilds `M̂ = P·Qᵀ`, the orthogonal projection of `M` on the span of `P`:
//! `‖M − M̂‖ ≤ ‖M‖` and `⟨M, M̂⟩ = ‖PᵀM‖² ≥ 0` always, and a matrix of rank ≤ `r` comes
//! back exactly (up to f32 rounding). Vectors, scalars and matrices for which the factors
//! would not be smaller (`(n + m)·r ≥ n·m`, which includes every `r ≥ min(n, m)`) are sent
//! dense. The products are tight single-threaded loops over row-major slices (two passes
//! over `M` per power iteration, plus one for the reconstruction). Every threshold is
//! relative, so the error does not depend on the scale of the input; compression fails
//! cleanly ([`Error::InvalidInput`]) only when a row or column norm of `M` is beyond the
//! f32 range (so that `P = M·Q` or `Q = Mᵀ·P` would overflow).
//!
//! # Values layout (first stage)
//!
//! `powersgd` is a [`Staged`] first stage with an *empty* structure: both ends derive the
//! values layout from `ctx.layout` and `r` ([`values_layout`]). For each tensor `t`
//! (shape `s`, `N` elements):
//!
//! | case | values tensors |
//! |---|---|
//! | `rank(s) ≥ 2` and `(n + m)·r < n·m` | `t/P` of shape `[n, r]` and `t/Q` of shape `[m, r]` (row-major) |
//! | otherwise, `N > 0` | `t` with shape `s` (dense) |
//! | `N = 0` | nothing |
//!
//! sorted by name (byte order), like every [`Layout`]. `values = { kind = "fp16" }` sends
//! these values through a second compressor; its payload is then header
//! `powersgd+fp16` followed by the second stage's body for the values layout.
//!
//! # Wire format (standalone)
//!
//! | bytes | field |
//! |---|---|
//! | 10 | header: version byte, name length 8, `powersgd` |
//! | `4·c_v` per values tensor `v`, in values-layout order | its `c_v` values as little-endian f32 (row-major) |
//!
//! so the payload is exactly ([`payload_len`])
//!
//! ```text
//! 10 + 4 · Σ_t c_t,   c_t = (n_t + m_t)·r  for a factored tensor,  N_t  for a dense one.
//! ```
//!
//! The decoder reads exactly `values_layout.numel()` finite f32 values (no trailing
//! bytes), checks the values layout, and rejects a reconstruction that overflows f32 (a
//! corrupted factor) with [`Error::MalformedPayload`].
//!
//! # Config
//!
//! ```toml
//! [compressor]
//! kind = "powersgd"
//! rank = 4               # r, 1..=4096
//! warm_start = true      # reuse last round's Q
//! power_iterations = 1   # 1..=16 power steps per round
//! ```

use cgfed_core::candle_core::{Device, Tensor};
use cgfed_core::config::{ensure, PluginTable};
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::payload::PayloadBuilder;
use cgfed_core::staged::{compress_f32, decompress_f32};
use cgfed_core::wire::ByteReader;
use cgfed_core::{
    ClientState, Error, Factory, GradientCompressor, Layout, Param, Payload, Plugin, Result,
    RoundCtx, Staged, Structure, TensorSpec, Update,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::linalg;

/// Registered name, also the payload header.
pub const NAME: &str = "powersgd";

/// Largest accepted `rank`.
pub const MAX_RANK: usize = 4096;

/// Largest accepted `power_iterations`.
pub const MAX_POWER_ITERATIONS: usize = 16;

/// The [`ClientState`] key of the warm-start `Q` of tensor `tensor` (`m·r` f32, row-major
/// `m × r`): `powersgd/q/<tensor>`.
pub fn q_state_key(tensor: &str) -> String {
    format!("{NAME}/q/{tensor}")
}

/// Config of `powersgd` (the table's keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSgdConfig {
    /// Rank `r` of the factors, `1..=4096`. Default 4.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// Start the power iteration from the client's `Q` of its last round. Default true.
    #[serde(default = "default_warm_start")]
    pub warm_start: bool,
    /// Power-iteration steps per round, `1..=16` (each is two passes over every factored
    /// matrix). Default 1, as in the paper; warm start makes the steps accumulate over
    /// rounds.
    #[serde(default = "default_power_iterations")]
    pub power_iterations: usize,
}

fn default_rank() -> usize {
    4
}

fn default_warm_start() -> bool {
    true
}

fn default_power_iterations() -> usize {
    1
}

impl Default for PowerSgdConfig {
    fn default() -> Self {
        Self {
            rank: default_rank(),
            warm_start: default_warm_start(),
            power_iterations: default_power_iterations(),
        }
    }
}

impl PowerSgdConfig {
    /// Check the ranges; errors name `<table>.<key>` (`compressor.rank`).
    pub fn validate(&self, table: &str) -> Result<()> {
        ensure(
            (1..=MAX_RANK).contains(&self.rank),
            format!("{table}.rank"),
            format!(
                "got {}; the rank of the factors must be an integer in 1..={MAX_RANK}",
                self.rank
            ),
        )?;
        ensure(
            (1..=MAX_POWER_ITERATIONS).contains(&self.power_iterations),
            format!("{table}.power_iterations"),
            format!(
                "got {}; accepted: an integer in 1..={MAX_POWER_ITERATIONS}",
                self.power_iterations
            ),
        )
    }
}

/// `(n, m)` when a tensor of `shape` is sent as rank-`rank` factors: rank ≥ 2 and
/// `(n + m)·rank < n·m`; `None` when it is sent dense.
pub fn factored_dims(shape: &[usize], rank: usize) -> Option<(usize, usize)> {
    if shape.len() < 2 {
        return None;
    }
    let n = shape[0];
    let m: usize = shape[1..].iter().product();
    let factors = (n as u128 + m as u128) * rank as u128;
    (factors < n as u128 * m as u128).then_some((n, m))
}

/// What one values tensor is: the dense values, `P` or `Q` of a tensor of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dense(usize),
    P(usize),
    Q(usize),
}

/// The values layout of `layout` at `rank`, and the role of each of its tensors.
#[derive(Debug, Clone)]
struct Plan {
    /// Per tensor of the layout: `Some((n, m))` when factored.
    dims: Vec<Option<(usize, usize)>>,
    /// Per values tensor, in values-layout order.
    roles: Vec<Role>,
}

fn plan(layout: &Layout, rank: usize) -> Result<(Layout, Plan)> {
    let mut dims = Vec::with_capacity(layout.len());
    let mut entries: Vec<(TensorSpec, Role)> = Vec::with_capacity(2 * layout.len());
    for (i, spec) in layout.specs().iter().enumerate() {
        let d = factored_dims(&spec.shape, rank);
        match d {
            Some((n, m)) => {
                let factor = |suffix: &str, rows: usize| TensorSpec {
                    name: format!("{}/{suffix}", spec.name),
                    shape: vec![rows, rank],
                };
                entries.push((factor("P", n), Role::P(i)));
                entries.push((factor("Q", m), Role::Q(i)));
            }
            None if spec.numel() > 0 => entries.push((spec.clone(), Role::Dense(i))),
            None => {}
        }
        dims.push(d);
    }
    entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let roles = entries.iter().map(|e| e.1).collect();
    let values = Layout::new(entries.into_iter().map(|e| e.0).collect()).map_err(|e| {
        Error::InvalidInput(format!(
            "powersgd names its factors `<tensor>/P` and `<tensor>/Q`, which clash with the \
             layout: {e}"
        ))
    })?;
    Ok((values, Plan { dims, roles }))
}

/// The layout of the values `powersgd` at `rank` hands to a second stage (see the
/// [module docs](self)).
///
/// # Errors
/// [`Error::InvalidInput`] when a factor name (`<tensor>/P`) clashes with a tensor name.
pub fn values_layout(layout: &Layout, rank: usize) -> Result<Layout> {
    Ok(plan(layout, rank)?.0)
}

/// Number of values sent for `layout` at `rank`: `Σ_t (n_t + m_t)·r` over factored
/// tensors plus the elements of the dense ones.
pub fn values_count(layout: &Layout, rank: usize) -> usize {
    layout
        .specs()
        .iter()
        .map(|s| match factored_dims(&s.shape, rank) {
            Some((n, m)) => (n + m) * rank,
            None => s.numel(),
        })
        .sum()
}

/// Exact length of a standalone `powersgd` payload: `10 + 4·values_count(layout, rank)`.
pub fn payload_len(layout: &Layout, rank: usize) -> usize {
    Payload::header_len(NAME) + 4 * values_count(layout, rank)
}

/// The PowerSGD compressor (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct PowerSgd {
    cfg: PowerSgdConfig,
}

impl PowerSgd {
    /// A compressor with `cfg`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `compressor.<key>` when `cfg` is out of range.
    pub fn new(cfg: PowerSgdConfig) -> Result<Self> {
        cfg.validate("compressor")?;
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &PowerSgdConfig {
        &self.cfg
    }

    /// Factor one `n × cols` matrix: returns `(P, Q)` row-major (`n × r`, `cols × r`).
    fn factor(
        &self,
        name: &str,
        m: &[f32],
        (n, cols): (usize, usize),
        warm: Option<&[f32]>,
        seed: u64,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let r = self.cfg.rank;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Q, column-major (column j contiguous).
        let mut qt = vec![0f32; cols * r];
        match warm {
            Some(q) if q.len() == cols * r => {
                for (k, row) in q.chunks_exact(r).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        qt[j * cols + k] = v;
                    }
                }
            }
            _ => linalg::fill_gaussian(&mut rng, &mut qt),
        }
        let mut pt = vec![0f32; n * r];
        for _ in 0..self.cfg.power_iterations {
            linalg::normalise_columns(&mut qt, cols, &mut rng);
            linalg::mul_q(m, n, cols, &qt, r, &mut pt);
            if pt.iter().any(|v| !v.is_finite()) {
                return Err(overflow(name));
            }
            linalg::orthonormalise(&mut pt, n, r);
            linalg::mul_pt(m, n, cols, &pt, r, &mut qt);
        }
        if qt.iter().any(|v| !v.is_finite()) {
            return Err(overflow(name));
        }
        Ok((transpose(&pt, n, r), transpose(&qt, cols, r)))
    }
}

fn overflow(name: &str) -> Error {
    Error::InvalidInput(format!(
        "tensor `{name}`: its rows or columns are too large for f32 factors (norm beyond \
         {:e})",
        f32::MAX
    ))
}

/// Column-major `rows × r` (column `j` at `[j·rows..]`) to row-major, and back (the
/// operation is its own inverse with the roles of the dimensions swapped).
fn transpose(colmajor: &[f32], rows: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * r];
    for (j, col) in colmajor.chunks_exact(rows).take(r).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * r + j] = v;
        }
    }
    out
}

/// Row-major `rows × r` to column-major.
fn to_colmajor(rowmajor: &[f32], rows: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * r];
    for (i, row) in rowmajor.chunks_exact(r).take(rows).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            out[j * rows + i] = v;
        }
    }
    out
}

impl Staged for PowerSgd {
    fn split(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
        _out: &mut PayloadBuilder,
    ) -> Result<Update> {
        let r = self.cfg.rank;
        let (_, plan) = plan(&ctx.layout, r)?;
        let stream = stream_of(NAME);
        let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(plan.roles.len());
        update.for_each_host(|i, spec, data| {
            let Some(&dims) = plan.dims.get(i) else {
                return Err(Error::LayoutMismatch(format!(
                    "tensor `{}` is not in the round's layout",
                    spec.name
                )));
            };
            match dims {
                None if data.is_empty() => {}
                None => tensors.push((
                    spec.name.clone(),
                    Tensor::from_vec(data.to_vec(), spec.shape.as_slice(), &Device::Cpu)?,
                )),
                Some((n, m)) => {
                    let key = q_state_key(&spec.name);
                    let warm = if self.cfg.warm_start {
                        state.buffers.get(&key).map(Vec::as_slice)
                    } else {
                        None
                    };
                    let seed = ctx.rng_seed(mix_seed(&[stream, i as u64]));
                    let (p, q) = self.factor(&spec.name, data, (n, m), warm, seed)?;
                    if self.cfg.warm_start {
                        state.buffers.insert(key, q.clone());
                    }
                    let p = Tensor::from_vec(p, (n, r), &Device::Cpu)?;
                    let q = Tensor::from_vec(q, (m, r), &Device::Cpu)?;
                    tensors.push((format!("{}/P", spec.name), p));
                    tensors.push((format!("{}/Q", spec.name), q));
                }
            }
            Ok(())
        })?;
        Update::new(tensors)
    }

    fn read_structure(&self, _r: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure> {
        let (values, plan) = plan(&ctx.layout, self.cfg.rank)?;
        Ok(Structure::new(values, plan))
    }

    fn join(&self, structure: &Structure, values: &Update, ctx: &RoundCtx) -> Result<Update> {
        let r = self.cfg.rank;
        let plan: &Plan = structure.data()?;
        let specs = ctx.layout.specs();
        if plan.dims.len() != specs.len() {
            return Err(Error::LayoutMismatch(format!(
                "structure for {} tensors, layout of {}",
                plan.dims.len(),
                specs.len()
            )));
        }
        values
            .check_same_layout(&structure.values_layout)
            .map_err(|e| Error::malformed(format!("powersgd values: {e}")))?;
        let mut parts: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
        let mut ps: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
        let mut qts: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
        values.for_each_host(|v, vspec, data| {
            let role = plan.roles.get(v).copied().ok_or_else(|| {
                Error::malformed(format!("unexpected values tensor `{}`", vspec.name))
            })?;
            match role {
                Role::Dense(i) => parts[i] = data.to_vec(),
                Role::P(i) => ps[i] = data.to_vec(),
                Role::Q(i) => qts[i] = to_colmajor(data, data.len() / r, r),
            }
            Ok(())
        })?;
        for (i, (spec, dims)) in specs.iter().zip(&plan.dims).enumerate() {
            let Some((n, m)) = *dims else { continue };
            let (p, qt) = (&ps[i], &qts[i]);
            if p.len() != n * r || qt.len() != m * r {
                return Err(Error::malformed(format!(
                    "tensor `{}`: factors of {} and {} values, expected {} and {}",
                    spec.name,
                    p.len(),
                    qt.len(),
                    n * r,
                    m * r
                )));
            }
            let out = linalg::reconstruct(p, qt, n, m, r);
            // Each output is a sum of r products bounded by max|P|·max|Q|: scan only when
            // that bound leaves the f32 range (corrupted factors).
            let bound = r as f64 * f64::from(linalg::max_abs(p)) * f64::from(linalg::max_abs(qt));
            if bound >= f64::from(f32::MAX) && out.iter().any(|x| !x.is_finite()) {
                return Err(Error::malformed(format!(
                    "tensor `{}`: P·Qᵀ overflows f32",
                    spec.name
                )));
            }
            parts[i] = out;
        }
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

impl GradientCompressor for PowerSgd {
    fn name(&self) -> &str {
        NAME
    }

    fn compress(
        &self,
        update: &Update,
        state: &mut ClientState,
        ctx: &RoundCtx,
    ) -> Result<Payload> {
        compress_f32(self, NAME, update, state, ctx)
    }

    fn decompress(&self, payload: &Payload, ctx: &RoundCtx) -> Result<Update> {
        decompress_f32(self, NAME, payload, ctx)
    }

    fn as_staged(&self) -> Option<&dyn Staged> {
        Some(self)
    }

    fn describe(&self) -> String {
        format!(
            "powersgd rank {} ({} power iteration{}, warm start {})",
            self.cfg.rank,
            self.cfg.power_iterations,
            if self.cfg.power_iterations == 1 {
                ""
            } else {
                "s"
            },
            if self.cfg.warm_start { "on" } else { "off" }
        )
    }
}

fn build(table: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let cfg: PowerSgdConfig = table.parse()?;
    cfg.validate(&table.key)?;
    Ok(Box::new(PowerSgd { cfg }))
}

cgfed_core::inventory::submit! {
    Plugin {
        name: NAME,
        summary: "PowerSGD: rank-r factors P, Q of every matrix from a warm-started power iteration",
        params: &[
            Param { key: "rank", default: "4", help: "rank r of the factors, 1..=4096; a matrix with (n+m)·r ≥ n·m is sent dense" },
            Param { key: "warm_start", default: "true", help: "start from the client's Q of its last round (kept in its state)" },
            Param { key: "power_iterations", default: "1", help: "power-iteration steps per round, 1..=16" },
        ],
        factory: Factory::Compressor(build),
    }
}
