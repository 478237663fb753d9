//! Fixed-width bit packing: `count` unsigned values of `width` bits each (0..=32), least
//! significant bit first, written back to back and padded with zero bits to a whole byte.
//! `count` values take exactly [`packed_len`]`(count, width)` bytes.
//!
//! [`BitReader::finish`] rejects non-zero padding, so one set of values has exactly one wire
//! form and a flipped padding bit is caught as malformed.
//!
//! ```
//! use cgfed_core::wire::{bits, ByteReader};
//! let mut buf = Vec::new();
//! let mut w = bits::BitWriter::new(&mut buf);
//! for v in [5u32, 0, 7, 3] { w.put(v, 3); }
//! w.finish();
//! assert_eq!(buf.len(), bits::packed_len(4, 3).unwrap()); // 12 bits -> 2 bytes
//! let mut r = ByteReader::new(&buf).bits(4, 3).unwrap();
//! assert_eq!(r.take_all().unwrap(), vec![5, 0, 7, 3]);
//! ```

use crate::error::{Error, Result};

/// Bytes taken by `count` values of `width` bits; `None` on overflow.
pub fn packed_len(count: usize, width: u32) -> Option<usize> {
    count
        .checked_mul(width as usize)?
        .checked_add(7)
        .map(|b| b / 8)
}

/// Bits needed to hold every value in `0..=max` (0 for `max == 0`).
pub fn width_for(max: u64) -> u32 {
    64 - max.leading_zeros()
}

fn mask(width: u32) -> u64 {
    if width >= 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// Appends bit-packed values to a byte buffer; call [`finish`](Self::finish) to flush the
/// last partial byte.
#[derive(Debug)]
pub struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitWriter<'a> {
    /// Write after the current end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }

    /// Append the low `width` bits of `v` (`width` ≤ 32; higher bits of `v` are ignored).
    #[inline]
    pub fn put(&mut self, v: u32, width: u32) {
        debug_assert!(width <= 32, "width {width} > 32");
        debug_assert!(
            (v as u64) <= mask(width),
            "value {v} does not fit in {width} bits"
        );
        self.acc |= (v as u64 & mask(width)) << self.n;
        self.n += width;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Flush the remaining bits, zero-padded to a whole byte.
    pub fn finish(mut self) {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
    }
}

/// Reads `count` values of `width` bits from a byte slice of exactly
/// [`packed_len`]`(count, width)` bytes (made by [`crate::wire::ByteReader::bits`]).
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    left: usize,
    width: u32,
}

impl<'a> BitReader<'a> {
    /// A reader of `count` values of `width` bits over `buf`.
    ///
    /// # Errors
    /// When `width > 32` or `buf` does not have exactly the packed length.
    pub fn new(buf: &'a [u8], count: usize, width: u32) -> Result<Self> {
        if width > 32 {
            return Err(Error::malformed(format!("bit width {width} above 32")));
        }
        if packed_len(count, width) != Some(buf.len()) {
            return Err(Error::malformed(format!(
                "{} bytes cannot hold exactly {count} values of {width} bits",
                buf.len()
            )));
        }
        Ok(Self {
            buf,
            pos: 0,
            acc: 0,
            n: 0,
            left: count,
            width,
        })
    }

    /// Values not yet read.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The next value.
    #[inline]
    pub fn take(&mut self) -> Result<u32> {
        if self.left == 0 {
            return Err(Error::malformed("read past the last packed value"));
        }
        self.left -= 1;
        while self.n < self.width {
            // `new` checked the length, so these bytes exist; guard anyway.
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| Error::malformed("bit-packed data ends early"))?;
            self.acc |= (b as u64) << self.n;
            self.pos += 1;
            self.n += 8;
        }
        let v = (self.acc & mask(self.width)) as u32;
        self.acc >>= self.width;
        self.n -= self.width;
        Ok(v)
    }

    /// Every remaining value, then [`finish`](Self::finish).
    pub fn take_all(&mut self) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(self.left);
        while self.left > 0 {
            out.push(self.take()?);
        }
        self.check_padding()?;
        Ok(out)
    }

    /// Fail unless every value was read and the padding bits are zero.
    pub fn finish(self) -> Result<()> {
        if self.left != 0 {
            return Err(Error::malformed(format!(
                "{} packed values left unread",
                self.left
            )));
        }
        self.check_padding()
    }

    fn check_padding(&self) -> Result<()> {
        if self.left != 0 {
            return Ok(());
        }
        let rest_nonzero = self.buf[self.pos..].iter().any(|&b| b != 0);
        if self.acc != 0 || rest_nonzero {
            return Err(Error::malformed(
                "non-zero padding bits after packed values",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(vals: &[u32], width: u32) -> Vec<u8> {
        let mut b = Vec::new();
        let mut w = BitWriter::new(&mut b);
        for &v in vals {
            w.put(v, width);
        }
        w.finish();
        b
    }

    #[test]
    fn roundtrip_every_width() {
        for width in 0..=32u32 {
            let max = mask(width) as u32;
            let vals: Vec<u32> = (0..77u32)
                .map(|i| {
                    if width == 0 {
                        0
                    } else {
                        i.wrapping_mul(2_654_435_761) & max
                    }
                })
                .collect();
            let b = pack(&vals, width);
            assert_eq!(b.len(), packed_len(vals.len(), width).unwrap(), "{width}");
            let mut r = BitReader::new(&b, vals.len(), width).unwrap();
            assert_eq!(r.take_all().unwrap(), vals, "width {width}");
        }
    }

    #[test]
    fn rejects_wrong_length_padding_and_overread() {
        let b = pack(&[1, 2, 3], 3); // 9 bits -> 2 bytes
        assert!(BitReader::new(&b[..1], 3, 3).is_err());
        assert!(BitReader::new(&b, 3, 33).is_err());
        let mut bad = b.clone();
        bad[1] |= 0x80; // a padding bit
        assert!(BitReader::new(&bad, 3, 3).unwrap().take_all().is_err());
        let mut r = BitReader::new(&b, 3, 3).unwrap();
        r.take_all().unwrap();
        assert!(r.take().is_err());
        let mut r = BitReader::new(&b, 3, 3).unwrap();
        r.take().unwrap();
        assert!(r.finish().is_err(), "unread values");
    }

    #[test]
    fn width_for_values() {
        assert_eq!(width_for(0), 0);
        assert_eq!(width_for(1), 1);
        assert_eq!(width_for(2), 2);
        assert_eq!(width_for(255), 8);
        assert_eq!(width_for(256), 9);
    }
}
