//! Dense kernels on row-major f32 slices for the power iteration.
//!
//! Conventions: a matrix `M` of `n` rows and `cols` columns is the row-major slice
//! `m[i * cols + k]`. Factor matrices are kept *column-major* while computing (column `j`
//! of `P` is `pt[j * n .. (j + 1) * n]`, column `j` of `Q` is `qt[j * cols .. (j + 1) *
//! cols]`), so every inner loop runs over contiguous memory. The loops use independent
//! accumulators or element-wise updates so that the compiler vectorises them; all
//! reductions run in a fixed order, so results are deterministic.
//!
//! Callers guarantee the slice lengths (`m.len() == n * cols`, `pt.len() == r * n`,
//! `qt.len() == r * cols`); the kernels never index past them.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A column whose norm after removing its projections on the previous columns is at most
/// this fraction of its norm before is numerically in their span and becomes zero.
pub(crate) const DROP_TOL: f64 = 1e-6;

/// `a·b` over the common length, 8 independent f32 accumulators.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    reduce8(&acc) + tail
}

/// `[a·q₀, a·q₁, a·q₂, a·q₃]` for a block of four columns stored interleaved
/// (`q4[4·k + t]` is element `k` of column `t`): each element of `a` is broadcast against
/// four values, eight elements at a time into independent accumulators, so the compiler
/// keeps the four columns in the lanes of one vector register.
#[inline]
fn dot_block4(a: &[f32], q4: &[f32]) -> [f32; 4] {
    let mut acc = [[0f32; 4]; 8];
    let ac = a.chunks_exact(8);
    let qc = q4.chunks_exact(32);
    let mut tail = [0f32; 4];
    for (&x, q) in ac.remainder().iter().zip(qc.remainder().chunks_exact(4)) {
        for (t, &qv) in tail.iter_mut().zip(q) {
            *t += x * qv;
        }
    }
    for (x, q) in ac.zip(qc) {
        for ((acc, &xs), qs) in acc.iter_mut().zip(x).zip(q.chunks_exact(4)) {
            for (acc, &qv) in acc.iter_mut().zip(qs) {
                *acc += xs * qv;
            }
        }
    }
    let mut out = [0f32; 4];
    for (t, o) in out.iter_mut().enumerate() {
        let a = |s: usize| acc[s][t];
        *o = (((a(0) + a(4)) + (a(1) + a(5))) + ((a(2) + a(6)) + (a(3) + a(7)))) + tail[t];
    }
    out
}

#[inline]
fn reduce8(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// `P = M·Q`: `pt` (column-major `n × r`) from `m` (`n × cols`) and `qt` (column-major
/// `cols × r`). Columns go in blocks of four (copied interleaved, `cols·r` values) through
/// [`dot_block4`]; the last `r mod 4` through [`dot`].
pub(crate) fn mul_q(m: &[f32], n: usize, cols: usize, qt: &[f32], r: usize, pt: &mut [f32]) {
    let blocks = r / 4;
    let mut q4 = vec![0f32; blocks * 4 * cols];
    for (b, block) in q4.chunks_exact_mut(4 * cols).enumerate() {
        for t in 0..4 {
            let col = &qt[(4 * b + t) * cols..(4 * b + t + 1) * cols];
            for (dst, &v) in block.chunks_exact_mut(4).zip(col) {
                dst[t] = v;
            }
        }
    }
    let col = |j: usize| &qt[j * cols..(j + 1) * cols];
    for (i, row) in m.chunks_exact(cols).take(n).enumerate() {
        for (b, block) in q4.chunks_exact(4 * cols).enumerate() {
            for (t, v) in dot_block4(row, block).into_iter().enumerate() {
                pt[(4 * b + t) * n + i] = v;
            }
        }
        for j in 4 * blocks..r {
            pt[j * n + i] = dot(row, col(j));
        }
    }
}

/// `y += c0·x0 + c1·x1 + c2·x2 + c3·x3`, element-wise.
#[inline]
fn axpy4(y: &mut [f32], c: [f32; 4], x: [&[f32]; 4]) {
    let [x0, x1, x2, x3] = x;
    for ((((y, a), b), d), e) in y.iter_mut().zip(x0).zip(x1).zip(x2).zip(x3) {
        *y += ((c[0] * a + c[1] * b) + c[2] * d) + c[3] * e;
    }
}

/// `y += c·x`, element-wise.
#[inline]
fn axpy(y: &mut [f32], c: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += c * x;
    }
}

/// `Q = Mᵀ·P`: `qt` (column-major `cols × r`) from `m` (`n × cols`) and `pt`
/// (column-major `n × r`). Rows of `M` are taken four at a time so each column of `Q` is
/// loaded and stored once per four rows.
pub(crate) fn mul_pt(m: &[f32], n: usize, cols: usize, pt: &[f32], r: usize, qt: &mut [f32]) {
    qt.fill(0.0);
    let row = |i: usize| &m[i * cols..(i + 1) * cols];
    let mut i = 0;
    while i + 4 <= n {
        let rows = [row(i), row(i + 1), row(i + 2), row(i + 3)];
        for (j, q) in qt.chunks_exact_mut(cols).take(r).enumerate() {
            let p = &pt[j * n + i..j * n + i + 4];
            let c = [p[0], p[1], p[2], p[3]];
            if c != [0.0; 4] {
                axpy4(q, c, rows);
            }
        }
        i += 4;
    }
    while i < n {
        for (j, q) in qt.chunks_exact_mut(cols).take(r).enumerate() {
            let c = pt[j * n + i];
            if c != 0.0 {
                axpy(q, c, row(i));
            }
        }
        i += 1;
    }
}

/// `y = c0·x0 + c1·x1 + c2·x2 + c3·x3`, element-wise (writes without reading `y`).
#[inline]
fn set4(y: &mut [f32], c: [f32; 4], x: [&[f32]; 4]) {
    let [x0, x1, x2, x3] = x;
    for ((((y, a), b), d), e) in y.iter_mut().zip(x0).zip(x1).zip(x2).zip(x3) {
        *y = ((c[0] * a + c[1] * b) + c[2] * d) + c[3] * e;
    }
}

/// `y = c·x`, element-wise.
#[inline]
fn set(y: &mut [f32], c: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = c * x;
    }
}

/// `M̂ = P·Qᵀ` (`n × cols`, row-major) from `p` (row-major `n × r`, as on the wire) and
/// `qt` (column-major `cols × r`). The first group of columns *writes* each output row and
/// the others add to it, so the fresh output pages are written before they are read (one
/// page fault per page instead of a read fault and a copy-on-write fault).
pub(crate) fn reconstruct(p: &[f32], qt: &[f32], n: usize, cols: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * cols];
    let col = |j: usize| &qt[j * cols..(j + 1) * cols];
    for (orow, prow) in out.chunks_exact_mut(cols).zip(p.chunks_exact(r)).take(n) {
        let mut j = 0;
        while j + 4 <= r {
            let c = [prow[j], prow[j + 1], prow[j + 2], prow[j + 3]];
            let x = [col(j), col(j + 1), col(j + 2), col(j + 3)];
            if j == 0 {
                set4(orow, c, x);
            } else {
                axpy4(orow, c, x);
            }
            j += 4;
        }
        while j < r {
            if j == 0 {
                set(orow, prow[j], col(j));
            } else {
                axpy(orow, prow[j], col(j));
            }
            j += 1;
        }
    }
    out
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Orthonormalise the `r` columns of `pt` (column-major `n × r`) in place: modified
/// Gram–Schmidt in f64 with a second orthogonalisation pass ("twice is enough"). A column
/// that is zero, or whose remainder is at most [`DROP_TOL`] of its norm (numerically in
/// the span of the previous ones), becomes exactly zero instead of being divided by ~0.
/// Every test is relative, so the result does not depend on the scale of the input.
pub(crate) fn orthonormalise(pt: &mut [f32], n: usize, r: usize) {
    let mut w: Vec<f64> = pt.iter().map(|&v| f64::from(v)).collect();
    let mut alive = vec![false; r];
    for j in 0..r {
        let (done, rest) = w.split_at_mut(j * n);
        let v = &mut rest[..n];
        let before = dot64(v, v).sqrt();
        if before > 0.0 {
            for _ in 0..2 {
                for (l, q) in done.chunks_exact(n).enumerate() {
                    if alive[l] {
                        let d = dot64(q, v);
                        for (x, y) in v.iter_mut().zip(q) {
                            *x -= d * y;
                        }
                    }
                }
            }
            let after = dot64(v, v).sqrt();
            if after > DROP_TOL * before {
                let s = 1.0 / after;
                v.iter_mut().for_each(|x| *x *= s);
                alive[j] = true;
            }
        }
        if !alive[j] {
            v.fill(0.0);
        }
    }
    for (o, v) in pt.iter_mut().zip(&w) {
        *o = *v as f32;
    }
}

/// Scale every column of `qt` (column-major, columns of `len` values) to unit norm (the
/// next `M·Q` then cannot overflow and its scale does not matter: `P` is orthonormalised
/// afterwards). A column that is zero or holds a non-finite value is replaced by a fresh
/// Gaussian column from `rng`, so a direction lost in one round (a zero update) can come
/// back in the next.
pub(crate) fn normalise_columns(qt: &mut [f32], len: usize, rng: &mut ChaCha8Rng) {
    for c in qt.chunks_exact_mut(len) {
        let mut norm = column_norm(c);
        if !(norm > 0.0 && norm.is_finite()) {
            fill_gaussian(rng, c);
            norm = column_norm(c);
        }
        if norm > 0.0 && norm.is_finite() {
            let s = 1.0 / norm;
            c.iter_mut().for_each(|x| *x = (f64::from(*x) * s) as f32);
        } else {
            // Probability zero for a Gaussian draw; keep the column well defined anyway.
            c.fill(0.0);
            if let Some(first) = c.first_mut() {
                *first = 1.0;
            }
        }
    }
}

/// Euclidean norm in f64 (NaN or infinite when the column holds a non-finite value).
fn column_norm(c: &[f32]) -> f64 {
    c.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Fill `out` with independent standard normal values (Box–Muller on ChaCha8 draws).
pub(crate) fn fill_gaussian(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    let mut pairs = out.chunks_exact_mut(2);
    for c in &mut pairs {
        let (a, b) = normal_pair(rng);
        c[0] = a;
        c[1] = b;
    }
    if let [last] = pairs.into_remainder() {
        *last = normal_pair(rng).0;
    }
}

fn normal_pair(rng: &mut ChaCha8Rng) -> (f32, f32) {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.random::<f64>();
    let rad = (-2.0 * u1.ln()).sqrt();
    let th = std::f64::consts::TAU * u2;
    ((rad * th.cos()) as f32, (rad * th.sin()) as f32)
}

/// Largest `|v|` (0 for an empty slice).
pub(crate) fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, &x| a.max(x.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn naive_mul(m: &[f32], n: usize, cols: usize, q: &[f32], r: usize) -> Vec<f64> {
        // P[i][j] = Σ_k M[i][k] Q[k][j] with Q column-major.
        let mut p = vec![0f64; n * r];
        for i in 0..n {
            for j in 0..r {
                p[j * n + i] = (0..cols)
                    .map(|k| f64::from(m[i * cols + k]) * f64::from(q[j * cols + k]))
                    .sum();
            }
        }
        p
    }

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = vec![0f32; len];
        fill_gaussian(&mut rng, &mut v);
        v
    }

    #[test]
    fn kernels_match_naive_products() {
        for &(n, cols, r) in &[(1, 1, 1), (5, 3, 2), (9, 17, 4), (13, 33, 7), (4, 8, 5)] {
            let m = data(n * cols, 1);
            let qt = data(cols * r, 2);
            let mut pt = vec![0f32; n * r];
            mul_q(&m, n, cols, &qt, r, &mut pt);
            for (a, b) in pt.iter().zip(naive_mul(&m, n, cols, &qt, r)) {
                assert!((f64::from(*a) - b).abs() < 1e-4, "{a} vs {b}");
            }
            // Mᵀ·P: the same naive product on Mᵀ.
            let mut mt = vec![0f32; n * cols];
            for i in 0..n {
                for k in 0..cols {
                    mt[k * n + i] = m[i * cols + k];
                }
            }
            let mut q2 = vec![0f32; cols * r];
            mul_pt(&m, n, cols, &pt, r, &mut q2);
            for (a, b) in q2.iter().zip(naive_mul(&mt, cols, n, &pt, r)) {
                assert!((f64::from(*a) - b).abs() < 1e-3, "{a} vs {b}");
            }
            // P·Qᵀ with P row-major.
            let mut p_rows = vec![0f32; n * r];
            for i in 0..n {
                for j in 0..r {
                    p_rows[i * r + j] = pt[j * n + i];
                }
            }
            let out = reconstruct(&p_rows, &qt, n, cols, r);
            for i in 0..n {
                for k in 0..cols {
                    let want: f64 = (0..r)
                        .map(|j| f64::from(pt[j * n + i]) * f64::from(qt[j * cols + k]))
                        .sum();
                    assert!((f64::from(out[i * cols + k]) - want).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn orthonormalise_drops_dependent_and_zero_columns() {
        let n = 6;
        let a = data(n, 3);
        let mut pt = Vec::new();
        pt.extend_from_slice(&a);
        pt.extend(a.iter().map(|x| 2.0 * x)); // dependent
        pt.extend(std::iter::repeat_n(0.0, n)); // zero
        pt.extend(data(n, 4));
        orthonormalise(&mut pt, n, 4);
        let col = |j: usize| &pt[j * n..(j + 1) * n];
        let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!((d(col(0), col(0)) - 1.0).abs() < 1e-6);
        assert!(col(1).iter().all(|&x| x == 0.0));
        assert!(col(2).iter().all(|&x| x == 0.0));
        assert!((d(col(3), col(3)) - 1.0).abs() < 1e-6);
        assert!(d(col(0), col(3)).abs() < 1e-6);
        // Scale does not matter.
        let mut tiny: Vec<f32> = data(2 * n, 5).iter().map(|x| x * 1e-35).collect();
        orthonormalise(&mut tiny, n, 2);
        assert!((d(&tiny[..n], &tiny[..n]) - 1.0).abs() < 1e-6);
        assert!(d(&tiny[..n], &tiny[n..]).abs() < 1e-6);
    }

    #[test]
    fn normalise_replaces_zero_columns() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut qt = vec![0f32; 10];
        qt[5..].copy_from_slice(&[3e30, 4e30, 0.0, 0.0, 0.0]);
        normalise_columns(&mut qt, 5, &mut rng);
        let n0: f32 = qt[..5].iter().map(|x| x * x).sum();
        assert!((n0 - 1.0).abs() < 1e-5, "{n0}");
        assert!((qt[5] - 0.6).abs() < 1e-6 && (qt[6] - 0.8).abs() < 1e-6);
    }
}
