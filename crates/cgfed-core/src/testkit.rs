//! Conformance suite for [`GradientCompressor`] plugins (feature `testkit`).
//!
//! A plugin runs every check with one call from its own tests:
//!
//! ```ignore
//! #[test]
//! fn conformance() {
//!     let c = registry::build_compressor(&PluginTable::named("compressor", "kbit")).unwrap();
//!     testkit::check_compressor(c.as_ref(), &Expect { max_rel_err: 0.02, ..Expect::default() });
//! }
//! ```
//!
//! Checks (each failure panics with a message naming the check and the layout):
//!
//! - names and shapes round-trip; the payload header names the compressor; the relative
//!   error on a Gaussian-like update stays within [`Expect::max_rel_err`];
//! - the payload length equals [`Expect::payload_len`] when the plugin declares it (the
//!   bytes counted are the bytes that exist), and the decoder consumes every byte;
//! - the same input, state and seed give the same payload;
//! - zero, constant, tiny (×1e-30) and huge (×1e30) inputs: a clean error or a finite
//!   decode; constants keep their direction (cosine > 0); for scale-invariant compressors
//!   tiny and huge inputs stay within `max_rel_err`;
//! - NaN and ±infinity in the input are rejected with an error;
//! - malformed payloads — empty, every truncation, wrong version, wrong name, a trailing
//!   byte, random bytes, and every byte of a valid payload set to `0x00`, `0xff` or with
//!   its low or high bit flipped (which turns counts into absurd lengths and indices out
//!   of range) — give an error or a valid decode (right layout, finite values), never a panic;
//! - [`Expect::unbiased`]: `E[x̂] = x`, tested statistically (see [`check_unbiased`]);
//! - [`Expect::top_k`]: the decoded support is exactly the k largest `|x|` and the kept
//!   values are exact;
//! - property tests (proptest, [`check_properties`]) on random layouts, scales and sparsity.

use std::sync::Arc;

use candle_core::Device;

use crate::compressor::GradientCompressor;
use crate::context::{Phase, RoundCtx};
use crate::metrics::{cosine, rel_err};
use crate::payload::{Payload, WIRE_VERSION};
use crate::state::ClientState;
use crate::update::{Layout, TensorSpec, Update};

/// What a compressor promises; the suite checks each promise.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Largest acceptable `‖x − x̂‖/‖x‖` on a Gaussian-like random update.
    pub max_rel_err: f64,
    /// The exact payload length for a layout, when it depends on the layout only
    /// (header included). `None`: data-dependent (e.g. the index coding of top-k).
    pub payload_len: Option<fn(&Layout) -> usize>,
    /// The compressor is stochastic and unbiased: run [`check_unbiased`].
    pub unbiased: bool,
    /// The compressor keeps exactly the k largest `|x|`: check the support.
    pub top_k: Option<TopK>,
    /// Relative error does not depend on the scale of the input, so ×1e-30 and ×1e30
    /// updates must also stay within `max_rel_err` (false for fp16, whose range is finite).
    pub scale_invariant: bool,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            max_rel_err: 0.0,
            payload_len: None,
            unbiased: false,
            top_k: None,
            scale_invariant: true,
        }
    }
}

/// The top-k promise: how many elements are kept, per tensor or over the whole update.
#[derive(Debug, Clone, Copy)]
pub enum TopK {
    /// Each tensor of `n` elements keeps `k(n)`.
    PerTensor(fn(usize) -> usize),
    /// The whole update of `n` elements keeps `k(n)`, wherever they are.
    Global(fn(usize) -> usize),
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
        check_payload_len(c, &layout, expect);
        check_deterministic(c, &layout);
        check_zero_and_nonfinite(c, &layout);
        check_edge_inputs(c, &layout, expect);
        check_malformed(c, &layout);
        if let Some(top_k) = expect.top_k {
            check_top_k(c, &layout, top_k);
        }
    }
    if expect.unbiased {
        check_unbiased(c, &layouts()[0], 400);
        check_unbiased(c, &layouts()[3], 200);
    }
    check_properties(c, expect, 48);
}

fn compress_decode(c: &dyn GradientCompressor, x: &Update, cx: &RoundCtx) -> (Payload, Vec<f32>) {
    let p = c
        .compress(x, &mut ClientState::default(), cx)
        .unwrap_or_else(|e| panic!("{}: compress failed: {e}", tag(c, &cx.layout)));
    let y = c
        .decompress(&p, cx)
        .unwrap_or_else(|e| panic!("{}: decompress failed: {e}", tag(c, &cx.layout)));
    (p, y.to_flat().expect("host"))
}

/// The payload length equals the declared [`Expect::payload_len`] (if any), for several
/// inputs of the layout.
pub fn check_payload_len(c: &dyn GradientCompressor, layout: &Layout, expect: &Expect) {
    let Some(len) = expect.payload_len else {
        return;
    };
    for (seed, scale) in [(1u64, 1e-3f32), (2, 1.0), (3, 50.0)] {
        let cx = ctx(layout, seed, seed as usize, 0);
        let (p, _) = compress_decode(c, &random_update(layout, seed + 20, scale), &cx);
        assert_eq!(
            p.len(),
            len(layout),
            "{}: payload has {} bytes, the compressor declares {}",
            tag(c, layout),
            p.len(),
            len(layout)
        );
    }
}

/// Constant, tiny (×1e-30) and huge (×1e30) inputs: a clean error or a finite decode;
/// constants keep their direction; scale-invariant compressors keep their error bound.
pub fn check_edge_inputs(c: &dyn GradientCompressor, layout: &Layout, expect: &Expect) {
    let cx = ctx(layout, 4, 1, 2);
    let n = layout.numel();
    let constant = Update::from_flat(layout, &vec![0.25; n], &Device::Cpu).expect("layout");
    let (_, y) = compress_decode(c, &constant, &cx);
    assert!(
        y.iter().all(|v| v.is_finite()),
        "{}: a constant update decoded to non-finite values",
        tag(c, layout)
    );
    let cos = cosine(&vec![0.25; n], &y);
    assert!(
        cos > 0.0,
        "{}: a constant update decoded with cosine {cos}",
        tag(c, layout)
    );
    for scale in [1e-30f32, 1e30] {
        let x = random_update(layout, 17, scale);
        let Ok(p) = c.compress(&x, &mut ClientState::default(), &cx) else {
            continue; // a clean error is acceptable (e.g. beyond fp16's range)
        };
        let y = c
            .decompress(&p, &cx)
            .unwrap_or_else(|e| panic!("{}: decode at scale {scale:e}: {e}", tag(c, layout)));
        let (xv, yv) = (x.to_flat().expect("host"), y.to_flat().expect("host"));
        assert!(
            yv.iter().all(|v| v.is_finite()),
            "{}: input ×{scale:e} decoded to non-finite values",
            tag(c, layout)
        );
        if expect.scale_invariant {
            let err = rel_err(&xv, &yv);
            assert!(
                err <= expect.max_rel_err.max(1e-6),
                "{}: relative error {err:.3e} at scale {scale:e} (bound {:.3e})",
                tag(c, layout),
                expect.max_rel_err
            );
        }
    }
}

/// Statistical unbiasedness: over `trials` independent draws (rounds `0..trials`, so every
/// random stream changes), `R = trials·‖mean(x̂) − x‖² / mean‖x̂ − x‖²`. For an unbiased
/// compressor `E[R] = 1` (the error of the mean shrinks like `1/trials`); a bias `b` adds
/// `trials·‖b‖²/mean‖x̂ − x‖²`, which grows with the number of trials. The check requires
/// `R ≤ 2.0`: on these layouts (≥ 256 elements) an unbiased compressor stays well below
/// (R concentrates around 1 with a spread of about √(2/n)), while a deterministic
/// compressor gives `R = trials` and a bias of 10 % of the per-draw error gives `R ≈ 5`
/// at 400 trials. The draws are seeded, so the check is deterministic.
pub fn check_unbiased(c: &dyn GradientCompressor, layout: &Layout, trials: usize) {
    let x = random_update(layout, 23, 0.1);
    let xv = x.to_flat().expect("host");
    let n = xv.len();
    let mut sum = vec![0f64; n];
    let mut mse = 0f64;
    for t in 0..trials {
        let cx = ctx(layout, 5, t, 3);
        let (_, y) = compress_decode(c, &x, &cx);
        for i in 0..n {
            sum[i] += y[i] as f64;
            let e = y[i] as f64 - xv[i] as f64;
            mse += e * e;
        }
    }
    mse /= trials as f64;
    let bias2: f64 = (0..n)
        .map(|i| {
            let d = sum[i] / trials as f64 - xv[i] as f64;
            d * d
        })
        .sum();
    assert!(
        mse > 0.0,
        "{}: claims to be stochastic but is exact",
        tag(c, layout)
    );
    let r = trials as f64 * bias2 / mse;
    assert!(
        r <= 2.0,
        "{}: biased: R = trials·‖mean − x‖²/mse = {r:.2} > 2 over {trials} trials",
        tag(c, layout)
    );
}

/// The decoded support is exactly the k largest `|x|` and the kept values are exact.
pub fn check_top_k(c: &dyn GradientCompressor, layout: &Layout, top_k: TopK) {
    let cx = ctx(layout, 6, 0, 0);
    let x = random_update(layout, 29, 1.0);
    let parts = x.to_parts().expect("host");
    let (_, y) = compress_decode(c, &x, &cx);
    let xv: Vec<f32> = parts.concat();
    // Groups of element offsets that each keep k.
    let groups: Vec<(usize, usize, usize)> = match top_k {
        TopK::PerTensor(k) => {
            let mut off = 0;
            parts
                .iter()
                .map(|p| {
                    let g = (off, off + p.len(), k(p.len()));
                    off += p.len();
                    g
                })
                .collect()
        }
        TopK::Global(k) => vec![(0, xv.len(), k(xv.len()))],
    };
    for (lo, hi, k) in groups {
        let mut order: Vec<usize> = (lo..hi).collect();
        order.sort_by(|&a, &b| xv[b].abs().total_cmp(&xv[a].abs()));
        let want: std::collections::BTreeSet<usize> =
            order[..k.min(hi - lo)].iter().copied().collect();
        let got: std::collections::BTreeSet<usize> = (lo..hi).filter(|&i| y[i] != 0.0).collect();
        assert_eq!(
            got,
            want,
            "{}: kept elements are not the {k} largest |x| of elements {lo}..{hi}",
            tag(c, layout)
        );
        for &i in &want {
            assert!(
                (y[i] - xv[i]).abs() <= 1e-6 * xv[i].abs(),
                "{}: kept value {} decoded as {}",
                tag(c, layout),
                xv[i],
                y[i]
            );
        }
    }
}

/// Property tests with proptest: random layouts (1–4 tensors of rank 1–3), scales over 40
/// orders of magnitude (6 for compressors that are not scale-invariant), and sparsity.
/// Every case must compress (or fail cleanly on a value beyond the compressor's range),
/// decode to the same layout with finite values, never anti-correlate with the input
/// (cosine ≥ 0), repeat byte for byte, and match [`Expect::payload_len`].
pub fn check_properties(c: &dyn GradientCompressor, expect: &Expect, cases: u32) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let shape = prop::collection::vec(1usize..24, 1..=3);
    let layout = prop::collection::vec(shape, 1..=4);
    let (lo, hi) = if expect.scale_invariant {
        (-20i32, 20)
    } else {
        (-2, 2)
    };
    let strategy = (layout, lo..=hi, 0u64..1000, 0.0f64..0.9);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(shapes, exp, seed, zeros)| {
        let specs = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| TensorSpec {
                name: format!("t{i}"),
                shape: s.clone(),
            })
            .collect();
        let layout = Layout::new(specs).expect("distinct names");
        let scale = 10f32.powi(exp);
        let mut v = random_values(layout.numel(), seed, scale);
        for (i, x) in v.iter_mut().enumerate() {
            if ((i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f64 / 1000.0
                < zeros
            {
                *x = 0.0;
            }
        }
        let x = Update::from_flat(&layout, &v, &Device::Cpu).expect("layout");
        let cx = ctx(&layout, seed, (seed % 5) as usize, 1);
        let Ok(p) = c.compress(&x, &mut ClientState::default(), &cx) else {
            prop_assert!(
                !expect.scale_invariant,
                "compress failed at scale {scale:e}"
            );
            return Ok(());
        };
        let again = c
            .compress(&x, &mut ClientState::default(), &cx)
            .expect("second compress");
        prop_assert_eq!(&p, &again, "not deterministic");
        if let Some(len) = expect.payload_len {
            prop_assert_eq!(p.len(), len(&layout), "payload length");
        }
        let y = c.decompress(&p, &cx);
        prop_assert!(y.is_ok(), "decode failed: {:?}", y.err());
        let y = y.expect("checked");
        prop_assert_eq!(y.layout(), &layout);
        let yv = y.to_flat().expect("host");
        prop_assert!(yv.iter().all(|v| v.is_finite()), "non-finite decode");
        let cos = cosine(&v, &yv);
        prop_assert!(cos.is_nan() || cos >= -1e-6, "cosine {} < 0", cos);
        Ok(())
    });
    if let Err(e) = result {
        panic!("compressor `{}`: property test failed: {e}", c.name());
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
    // Every byte of the body corrupted: counts become absurd, indices leave their range,
    // values become NaN. Errors or valid decodes only.
    let header = Payload::header_len(c.name());
    for i in header..bytes.len() {
        for v in [0u8, 0xff, bytes[i] ^ 1, bytes[i] ^ 0x80] {
            if v == bytes[i] {
                continue;
            }
            let mut b = bytes.to_vec();
            b[i] = v;
            if let Ok(y) = c.decompress(&Payload::from_bytes(b), &cx) {
                assert_eq!(
                    y.layout(),
                    layout,
                    "{}: corrupted byte {i} changed the layout",
                    tag(c, layout)
                );
                assert!(
                    y.to_flat().expect("host").iter().all(|v| v.is_finite()),
                    "{}: byte {i} set to {v:#x} decoded to non-finite values",
                    tag(c, layout)
                );
            }
        }
    }
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
