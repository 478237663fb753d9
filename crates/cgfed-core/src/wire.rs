//! Bounds-checked reading of payload bodies. Every read checks the remaining length first,
//! so a malformed or truncated payload is an [`Error::MalformedPayload`], never a panic,
//! and no allocation is sized by an unchecked length field.

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

fn check_finite(vals: &[f32]) -> Result<()> {
    match vals.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::malformed(format!(
            "non-finite value {} at element {i}",
            vals[i]
        ))),
        None => Ok(()),
    }
}
