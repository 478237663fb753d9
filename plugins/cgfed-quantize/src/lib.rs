//! # cgfed-quantize
//!
//! Quantization compressors for cgfed, registered with the core registry and picked by
//! name in a config:
//!
//! | name | what | bits per element (body) |
//! |---|---|---|
//! | [`fp16`] | IEEE half precision, round to nearest | 16 |
//! | [`bf16`] | bfloat16, round to nearest even | 16 |
//! | [`kbit`] | block-wise absmax quantization to 2^bits symmetric levels | `bits` + 32/`block_size` |
//! | [`qsgd`] | QSGD (Alistarh et al. 2017): stochastic, unbiased, per-bucket norm | `width_for(2·levels)` + 32/`bucket_size` |
//! | [`sign`] | scaled sign (EF-signSGD): ±mean\|x\| per block | 1 + 32/`block_size` |
//!
//! Each module documents its wire format byte by byte with the exact payload length.
//! `kbit`, `qsgd` and `sign` work on any layout (1-element tensors, an empty layout), so
//! they are typically used as the second stage of a composition, on the values a first
//! stage keeps:
//!
//! ```toml
//! [compressor]
//! kind = "topk"
//! ratio = 0.01
//! values = { kind = "kbit", bits = 8 }
//! ```
//!
//! ## `fp16`, `bf16`
//!
//! No keys.
//!
//! ```toml
//! [compressor]
//! kind = "fp16"        # or "bf16"
//! ```
//!
//! ## `kbit`
//!
//! ```toml
//! [compressor]
//! kind = "kbit"
//! bits = 8              # 1..=8
//! block_size = 64       # >= 1; blocks run within each tensor, the last one may be partial
//! rounding = "nearest"  # or "stochastic" (unbiased)
//! ```
//!
//! | key | default | accepted |
//! |---|---|---|
//! | `bits` | `8` | 1..=8 |
//! | `block_size` | `64` | ≥ 1 |
//! | `rounding` | `"nearest"` | `"nearest"`, `"stochastic"` |
//!
//! ## `qsgd`
//!
//! ```toml
//! [compressor]
//! kind = "qsgd"
//! levels = 127          # s, 1..=32767
//! bucket_size = 512     # >= 1, within each tensor
//! norm = "l2"           # or "max"
//! ```
//!
//! | key | default | accepted |
//! |---|---|---|
//! | `levels` | `127` | 1..=32767 |
//! | `bucket_size` | `512` | ≥ 1 |
//! | `norm` | `"l2"` | `"l2"`, `"max"` |
//!
//! ## `sign`
//!
//! ```toml
//! [compressor]
//! kind = "sign"
//! error_feedback = true   # the usual companion (EF-signSGD); a core wrapper key
//! # block_size = 256      # default: one scale per tensor
//! ```
//!
//! | key | default | accepted |
//! |---|---|---|
//! | `block_size` | none (the whole tensor) | ≥ 1 |
//!
//! The core wrapper keys (`error_feedback`, `warmup_rounds`, `dense_fallback`, `values`)
//! work with every compressor here; see `cgfed_core::wrappers`.

pub mod bf16;
pub mod fp16;
pub mod kbit;
pub mod qsgd;
pub mod sign;

pub use bf16::Bf16;
pub use fp16::Fp16;
pub use kbit::{Kbit, KbitConfig, Rounding};
pub use qsgd::{Norm, Qsgd, QsgdConfig};
pub use sign::{Sign, SignConfig};

/// Helpers shared by `kbit`, `qsgd` and `sign`: block scans, scale reading, and the
/// bit packing of small codes (LSB first, zero padded: the layout of
/// `cgfed_core::wire::bits`, written 8 codes at a time).
pub(crate) mod common {
    use cgfed_core::wire::{bits::packed_len, ByteReader};
    use cgfed_core::{Error, Result};

    /// 2^24: the top 24 bits `u` of a uniform u32 satisfy `u < p·2^24` with probability
    /// `p`, to within 2^-24 (the resolution of an f32 fraction).
    const TWO_POW_24: f32 = 16_777_216.0;

    /// 2^23: adding and subtracting it rounds an f32 in [0, 2^22) to an integer.
    const MAGIC: f32 = 8_388_608.0;

    /// `true` with probability `frac` (for `frac` in [0, 1]; never for `frac ≤ 0`), from one
    /// uniform u32.
    #[inline(always)]
    pub(crate) fn round_up(u: u32, frac: f32) -> bool {
        (((u >> 8) as i32) as f32) < frac * TWO_POW_24
    }

    /// The same in f64, for the rare blocks whose scale is too small for f32 arithmetic.
    #[inline(always)]
    pub(crate) fn round_up_f64(u: u32, frac: f64) -> bool {
        (((u >> 8) as i32) as f64) < frac * TWO_POW_24 as f64
    }

    /// `⌊y⌋` for `0 ≤ y < 2^22`, exactly, as an f32 and as an i32, using float additions
    /// and a bit cast only: on x86-64's baseline (SSE2) a saturating `as` cast keeps a loop
    /// scalar, this vectorizes.
    #[inline(always)]
    pub(crate) fn floor_small(y: f32) -> (f32, i32) {
        let r = (y + MAGIC) - MAGIC; // nearest integer
        let f = if r > y { r - 1.0 } else { r };
        (f, (f + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32)
    }

    /// Random numbers are drawn this many at a time.
    pub(crate) const RAND_CHUNK: usize = 256;

    /// Largest `|x|` of a slice of finite values (0 for an empty slice).
    #[inline]
    pub(crate) fn absmax(x: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for (l, v) in lanes.iter_mut().zip(c) {
                let a = v.abs();
                if a > *l {
                    *l = a;
                }
            }
        }
        let mut m = lanes.into_iter().fold(0f32, f32::max);
        for v in it.remainder() {
            m = m.max(v.abs());
        }
        m
    }

    /// `Σ|x|` in f64.
    #[inline]
    pub(crate) fn sum_abs(x: &[f32]) -> f64 {
        let mut lanes = [0f64; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v.abs() as f64;
            }
        }
        let tail: f64 = it.remainder().iter().map(|v| v.abs() as f64).sum();
        lanes.iter().sum::<f64>() + tail
    }

    /// `Σx²` in f64.
    #[inline]
    pub(crate) fn sum_sq(x: &[f32]) -> f64 {
        let mut lanes = [0f64; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for (l, v) in lanes.iter_mut().zip(c) {
                let d = *v as f64;
                *l += d * d;
            }
        }
        let tail: f64 = it
            .remainder()
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum();
        lanes.iter().sum::<f64>() + tail
    }

    /// `n` per-block scales (f32, finite, not negative, not −0) of tensor `tensor`.
    pub(crate) fn read_scales(
        r: &mut ByteReader<'_>,
        n: usize,
        what: &str,
        tensor: &str,
    ) -> Result<Vec<f32>> {
        let s = r.f32s(n)?;
        if let Some(i) = s.iter().position(|v| v.is_sign_negative()) {
            return Err(Error::malformed(format!(
                "{what} {} of block {i} of tensor `{tensor}` is negative",
                s[i]
            )));
        }
        Ok(s)
    }

    /// Bytes taken by `count` codes of `bits` bits.
    pub(crate) fn packed_bytes(count: usize, bits: u32) -> Result<usize> {
        packed_len(count, bits).ok_or_else(|| Error::malformed("bit-packed length overflow"))
    }

    /// An unsigned code type for [`pack_codes`] / [`unpack_codes`].
    pub(crate) trait Code: Copy + Default + Into<u64> {
        /// Widest code it holds, in bits.
        const BITS: u32;
        /// The low bits of `v` (the caller masks to the code width).
        fn from_u64(v: u64) -> Self;
    }

    impl Code for u8 {
        const BITS: u32 = 8;
        #[inline]
        fn from_u64(v: u64) -> Self {
            v as u8
        }
    }

    impl Code for u16 {
        const BITS: u32 = 16;
        #[inline]
        fn from_u64(v: u64) -> Self {
            v as u16
        }
    }

    /// Append `codes` (each below 2^bits, `bits` in 1..=16) packed LSB first, padded with
    /// zero bits to a whole byte: exactly `ceil(codes.len()·bits/8)` bytes. Eight codes
    /// fill exactly `bits` bytes, so the codes go 8 at a time through one accumulator.
    pub(crate) fn pack_codes<T: Code>(codes: &[T], bits: u32, out: &mut Vec<u8>) {
        debug_assert!((1..=T::BITS.min(16)).contains(&bits));
        let group = bits as usize;
        out.reserve((codes.len() * group).div_ceil(8));
        let mut it = codes.chunks_exact(8);
        if bits <= 8 {
            for g in &mut it {
                let acc = g
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (j, &c)| acc | c.into() << (j as u32 * bits));
                out.extend_from_slice(&acc.to_le_bytes()[..group]);
            }
        } else {
            for g in &mut it {
                let acc = g.iter().enumerate().fold(0u128, |acc, (j, &c)| {
                    acc | (c.into() as u128) << (j as u32 * bits)
                });
                out.extend_from_slice(&acc.to_le_bytes()[..group]);
            }
        }
        let rest = it.remainder();
        if !rest.is_empty() {
            let acc = rest.iter().enumerate().fold(0u128, |acc, (j, &c)| {
                acc | (c.into() as u128) << (j as u32 * bits)
            });
            let len = (rest.len() * group).div_ceil(8);
            out.extend_from_slice(&acc.to_le_bytes()[..len]);
        }
    }

    /// Unpack `count` codes of `bits` bits (1..=16, at most `T::BITS`) from `bytes`,
    /// which must hold exactly `ceil(count·bits/8)` bytes with zero padding bits, into
    /// `out` (replacing its contents).
    pub(crate) fn unpack_codes<T: Code>(
        bytes: &[u8],
        count: usize,
        bits: u32,
        out: &mut Vec<T>,
    ) -> Result<()> {
        if !(1..=T::BITS.min(16)).contains(&bits) || packed_len(count, bits) != Some(bytes.len()) {
            return Err(Error::malformed(format!(
                "{} bytes cannot hold exactly {count} codes of {bits} bits",
                bytes.len()
            )));
        }
        out.clear();
        out.resize(count, T::default());
        let group = bits as usize;
        let mask = (1u128 << bits) - 1;
        let (head, tail) = bytes.split_at((count / 8) * group);
        let mut dst = out.chunks_exact_mut(8);
        if bits <= 8 {
            let mask = mask as u64;
            for (g, o) in head.chunks_exact(group).zip(&mut dst) {
                let mut b = [0u8; 8];
                b[..group].copy_from_slice(g);
                let acc = u64::from_le_bytes(b);
                for (j, c) in o.iter_mut().enumerate() {
                    *c = T::from_u64((acc >> (j as u32 * bits)) & mask);
                }
            }
        } else {
            for (g, o) in head.chunks_exact(group).zip(&mut dst) {
                let mut b = [0u8; 16];
                b[..group].copy_from_slice(g);
                let acc = u128::from_le_bytes(b);
                for (j, c) in o.iter_mut().enumerate() {
                    *c = T::from_u64(((acc >> (j as u32 * bits)) & mask) as u64);
                }
            }
        }
        if !tail.is_empty() {
            let rest = dst.into_remainder();
            let mut b = [0u8; 16];
            b[..tail.len()].copy_from_slice(tail);
            let acc = u128::from_le_bytes(b);
            for (j, c) in rest.iter_mut().enumerate() {
                *c = T::from_u64(((acc >> (j as u32 * bits)) & mask) as u64);
            }
            if acc >> (rest.len() as u32 * bits) != 0 {
                return Err(Error::malformed("non-zero padding bits after packed codes"));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use cgfed_core::wire::bits::{BitReader, BitWriter};

        fn check_width<T: Code + std::fmt::Debug + PartialEq>(bits: u32) {
            for count in [0usize, 1, 7, 8, 9, 15, 16, 17, 100] {
                let codes: Vec<T> = (0..count)
                    .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 7) & ((1 << bits) - 1))
                    .map(T::from_u64)
                    .collect();
                let mut mine = Vec::new();
                pack_codes(&codes, bits, &mut mine);
                let mut core = Vec::new();
                let mut w = BitWriter::new(&mut core);
                for &c in &codes {
                    w.put(c.into() as u32, bits);
                }
                w.finish();
                assert_eq!(mine, core, "bits {bits} count {count}");
                let mut back: Vec<T> = Vec::new();
                unpack_codes(&mine, count, bits, &mut back).unwrap();
                assert_eq!(back, codes);
                let mut r = BitReader::new(&mine, count, bits).unwrap();
                let via_core: Vec<u64> = r.take_all().unwrap().into_iter().map(u64::from).collect();
                let codes64: Vec<u64> = codes.iter().map(|&c| c.into()).collect();
                assert_eq!(via_core, codes64);
            }
        }

        #[test]
        fn pack_matches_core_bit_packing() {
            for bits in 1..=8u32 {
                check_width::<u8>(bits);
                check_width::<u16>(bits);
            }
            for bits in 9..=16u32 {
                check_width::<u16>(bits);
            }
        }

        #[test]
        fn unpack_rejects_padding_and_length() {
            let mut b = Vec::new();
            pack_codes(&[1u8, 2, 3], 3, &mut b); // 9 bits -> 2 bytes
            let mut out: Vec<u8> = Vec::new();
            assert!(unpack_codes(&b[..1], 3, 3, &mut out).is_err());
            assert!(
                unpack_codes(&b, 3, 9, &mut out).is_err(),
                "9 bits do not fit u8"
            );
            let mut bad = b.clone();
            bad[1] |= 0x80;
            assert!(unpack_codes(&bad, 3, 3, &mut out).is_err());
            let mut wide = Vec::new();
            pack_codes(&[600u16, 1, 599], 10, &mut wide); // 30 bits -> 4 bytes
            let mut out16: Vec<u16> = Vec::new();
            unpack_codes(&wide, 3, 10, &mut out16).unwrap();
            assert_eq!(out16, [600, 1, 599]);
            wide[3] |= 0x40;
            assert!(unpack_codes(&wide, 3, 10, &mut out16).is_err());
        }

        #[test]
        fn floor_small_is_floor() {
            for y in [
                0.0f32,
                0.25,
                0.5,
                0.999_999_94,
                1.0,
                1.5,
                2.5,
                3.0,
                254.99998,
                255.0,
                32766.5,
                4_194_303.0,
            ] {
                let (f, i) = floor_small(y);
                assert_eq!(f, y.floor(), "{y}");
                assert_eq!(i, y.floor() as i32, "{y}");
            }
            assert!(round_up(0, 1e-7) && !round_up(0, 0.0) && !round_up(u32::MAX, 0.999_999));
        }

        #[test]
        fn scans() {
            let x: Vec<f32> = (0..21).map(|i| (i as f32 - 13.0) * 0.5).collect();
            assert_eq!(absmax(&x), 6.5);
            assert_eq!(absmax(&[]), 0.0);
            let sa: f64 = x.iter().map(|v| v.abs() as f64).sum();
            assert!((sum_abs(&x) - sa).abs() < 1e-12);
            let sq: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
            assert!((sum_sq(&x) - sq).abs() < 1e-9);
        }
    }
}
