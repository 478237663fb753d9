//! `ternary`: the core conformance suite, then the promises the crate docs make — the
//! exact bytes (against an independent encoder written from the docs), the length
//! formula, unbiasedness with a tolerance from the variance, determinism, every
//! malformed-payload rejection, config errors, and registration (built by name from a TOML
//! table, with the core wrappers).

use cgfed_core::candle_core::Device;
use cgfed_core::context::{mix_seed, stream_of};
use cgfed_core::testkit::{self, Expect};
use cgfed_core::toml;
use cgfed_core::{
    registry, ClientState, Error, GradientCompressor, Layout, Payload, PluginTable, RoundCtx,
    TensorSpec, Update,
};
use custom_compressor::{Ternary, TernaryConfig, NAME, PARAMS};

const HEADER: usize = 2 + 7; // version, name length, "ternary"

// ---------------------------------------------------------------- helpers

/// The `[compressor]` table parsed from TOML text (the body of the table).
fn table(body: &str) -> PluginTable {
    let t: toml::Table = toml::from_str(body).expect("valid TOML");
    PluginTable::from_value("compressor", &toml::Value::Table(t)).expect("plugin table")
}

/// `ternary` built through the registry from `params` (TOML lines after the name).
fn build(params: &str) -> Box<dyn GradientCompressor> {
    registry::build_compressor(&table(&format!("name = \"ternary\"\n{params}"))).expect("builds")
}

/// The error building `ternary` with `params` gives.
fn config_error(params: &str) -> String {
    registry::build_compressor(&table(&format!("name = \"ternary\"\n{params}")))
        .err()
        .expect("config must be rejected")
        .to_string()
}

fn layout_of(shapes: &[(&str, &[usize])]) -> Layout {
    Layout::new(
        shapes
            .iter()
            .map(|(n, s)| TensorSpec {
                name: n.to_string(),
                shape: s.to_vec(),
            })
            .collect(),
    )
    .unwrap()
}

/// The documented length formula.
fn expected_len(layout: &Layout, block: usize) -> usize {
    HEADER
        + layout
            .specs()
            .iter()
            .map(|s| 4 * s.numel().div_ceil(block) + s.numel().div_ceil(4))
            .sum::<usize>()
}

fn compress(c: &dyn GradientCompressor, layout: &Layout, x: &[f32], cx: &RoundCtx) -> Payload {
    let u = Update::from_flat(layout, x, &Device::Cpu).unwrap();
    c.compress(&u, &mut ClientState::default(), cx).unwrap()
}

fn decode(c: &dyn GradientCompressor, p: &Payload, cx: &RoundCtx) -> Vec<f32> {
    c.decompress(p, cx).unwrap().to_flat().unwrap()
}

/// Assert `bytes` decodes to a `MalformedPayload` whose message contains `needle`.
fn assert_malformed(c: &dyn GradientCompressor, bytes: Vec<u8>, cx: &RoundCtx, needle: &str) {
    match c.decompress(&Payload::from_bytes(bytes), cx) {
        Err(Error::MalformedPayload(m)) => {
            assert!(m.contains(needle), "expected `{needle}` in `{m}`")
        }
        Err(e) => panic!("{needle}: wrong error kind: {e}"),
        Ok(_) => panic!("{needle}: malformed payload accepted"),
    }
}

// ---------------------------------------------------------------- conformance

#[test]
fn conformance_default_block() {
    // Relative error: E‖x̂ − x‖² = Σ (s·|x| − x²), which grows with the block (s is the
    // block max). On the suite's Gaussian-like layouts the worst draw is 1.15 at blocks of
    // 256 (whole tensors here), 0.96 at 16 and 0.79 at 5; 0 for the 1-element layout.
    testkit::check_compressor(
        build("").as_ref(),
        &Expect {
            max_rel_err: 1.3,
            payload_len: Some(|l| expected_len(l, 256)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_small_blocks() {
    // Blocks of 5: not a multiple of 4, so blocks start mid-byte.
    testkit::check_compressor(
        build("block_size = 5").as_ref(),
        &Expect {
            max_rel_err: 0.9,
            payload_len: Some(|l| expected_len(l, 5)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_with_error_feedback() {
    // The wrapper keeps the wire format: same length, same suite.
    testkit::check_compressor(
        build("block_size = 16\nerror_feedback = true").as_ref(),
        &Expect {
            max_rel_err: 1.2,
            payload_len: Some(|l| expected_len(l, 16)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

// ---------------------------------------------------------------- exact bytes and length

/// An encoder written from the crate docs alone (not from the implementation): SplitMix64
/// seeded per tensor name, one draw per element, `u < |x|/s`, 2-bit codes LSB first.
fn reference_encode(layout: &Layout, x: &[f32], block: usize, cx: &RoundCtx) -> Vec<u8> {
    let mut out = vec![1u8, 7];
    out.extend_from_slice(b"ternary");
    let mut off = 0;
    for spec in layout.specs() {
        let n = spec.numel();
        let xs = &x[off..off + n];
        off += n;
        let mut state = cx.rng_seed(mix_seed(&[stream_of("ternary"), stream_of(&spec.name)]));
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let scales: Vec<f32> = xs
            .chunks(block)
            .map(|b| b.iter().map(|v| v.abs()).fold(0.0, f32::max))
            .collect();
        for s in &scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let mut codes = vec![0u8; n.div_ceil(4)];
        for (j, &v) in xs.iter().enumerate() {
            let s = scales[j / block];
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            if s > 0.0 && u < v.abs() as f64 / s as f64 {
                let code = if v < 0.0 { 0b10 } else { 0b01 };
                codes[j / 4] |= code << (2 * (j % 4));
            }
        }
        out.extend_from_slice(&codes);
    }
    out
}

#[test]
fn bytes_match_the_documented_encoder() {
    let mut layouts = testkit::layouts();
    layouts.push(layout_of(&[
        ("big", &[3, 333]),
        ("one", &[1]),
        ("odd", &[17]),
    ]));
    for block in [1usize, 3, 4, 5, 64, 256, 100_000] {
        let c = build(&format!("block_size = {block}"));
        for (li, layout) in layouts.iter().enumerate() {
            for round in 0..3 {
                let cx = testkit::ctx(layout, 11, round, li);
                let x = testkit::random_values(layout.numel(), 40 + round as u64, 0.7);
                let p = compress(c.as_ref(), layout, &x, &cx);
                assert_eq!(
                    p.as_bytes(),
                    reference_encode(layout, &x, block, &cx).as_slice(),
                    "block {block}, layout {li}, round {round}"
                );
            }
        }
    }
}

#[test]
fn payload_length_formula() {
    let mut layouts = testkit::layouts();
    layouts.push(layout_of(&[
        ("big", &[3, 333]),
        ("one", &[1]),
        ("z", &[17]),
    ]));
    layouts.push(Layout::new(Vec::new()).unwrap());
    for block in [1usize, 2, 3, 4, 7, 256, 1 << 20] {
        let c = Ternary::new(TernaryConfig { block_size: block }).unwrap();
        for layout in &layouts {
            let cx = testkit::ctx(layout, 1, 0, 0);
            let x = testkit::random_values(layout.numel(), 5, 0.3);
            let p = compress(&c, layout, &x, &cx);
            assert_eq!(p.len(), expected_len(layout, block), "block {block}");
            assert_eq!(p.len(), c.payload_len(layout), "block {block}");
        }
    }
    // By hand: a LoRA pair 8x576 + 576x8 (4608 elements each) at the default block of 256:
    // 18 scales and 1152 code bytes per tensor.
    let l = layout_of(&[("a", &[8, 576]), ("b", &[576, 8])]);
    assert_eq!(expected_len(&l, 256), 9 + 2 * (4 * 18 + 1152));
    assert_eq!(Ternary::default().payload_len(&l), 2457);
    // A 4096x4096 matrix: 2 bits + 32/256 bits per element, 15.06x smaller than f32.
    let big = layout_of(&[("w", &[4096, 4096])]);
    assert_eq!(expected_len(&big, 256), 9 + 4 * 65_536 + 4_194_304);
    let ratio = (4 * 4096 * 4096) as f64 / expected_len(&big, 256) as f64;
    assert!((ratio - 32.0 / 2.125).abs() < 1e-3, "{ratio}");
}

#[test]
fn values_are_ternary_and_the_block_max_is_exact() {
    let layout = layout_of(&[("t", &[3, 100])]);
    let x = testkit::random_values(300, 3, 1.0);
    let c = build("block_size = 32");
    let y = decode(
        c.as_ref(),
        &compress(c.as_ref(), &layout, &x, &testkit::ctx(&layout, 0, 0, 0)),
        &testkit::ctx(&layout, 0, 0, 0),
    );
    for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
        let s = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (&xi, &yi) in xb.iter().zip(yb) {
            assert!(
                yi == 0.0 || yi == s || yi == -s,
                "block {b}: {yi} not in {{0, ±{s}}}"
            );
            assert!(yi == 0.0 || yi.signum() == xi.signum(), "sign flipped");
            if xi.abs() == s {
                assert_eq!(yi, xi, "block {b}: the maximum must decode exactly");
            }
        }
    }
}

// ---------------------------------------------------------------- unbiasedness

/// z-scores of the mean of `trials` decodes of the single-tensor `layout` against `x`,
/// each element's standard error from the documented variance `s·|x| − x²`. Elements with
/// zero variance (`|x| = s` or `x = 0`) must decode exactly every time and give no z.
fn z_scores(
    c: &dyn GradientCompressor,
    layout: &Layout,
    x: &[f32],
    block: usize,
    trials: usize,
) -> Result<Vec<f64>, String> {
    let mut sum = vec![0f64; x.len()];
    for t in 0..trials {
        let cx = testkit::ctx(layout, 9, t, 2);
        for (a, v) in sum
            .iter_mut()
            .zip(decode(c, &compress(c, layout, x, &cx), &cx))
        {
            *a += v as f64;
        }
    }
    let mut z = Vec::with_capacity(x.len());
    for (b, xb) in x.chunks(block).enumerate() {
        let s = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (k, &xi) in xb.iter().enumerate() {
            let (xi, j) = (xi as f64, b * block + k);
            let mean = sum[j] / trials as f64;
            let var = s * xi.abs() - xi * xi;
            if var == 0.0 {
                if mean != xi {
                    return Err(format!(
                        "element {j}: {xi} has no variance but decoded to {mean} on average"
                    ));
                }
            } else {
                z.push((mean - xi) / (var / trials as f64).sqrt());
            }
        }
    }
    Ok(z)
}

/// Unbiased with the documented variance: every |z| ≤ 6, and mean z² ≈ 1 (≫ 1 for a
/// biased coder, ≪ 1 when the documented variance is too large).
fn check_unbiased(z: &[f64]) -> Result<(), String> {
    let max = z.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mean_sq = z.iter().map(|v| v * v).sum::<f64>() / z.len() as f64;
    if max > 6.0 || !(0.75..=1.3).contains(&mean_sq) {
        return Err(format!("max |z| = {max:.2}, mean z² = {mean_sq:.3}"));
    }
    eprintln!(
        "{} elements: max |z| = {max:.2}, mean z² = {mean_sq:.3}",
        z.len()
    );
    Ok(())
}

#[test]
fn unbiased_with_the_documented_variance() {
    // 300 elements: blocks of 8 end on a partial block of 4, blocks of 256 on one of 44.
    let layout = layout_of(&[("a", &[6, 50])]);
    let x = testkit::random_values(layout.numel(), 77, 0.05);
    for block in [8usize, 256] {
        let c = build(&format!("block_size = {block}"));
        let z = z_scores(c.as_ref(), &layout, &x, block, 3000).unwrap();
        check_unbiased(&z).unwrap_or_else(|e| panic!("block {block}: {e}"));
    }
}

/// The same check rejects a biased coder, so the test above can fail: deterministic
/// nearest rounding onto {−s, 0, +s}.
#[test]
fn unbiasedness_check_catches_a_biased_coder() {
    struct Nearest;
    impl GradientCompressor for Nearest {
        fn name(&self) -> &str {
            "nearest-ternary"
        }
        fn compress(
            &self,
            u: &Update,
            _: &mut ClientState,
            _: &RoundCtx,
        ) -> cgfed_core::Result<Payload> {
            let mut b = Payload::builder("nearest-ternary")?;
            let x = u.to_flat()?;
            let s = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let y: Vec<f32> = x
                .iter()
                .map(|&v| {
                    if v.abs() >= s / 2.0 {
                        s.copysign(v)
                    } else {
                        0.0
                    }
                })
                .collect();
            b.put_f32s(&y);
            Ok(b.finish())
        }
        fn decompress(&self, p: &Payload, cx: &RoundCtx) -> cgfed_core::Result<Update> {
            let mut r = p.open("nearest-ternary")?;
            let y = r.f32s(cx.layout.numel())?;
            r.finish()?;
            Update::from_flat(&cx.layout, &y, &cx.device)
        }
    }
    let layout = layout_of(&[("a", &[64])]);
    let x = testkit::random_values(64, 77, 0.05);
    let verdict = z_scores(&Nearest, &layout, &x, 64, 200).and_then(|z| check_unbiased(&z));
    assert!(
        verdict.is_err(),
        "a biased coder passed the unbiasedness check"
    );
}

// ---------------------------------------------------------------- determinism

#[test]
fn deterministic_given_the_context() {
    let layout = layout_of(&[("a", &[4, 64]), ("b", &[64, 4])]);
    let x = testkit::random_values(layout.numel(), 1, 0.1);
    let c = build("");
    let cx = testkit::ctx(&layout, 42, 3, 5);
    let p = compress(c.as_ref(), &layout, &x, &cx);
    // Same ctx: the same bytes, also from a second instance built from the same table.
    assert_eq!(p, compress(c.as_ref(), &layout, &x, &cx));
    assert_eq!(p, compress(build("").as_ref(), &layout, &x, &cx));
    // The server decodes from bytes + ctx alone.
    assert_eq!(decode(c.as_ref(), &p, &cx).len(), x.len());
    // Any change of seed, round or client changes the draws.
    for other in [
        testkit::ctx(&layout, 43, 3, 5),
        testkit::ctx(&layout, 42, 4, 5),
        testkit::ctx(&layout, 42, 3, 6),
    ] {
        assert_ne!(p, compress(c.as_ref(), &layout, &x, &other));
    }
    // Tensors draw from different streams: two tensors with the same values differ.
    let twin = layout_of(&[("a", &[256]), ("b", &[256])]);
    let half = testkit::random_values(256, 2, 0.1);
    let both: Vec<f32> = half.iter().chain(&half).copied().collect();
    let q = compress(c.as_ref(), &twin, &both, &testkit::ctx(&twin, 0, 0, 0));
    let codes = |t: usize| &q.as_bytes()[HEADER + t * (4 + 64) + 4..HEADER + (t + 1) * (4 + 64)];
    assert_ne!(codes(0), codes(1));
}

// ---------------------------------------------------------------- malformed payloads

/// One tensor of 6 elements, block 4: body = 2 scales (8 bytes) + 2 code bytes, the
/// second holding elements 4 and 5 and 4 padding bits.
fn small_case() -> (Box<dyn GradientCompressor>, RoundCtx, Vec<u8>) {
    let layout = layout_of(&[("t", &[6])]);
    let c = build("block_size = 4");
    let cx = testkit::ctx(&layout, 0, 0, 0);
    let x = [0.5, -0.25, 0.0, 0.125, -2.0, 1.0];
    let bytes = compress(c.as_ref(), &layout, &x, &cx).into_bytes();
    assert_eq!(bytes.len(), HEADER + 8 + 2);
    assert_eq!(
        decode(c.as_ref(), &Payload::from_bytes(bytes.clone()), &cx)[4],
        -2.0
    );
    (c, cx, bytes)
}

const SCALE0: usize = HEADER; // offset of the first block's scale
const SCALE1: usize = HEADER + 4;
const CODES: usize = HEADER + 8;

#[test]
fn rejects_wrong_lengths() {
    let (c, cx, good) = small_case();
    for cut in 0..good.len() {
        let want = if cut == 0 { "empty" } else { "" };
        assert_malformed(c.as_ref(), good[..cut].to_vec(), &cx, want);
    }
    assert_malformed(
        c.as_ref(),
        good[..good.len() - 1].to_vec(),
        &cx,
        "truncated",
    );
    let mut long = good.clone();
    long.push(0);
    assert_malformed(c.as_ref(), long, &cx, "trailing");
    // A payload for another layout: too short for this one.
    let other = testkit::ctx(&layout_of(&[("t", &[60])]), 0, 0, 0);
    assert_malformed(c.as_ref(), good, &other, "truncated");
}

#[test]
fn rejects_bad_headers() {
    let (c, cx, good) = small_case();
    let mut b = good.clone();
    b[0] = 2;
    assert_malformed(c.as_ref(), b, &cx, "wire version");
    let mut b = good.clone();
    b[2] = b'T';
    assert_malformed(c.as_ref(), b, &cx, "expected \"ternary\"");
    let mut b = good;
    b[1] = 200;
    assert_malformed(c.as_ref(), b, &cx, "truncated");
}

#[test]
fn rejects_non_finite_and_negative_scales() {
    let (c, cx, good) = small_case();
    for (bad, needle) in [
        (f32::NAN, "non-finite"),
        (f32::INFINITY, "non-finite"),
        (f32::NEG_INFINITY, "non-finite"),
        (-1.0, "negative"),
        (-0.0, "negative"),
    ] {
        for at in [SCALE0, SCALE1] {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
            assert_malformed(c.as_ref(), b, &cx, needle);
        }
    }
}

#[test]
fn rejects_the_unused_code() {
    let (c, cx, good) = small_case();
    for j in 0..6 {
        let mut b = good.clone();
        b[CODES + j / 4] |= 0b11 << (2 * (j % 4));
        assert_malformed(c.as_ref(), b, &cx, &format!("code 0b11 at element {j}"));
    }
}

#[test]
fn rejects_non_zero_padding_bits() {
    let (c, cx, good) = small_case();
    for bit in 4..8 {
        let mut b = good.clone();
        b[CODES + 1] |= 1 << bit;
        assert_malformed(c.as_ref(), b, &cx, "padding");
    }
}

#[test]
fn rejects_non_canonical_blocks() {
    let (c, cx, good) = small_case();
    // Scale 0 with a non-zero code.
    let mut b = good.clone();
    b[SCALE0..SCALE0 + 4].copy_from_slice(&0f32.to_le_bytes());
    assert_malformed(c.as_ref(), b, &cx, "scale 0 but non-zero codes");
    // A positive scale with every code zero: the maximum is always sent.
    let mut b = good.clone();
    b[CODES + 1] = 0;
    assert_malformed(c.as_ref(), b, &cx, "no element at");
    // A zero block encodes as scale 0 and zero codes, and that decodes.
    let layout = layout_of(&[("t", &[6])]);
    let zero = compress(c.as_ref(), &layout, &[0.0; 6], &cx);
    assert_eq!(&zero.as_bytes()[HEADER..], &[0u8; 10]);
    assert_eq!(decode(c.as_ref(), &zero, &cx), vec![0.0; 6]);
}

#[test]
fn rejects_non_finite_inputs() {
    let layout = layout_of(&[("t", &[6])]);
    let c = build("");
    let cx = testkit::ctx(&layout, 0, 0, 0);
    for bad in [f32::NAN, f32::INFINITY] {
        let u = Update::from_flat(&layout, &[1.0, bad, 0.0, 0.0, 0.0, 0.0], &Device::Cpu).unwrap();
        assert!(c.compress(&u, &mut ClientState::default(), &cx).is_err());
    }
}

// ---------------------------------------------------------------- config

#[test]
fn config_errors_name_the_key_and_what_is_accepted() {
    let e = config_error("block_size = 0");
    assert!(
        e.contains("`compressor.block_size`") && e.contains(">= 1"),
        "{e}"
    );
    let e = config_error("block_size = -3");
    assert!(
        e.contains("`compressor.block_size`") && e.contains("got -3"),
        "{e}"
    );
    let e = config_error("block_size = \"big\"");
    assert!(
        e.contains("`compressor.block_size`") && e.contains("found a string"),
        "{e}"
    );
    let e = config_error("block_size = 2.5");
    assert!(
        e.contains("`compressor.block_size`") && e.contains("found a float"),
        "{e}"
    );
    let e = config_error("blocks = 64");
    assert!(
        e.contains("`compressor.blocks`") && e.contains("accepted keys: `block_size`"),
        "{e}"
    );
    // Wrapper keys are the core's: their errors name them too.
    let e = config_error("error_feedback = \"yes\"");
    assert!(e.contains("compressor.error_feedback"), "{e}");
    // Direct construction validates as well.
    let e = Ternary::new(TernaryConfig { block_size: 0 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("`ternary.block_size`"), "{e}");
}

// ---------------------------------------------------------------- registry

#[test]
fn registered_and_built_by_name_from_toml() {
    let p = registry::find("compressor", NAME).expect("ternary is registered");
    assert_eq!(p.kind(), "compressor");
    assert!(registry::names("compressor").contains(&NAME.to_string()));
    registry::check_unique().expect("no duplicate names");
    // Every documented key, at its documented default, builds.
    assert_eq!(p.params.len(), PARAMS.len());
    let defaults: String = p
        .params
        .iter()
        .map(|k| format!("{} = {}\n", k.key, k.default))
        .collect();
    assert_eq!(build(&defaults).describe(), "ternary(block 256)");
    // A full config file's [compressor] table, with a core wrapper.
    let doc: toml::Table = toml::from_str(
        "[compressor]\nname = \"ternary\"\nblock_size = 64\nerror_feedback = true\n",
    )
    .unwrap();
    let t = PluginTable::from_value("compressor", &doc["compressor"]).unwrap();
    let c = registry::build_compressor(&t).unwrap();
    assert_eq!(c.name(), "ternary");
    assert_eq!(c.describe(), "ternary(block 64), error feedback");
    // `kind = ...` works like `name = ...`, and a bare string too.
    let c = registry::build_compressor(&table("kind = \"ternary\"")).unwrap();
    assert_eq!(c.describe(), "ternary(block 256)");
    let bare =
        PluginTable::from_value("compressor", &toml::Value::String("ternary".into())).unwrap();
    assert_eq!(registry::build_compressor(&bare).unwrap().name(), "ternary");
}

#[test]
fn error_feedback_wrapper_keeps_a_residual() {
    // With error feedback, what was sent over T rounds of the same update x sums to
    // T·x − e_T: the gap ‖Σ x̂_t − T·x‖ = ‖e_T‖ stays bounded as T grows, while without it
    // the gap of independent unbiased errors grows like √T. (The bound grows with the
    // block size: the residual is about 1.4‖x‖ at blocks of 16 and 6‖x‖ at 256 here, since
    // ternary's error can exceed the signal, E‖x̂ − x‖² ≈ 1.2‖x‖² at 256.)
    let layout = layout_of(&[("a", &[8, 32])]);
    let x = testkit::random_values(256, 31, 0.05);
    let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let gap = |c: &dyn GradientCompressor, rounds: usize| {
        let u = Update::from_flat(&layout, &x, &Device::Cpu).unwrap();
        let mut state = ClientState::default();
        let mut sum = vec![0f64; x.len()];
        for round in 0..rounds {
            let cx = testkit::ctx(&layout, 2, round, 0);
            let p = c.compress(&u, &mut state, &cx).unwrap();
            for (s, v) in sum.iter_mut().zip(decode(c, &p, &cx)) {
                *s += v as f64;
            }
        }
        let err: f64 = sum
            .iter()
            .zip(&x)
            .map(|(s, &v)| (s - rounds as f64 * v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        (err / norm, state)
    };
    let ef = build("block_size = 16\nerror_feedback = true");
    let plain = build("block_size = 16");
    let (ef_400, state) = gap(ef.as_ref(), 400);
    let (plain_400, plain_state) = gap(plain.as_ref(), 400);
    assert!(
        plain_state.is_empty(),
        "ternary itself keeps no client state"
    );
    let residual = &state.buffers[cgfed_core::wrappers::RESIDUAL_KEY];
    assert_eq!(
        residual.len(),
        256,
        "the wrapper's residual, one value per element"
    );
    let e_norm = residual
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        (e_norm / norm - ef_400).abs() < 1e-3,
        "the gap is the residual"
    );
    assert!(ef_400 < 2.0, "EF gap {ef_400}");
    assert!(plain_400 > 5.0 * ef_400, "EF {ef_400} vs plain {plain_400}");
}
