//! LEB128 unsigned varints: 7 bits per byte, low bits first, the high bit set on every byte
//! but the last. `0..128` takes one byte, `< 2¹⁴` two, a u64 at most ten.
//!
//! Decoding accepts only canonical encodings (no redundant trailing `0x80 … 0x00` groups)
//! so that one value has exactly one wire form, and rejects values beyond `u64::MAX`.

use crate::error::{Error, Result};

/// Longest encoding of a u64.
pub const MAX_LEN: usize = 10;

/// Bytes needed to encode `v`.
pub fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append the encoding of `v` to `out`.
pub fn encode(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decode one varint from the start of `buf`: the value and the bytes it took.
///
/// # Errors
/// [`Error::MalformedPayload`] when `buf` ends inside the varint, the value overflows a
/// u64, or the encoding is not canonical.
pub fn decode(buf: &[u8]) -> Result<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_LEN) {
        let part = (b & 0x7f) as u64;
        if i == MAX_LEN - 1 && part > 1 {
            return Err(Error::malformed("varint overflows 64 bits"));
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(Error::malformed(
                    "non-canonical varint (redundant zero byte)",
                ));
            }
            return Ok((v, i + 1));
        }
    }
    if buf.len() < MAX_LEN {
        Err(Error::malformed(format!(
            "truncated varint: {} bytes, all with the continuation bit",
            buf.len()
        )))
    } else {
        Err(Error::malformed("varint longer than 10 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_lengths() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            encode(v, &mut b);
            assert_eq!(b.len(), len(v), "{v}");
            assert_eq!(decode(&b).unwrap(), (v, b.len()));
        }
        assert_eq!(len(127), 1);
        assert_eq!(len(128), 2);
        assert_eq!(len(u64::MAX), 10);
    }

    #[test]
    fn rejects_bad_encodings() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0x80]).is_err());
        assert!(decode(&[0x80, 0x00]).is_err(), "non-canonical zero");
        assert!(decode(&[0xff; 10]).is_err(), "overflow");
        assert!(decode(&[0xff; 11]).is_err());
        let mut max = Vec::new();
        encode(u64::MAX, &mut max);
        *max.last_mut().unwrap() = 0x02;
        assert!(decode(&max).is_err(), "65th bit");
    }
}
