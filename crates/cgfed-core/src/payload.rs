//! [`Payload`]: the exact bytes that cross the wire, and its header.
//!
//! # Wire format
//!
//! Every payload starts with a short header:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version ([`WIRE_VERSION`]) |
//! | 1 | length `n` of the compressor name (1..=64) |
//! | n | compressor name, ASCII |
//!
//! followed by the compressor's body. The layout (tensor names and shapes) is *not* sent:
//! both ends know it from the trainable state ([`crate::RoundCtx::layout`]).

use crate::error::{Error, Result};
use crate::wire::bits::BitWriter;
use crate::wire::{varint, ByteReader};

/// Version byte written at the start of every payload.
pub const WIRE_VERSION: u8 = 1;

/// Longest compressor name a header can carry.
pub const MAX_NAME_LEN: usize = 64;

/// The bytes a client sends. Its length is the uplink cost; nothing travels besides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(Vec<u8>);

impl Payload {
    /// Wrap raw bytes (e.g. received from the network). Nothing is validated until decoding.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Start a payload for compressor `name`: writes the header and returns a writer for the body.
    pub fn builder(name: &str) -> Result<PayloadBuilder> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.is_ascii() {
            return Err(Error::InvalidInput(format!(
                "compressor name \"{name}\" must be 1..={MAX_NAME_LEN} ASCII bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(2 + name.len());
        bytes.push(WIRE_VERSION);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name.as_bytes());
        Ok(PayloadBuilder { bytes })
    }

    /// Header size for a compressor called `name`.
    pub fn header_len(name: &str) -> usize {
        2 + name.len()
    }

    /// Length in bytes: the uplink (or downlink) cost.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty payload (which is always malformed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Validate the header against the expected compressor name and return a reader
    /// positioned at the start of the body.
    pub fn open(&self, expected_name: &str) -> Result<ByteReader<'_>> {
        let mut r = ByteReader::new(&self.0);
        let version = r.u8().map_err(|_| Error::malformed("empty payload"))?;
        if version != WIRE_VERSION {
            return Err(Error::malformed(format!(
                "wire version {version}, expected {WIRE_VERSION}"
            )));
        }
        let n = r.u8()? as usize;
        let name = r.bytes(n)?;
        if name != expected_name.as_bytes() {
            return Err(Error::malformed(format!(
                "payload is for compressor \"{}\", expected \"{expected_name}\"",
                String::from_utf8_lossy(name)
            )));
        }
        Ok(r)
    }

    /// The body after a valid header for `expected_name` (see [`Payload::open`]).
    pub fn body(&self, expected_name: &str) -> Result<&[u8]> {
        let r = self.open(expected_name)?;
        Ok(&self.0[r.position()..])
    }

    /// A payload for compressor `name` whose body is `body` (used by wrappers that carry
    /// another compressor's body inside their own).
    pub fn from_body(name: &str, body: &[u8]) -> Result<Payload> {
        let mut b = Payload::builder(name)?;
        b.put_bytes(body);
        Ok(b.finish())
    }
}

/// Appends a compressor's body after the header; see [`Payload::builder`].
#[derive(Debug)]
pub struct PayloadBuilder {
    bytes: Vec<u8>,
}

impl PayloadBuilder {
    /// Reserve room for `n` more bytes.
    pub fn reserve(&mut self, n: usize) {
        self.bytes.reserve(n);
    }

    /// Append raw bytes.
    pub fn put_bytes(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// Append one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    /// Append a LEB128 varint (see [`crate::wire::varint`]).
    pub fn put_varint(&mut self, v: u64) {
        varint::encode(v, &mut self.bytes);
    }

    /// A writer of bit-packed values appended to the body; see [`crate::wire::bits`].
    pub fn bit_writer(&mut self) -> BitWriter<'_> {
        BitWriter::new(&mut self.bytes)
    }

    /// Bytes written so far, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a builder holds at least the header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Append a little-endian u32.
    pub fn put_u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Append little-endian f32 values.
    pub fn put_f32s(&mut self, vals: &[f32]) {
        self.put_each::<4>(vals, f32::to_le_bytes);
    }

    /// Append little-endian IEEE half-precision values (round to nearest).
    pub fn put_f16s(&mut self, vals: &[f32]) {
        self.put_each::<2>(vals, |v| half::f16::from_f32(v).to_le_bytes());
    }

    /// Append little-endian bfloat16 values (round to nearest even).
    pub fn put_bf16s(&mut self, vals: &[f32]) {
        self.put_each::<2>(vals, |v| half::bf16::from_f32(v).to_le_bytes());
    }

    /// Append `N` bytes per value, written in place (one resize, then a loop the compiler
    /// can vectorise).
    fn put_each<const N: usize>(&mut self, vals: &[f32], enc: impl Fn(f32) -> [u8; N]) {
        let start = self.bytes.len();
        self.bytes.resize(start + N * vals.len(), 0);
        for (out, &v) in self.bytes[start..].chunks_exact_mut(N).zip(vals) {
            out.copy_from_slice(&enc(v));
        }
    }

    /// Finish the payload.
    pub fn finish(self) -> Payload {
        Payload(self.bytes)
    }
}
