//! `sign`: conformance (per tensor and per block), the exact payload length, hand-checked
//! bits and scales, crafted malformed payloads, config errors, composition as a second
//! stage through the registry, and error feedback (EF-signSGD).

use crate::common;

use cgfed_core::metrics::rel_err;
use cgfed_core::testkit::{self, Expect};
use cgfed_core::{registry, GradientCompressor, Layout, Payload, PluginTable};
use cgfed_quantize as _;
use common::{assert_malformed, composed, decode, half_layout, layout_of, residual, roundtrip};

const HEADER: usize = 2 + 4; // version, name length, "sign"

fn sign(params: &str) -> Box<dyn GradientCompressor> {
    common::build("sign", params)
}

fn config_error(params: &str) -> String {
    common::config_error("sign", params)
}

/// The documented length: header + Σ_t 4·m_t + ceil(n_t/8), `m_t` = 1 per non-empty
/// tensor by default, `ceil(n_t/B)` with `block_size = B`.
fn expected_len(layout: &Layout, block: Option<usize>) -> usize {
    HEADER
        + layout
            .specs()
            .iter()
            .map(|s| {
                let n = s.numel();
                let m = match block {
                    None => (n > 0) as usize,
                    Some(b) => n.div_ceil(b),
                };
                4 * m + n.div_ceil(8)
            })
            .sum::<usize>()
}

// ---------------------------------------------------------------- conformance

#[test]
fn conformance_one_scale_per_tensor() {
    // Scaled sign on Gaussian-like data: √(1 − (E|x|)²/E[x²]) ≈ 0.6 per block (0.0 for
    // the 1-element layout, a constant is exact).
    testkit::check_compressor(
        sign("").as_ref(),
        &Expect {
            max_rel_err: 0.65,
            payload_len: Some(|l| expected_len(l, None)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_blocks() {
    for (params, block) in [("block_size = 16", 16usize), ("block_size = 3", 3)] {
        let len: fn(&Layout) -> usize = if block == 16 {
            |l| expected_len(l, Some(16))
        } else {
            |l| expected_len(l, Some(3))
        };
        testkit::check_compressor(
            sign(params).as_ref(),
            &Expect {
                max_rel_err: 0.65,
                payload_len: Some(len),
                ..Expect::default()
            },
        );
    }
}

// ---------------------------------------------------------------- lengths and values

#[test]
fn payload_length_formula() {
    let mut layouts = testkit::layouts();
    layouts.push(layout_of(&[
        ("big", &[3, 333]),
        ("one", &[1]),
        ("z", &[17]),
    ]));
    for block in [
        None,
        Some(1usize),
        Some(7),
        Some(8),
        Some(64),
        Some(100_000),
    ] {
        let c = match block {
            None => sign(""),
            Some(b) => sign(&format!("block_size = {b}")),
        };
        for layout in &layouts {
            let x = testkit::random_values(layout.numel(), 5, 0.3);
            let (p, y) = roundtrip(c.as_ref(), layout, &x);
            assert_eq!(p.len(), expected_len(layout, block), "block {block:?}");
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }
    // In numbers: 4096x4096 with one scale is 4 + 2 MiB; with blocks of 256, 65536 scales.
    let l = layout_of(&[("w", &[4096, 4096])]);
    assert_eq!(expected_len(&l, None), 6 + 4 + 2_097_152);
    assert_eq!(expected_len(&l, Some(256)), 6 + 4 * 65_536 + 2_097_152);
}

#[test]
fn bits_and_scale_by_hand() {
    // mean|x| = (1 + 2 + 3 + 4 + 0 + 0.5 + 0.5 + 1 + 1)/9 = 13/9; negatives at 1, 3, 6, 8:
    // byte 0 = bits 1, 3, 6 = 0x4A, byte 1 = bit 0 = 0x01. The zero decodes as +scale.
    let l = layout_of(&[("t", &[9])]);
    let x = [1.0, -2.0, 3.0, -4.0, 0.0, 0.5, -0.5, 1.0, -1.0];
    let (p, y) = roundtrip(sign("").as_ref(), &l, &x);
    let a = (13.0f64 / 9.0) as f32;
    let mut want = a.to_le_bytes().to_vec();
    want.extend_from_slice(&[0x4A, 0x01]);
    assert_eq!(&p.as_bytes()[HEADER..], want.as_slice());
    let signs = [1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0];
    assert_eq!(y, signs.map(|s| s * a));
}

#[test]
fn blocks_have_their_own_scales() {
    let l = layout_of(&[("a", &[5]), ("b", &[2])]);
    let c = sign("block_size = 2");
    let (p, y) = roundtrip(c.as_ref(), &l, &[1.0, -3.0, 0.5, 0.5, -8.0, 0.25, -0.75]);
    // a: blocks [1, -3] (2), [0.5, 0.5] (0.5), [-8] (8); b: [0.25, -0.75] (0.5).
    assert_eq!(p.len(), HEADER + (3 * 4 + 1) + (4 + 1));
    assert_eq!(y, vec![2.0, -2.0, 0.5, 0.5, -8.0, 0.5, -0.5]);
}

#[test]
fn zero_blocks_decode_to_zeros() {
    let l = layout_of(&[("t", &[6])]);
    let c = sign("block_size = 3");
    let (p, y) = roundtrip(c.as_ref(), &l, &[0.0, -0.0, 0.0, 1.0, -0.0, -2.0]);
    let body = &p.as_bytes()[HEADER..];
    assert_eq!(&body[..4], &[0, 0, 0, 0]);
    // −0 is not negative: only element 5 sets its bit.
    assert_eq!(body[8], 0b10_0000);
    assert_eq!(&y[..3], &[0.0, 0.0, 0.0]);
    assert!(y[..3].iter().all(|v| v.is_sign_positive()));
    assert_eq!(&y[3..], &[1.0, 1.0, -1.0]);
}

#[test]
fn relative_error_on_gaussian_data_is_about_0_6() {
    let l = layout_of(&[("w", &[256, 256])]);
    let x = testkit::random_values(l.numel(), 3, 1.0);
    // For the suite's data (sum of four uniforms, variance 1/3, E|x| = 7/15):
    // √(1 − 3·(7/15)²) = 0.5888; for a true Gaussian √(1 − 2/π) = 0.6028.
    let want = (1.0f64 - (7.0f64 / 15.0).powi(2) * 3.0).sqrt();
    for params in ["", "block_size = 256"] {
        let (p, y) = roundtrip(sign(params).as_ref(), &l, &x);
        let e = rel_err(&x, &y);
        eprintln!(
            "sign [{params}]: rel err {e:.4} (theory {want:.4}), {:.4} bits/elem",
            8.0 * p.len() as f64 / l.numel() as f64
        );
        assert!((e - want).abs() < 0.01, "{e}");
    }
}

#[test]
fn empty_layout_is_the_header_alone() {
    let l = Layout::default();
    for c in [sign(""), sign("block_size = 4")] {
        let (p, y) = roundtrip(c.as_ref(), &l, &[]);
        assert_eq!(p.len(), HEADER);
        assert!(y.is_empty());
        assert!(decode(c.as_ref(), &l, [p.as_bytes(), &[0]].concat()).is_err());
    }
}

// ---------------------------------------------------------------- malformed payloads

#[test]
fn rejects_bad_scales_padding_truncation_and_trailing_bytes() {
    let l = layout_of(&[("t", &[5])]);
    let c = sign("");
    let (p, _) = roundtrip(c.as_ref(), &l, &[0.1, -0.2, 0.3, 0.0, -0.05]);
    let good = p.into_bytes();
    assert_eq!(good.len(), HEADER + 4 + 1);
    for (bad, what) in [
        (f32::NAN, "NaN scale"),
        (f32::INFINITY, "infinite scale"),
        (-0.5, "negative scale"),
        (-0.0, "negative zero scale"),
    ] {
        let mut b = good.clone();
        b[HEADER..HEADER + 4].copy_from_slice(&bad.to_le_bytes());
        assert_malformed(decode(c.as_ref(), &l, b), what);
    }
    let mut b = good.clone();
    b[HEADER + 4] |= 0x20; // bit 5: padding after 5 signs
    assert_malformed(decode(c.as_ref(), &l, b), "non-zero padding bit");
    assert_malformed(
        decode(c.as_ref(), &l, good[..good.len() - 1].to_vec()),
        "truncated bits",
    );
    assert_malformed(
        decode(c.as_ref(), &l, good[..HEADER + 3].to_vec()),
        "truncated scale",
    );
    let mut b = good.clone();
    b.push(0);
    assert_malformed(decode(c.as_ref(), &l, b), "trailing byte");
    // A zero scale carries no negative signs.
    let (p, _) = roundtrip(c.as_ref(), &l, &[0.0; 5]);
    let mut b = p.into_bytes();
    assert_eq!(&b[HEADER..], &[0, 0, 0, 0, 0]);
    b[HEADER + 4] = 0x04;
    assert_malformed(decode(c.as_ref(), &l, b), "zero scale with a negative sign");
    // Per-block payloads read per tensor are the wrong length.
    let blocks = sign("block_size = 2");
    assert_malformed(decode(blocks.as_ref(), &l, good), "other block size");
}

// ---------------------------------------------------------------- config

#[test]
fn config_errors_name_the_key_and_the_accepted_values() {
    let e = config_error("block_size = 0");
    assert!(
        e.contains("compressor.block_size") && e.contains(">= 1"),
        "{e}"
    );
    let e = config_error("block_size = \"tensor\"");
    assert!(e.contains("compressor.block_size"), "{e}");
    let e = config_error("bits = 1");
    assert!(e.contains("bits") && e.contains("block_size"), "{e}");
    let mut values = common::table("sign", "");
    values.key = "compressor.values".into();
    values
        .params
        .insert("block_size".into(), cgfed_core::toml::Value::Integer(0));
    let e = registry::build_compressor(&values)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("compressor.values.block_size"), "{e}");
}

#[test]
fn builds_from_the_documented_defaults() {
    let plugin = registry::find("compressor", "sign").unwrap();
    let keys: Vec<(&str, &str)> = plugin.params.iter().map(|p| (p.key, p.default)).collect();
    assert_eq!(keys, [("block_size", "-")]);
    let c = registry::build_compressor(&PluginTable::named("compressor", "sign")).unwrap();
    assert_eq!(c.describe(), "sign(per tensor)");
    assert_eq!(sign("block_size = 32").describe(), "sign(block 32)");
    let direct = cgfed_quantize::Sign::new(cgfed_quantize::SignConfig::default()).unwrap();
    let l = &testkit::layouts()[3];
    assert_eq!(direct.payload_len(l), expected_len(l, None));
}

// ---------------------------------------------------------------- error feedback

#[test]
fn error_feedback_makes_signs_track_the_sum() {
    let layout = &testkit::layouts()[3];
    for (params, with_ef) in [
        ("", "error_feedback = true"),
        ("block_size = 16", "block_size = 16, error_feedback = true"),
    ] {
        let plain = sign(params);
        let ef = sign(with_ef);
        assert!(ef.describe().ends_with(", error feedback"));
        let (p100, p400) = (
            residual(plain.as_ref(), layout, 100),
            residual(plain.as_ref(), layout, 400),
        );
        let (e100, e400) = (
            residual(ef.as_ref(), layout, 100),
            residual(ef.as_ref(), layout, 400),
        );
        eprintln!(
            "sign [{params}], ‖Σ decoded − T·x‖/‖x‖ at T = 100, 400: plain {p100:.1}, {p400:.1}; \
             error feedback {e100:.2}, {e400:.2}"
        );
        // Without EF the error of the sum grows like T·0.6.
        assert!(p100 > 50.0 && p400 > 3.9 * p100, "{p100} {p400}");
        // With EF it is the residual, which grows far slower than T (it levels off at about
        // 3.3‖x‖ with blocks of 16; one scale per tensor of 384 creeps up to ~16‖x‖ by
        // T = 3200), so the average of the decodes converges to x.
        assert!(e100 < 10.0 && e400 < 15.0, "{e100} {e400}");
        assert!(e400 < 2.0 * e100, "residual grows like T: {e100} -> {e400}");
        assert!(e400 / 400.0 < 0.03, "average drift {}", e400 / 400.0);
    }
}

// ---------------------------------------------------------------- composition

#[test]
fn second_stage_of_a_composition() {
    let c = composed("{ kind = \"sign\" }");
    assert_eq!(c.name(), "first-half+sign");
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 0.95,
            payload_len: Some(|l| {
                Payload::header_len("first-half+sign") + 1 + expected_len(&half_layout(l), None)
                    - HEADER
            }),
            ..Expect::default()
        },
    );
    // With error feedback around the composition the dropped half is caught up later too.
    let ef = {
        let t: cgfed_core::toml::Table = cgfed_core::toml::from_str(
            "kind = \"first-half\"\nvalues = { kind = \"sign\" }\nerror_feedback = true",
        )
        .unwrap();
        let t = cgfed_core::toml::Value::Table(t);
        registry::build_compressor(&PluginTable::from_value("compressor", &t).unwrap()).unwrap()
    };
    let layout = &testkit::layouts()[0];
    let x = testkit::random_values(layout.numel(), 4, 0.2);
    let (p, y) = roundtrip(ef.as_ref(), layout, &x);
    assert_eq!(
        p.len(),
        Payload::header_len("first-half+sign") + 1 + expected_len(&half_layout(layout), None)
            - HEADER
    );
    // The second half of every tensor decodes to zero in the first round.
    assert_eq!(y[64..128], [0.0; 64]);
}
