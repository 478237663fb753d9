//! Fuzz every payload decoder: byte 0 picks a compressor config, byte 1 a layout and the
//! round, the rest is the payload (see `cgfed_fuzz` docs). `decompress` must not panic, and
//! an `Ok` update must have the layout and finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cgfed_fuzz::decode_case(data));
