//! Sparse index sets: strictly increasing positions in `0..n` (the kept elements of a
//! sparsified tensor), coded with whichever of three codes is smallest for that set.
//!
//! # Wire form
//!
//! One varint `count·4 + code`, then the body of the code:
//!
//! | code | body | bytes |
//! |---|---|---|
//! | 0 `Bitmap` | one bit per position, LSB first | `⌈n/8⌉` |
//! | 1 `DeltaVarint` | the gaps `i₀, i₁−i₀−1, …` as varints | Σ varint lengths |
//! | 2 `EliasFano` | `count` low parts of `l` bits, then the high parts in unary (bit `hᵢ + i` set) | `⌈(count·l + (n−1)≫l + count)/8⌉`, `l = ⌊log₂(n/count)⌋` |
//!
//! Elias–Fano stays within about 2 bits per index of the information bound
//! `log₂ C(n, k)` ([`information_bound_bits`]) whatever the positions; delta-varint wins
//! for clustered positions and the bitmap for dense sets. The decoder knows `n` from the
//! layout, checks `count ≤ n` before allocating, and rejects out-of-range, repeated or
//! unsorted positions, wrong popcounts, and non-zero padding.

use crate::error::{Error, Result};
use crate::payload::PayloadBuilder;
use crate::wire::bits::BitWriter;
use crate::wire::{varint, ByteReader};

/// Which code an index set was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexCode {
    /// One bit per position.
    Bitmap,
    /// Gaps between positions as LEB128 varints.
    DeltaVarint,
    /// Elias–Fano: low bits packed, high bits in unary.
    EliasFano,
}

impl IndexCode {
    fn tag(self) -> u64 {
        match self {
            IndexCode::Bitmap => 0,
            IndexCode::DeltaVarint => 1,
            IndexCode::EliasFano => 2,
        }
    }
}

/// Low-bit width of Elias–Fano for `k` of `n` positions.
fn ef_low_bits(n: usize, k: usize) -> u32 {
    if k == 0 || n <= k {
        0
    } else {
        (n / k).ilog2()
    }
}

/// Body bits of Elias–Fano for `k` of `n` positions.
fn ef_bits(n: usize, k: usize) -> usize {
    if k == 0 {
        return 0;
    }
    let l = ef_low_bits(n, k);
    k * l as usize + ((n - 1) >> l) + k
}

fn delta_len(idx: &[u32]) -> usize {
    let mut prev: i64 = -1;
    idx.iter()
        .map(|&i| {
            let gap = (i as i64 - prev - 1) as u64;
            prev = i as i64;
            varint::len(gap)
        })
        .sum()
}

/// Body length in bytes of each code for `idx` out of `n`: `[bitmap, delta, elias-fano]`.
pub fn body_lens(idx: &[u32], n: usize) -> [usize; 3] {
    [
        n.div_ceil(8),
        delta_len(idx),
        ef_bits(n, idx.len()).div_ceil(8),
    ]
}

/// The cheapest code for `idx` out of `n` and the total bytes it takes (count included).
pub fn cheapest(idx: &[u32], n: usize) -> (IndexCode, usize) {
    let [bm, dv, ef] = body_lens(idx, n);
    let (code, body) = if ef <= dv && ef <= bm {
        (IndexCode::EliasFano, ef)
    } else if dv <= bm {
        (IndexCode::DeltaVarint, dv)
    } else {
        (IndexCode::Bitmap, bm)
    };
    (
        code,
        varint::len((idx.len() as u64) << 2 | code.tag()) + body,
    )
}

/// `log₂ C(n, k)`: the fewest bits any code can spend on a `k`-subset of `0..n`.
pub fn information_bound_bits(n: usize, k: usize) -> f64 {
    let k = k.min(n);
    let k = k.min(n - k);
    (1..=k)
        .map(|i| ((n - k + i) as f64 / i as f64).log2())
        .sum()
}

/// Append `idx` (strictly increasing, each `< n`) with the cheapest code; returns it.
///
/// # Errors
/// [`Error::InvalidInput`] when `idx` is not strictly increasing or holds a position `≥ n`,
/// or `n` exceeds `u32::MAX + 1`.
pub fn put_indices(out: &mut PayloadBuilder, idx: &[u32], n: usize) -> Result<IndexCode> {
    if n > u32::MAX as usize + 1 {
        return Err(Error::InvalidInput(format!(
            "index sets over {n} positions exceed the u32 range"
        )));
    }
    if let Some(w) = idx.windows(2).find(|w| w[0] >= w[1]) {
        return Err(Error::InvalidInput(format!(
            "indices must be strictly increasing: {} then {}",
            w[0], w[1]
        )));
    }
    if let Some(&last) = idx.last() {
        if last as usize >= n {
            return Err(Error::InvalidInput(format!(
                "index {last} out of range for {n} positions"
            )));
        }
    }
    let (code, _) = cheapest(idx, n);
    let buf = out.buffer_mut();
    varint::encode((idx.len() as u64) << 2 | code.tag(), buf);
    match code {
        IndexCode::Bitmap => {
            let start = buf.len();
            buf.resize(start + n.div_ceil(8), 0);
            for &i in idx {
                buf[start + i as usize / 8] |= 1 << (i % 8);
            }
        }
        IndexCode::DeltaVarint => {
            let mut prev: i64 = -1;
            for &i in idx {
                varint::encode((i as i64 - prev - 1) as u64, buf);
                prev = i as i64;
            }
        }
        IndexCode::EliasFano if idx.is_empty() => {} // an empty set has an empty body
        IndexCode::EliasFano => {
            let k = idx.len();
            let l = ef_low_bits(n, k);
            let mut w = BitWriter::new(buf);
            if l > 0 {
                for &i in idx {
                    w.put(i & ((1u32 << l) - 1), l);
                }
            }
            // Unary high parts: for the j-th index, zeros for each step its high part rises
            // from the previous one, then a one.
            let mut prev_high = 0usize;
            for &i in idx {
                let high = (i as usize) >> l;
                let mut zeros = high - prev_high;
                while zeros >= 32 {
                    w.put(0, 32);
                    zeros -= 32;
                }
                w.put(1 << zeros, zeros as u32 + 1);
                prev_high = high;
            }
            // Zero bits up to the fixed length of the high part.
            let written_high = prev_high + k;
            let mut pad = ((n - 1) >> l) + k - written_high;
            while pad >= 32 {
                w.put(0, 32);
                pad -= 32;
            }
            w.put(0, pad as u32);
            w.finish();
        }
    }
    Ok(code)
}

/// Read an index set of positions in `0..n` written by [`put_indices`].
///
/// # Errors
/// [`Error::MalformedPayload`] for a count above `n`, an unknown code, truncation, positions
/// out of range or not strictly increasing, a bitmap whose popcount differs from the count,
/// or non-zero padding.
pub fn read_indices(r: &mut ByteReader<'_>, n: usize) -> Result<Vec<u32>> {
    let head = r.varint()?;
    let (k, tag) = (head >> 2, head & 3);
    if k > n as u64 {
        return Err(Error::malformed(format!(
            "index count {k} exceeds the {n} positions of the tensor"
        )));
    }
    let k = k as usize;
    match tag {
        0 => read_bitmap(r, n, k),
        1 => read_delta(r, n, k),
        2 => read_elias_fano(r, n, k),
        t => Err(Error::malformed(format!("unknown index code {t}"))),
    }
}

fn read_bitmap(r: &mut ByteReader<'_>, n: usize, k: usize) -> Result<Vec<u32>> {
    let b = r.bytes(n.div_ceil(8))?;
    let ones: usize = b.iter().map(|x| x.count_ones() as usize).sum();
    if ones != k {
        return Err(Error::malformed(format!(
            "bitmap has {ones} positions set, its count says {k}"
        )));
    }
    if !n.is_multiple_of(8) && b[b.len() - 1] >> (n % 8) != 0 {
        return Err(Error::malformed("bitmap sets positions beyond the tensor"));
    }
    let mut out = Vec::with_capacity(k);
    for (byte_i, &byte) in b.iter().enumerate() {
        let mut x = byte;
        while x != 0 {
            let bit = x.trailing_zeros();
            out.push((byte_i * 8) as u32 + bit);
            x &= x - 1;
        }
    }
    Ok(out)
}

fn read_delta(r: &mut ByteReader<'_>, n: usize, k: usize) -> Result<Vec<u32>> {
    // Each gap takes at least one byte: bound the allocation by what is there.
    if k > r.remaining() {
        return Err(Error::malformed(format!(
            "{k} delta-coded indices cannot fit in {} bytes",
            r.remaining()
        )));
    }
    let mut out = Vec::with_capacity(k);
    let mut next: u64 = 0; // smallest position allowed next
    for _ in 0..k {
        let pos = next
            .checked_add(r.varint()?)
            .filter(|&p| p < n as u64)
            .ok_or_else(|| Error::malformed(format!("index out of range for {n} positions")))?;
        out.push(pos as u32);
        next = pos + 1;
    }
    Ok(out)
}

fn read_elias_fano(r: &mut ByteReader<'_>, n: usize, k: usize) -> Result<Vec<u32>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let l = ef_low_bits(n, k);
    let total_bits = ef_bits(n, k);
    let body = r.bytes(total_bits.div_ceil(8))?;
    let bit = |p: usize| (body[p / 8] >> (p % 8)) & 1;
    let mut out = Vec::with_capacity(k);
    let low_bits = k * l as usize;
    let mut pos = low_bits; // reading the unary high parts
    let mut high = 0usize;
    for j in 0..k {
        // Skip zeros up to the next one.
        loop {
            if pos >= total_bits {
                return Err(Error::malformed(format!(
                    "Elias–Fano high bits hold {j} of {k} indices"
                )));
            }
            if bit(pos) == 1 {
                pos += 1;
                break;
            }
            high += 1;
            pos += 1;
        }
        let mut low = 0usize;
        for b in 0..l as usize {
            low |= (bit(j * l as usize + b) as usize) << b;
        }
        let v = (high << l) | low;
        if v >= n {
            return Err(Error::malformed(format!(
                "index {v} out of range for {n} positions"
            )));
        }
        if out.last().is_some_and(|&p: &u32| p as usize >= v) {
            return Err(Error::malformed(
                "Elias–Fano indices not strictly increasing",
            ));
        }
        out.push(v as u32);
    }
    // The rest of the high part and the byte padding must be zero.
    if (pos..body.len() * 8).any(|p| bit(p) == 1) {
        return Err(Error::malformed(
            "non-zero bits after the Elias–Fano indices",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    fn encode(idx: &[u32], n: usize) -> (IndexCode, Vec<u8>) {
        let mut p = Payload::builder("t").unwrap();
        let code = put_indices(&mut p, idx, n).unwrap();
        let bytes = p.finish().into_bytes();
        (code, bytes[Payload::header_len("t")..].to_vec())
    }

    fn decode(body: &[u8], n: usize) -> Result<Vec<u32>> {
        let mut r = ByteReader::new(body);
        let v = read_indices(&mut r, n)?;
        r.finish()?;
        Ok(v)
    }

    fn lcg_subset(n: usize, k: usize, seed: u64) -> Vec<u32> {
        let mut s = seed | 1;
        let mut set = std::collections::BTreeSet::new();
        while set.len() < k {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            set.insert(((s >> 33) % n as u64) as u32);
        }
        set.into_iter().collect()
    }

    #[test]
    fn every_code_roundtrips_and_the_cheapest_is_chosen() {
        let cases: Vec<(usize, Vec<u32>)> = vec![
            (1, vec![]),
            (100, vec![]),
            (4096 * 4096, vec![]),
            (1, vec![0]),
            (10, vec![9]),
            (64, (0..64).collect()),
            (100, (0..50).map(|i| i * 2).collect()),
            (1000, lcg_subset(1000, 10, 3)),
            (4096 * 4096, lcg_subset(4096 * 4096, 1678, 5)),
            (100_000, (2000..2400).collect()), // clustered: delta-varint
        ];
        for (n, idx) in cases {
            let (code, body) = encode(&idx, n);
            assert_eq!(decode(&body, n).unwrap(), idx, "n {n} code {code:?}");
            let (best, len) = cheapest(&idx, n);
            assert_eq!((best, len), (code, body.len()));
            let lens = body_lens(&idx, n);
            assert!(lens
                .iter()
                .all(|&l| len <= l + varint::len((idx.len() as u64) << 2 | 3)));
        }
        assert_eq!(
            encode(&(0..64).collect::<Vec<_>>(), 64).0,
            IndexCode::Bitmap
        );
        assert_eq!(
            encode(&(2000..2400).collect::<Vec<_>>(), 100_000).0,
            IndexCode::DeltaVarint
        );
        assert_eq!(
            encode(&lcg_subset(1000, 10, 3), 1000).0,
            IndexCode::EliasFano
        );
    }

    #[test]
    fn elias_fano_is_near_the_information_bound() {
        let n = 4096 * 4096;
        let k = n / 100;
        let idx = lcg_subset(n, k, 9);
        let bits = 8.0 * cheapest(&idx, n).1 as f64;
        let bound = information_bound_bits(n, k);
        // EF costs at most 2 + ceil(log2(n/k)) bits per index; the bound is ~log2(n/k)+1.44.
        assert!(bits >= bound, "{bits} < {bound}");
        assert!(
            bits / k as f64 <= bound / k as f64 + 1.0,
            "{bits} vs {bound}"
        );
    }

    #[test]
    fn writer_rejects_bad_sets() {
        let mut p = Payload::builder("t").unwrap();
        assert!(put_indices(&mut p, &[3, 3], 10).is_err());
        assert!(put_indices(&mut p, &[4, 2], 10).is_err());
        assert!(put_indices(&mut p, &[10], 10).is_err());
    }

    #[test]
    fn reader_rejects_malformed_sets() {
        let n = 100;
        // Count above n (an absurd length), unknown code, truncations.
        let mut b = Vec::new();
        varint::encode((1u64 << 40) << 2 | 1, &mut b);
        assert!(decode(&b, n).is_err());
        let mut b = Vec::new();
        varint::encode(3 << 2 | 3, &mut b);
        assert!(decode(&b, n).is_err());
        // Out of range via delta: gap lands at 100.
        let mut b = Vec::new();
        varint::encode(1 << 2 | 1, &mut b);
        varint::encode(100, &mut b);
        assert!(decode(&b, n).is_err());
        // Bitmap with the wrong popcount, and with a bit beyond n.
        let mut b = Vec::new();
        varint::encode(2 << 2, &mut b);
        b.extend(vec![0u8; 13]);
        b[1] = 1;
        assert!(decode(&b, n).is_err());
        let mut b = Vec::new();
        varint::encode(1 << 2, &mut b);
        let mut body = vec![0u8; 13];
        body[12] = 0x80; // position 103 >= 100
        b.extend(body);
        assert!(decode(&b, n).is_err());
        // Every truncation and every single-byte corruption of a real set either errors or
        // decodes to a valid set; never panics.
        for idx in [lcg_subset(n, 7, 1), (0..60).collect(), (10..20).collect()] {
            let (_, body) = encode(&idx, n);
            for cut in 0..body.len() {
                assert!(decode(&body[..cut], n).is_err());
            }
            for i in 0..body.len() {
                for v in [0u8, 0xff, body[i] ^ 1, body[i] ^ 0x80] {
                    let mut b = body.clone();
                    b[i] = v;
                    if let Ok(set) = decode(&b, n) {
                        assert!(set.windows(2).all(|w| w[0] < w[1]));
                        assert!(set.iter().all(|&p| (p as usize) < n));
                    }
                }
            }
        }
    }

    #[test]
    fn information_bound_values() {
        assert_eq!(information_bound_bits(10, 0), 0.0);
        assert!((information_bound_bits(10, 1) - 10f64.log2()).abs() < 1e-12);
        assert!((information_bound_bits(10, 5) - 252f64.log2()).abs() < 1e-9);
        assert!((information_bound_bits(10, 10)).abs() < 1e-12);
    }
}
