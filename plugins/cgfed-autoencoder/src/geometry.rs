//! How an update becomes autoencoder inputs: chunks (default, pca) or one packed image
//! (the paper preset).
//!
//! **Chunks.** Each tensor, flattened in its row-major order, is cut into chunks of
//! `chunk` elements; a tensor's last chunk is zero-padded. Chunks never straddle two
//! tensors, so a tensor can fall back on its own. Chunk positions count from 0 over the
//! whole layout in layout order (the position embeddings' index).
//!
//! **Packed image** (the paper's layout). Every tensor becomes a column block: a matrix of
//! shape `a × b` (3-D and up: `a × rest`) is placed as `max(a,b)` rows by `min(a,b)`
//! columns, transposed when `a < b`; a vector is one column. Blocks sit side by side in
//! layout order from column 0; the image has `H` = the longest block rounded up to a
//! multiple of 64 and `W` = the total columns rounded up to a multiple of 64, zeros
//! elsewhere. With LoRA on q/k/v/o this puts each `A` (r × d_in) transposed and each `B`
//! (d_out × r) as is, r columns each: for LLaMA-7B at r = 8 that is 4096 × 2048, as in the
//! paper. GQA's k and v projections have `B` of `d_kv × r` with `d_kv < d_model`: their
//! blocks are shorter and the rest of their columns is zero padding (SmolLM2-135M:
//! 576 × 1920, of which 192-row k/v `B` blocks leave 384 zero rows in their 16 columns).

use cgfed_core::{Error, Layout, Result};

/// The chunk grid of a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunking {
    /// Elements per chunk.
    pub chunk: usize,
    /// Per tensor: first chunk position and element count.
    pub tensors: Vec<(usize, usize)>,
    /// Chunks in the layout.
    pub total: usize,
}

impl Chunking {
    /// The chunks of `layout`.
    pub fn new(layout: &Layout, chunk: usize) -> Self {
        let mut tensors = Vec::with_capacity(layout.len());
        let mut total = 0;
        for spec in layout.specs() {
            let n = spec.numel();
            tensors.push((total, n));
            total += n.div_ceil(chunk);
        }
        Self {
            chunk,
            tensors,
            total,
        }
    }

    /// Number of chunks of tensor `t`.
    pub fn chunks_of(&self, t: usize) -> usize {
        self.tensors[t].1.div_ceil(self.chunk)
    }
}

/// Where one tensor sits in the packed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// First column.
    pub col0: usize,
    /// Rows the block spans (its long side).
    pub rows: usize,
    /// Columns the block spans (its short side).
    pub cols: usize,
    /// The tensor's own row count `a` and column count `b` (row-major `a × b`).
    pub a: usize,
    /// See [`a`](Self::a).
    pub b: usize,
    /// Whether the block is the tensor transposed (`a < b`).
    pub transposed: bool,
}

/// The packed image of a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Packing {
    /// Image height (a multiple of 64).
    pub h: usize,
    /// Image width (a multiple of 64).
    pub w: usize,
    /// One placement per tensor, in layout order.
    pub placements: Vec<Placement>,
}

impl Packing {
    /// The paper's packing of `layout` (see the module docs).
    ///
    /// # Errors
    /// An empty layout, or an image over 2²⁸ pixels.
    pub fn new(layout: &Layout) -> Result<Self> {
        let mut col = 0;
        let mut h = 0;
        let mut placements = Vec::with_capacity(layout.len());
        for spec in layout.specs() {
            let n = spec.numel();
            let (a, b) = match spec.shape.len() {
                0 | 1 => (n, 1),
                _ => (spec.shape[0], n / spec.shape[0].max(1)),
            };
            let transposed = a < b;
            let (rows, cols) = if transposed { (b, a) } else { (a, b) };
            placements.push(Placement {
                col0: col,
                rows,
                cols,
                a,
                b,
                transposed,
            });
            col += cols;
            h = h.max(rows);
        }
        let h = h.div_ceil(64) * 64;
        let w = col.div_ceil(64) * 64;
        if h == 0 || w == 0 || h.saturating_mul(w) > 1 << 28 {
            return Err(Error::InvalidInput(format!(
                "cannot pack this layout into an image: {h} × {w}"
            )));
        }
        Ok(Self { h, w, placements })
    }

    /// Write tensor `t`'s values, each multiplied by `scale`, into `image` (`h × w`).
    pub fn put(&self, t: usize, values: &[f32], scale: f32, image: &mut [f32]) {
        let p = &self.placements[t];
        for i in 0..p.a {
            for j in 0..p.b {
                let (r, c) = if p.transposed { (j, i) } else { (i, j) };
                image[r * self.w + p.col0 + c] = values[i * p.b + j] * scale;
            }
        }
    }

    /// Read tensor `t`'s values back out of `image`.
    pub fn get(&self, t: usize, image: &[f32]) -> Vec<f32> {
        let p = &self.placements[t];
        let mut out = vec![0.0; p.a * p.b];
        for i in 0..p.a {
            for j in 0..p.b {
                let (r, c) = if p.transposed { (j, i) } else { (i, j) };
                out[i * p.b + j] = image[r * self.w + p.col0 + c];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgfed_core::TensorSpec;

    fn layout() -> Layout {
        let s = |n: &str, sh: &[usize]| TensorSpec {
            name: n.into(),
            shape: sh.to_vec(),
        };
        Layout::new(vec![
            s("a.lora_A", &[8, 576]),
            s("b.lora_B", &[192, 8]),
            s("c.bias", &[100]),
        ])
        .unwrap()
    }

    #[test]
    fn chunking_never_straddles_tensors() {
        let c = Chunking::new(&layout(), 1024);
        assert_eq!(c.tensors, vec![(0, 4608), (5, 1536), (7, 100)]);
        assert_eq!(c.total, 8);
        assert_eq!(c.chunks_of(0), 5);
    }

    #[test]
    fn packing_is_the_papers_layout_and_inverts() {
        let l = layout();
        let p = Packing::new(&l).unwrap();
        assert_eq!((p.h, p.w), (576, 64));
        assert!(p.placements[0].transposed);
        assert_eq!((p.placements[0].rows, p.placements[0].cols), (576, 8));
        assert_eq!(p.placements[1].col0, 8);
        assert_eq!(p.placements[2].col0, 16);
        let mut img = vec![0.0; p.h * p.w];
        let vals: Vec<Vec<f32>> = l
            .specs()
            .iter()
            .enumerate()
            .map(|(t, s)| (0..s.numel()).map(|i| (t * 10_000 + i) as f32).collect())
            .collect();
        for (t, v) in vals.iter().enumerate() {
            p.put(t, v, 1.0, &mut img);
        }
        for (t, v) in vals.iter().enumerate() {
            assert_eq!(&p.get(t, &img), v);
        }
        // A's row 1, column 0 lands at image row 0, column 1 (transposed).
        assert_eq!(img[1], 576.0);
    }
}
