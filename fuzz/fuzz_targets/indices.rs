//! Fuzz `cgfed_core::wire::indices::read_indices`: `n` from the first bytes, the rest is the
//! index set (see `cgfed_fuzz` docs). No panic; an `Ok` set is strictly increasing, below
//! `n`, and re-encodes to `cheapest` bytes that read back to the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cgfed_fuzz::indices_case(data));
