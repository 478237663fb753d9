//! Wire-format building blocks for payload bodies.
//!
//! - [`ByteReader`]: bounds-checked reading. Every read checks the remaining length first,
//!   so a malformed or truncated payload is an [`Error::MalformedPayload`], never a panic,
//!   and no allocation is sized by an unchecked length field.
//! - [`varint`]: LEB128 unsigned integers (canonical encodings only).
//! - [`bits`]: fixed-width bit packing of small unsigned integers (quantized values, signs).
//! - [`indices`]: sparse index sets coded with the cheapest of a bitmap, delta-varint gaps
//!   and Elias–Fano, chosen per set.
//!
//! Writers append to a [`crate::payload::PayloadBuilder`]; readers consume a [`ByteReader`].

pub mod bits;
pub mod indices;
pub mod varint;

use crate::error::{Error, Result};

/// A cursor over a payload's bytes whose reads fail cleanly past the end.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// Read `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::malformed(format!(
                "truncated: need {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` little-endian f32 values; fails on truncation and on NaN or infinity.
    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let raw = self.bytes(
            n.checked_mul(4)
                .ok_or_else(|| Error::malformed("length overflow"))?,
        )?;
        let out: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        check_finite(&out)?;
        Ok(out)
    }

    /// `n` little-endian f16 values widened to f32; fails on truncation and on NaN or infinity.
    pub fn f16s(&mut self, n: usize) -> Result<Vec<f32>> {
        self.halves(n, |b| half::f16::from_le_bytes(b).to_f32())
    }

    /// `n` little-endian bfloat16 values widened to f32; fails on truncation and on NaN or
    /// infinity.
    pub fn bf16s(&mut self, n: usize) -> Result<Vec<f32>> {
        self.halves(n, |b| half::bf16::from_le_bytes(b).to_f32())
    }

    /// `n` two-byte values widened to f32 by `widen`; fails on truncation and on NaN or
    /// infinity.
    fn halves(&mut self, n: usize, widen: impl Fn([u8; 2]) -> f32) -> Result<Vec<f32>> {
        let raw = self.bytes(
            n.checked_mul(2)
                .ok_or_else(|| Error::malformed("length overflow"))?,
        )?;
        let out: Vec<f32> = raw.chunks_exact(2).map(|c| widen([c[0], c[1]])).collect();
        check_finite(&out)?;
        Ok(out)
    }

    /// A LEB128 varint (see [`varint`]): at most 10 bytes, canonical, fits in a u64.
    pub fn varint(&mut self) -> Result<u64> {
        let (v, used) = varint::decode(&self.buf[self.pos..])?;
        self.pos += used;
        Ok(v)
    }

    /// A varint that must be at most `max` (a count or a length); names `what` in the error.
    pub fn varint_at_most(&mut self, max: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let v = self.varint()?;
        if v > max as u64 {
            return Err(Error::malformed(format!(
                "{what} {v} at offset {at} exceeds its limit {max}"
            )));
        }
        Ok(v as usize)
    }

    /// A reader over the next `ceil(count·width/8)` bytes holding `count` packed values of
    /// `width` bits each (see [`bits`]).
    pub fn bits(&mut self, count: usize, width: u32) -> Result<bits::BitReader<'a>> {
        let len = bits::packed_len(count, width)
            .ok_or_else(|| Error::malformed("bit-packed length overflow"))?;
        bits::BitReader::new(self.bytes(len)?, count, width)
    }

    /// Fail unless every byte has been consumed (trailing garbage is malformed).
    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::malformed(format!(
                "{} trailing bytes after offset {}",
                self.remaining(),
                self.pos
            )));
        }
        Ok(())
    }
}

/// Read one value vector per tensor of `layout` with `read(reader, numel)`, in layout
/// order (e.g. `per_tensor(&mut r, layout, ByteReader::f16s)`), ready for
/// [`crate::Update::from_parts`].
pub fn per_tensor<'a>(
    r: &mut ByteReader<'a>,
    layout: &crate::update::Layout,
    mut read: impl FnMut(&mut ByteReader<'a>, usize) -> Result<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    layout.specs().iter().map(|s| read(r, s.numel())).collect()
}

/// Error naming the first NaN or infinity in decoded values.
pub fn check_finite(vals: &[f32]) -> Result<()> {
    match vals.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::malformed(format!(
            "non-finite value {} at element {i}",
            vals[i]
        ))),
        None => Ok(()),
    }
}
