//! Conformance suite for [`GradientCompressor`] plugins (feature `testkit`).
//!
//! A plugin runs every check with one call from its own tests:
//!
//! ```ignore
//! #[test]
//! fn conformance() {
//!     let c = cgfed_core::registry::build_compressor(&PluginTable::named("compressor", "fp16")).unwrap();
//!     cgfed_core::testkit::check_compressor(c.as_ref(), &Expect { max_rel_err: 1e-3 });
//! }
//! ```
//!
//! Checks (each failure panics with a message naming the check and the layout):
//! names and shapes round-trip; the payload header names the compressor; the same seed
//! gives the same payload; the relative error stays within [`Expect::max_rel_err`]; a zero
//! update decodes to finite values; NaN and infinite inputs are rejected with an error;
//! malformed payloads (empty, every truncation, wrong version, wrong name, trailing bytes,
//! random bytes) are rejected with an error and never panic.

use std::sync::Arc;

use candle_core::Device;

use crate::compressor::GradientCompressor;
use crate::context::{Phase, RoundCtx};
use crate::metrics::rel_err;
use crate::payload::{Payload, WIRE_VERSION};
use crate::state::ClientState;
use crate::update::{Layout, TensorSpec, Update};

/// What a compressor promises about its reconstructions.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Largest acceptable `‖x − x̂‖/‖x‖` on a Gaussian-like random update.
    pub max_rel_err: f64,
}

/// Layouts the suite runs on: LoRA-like matrices, a vector, a single element, odd sizes.
pub fn layouts() -> Vec<Layout> {
    let spec = |n: &str, s: &[usize]| TensorSpec {
        name: n.to_string(),
        shape: s.to_vec(),
    };
    vec![
        Layout::new(vec![spec("a.lora_A", &[4, 32]), spec("a.lora_B", &[32, 4])]),
        Layout::new(vec![spec("bias", &[7])]),
        Layout::new(vec![spec("scalar", &[1])]),
        Layout::new(vec![
            spec("l0.q.lora_A", &[8, 48]),
            spec("l0.q.lora_B", &[48, 8]),
            spec("l0.v.lora_A", &[8, 48]),
            spec("l0.v.lora_B", &[16, 8]),
            spec("norm", &[13]),
        ]),
    ]
    .into_iter()
    .map(|l| l.expect("static layouts are valid"))
    .collect()
}

/// A context for `layout` on the CPU.
pub fn ctx(layout: &Layout, seed: u64, round: usize, client: usize) -> RoundCtx {
    RoundCtx {
        round,
        client: Some(client),
        seed,
        phase: Phase::Train,
        layout: Arc::new(layout.clone()),
        device: Device::Cpu,
    }
}

/// Deterministic pseudo-random values (sum of uniforms, roughly Gaussian) times `scale`.
pub fn random_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * scale)
        .collect()
}

/// A random update with `layout`.
pub fn random_update(layout: &Layout, seed: u64, scale: f32) -> Update {
    Update::from_flat(
        layout,
        &random_values(layout.numel(), seed, scale),
        &Device::Cpu,
    )
    .expect("random values match the layout")
}

/// Run every conformance check on `c`.
pub fn check_compressor(c: &dyn GradientCompressor, expect: &Expect) {
    for layout in layouts() {
        check_roundtrip(c, &layout, expect);
        check_deterministic(c, &layout);
        check_zero_and_nonfinite(c, &layout);
        check_malformed(c, &layout);
    }
}

fn tag(c: &dyn GradientCompressor, layout: &Layout) -> String {
    let names: Vec<&str> = layout.specs().iter().map(|s| s.name.as_str()).collect();
    format!("compressor `{}` on layout {names:?}", c.name())
}

/// Names, shapes and values survive compress → decompress within the tolerance.
pub fn check_roundtrip(c: &dyn GradientCompressor, layout: &Layout, expect: &Expect) {
    let cx = ctx(layout, 7, 0, 0);
    let x = random_update(layout, 11, 1e-2);
    let p = c
        .compress(&x, &mut ClientState::default(), &cx)
        .unwrap_or_else(|e| panic!("{}: compress failed: {e}", tag(c, layout)));
    assert!(
        p.open(c.name()).is_ok(),
        "{}: payload header does not name the compressor",
        tag(c, layout)
    );
    let y = c
        .decompress(&p, &cx)
        .unwrap_or_else(|e| panic!("{}: decompress failed: {e}", tag(c, layout)));
    assert_eq!(y.layout(), layout, "{}: layout changed", tag(c, layout));
    let (xv, yv) = (x.to_flat().expect("host"), y.to_flat().expect("host"));
    let err = rel_err(&xv, &yv);
    assert!(
        err <= expect.max_rel_err,
        "{}: relative error {err:.3e} above {:.3e}",
        tag(c, layout),
        expect.max_rel_err
    );
}

/// Same input, state and seed give byte-identical payloads.
pub fn check_deterministic(c: &dyn GradientCompressor, layout: &Layout) {
    let cx = ctx(layout, 3, 2, 1);
    let x = random_update(layout, 5, 1.0);
    let a = c
        .compress(&x, &mut ClientState::default(), &cx)
        .expect("compress");
    let b = c
        .compress(&x, &mut ClientState::default(), &cx)
        .expect("compress");
    assert_eq!(
        a,
        b,
        "{}: same seed gave different payloads",
        tag(c, layout)
    );
}

/// A zero update decodes to finite values; NaN and infinities are rejected.
pub fn check_zero_and_nonfinite(c: &dyn GradientCompressor, layout: &Layout) {
    let cx = ctx(layout, 1, 0, 0);
    let zero = Update::zeros(layout, &Device::Cpu).expect("zeros");
    let p = c
        .compress(&zero, &mut ClientState::default(), &cx)
        .unwrap_or_else(|e| panic!("{}: zero update failed: {e}", tag(c, layout)));
    let y = c.decompress(&p, &cx).expect("decompress zero");
    assert!(
        y.to_flat().expect("host").iter().all(|v| v.is_finite()),
        "{}: zero update decoded to non-finite values",
        tag(c, layout)
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = random_values(layout.numel(), 9, 1.0);
        let last = v.len() - 1;
        v[last] = bad;
        let x = Update::from_flat(layout, &v, &Device::Cpu).expect("layout");
        assert!(
            c.compress(&x, &mut ClientState::default(), &cx).is_err(),
            "{}: accepted an input containing {bad}",
            tag(c, layout)
        );
    }
}

/// Malformed payloads give errors, never panics.
pub fn check_malformed(c: &dyn GradientCompressor, layout: &Layout) {
    let cx = ctx(layout, 1, 0, 0);
    let x = random_update(layout, 13, 1.0);
    let good = c
        .compress(&x, &mut ClientState::default(), &cx)
        .expect("compress");
    let bytes = good.as_bytes();
    let reject = |b: Vec<u8>, what: &str| {
        assert!(
            c.decompress(&Payload::from_bytes(b), &cx).is_err(),
            "{}: accepted a payload with {what}",
            tag(c, layout)
        );
    };
    reject(Vec::new(), "no bytes");
    for cut in 0..bytes.len() {
        reject(
            bytes[..cut].to_vec(),
            &format!("only {cut} of {} bytes", bytes.len()),
        );
    }
    let mut b = bytes.to_vec();
    b[0] = WIRE_VERSION.wrapping_add(1);
    reject(b, "a wrong version byte");
    let mut b = bytes.to_vec();
    if b.len() > 2 {
        b[2] ^= 0x20;
        reject(b, "a wrong compressor name");
    }
    let mut b = bytes.to_vec();
    b.push(0);
    reject(b, "a trailing byte");
    for seed in 0..32u64 {
        let n = (seed as usize * 37) % (bytes.len() + 64);
        let junk: Vec<u8> = random_values(n, seed + 100, 1e3)
            .iter()
            .map(|v| v.to_bits() as u8)
            .collect();
        // Random bytes almost never form a valid header; decoding must not panic either way.
        let _ = c.decompress(&Payload::from_bytes(junk), &cx);
    }
}
