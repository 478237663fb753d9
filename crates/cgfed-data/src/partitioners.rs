//! Label-aware client partitioners: how item indices are shared among clients, IID or not.
//!
//! [`assign`] splits the indices `0..labels.len()` among `num_clients` clients by a
//! [`PartitionSpec`]; each item carries a label (an MMLU subject, a class, a speaker...) that
//! the non-IID splits use. Everything is a pure function of the labels, the spec, the client
//! count and the seed: the same inputs give the same split on every machine (ChaCha8 from
//! [`crate::shuffle::rng`], one stream per spec, and no sampling code from `rand`).
//!
//! - [`PartitionSpec::Iid`]: the split of [`partition_iid`](crate::partition::partition_iid),
//!   applied to indices: the same seed gives the same shards, so existing runs stay
//!   reproducible.
//! - [`PartitionSpec::Dirichlet`]: per label, client shares drawn from `Dir(alpha · 1)`
//!   (Hsu et al. 2019, "Measuring the effects of non-identical data distribution"); small
//!   alpha gives skewed clients, large alpha approaches IID.
//! - [`PartitionSpec::ByField`]: each label value goes whole to one client, balancing sizes.
//! - [`PartitionSpec::Shards`]: the pathological split of McMahan et al. 2017: sort by
//!   label, cut into equal shards, give each client a few random shards.
//!
//! [`client_stats`] gives each client's size and label histogram for a report, and
//! [`mean_label_skew`] how far the clients' label mixes are from the global one.
//!
//! ```
//! use cgfed_data::partitioners::{assign, client_stats, PartitionSpec};
//!
//! let labels: Vec<String> = (0..100).map(|i| format!("subject{}", i % 5)).collect();
//! let clients = assign(&labels, &PartitionSpec::ByField, 2, 1, 42).unwrap();
//! let stats = client_stats(&labels, &clients);
//! assert_eq!(stats.iter().map(|s| s.size).sum::<usize>(), 100);
//! // every subject lives on exactly one client
//! assert_eq!(stats.iter().map(|s| s.labels.len()).sum::<usize>(), 5);
//! ```
//!
//! ## The Dirichlet draw
//!
//! `p ~ Dir(alpha · 1_K)` is drawn as `g_i / Σ g` with `g_i ~ Gamma(alpha, 1)` independent.
//! Gamma draws use Marsaglia and Tsang (2000), "A simple method for generating gamma
//! variables": for `alpha >= 1`, `d = alpha - 1/3`, `c = 1 / sqrt(9d)`, repeat
//! `x ~ N(0, 1)`, `v = (1 + c x)^3` until `v > 0` and `ln u < x²/2 + d (1 - v + ln v)` for
//! `u ~ U(0, 1]` (with the cheap squeeze `u < 1 - 0.0331 x⁴` first), and return `d v`; for
//! `alpha < 1`, `Gamma(alpha) = Gamma(alpha + 1) · u^(1/alpha)`. The normal draw is
//! Box–Muller (`sqrt(-2 ln u1) · cos(2π u2)`, one value per pair of uniforms), and the
//! uniforms take the top 53 bits of a ChaCha8 word. The draws are kept in log space and
//! normalised with a log-sum-exp, so tiny alphas (whose `u^(1/alpha)` underflows to 0)
//! still give a valid, one-hot-like `p` instead of `0 / 0`.

use std::collections::BTreeMap;

use cgfed_core::{Error, Result};
use rand_chacha::rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::partition::iid_shard_sizes;
use crate::shuffle::{rng, shuffle, IID_STREAM};

/// Stream id of the Dirichlet partition (`"dirichlt"` in ASCII).
pub const DIRICHLET_STREAM: u64 = 0x6469_7269_6368_6c74;
/// Stream id of the by-field partition (`"byfield"` in ASCII).
pub const BY_FIELD_STREAM: u64 = 0x0062_7966_6965_6c64;
/// Stream id of the shards partition (`"shards"` in ASCII).
pub const SHARDS_STREAM: u64 = 0x0000_7368_6172_6473;

/// How many Dirichlet draws [`assign`] tries before giving up on `min_per_client`.
pub const MAX_DIRICHLET_ATTEMPTS: usize = 100;

/// How items are shared among clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PartitionSpec {
    /// Shuffle and deal into shards whose sizes differ by at most one (labels are ignored).
    /// The same split as [`partition_iid`](crate::partition::partition_iid).
    Iid,
    /// Per label, client proportions drawn from `Dirichlet(alpha · 1)`; small alpha (0.1)
    /// is skewed, large alpha (1000) close to IID. `alpha` must be finite and positive.
    Dirichlet {
        /// Concentration of the symmetric Dirichlet.
        alpha: f64,
    },
    /// Each distinct label value (e.g. an MMLU subject) goes whole to one client; labels are
    /// dealt largest first onto the currently smallest client (ties among equal-sized labels
    /// in a seeded order, among equal-sized clients the lowest index), so client sizes
    /// differ by at most the largest label's size.
    ByField,
    /// Sort by label, cut into `num_clients * shards_per_client` shards whose sizes differ
    /// by at most one, and give each client `shards_per_client` random shards (the
    /// pathological non-IID split of McMahan et al. 2017). `shards_per_client >= 1`.
    Shards {
        /// Shards each client gets.
        shards_per_client: usize,
    },
}

impl PartitionSpec {
    /// A short name for logs: `iid`, `dirichlet`, `by_field` or `shards`.
    pub fn name(&self) -> &'static str {
        match self {
            PartitionSpec::Iid => "iid",
            PartitionSpec::Dirichlet { .. } => "dirichlet",
            PartitionSpec::ByField => "by_field",
            PartitionSpec::Shards { .. } => "shards",
        }
    }
}

/// Indices of the items each client gets: `result[c]` lists client `c`'s indices into
/// `labels`. Every index in `0..labels.len()` is in exactly one client; within a client the
/// order is seeded (shuffled), not sorted.
///
/// `min_per_client` is the smallest client allowed (`0` allows empty clients).
///
/// Errors (never panics):
/// - `num_clients == 0` (key `federation.clients`);
/// - a bad spec parameter: `alpha` not finite and positive (key `data.dirichlet_alpha`),
///   `shards_per_client == 0` (key `data.shards_per_client`);
/// - fewer than `num_clients * min_per_client` items (key `data.min_examples_per_client`,
///   or `federation.clients` when the minimum is at most 1);
/// - `ByField`: fewer distinct labels than clients (key `data.partition`);
/// - `Shards`: fewer items than `num_clients * shards_per_client` shards (key
///   `data.shards_per_client`);
/// - `Dirichlet`: no draw in [`MAX_DIRICHLET_ATTEMPTS`] gives every client
///   `min_per_client` items; `ByField`, `Shards`: the split leaves a client below
///   `min_per_client` (key `data.min_examples_per_client`).
pub fn assign(
    labels: &[String],
    spec: &PartitionSpec,
    num_clients: usize,
    min_per_client: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if num_clients == 0 {
        return Err(Error::config(
            "federation.clients",
            "must be at least 1 (there is no one to give the data to)",
        ));
    }
    match *spec {
        PartitionSpec::Dirichlet { alpha } if !(alpha.is_finite() && alpha > 0.0) => {
            return Err(Error::config(
                "data.dirichlet_alpha",
                format!(
                    "{alpha} is out of range; accepted: a positive number (0.1 = very skewed \
                     clients, 1 = moderately skewed, 1000 = close to iid)"
                ),
            ));
        }
        PartitionSpec::Shards {
            shards_per_client: 0,
        } => {
            return Err(Error::config(
                "data.shards_per_client",
                "must be at least 1 (each client needs a shard of data)",
            ));
        }
        _ => {}
    }
    check_total(labels.len(), num_clients, min_per_client)?;
    let clients = match *spec {
        PartitionSpec::Iid => iid(labels.len(), num_clients, seed),
        PartitionSpec::Dirichlet { alpha } => {
            dirichlet(labels, alpha, num_clients, min_per_client, seed)?
        }
        PartitionSpec::ByField => by_field(labels, num_clients, seed)?,
        PartitionSpec::Shards { shards_per_client } => {
            shards(labels, shards_per_client, num_clients, seed)?
        }
    };
    check_clients(&clients, spec, labels.len(), min_per_client)?;
    Ok(clients)
}

/// Size and label histogram of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStats {
    /// Items the client holds.
    pub size: usize,
    /// Items per label value (labels the client does not hold are left out).
    pub labels: BTreeMap<String, usize>,
}

impl ClientStats {
    /// Number of distinct labels the client holds.
    pub fn distinct_labels(&self) -> usize {
        self.labels.len()
    }
}

/// [`ClientStats`] of every client of `assignment` (as returned by [`assign`]).
///
/// An index outside `labels` counts in `size` but in no label (so the histogram sums to
/// `size` exactly when every index is valid).
pub fn client_stats(labels: &[String], assignment: &[Vec<usize>]) -> Vec<ClientStats> {
    assignment
        .iter()
        .map(|items| {
            let mut hist = BTreeMap::new();
            for label in items.iter().filter_map(|&i| labels.get(i)) {
                *hist.entry(label.clone()).or_insert(0) += 1;
            }
            ClientStats {
                size: items.len(),
                labels: hist,
            }
        })
        .collect()
}

/// Total variation distance between the label distributions of two histograms
/// (`½ Σ |p(l) - q(l)|`, in `[0, 1]`). `0` if either histogram is empty.
pub fn total_variation(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> f64 {
    let (na, nb) = (a.values().sum::<usize>(), b.values().sum::<usize>());
    if na == 0 || nb == 0 {
        return 0.0;
    }
    let share = |h: &BTreeMap<String, usize>, n: usize, l: &String| {
        h.get(l).copied().unwrap_or(0) as f64 / n as f64
    };
    let half: f64 = a
        .keys()
        .chain(b.keys().filter(|l| !a.contains_key(*l)))
        .map(|l| (share(a, na, l) - share(b, nb, l)).abs())
        .sum();
    0.5 * half
}

/// Label skew of a partition: the mean over non-empty clients of the
/// [`total_variation`] between the client's label distribution and the pooled one.
/// About 0 for an IID split; near 1 when every client holds labels few others hold.
/// `0` when no client holds anything.
pub fn mean_label_skew(stats: &[ClientStats]) -> f64 {
    let mut global = BTreeMap::new();
    for s in stats {
        for (l, n) in &s.labels {
            *global.entry(l.clone()).or_insert(0) += n;
        }
    }
    let tvs: Vec<f64> = stats
        .iter()
        .filter(|s| s.labels.values().any(|&n| n > 0))
        .map(|s| total_variation(&s.labels, &global))
        .collect();
    if tvs.is_empty() {
        0.0
    } else {
        tvs.iter().sum::<f64>() / tvs.len() as f64
    }
}

/// Check that `n` items can give each of `num_clients` (>= 1) clients `min_per_client`
/// (same wording as the check of [`partition_iid`](crate::partition::partition_iid)).
fn check_total(n: usize, num_clients: usize, min_per_client: usize) -> Result<()> {
    let smallest = n / num_clients;
    if smallest >= min_per_client {
        return Ok(());
    }
    Err(Error::config(
        min_key(min_per_client),
        format!(
            "{n} training examples shared among `federation.clients` = {num_clients} leave the \
             smallest client {smallest}, below `data.min_examples_per_client` = \
             {min_per_client}; lower either, or get more training examples (a longer text, a \
             smaller `data.seq_len` or `data.eval_fraction`, a larger `data.max_train_examples`)"
        ),
    ))
}

/// The key an error about a too-small client names.
fn min_key(min_per_client: usize) -> &'static str {
    if min_per_client > 1 {
        "data.min_examples_per_client"
    } else {
        "federation.clients"
    }
}

/// Check the sizes a (non-IID) split gave against `min_per_client`.
fn check_clients(
    clients: &[Vec<usize>],
    spec: &PartitionSpec,
    n: usize,
    min_per_client: usize,
) -> Result<()> {
    let smallest = clients.iter().map(Vec::len).min().unwrap_or(0);
    if smallest >= min_per_client {
        return Ok(());
    }
    let fix = if matches!(spec, PartitionSpec::ByField) {
        "use fewer clients, lower the minimum, or a partition that splits labels (`iid`, \
         `dirichlet`)"
    } else {
        "use fewer clients or lower the minimum"
    };
    Err(Error::config(
        "data.min_examples_per_client",
        format!(
            "the `{}` partition of {n} training examples among `federation.clients` = {} \
             leaves the smallest client {smallest}, below `data.min_examples_per_client` = \
             {min_per_client}; {fix}",
            spec.name(),
            clients.len()
        ),
    ))
}

/// The IID split: shuffle `0..n` with the IID stream, cut with [`iid_shard_sizes`].
fn iid(n: usize, num_clients: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng(seed, IID_STREAM));
    let mut rest = order.into_iter();
    iid_shard_sizes(n, num_clients)
        .into_iter()
        .map(|size| rest.by_ref().take(size).collect())
        .collect()
}

/// Item indices per distinct label, labels in sorted order, indices ascending.
fn by_label(labels: &[String]) -> BTreeMap<&str, Vec<usize>> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(l.as_str()).or_default().push(i);
    }
    groups
}

/// The Dirichlet split (see [`PartitionSpec::Dirichlet`] and the module docs).
fn dirichlet(
    labels: &[String],
    alpha: f64,
    num_clients: usize,
    min_per_client: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    let mut r = rng(seed, DIRICHLET_STREAM);
    let groups = by_label(labels);
    let mut smallest = 0;
    for _ in 0..MAX_DIRICHLET_ATTEMPTS {
        let mut clients: Vec<Vec<usize>> = vec![Vec::new(); num_clients];
        for items in groups.values() {
            let mut items = items.clone();
            shuffle(&mut items, &mut r);
            let p = dirichlet_draw(alpha, num_clients, &mut r);
            let n = items.len();
            let (mut start, mut cum) = (0usize, 0.0f64);
            for (c, client) in clients.iter_mut().enumerate() {
                let end = if c + 1 == num_clients {
                    n
                } else {
                    cum += p[c];
                    // cum in [0, 1] up to rounding; the cast saturates, the clamp keeps order
                    ((cum * n as f64).floor() as usize).clamp(start, n)
                };
                client.extend_from_slice(&items[start..end]);
                start = end;
            }
        }
        smallest = clients.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min_per_client {
            for client in &mut clients {
                shuffle(client, &mut r);
            }
            return Ok(clients);
        }
    }
    Err(Error::config(
        "data.min_examples_per_client",
        format!(
            "the `dirichlet` partition of {} training examples ({} labels) among \
             `federation.clients` = {num_clients} with alpha = {alpha} left some client \
             below `data.min_examples_per_client` = {min_per_client} in all \
             {MAX_DIRICHLET_ATTEMPTS} draws (smallest {smallest} in the last one); raise \
             `data.dirichlet_alpha` (less skew), use fewer clients, or lower the minimum",
            labels.len(),
            groups.len()
        ),
    ))
}

/// A uniform draw from `[0, 1)`: the top 53 bits of one ChaCha8 word.
fn uniform(r: &mut impl RngCore) -> f64 {
    (r.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw from `(0, 1]` (safe to take the logarithm of).
fn uniform_open0(r: &mut impl RngCore) -> f64 {
    ((r.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal draw (Box–Muller, the cosine half).
fn normal(r: &mut impl RngCore) -> f64 {
    let u1 = uniform_open0(r);
    let u2 = uniform(r);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `ln g` for `g ~ Gamma(shape, 1)`, `shape >= 1` (Marsaglia–Tsang), always finite.
fn ln_gamma_draw(shape: f64, r: &mut impl RngCore) -> f64 {
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(r);
        let t = 1.0 + c * x;
        if t <= 0.0 {
            continue;
        }
        let v = t * t * t;
        let u = uniform_open0(r);
        let x2 = x * x;
        if u < 1.0 - 0.0331 * x2 * x2 || u.ln() < 0.5 * x2 + d * (1.0 - v + v.ln()) {
            // ln(d v) without forming d v (which could overflow for a huge shape)
            return d.ln() + 3.0 * t.ln();
        }
    }
}

/// `p ~ Dir(alpha · 1_k)` (`alpha` finite and positive, `k >= 1`); entries are finite,
/// non-negative and sum to 1 up to rounding.
fn dirichlet_draw(alpha: f64, k: usize, r: &mut impl RngCore) -> Vec<f64> {
    // Work with s_i = scale · ln g_i so that tiny alphas stay finite:
    // alpha >= 1: scale = 1, ln g_i straight from Marsaglia–Tsang;
    // alpha < 1: g_i = g'_i · u_i^(1/alpha) with g'_i ~ Gamma(alpha + 1), so
    //            alpha · ln g_i = alpha · ln g'_i + ln u_i, and p_i ∝ exp((s_i - max s) / alpha).
    let (scale, shape) = if alpha >= 1.0 {
        (1.0, alpha)
    } else {
        (alpha, alpha + 1.0)
    };
    let s: Vec<f64> = (0..k)
        .map(|_| {
            let ln_g = ln_gamma_draw(shape, r);
            if alpha >= 1.0 {
                ln_g
            } else {
                alpha * ln_g + uniform_open0(r).ln()
            }
        })
        .collect();
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // (s_i - max) <= 0 and finite; the largest entry gives exp(0) = 1, so the sum is >= 1
    let w: Vec<f64> = s.iter().map(|&si| ((si - max) / scale).exp()).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|wi| wi / total).collect()
}

/// The by-field split (see [`PartitionSpec::ByField`]).
fn by_field(labels: &[String], num_clients: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    let groups = by_label(labels);
    if groups.len() < num_clients {
        return Err(Error::config(
            "data.partition",
            format!(
                "the `by_field` partition gives each distinct label to one client, but there \
                 are {} distinct labels for `federation.clients` = {num_clients}; use at most \
                 {} clients, or a partition that splits labels (`iid`, `dirichlet`, `shards`)",
                groups.len(),
                groups.len()
            ),
        ));
    }
    let mut r = rng(seed, BY_FIELD_STREAM);
    let mut order: Vec<Vec<usize>> = groups.into_values().collect();
    shuffle(&mut order, &mut r);
    // stable: equal-sized labels keep their seeded order
    order.sort_by_key(|items| std::cmp::Reverse(items.len()));
    let mut clients: Vec<Vec<usize>> = vec![Vec::new(); num_clients];
    for items in order {
        let smallest = clients
            .iter_mut()
            .enumerate()
            .min_by_key(|(i, c)| (c.len(), *i))
            .map(|(_, c)| c);
        if let Some(client) = smallest {
            client.extend(items);
        }
    }
    for client in &mut clients {
        shuffle(client, &mut r);
    }
    Ok(clients)
}

/// The shards split (see [`PartitionSpec::Shards`]).
fn shards(
    labels: &[String],
    shards_per_client: usize,
    num_clients: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    let n = labels.len();
    let num_shards = num_clients.checked_mul(shards_per_client);
    let num_shards = match num_shards {
        Some(s) if s <= n => s,
        _ => {
            return Err(Error::config(
                "data.shards_per_client",
                format!(
                    "`federation.clients` = {num_clients} × `data.shards_per_client` = \
                     {shards_per_client} shards need at least as many training examples, but \
                     there are {n}; lower `data.shards_per_client` or use fewer clients"
                ),
            ));
        }
    };
    let mut r = rng(seed, SHARDS_STREAM);
    let mut order: Vec<usize> = (0..n).collect();
    // a seeded order within each label, then grouped by label (stable sort)
    shuffle(&mut order, &mut r);
    order.sort_by(|&a, &b| labels[a].cmp(&labels[b]));
    let mut rest = order.into_iter();
    let pieces: Vec<Vec<usize>> = iid_shard_sizes(n, num_shards)
        .into_iter()
        .map(|size| rest.by_ref().take(size).collect())
        .collect();
    let mut ids: Vec<usize> = (0..num_shards).collect();
    shuffle(&mut ids, &mut r);
    let mut clients: Vec<Vec<usize>> = ids
        .chunks(shards_per_client)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|&s| pieces[s].iter().copied())
                .collect()
        })
        .collect();
    for client in &mut clients {
        shuffle(client, &mut r);
    }
    Ok(clients)
}
