//! Exact top-k selection by magnitude, with ties broken by the lower index.
//!
//! Elements are compared by their *key*, the f32 bit pattern with the sign bit cleared:
//! for finite values the key order is the order of `|x|` (and `+0`, `−0` are equal). The
//! selection of the `k` largest keys of a sequence (one tensor, or all tensors of an update
//! in layout order) is described by a [`Cut`]: keep every key above `t`, and the first
//! `ties` elements, in sequence order, whose key equals `t`. That is exactly "the `k`
//! largest `|x|`, ties to the lower index".
//!
//! Finding the cut:
//!
//! - short sequences (≤ [`SMALL`] elements): copy the keys and `select_nth_unstable`;
//! - long ones: estimate a *lower* bound `L` of the cut from a deterministic stratified
//!   sample (the sample's key at rank `k·m/n + 4·√(k·m/n) + 4` of `m` sampled, about four
//!   standard deviations past the `k/n` quantile towards smaller `|x|`), gather
//!   every element with key ≥ `L` in one pass (skipping 16-element chunks that hold none),
//!   and select exactly among those candidates. When the sample bound turns out wrong
//!   (fewer than `k` candidates, or too many: heavy ties, zeros), a two-pass 16-bit radix
//!   select finds the cut exactly without allocating per element.
//!
//! Either way the result is exact; only the speed depends on the data.

use cgfed_core::candle_core::DType;
use cgfed_core::context::mix_seed;
use cgfed_core::{Error, Result, Update};
use std::borrow::Cow;

/// Sequences up to this many elements are selected directly on a copy of their keys.
pub(crate) const SMALL: usize = 1 << 12;

/// Largest number of strata of the sample that estimates the lower bound.
const MAX_SAMPLE: usize = 1 << 14;

/// Elements per chunk of the candidate scan.
const CHUNK: usize = 16;

/// The magnitude key of a finite `v`: its bits without the sign (order of `|v|`).
#[inline(always)]
pub(crate) fn key(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// A sequence of slices visited in order, possibly several times: one tensor, or every
/// tensor of an update.
pub(crate) trait Parts {
    /// Length of each part.
    fn lens(&self) -> Vec<usize>;
    /// Call `f(part index, values)` for every part in order.
    fn visit(&self, f: &mut dyn FnMut(usize, &[f32]) -> Result<()>) -> Result<()>;
}

impl Parts for [&[f32]] {
    fn lens(&self) -> Vec<usize> {
        self.iter().map(|p| p.len()).collect()
    }

    fn visit(&self, f: &mut dyn FnMut(usize, &[f32]) -> Result<()>) -> Result<()> {
        for (i, p) in self.iter().enumerate() {
            f(i, p)?;
        }
        Ok(())
    }
}

/// Every tensor of an update, read through [`Update::for_each_host`] (no copies for host
/// f32 tensors; see [`host_update`]).
pub(crate) struct UpdateParts<'a>(pub &'a Update);

impl Parts for UpdateParts<'_> {
    fn lens(&self) -> Vec<usize> {
        self.0.layout().specs().iter().map(|s| s.numel()).collect()
    }

    fn visit(&self, f: &mut dyn FnMut(usize, &[f32]) -> Result<()>) -> Result<()> {
        self.0.for_each_host(|i, _, x| f(i, x))
    }
}

/// `update` itself when every tensor is a contiguous f32 CPU tensor (so repeated
/// [`UpdateParts::visit`] passes borrow without copying), else a host f32 copy made once.
pub(crate) fn host_update(update: &Update) -> Result<Cow<'_, Update>> {
    let on_host = update
        .iter()
        .all(|(_, t)| t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous());
    if on_host {
        Ok(Cow::Borrowed(update))
    } else {
        Ok(Cow::Owned(Update::from_parts(
            update.layout(),
            update.to_parts()?,
            &cgfed_core::candle_core::Device::Cpu,
        )?))
    }
}

/// Fail when a part is too long for u32 positions (at most `u32::MAX` elements).
pub(crate) fn check_lens(lens: &[usize]) -> Result<()> {
    match lens.iter().find(|&&n| n > u32::MAX as usize) {
        Some(n) => Err(Error::InvalidInput(format!(
            "a tensor of {n} elements exceeds the u32 positions of sparse index sets"
        ))),
        None => Ok(()),
    }
}

/// Call `f(position, key)` for every element of `x` whose key is at least `t`, in order;
/// stop as soon as `f` returns false (then return false).
#[inline]
pub(crate) fn scan_ge(x: &[f32], t: u32, mut f: impl FnMut(u32, u32) -> bool) -> bool {
    // Keys are below 2^31, so a signed comparison is exact (and vectorizes on plain SSE2).
    let ts = t as i32;
    let mut chunks = x.chunks_exact(CHUNK);
    let mut off = 0usize;
    for c in &mut chunks {
        let hit = c
            .iter()
            .fold(0u32, |a, &v| a | ((key(v) as i32 >= ts) as u32));
        if hit != 0 {
            for (j, &v) in c.iter().enumerate() {
                let kv = key(v);
                if kv as i32 >= ts && !f((off + j) as u32, kv) {
                    return false;
                }
            }
        }
        off += CHUNK;
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        let kv = key(v);
        if kv as i32 >= ts && !f((off + j) as u32, kv) {
            return false;
        }
    }
    true
}

/// Keep every key above `t` and the first `ties` elements whose key equals `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    /// The k-th largest key.
    pub t: u32,
    /// How many elements with key `t` are kept (the first ones in sequence order).
    pub ties: usize,
}

impl Cut {
    /// Whether an element with key `kv` is kept; consumes a tie when it is one.
    #[inline(always)]
    fn keep(&self, kv: u32, ties_left: &mut usize) -> bool {
        if kv > self.t {
            true
        } else if kv == self.t && *ties_left > 0 {
            *ties_left -= 1;
            true
        } else {
            false
        }
    }
}

/// The cut of the `k` largest of `keys` (`1 ≤ k ≤ keys.len()`); reorders `keys`.
pub(crate) fn cut_of(keys: &mut [u32], k: usize) -> Cut {
    let m = keys.len();
    debug_assert!(k >= 1 && k <= m);
    let (_, &mut t, above) = keys.select_nth_unstable(m - k);
    let gt = above.iter().filter(|&&x| x > t).count();
    Cut { t, ties: k - gt }
}

/// Elements gathered by [`gather_ge`]: positions and keys in sequence order, with the end
/// of each part's run.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    idx: Vec<u32>,
    keys: Vec<u32>,
    ends: Vec<usize>,
}

impl Candidates {
    /// Number of gathered elements.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    /// The gathered positions, one set per part.
    pub fn into_sets(self) -> Vec<Vec<u32>> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let s = self.idx[start..end].to_vec();
                start = end;
                s
            })
            .collect()
    }

    /// The `k` largest (ties to the lower position) of the gathered elements, one set per
    /// part (`1 ≤ k ≤ len`).
    pub fn select(&self, k: usize) -> Vec<Vec<u32>> {
        let mut scratch = self.keys.clone();
        let cut = cut_of(&mut scratch, k);
        let mut ties = cut.ties;
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let mut out = Vec::new();
                for (&i, &kv) in self.idx[start..end].iter().zip(&self.keys[start..end]) {
                    if cut.keep(kv, &mut ties) {
                        out.push(i);
                    }
                }
                start = end;
                out
            })
            .collect()
    }
}

/// Every element with key ≥ `t`, in order; `None` as soon as there are more than `cap`.
///
/// Chunks of [`CHUNK`] elements without a hit are skipped after one vectorized test; in a
/// chunk with hits every element is written and the write position advances only for the
/// hits (no data-dependent branch), into buffers sized for `cap` plus one chunk.
pub(crate) fn gather_ge<P: Parts + ?Sized>(
    parts: &P,
    t: u32,
    cap: usize,
) -> Result<Option<Candidates>> {
    let ts = t as i32;
    let total: usize = parts.lens().iter().sum();
    let cap = cap.min(total);
    let room = cap + CHUNK;
    let mut idx = vec![0u32; room];
    let mut keys = vec![0u32; room];
    let mut ends = Vec::new();
    let mut len = 0usize;
    let mut over = false;
    parts.visit(&mut |_, x| {
        if over {
            ends.push(len);
            return Ok(());
        }
        let mut chunks = x.chunks_exact(CHUNK);
        let mut off = 0u32;
        for c in &mut chunks {
            let hit = c
                .iter()
                .fold(0u32, |a, &v| a | ((key(v) as i32 >= ts) as u32));
            if hit != 0 {
                if len > cap {
                    over = true;
                    break;
                }
                let (Some(is), Some(ks)) = (
                    idx.get_mut(len..len + CHUNK),
                    keys.get_mut(len..len + CHUNK),
                ) else {
                    over = true;
                    break;
                };
                let mut m = 0usize;
                for (j, &v) in c.iter().enumerate() {
                    let kv = key(v);
                    is[m] = off + j as u32;
                    ks[m] = kv;
                    m += (kv as i32 >= ts) as usize;
                }
                len += m;
            }
            off = off.wrapping_add(CHUNK as u32);
        }
        if !over {
            for (j, &v) in chunks.remainder().iter().enumerate() {
                let kv = key(v);
                if kv as i32 >= ts {
                    if len >= room {
                        over = true;
                        break;
                    }
                    idx[len] = off + j as u32;
                    keys[len] = kv;
                    len += 1;
                }
            }
        }
        ends.push(len);
        Ok(())
    })?;
    if over || len > cap {
        return Ok(None);
    }
    idx.truncate(len);
    keys.truncate(len);
    Ok(Some(Candidates { idx, keys, ends }))
}

/// Stratified sample positions over `0..total`: `s` equal strata (`1 ≤ s ≤ total`), one
/// position `lo + draw(j, span)` in stratum `j` of `span` elements (`draw` should return a
/// value below `span`; larger ones are clamped). Increasing.
pub(crate) fn stratified(
    total: usize,
    s: usize,
    mut draw: impl FnMut(usize, u64) -> u64,
) -> Vec<u64> {
    // Stratum j is [⌊j·total/s⌋, ⌊(j+1)·total/s⌋), stepped without a division per stratum.
    let (total, s64) = (total as u64, s as u64);
    let (q, r) = (total / s64.max(1), total % s64.max(1));
    let (mut lo, mut err) = (0u64, 0u64);
    let mut out = Vec::with_capacity(s);
    for j in 0..s {
        let mut span = q;
        err += r;
        if err >= s64 {
            err -= s64;
            span += 1;
        }
        if span > 0 {
            out.push(lo + draw(j, span).min(span - 1));
        }
        lo += span;
    }
    out
}

/// The keys at increasing flat `positions` (each below the total length) of `parts`.
pub(crate) fn sample_keys<P: Parts + ?Sized>(parts: &P, positions: &[u64]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(positions.len());
    let mut off = 0u64;
    let mut next = 0usize;
    parts.visit(&mut |_, x| {
        let end = off + x.len() as u64;
        while next < positions.len() && positions[next] < end {
            let v = x
                .get((positions[next] - off) as usize)
                .copied()
                .unwrap_or(0.0);
            out.push(key(v));
            next += 1;
        }
        off = end;
        Ok(())
    })?;
    Ok(out)
}

/// SplitMix64 of `x`.
fn splitmix(x: u64) -> u64 {
    mix_seed(&[x])
}

/// A lower bound of the cut of the `k` largest among `total` elements (`k < total`), from a
/// deterministic stratified sample: the sample key a few standard deviations below the
/// `k/total` quantile, so that at least `k` elements reach it with high probability. Also
/// returns a cap on the candidates worth gathering: about twice the expected number of
/// elements at or above the bound (and at least `1.5·k`), plus 1024.
fn sample_lower_bound<P: Parts + ?Sized>(
    parts: &P,
    total: usize,
    k: usize,
) -> Result<(u32, usize)> {
    let s = (total / 8).clamp(1, MAX_SAMPLE);
    let salt = splitmix(total as u64 ^ (k as u64) << 32);
    let positions = stratified(total, s, |j, span| {
        ((splitmix(salt ^ j as u64) as u128 * span as u128) >> 64) as u64
    });
    let mut keys = sample_keys(parts, &positions)?;
    let m = keys.len();
    let floor_cap = k + k / 2 + 1024;
    if m == 0 {
        return Ok((0, floor_cap));
    }
    let expect = k as f64 * m as f64 / total as f64;
    let r = (expect + 4.0 * expect.sqrt() + 4.0).ceil() as usize;
    if r >= m {
        return Ok((0, floor_cap));
    }
    let (_, &mut l, _) = keys.select_nth_unstable(m - r);
    let expected_candidates = (r + 1) as f64 * total as f64 / m as f64;
    let cap = floor_cap.max((2.0 * expected_candidates) as usize + 1024);
    Ok((l, cap))
}

/// The exact cut of the `k` largest keys over all parts (`1 ≤ k < total`) by a two-level
/// 16-bit histogram (two passes, no per-element allocation).
fn radix_cut<P: Parts + ?Sized>(parts: &P, k: usize) -> Result<Cut> {
    let mut hist = vec![0u64; 1 << 15];
    parts.visit(&mut |_, x| {
        for &v in x {
            hist[(key(v) >> 16) as usize] += 1;
        }
        Ok(())
    })?;
    let k = k as u64;
    let (mut above, mut hi_bin) = (0u64, 0usize);
    for (b, &c) in hist.iter().enumerate().rev() {
        if above + c >= k {
            hi_bin = b;
            break;
        }
        above += c;
    }
    let need = k - above;
    let mut low = vec![0u64; 1 << 16];
    let hb = hi_bin as u32;
    parts.visit(&mut |_, x| {
        for &v in x {
            let kv = key(v);
            if kv >> 16 == hb {
                low[(kv & 0xffff) as usize] += 1;
            }
        }
        Ok(())
    })?;
    let (mut above2, mut lo_bin) = (0u64, 0usize);
    for (b, &c) in low.iter().enumerate().rev() {
        if above2 + c >= need {
            lo_bin = b;
            break;
        }
        above2 += c;
    }
    Ok(Cut {
        t: hb << 16 | lo_bin as u32,
        ties: (need - above2) as usize,
    })
}

/// Positions kept by `cut` over all parts, one increasing set per part.
fn apply_cut<P: Parts + ?Sized>(parts: &P, cut: Cut, reserve: usize) -> Result<Vec<Vec<u32>>> {
    let mut ties = cut.ties;
    let mut out = Vec::new();
    let nparts = parts.lens().len();
    parts.visit(&mut |_, x| {
        let mut set = Vec::with_capacity(if nparts == 1 { reserve } else { 0 });
        scan_ge(x, cut.t, |i, kv| {
            if cut.keep(kv, &mut ties) {
                set.push(i);
            }
            true
        });
        out.push(set);
        Ok(())
    })?;
    Ok(out)
}

/// Which way [`top_k`] found its cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Path {
    /// `k = 0` or `k ≥ total`.
    Trivial,
    /// Direct selection on a copy of the keys.
    Small,
    /// Sampled lower bound, candidates, exact selection among them.
    Sampled,
    /// The sampled bound failed; radix select.
    Radix,
}

/// The positions of the `k` largest `|x|` over all parts (ties to the lower position in
/// sequence order), one increasing set per part. `k` above the total keeps everything.
pub(crate) fn top_k<P: Parts + ?Sized>(parts: &P, k: usize) -> Result<Vec<Vec<u32>>> {
    Ok(top_k_path(parts, k)?.0)
}

/// [`top_k`], also saying which path it took.
pub(crate) fn top_k_path<P: Parts + ?Sized>(parts: &P, k: usize) -> Result<(Vec<Vec<u32>>, Path)> {
    let lens = parts.lens();
    check_lens(&lens)?;
    let total: usize = lens.iter().sum();
    if k == 0 {
        return Ok((vec![Vec::new(); lens.len()], Path::Trivial));
    }
    if k >= total {
        let all = lens.iter().map(|&n| (0..n as u32).collect()).collect();
        return Ok((all, Path::Trivial));
    }
    if total <= SMALL {
        let mut keys = Vec::with_capacity(total);
        parts.visit(&mut |_, x| {
            keys.extend(x.iter().map(|&v| key(v)));
            Ok(())
        })?;
        let cut = cut_of(&mut keys, k);
        return Ok((apply_cut(parts, cut, k)?, Path::Small));
    }
    let (lower, cap) = sample_lower_bound(parts, total, k)?;
    if let Some(c) = gather_ge(parts, lower, cap)? {
        if c.len() >= k {
            return Ok((c.select(k), Path::Sampled));
        }
    }
    let cut = radix_cut(parts, k)?;
    Ok((apply_cut(parts, cut, k)?, Path::Radix))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: stable sort by |x| descending (ties keep the lower flat position).
    fn naive(parts: &[&[f32]], k: usize) -> Vec<Vec<u32>> {
        let flat: Vec<(usize, u32, f32)> = parts
            .iter()
            .enumerate()
            .flat_map(|(p, x)| x.iter().enumerate().map(move |(i, &v)| (p, i as u32, v)))
            .collect();
        let mut order: Vec<usize> = (0..flat.len()).collect();
        order.sort_by(|&a, &b| flat[b].2.abs().total_cmp(&flat[a].2.abs()));
        let mut out = vec![Vec::new(); parts.len()];
        for &o in &order[..k.min(flat.len())] {
            out[flat[o].0].push(flat[o].1);
        }
        for s in &mut out {
            s.sort_unstable();
        }
        out
    }

    fn values(n: usize, seed: u64, levels: Option<u32>) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match levels {
                    Some(l) => (u * l as f32).round(),
                    None => u * u * u,
                }
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_on_every_path() {
        let mut paths = std::collections::BTreeSet::new();
        for (n, levels) in [
            (1usize, None),
            (5, Some(2)),
            (100, None),
            (SMALL, Some(3)),
            (SMALL + 1, None),
            (50_000, None),
            (50_000, Some(4)),    // heavy ties: radix fallback
            (70_001, Some(1000)), // moderate ties
        ] {
            let x = values(n, n as u64 + 7, levels);
            for k in [0, 1, 2, n / 100, n / 3, n.saturating_sub(1), n, n + 3] {
                let (got, path) = top_k_path(&[&x[..]][..], k).unwrap();
                assert_eq!(got, naive(&[&x], k), "n {n} k {k} levels {levels:?}");
                paths.insert(path);
            }
        }
        // Every path was exercised.
        for p in [Path::Trivial, Path::Small, Path::Sampled, Path::Radix] {
            assert!(paths.contains(&p), "{p:?} never taken: {paths:?}");
        }
    }

    #[test]
    fn gaussian_like_data_takes_the_sampled_path() {
        let x = values(200_000, 11, None);
        for k in [1, 20, 2_000, 50_000] {
            let (got, path) = top_k_path(&[&x[..]][..], k).unwrap();
            assert_eq!(path, Path::Sampled, "k {k}");
            assert_eq!(got, naive(&[&x], k));
        }
    }

    #[test]
    fn spans_parts_in_order() {
        let a = values(30_000, 1, None);
        let b = values(7, 2, Some(1));
        let c = values(20_000, 3, Some(5));
        let parts: [&[f32]; 3] = [&a, &b, &c];
        for k in [1, 10, 500, 49_000] {
            assert_eq!(top_k(&parts[..], k).unwrap(), naive(&parts, k), "k {k}");
        }
    }

    #[test]
    fn small_k_on_a_long_sequence_takes_the_sampled_path() {
        // 4M elements: a small k puts the sample bound well above k candidates; the cap
        // must follow the bound, or every small k would fall back to the radix select.
        let n = 1 << 22;
        let x = cgfed_core::testkit::random_values(n, 3, 1.0);
        let parts: [&[f32]; 1] = [&x];
        for k in [1, 7, 100, 4_194, 41_943] {
            let (got, path) = top_k_path(&parts[..], k).unwrap();
            assert_eq!(path, Path::Sampled, "k {k}");
            let want = apply_cut(&parts[..], radix_cut(&parts[..], k).unwrap(), k).unwrap();
            assert_eq!(got, want, "k {k}");
        }
    }

    #[test]
    fn strata_are_the_floor_partition() {
        for (total, s) in [
            (1usize, 1usize),
            (10, 3),
            (10, 10),
            (1000, 7),
            (16_777_216, 16_384),
        ] {
            let mut spans = Vec::new();
            let pos = stratified(total, s, |j, span| {
                spans.push((j, span));
                span - 1
            });
            assert_eq!(pos.len(), s);
            for (j, &p) in pos.iter().enumerate() {
                let hi = ((j as u128 + 1) * total as u128 / s as u128) as u64;
                let lo = (j as u128 * total as u128 / s as u128) as u64;
                assert_eq!(p, hi - 1, "total {total} s {s} j {j}");
                assert_eq!(spans[j], (j, hi - lo));
            }
        }
    }

    #[test]
    fn radix_matches_select() {
        let x = values(9_999, 4, Some(50));
        for k in [1, 17, 5_000, 9_998] {
            let cut = radix_cut(&[&x[..]][..], k).unwrap();
            let mut keys: Vec<u32> = x.iter().map(|&v| key(v)).collect();
            assert_eq!(cut, cut_of(&mut keys, k), "k {k}");
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore = "timing; run with --release -- --ignored --nocapture"]
    fn time_paths() {
        let n = 4096 * 4096;
        let x = cgfed_core::testkit::random_values(n, 1, 1e-3);
        let parts: [&[f32]; 1] = [&x];
        let k = n.div_ceil(100);
        for _ in 0..8 {
            let t = Instant::now();
            let c = x.iter().filter(|&&v| key(v) >= 0x3b00_0000).count();
            println!("one counting pass (memory floor) {:?} ({c})", t.elapsed());
            let t = Instant::now();
            let (lower, _) = sample_lower_bound(&parts[..], n, k).unwrap();
            let t1 = t.elapsed();
            let c = gather_ge(&parts[..], lower, k * 2).unwrap().unwrap();
            let t2 = t.elapsed();
            let sets = c.select(k);
            let t3 = t.elapsed();
            let cut = radix_cut(&parts[..], k).unwrap();
            let t4 = t.elapsed();
            let sets2 = apply_cut(&parts[..], cut, k).unwrap();
            let t5 = t.elapsed();
            assert_eq!(sets, sets2);
            println!(
                "sample {:?} gather {:?} ({} cand) select {:?} | radix {:?} apply {:?}",
                t1,
                t2 - t1,
                c.len(),
                t3 - t2,
                t4 - t3,
                t5 - t4
            );
        }
    }
}
