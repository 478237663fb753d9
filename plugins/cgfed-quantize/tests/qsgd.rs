//! `qsgd`: conformance (levels 127, 7, 1, 300, 32767; l2 and max norms) with the
//! unbiasedness check, the exact payload length, hand-checked levels, crafted malformed
//! payloads, config errors, composition as a second stage through the registry, and the
//! measured error on Gaussian data.

use crate::common;

use cgfed_core::candle_core::Device;
use cgfed_core::metrics::rel_err;
use cgfed_core::testkit::{self, Expect};
use cgfed_core::wire::bits::width_for;
use cgfed_core::{registry, ClientState, GradientCompressor, Layout, Payload, PluginTable, Update};
use cgfed_quantize as _;
use common::{assert_malformed, composed, decode, half_layout, layout_of, roundtrip};

const HEADER: usize = 2 + 4; // version, name length, "qsgd"

fn qsgd(params: &str) -> Box<dyn GradientCompressor> {
    common::build("qsgd", params)
}

fn config_error(params: &str) -> String {
    common::config_error("qsgd", params)
}

/// The documented length: header + Σ_t 4·ceil(n_t/B) + ceil(n_t·width_for(2s)/8).
fn expected_len(layout: &Layout, levels: u64, bucket: usize) -> usize {
    let w = width_for(2 * levels) as usize;
    HEADER
        + layout
            .specs()
            .iter()
            .map(|s| 4 * s.numel().div_ceil(bucket) + (s.numel() * w).div_ceil(8))
            .sum::<usize>()
}

// ---------------------------------------------------------------- conformance

#[test]
fn conformance_default_127_levels_l2() {
    // 8-bit codes; buckets of 512 (the suite's tensors are smaller, one bucket each).
    testkit::check_compressor(
        qsgd("").as_ref(),
        &Expect {
            max_rel_err: 0.1,
            payload_len: Some(|l| expected_len(l, 127, 512)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_7_levels() {
    testkit::check_compressor(
        qsgd("levels = 7, bucket_size = 64").as_ref(),
        &Expect {
            max_rel_err: 1.0,
            payload_len: Some(|l| expected_len(l, 7, 64)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_1_level_max_norm() {
    // Ternary {-1, 0, 1}·max per bucket of 16.
    testkit::check_compressor(
        qsgd("levels = 1, bucket_size = 16, norm = \"max\"").as_ref(),
        &Expect {
            max_rel_err: 1.3,
            payload_len: Some(|l| expected_len(l, 1, 16)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_wide_codes() {
    // 10-bit and 16-bit codes go through the generic bit packer.
    testkit::check_compressor(
        qsgd("levels = 300, bucket_size = 7").as_ref(),
        &Expect {
            max_rel_err: 0.02,
            payload_len: Some(|l| expected_len(l, 300, 7)),
            unbiased: true,
            ..Expect::default()
        },
    );
    testkit::check_compressor(
        qsgd("levels = 32767, norm = \"max\"").as_ref(),
        &Expect {
            max_rel_err: 1e-3,
            payload_len: Some(|l| expected_len(l, 32767, 512)),
            unbiased: true,
            ..Expect::default()
        },
    );
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
    for levels in [1u64, 2, 3, 7, 8, 127, 128, 300, 32767] {
        for bucket in [1usize, 5, 64, 512, 100_000] {
            let c = qsgd(&format!("levels = {levels}, bucket_size = {bucket}"));
            for layout in &layouts {
                let x = testkit::random_values(layout.numel(), levels, 0.3);
                let (p, y) = roundtrip(c.as_ref(), layout, &x);
                assert_eq!(
                    p.len(),
                    expected_len(layout, levels, bucket),
                    "s {levels} b {bucket}"
                );
                assert!(y.iter().all(|v| v.is_finite()));
            }
        }
    }
    // In numbers: width_for(2s) is 2 bits for s = 1, 8 for 127, 9 for 128, 16 for 32767.
    let l = layout_of(&[("w", &[1024])]);
    assert_eq!(expected_len(&l, 1, 512), 6 + 8 + 256);
    assert_eq!(expected_len(&l, 127, 512), 6 + 8 + 1024);
    assert_eq!(expected_len(&l, 128, 512), 6 + 8 + 1152);
    assert_eq!(expected_len(&l, 32767, 512), 6 + 8 + 2048);
}

#[test]
fn levels_by_hand_with_the_max_norm() {
    // norm = max = 1, s = 4: r = 4|x| = 4, 4, 2, 1, 0 are integers, so no randomness:
    // levels +4, -4, +2, -1, 0 -> codes s + level = 8, 0, 6, 3, 4 in width_for(8) = 4 bits.
    let l = layout_of(&[("t", &[5])]);
    let c = qsgd("levels = 4, norm = \"max\"");
    let x = [1.0, -1.0, 0.5, -0.25, 0.0];
    let (p, y) = roundtrip(c.as_ref(), &l, &x);
    let body = &p.as_bytes()[HEADER..];
    assert_eq!(body, &[0x00, 0x00, 0x80, 0x3f, 0x08, 0x36, 0x04]);
    assert_eq!(y, x);
}

#[test]
fn l2_levels_are_the_two_neighbours_with_the_right_frequency() {
    // x = [3, -4]: ‖x‖ = 5, s = 1: r = 0.6, 0.8, so x̂_0 ∈ {0, 5} with P(5) = 0.6 and
    // x̂_1 ∈ {0, -5} with P(-5) = 0.8.
    let l = layout_of(&[("t", &[2])]);
    let c = qsgd("levels = 1");
    let u = Update::from_flat(&l, &[3.0, -4.0], &Device::Cpu).unwrap();
    let rounds = 4000;
    let (mut hits0, mut hits1) = (0, 0);
    for round in 0..rounds {
        let cx = testkit::ctx(&l, 3, round, 1);
        let p = c.compress(&u, &mut ClientState::default(), &cx).unwrap();
        assert_eq!(&p.as_bytes()[HEADER..HEADER + 4], &5.0f32.to_le_bytes());
        let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
        assert!(y[0] == 0.0 || y[0] == 5.0, "{y:?}");
        assert!(y[1] == 0.0 || y[1] == -5.0, "{y:?}");
        hits0 += (y[0] == 5.0) as usize;
        hits1 += (y[1] == -5.0) as usize;
    }
    let (f0, f1) = (hits0 as f64 / rounds as f64, hits1 as f64 / rounds as f64);
    // Binomial standard deviation at 4000 draws is below 0.008.
    assert!(
        (f0 - 0.6).abs() < 0.03 && (f1 - 0.8).abs() < 0.03,
        "{f0} {f1}"
    );
}

#[test]
fn the_l2_norm_on_the_wire_is_rounded_up() {
    // ‖(1, 1, 1)‖ = √3 is not an f32; the norm sent is the next f32 above, so r ≤ s.
    let l = layout_of(&[("t", &[3])]);
    let (p, y) = roundtrip(qsgd("levels = 1").as_ref(), &l, &[1.0, 1.0, 1.0]);
    let b = &p.as_bytes()[HEADER..HEADER + 4];
    let norm = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    assert!(
        norm as f64 >= 3f64.sqrt() && (norm as f64) < 3f64.sqrt() + 1e-6,
        "{norm}"
    );
    assert!(y.iter().all(|&v| v == 0.0 || v == norm));
    // Values near f32::MAX: the l2 norm overflows f32 and is capped, still ≥ max|x|.
    let big = [3.0e38f32, -3.0e38, 1.0e38];
    let (p, y) = roundtrip(qsgd("").as_ref(), &l, &big);
    let b = &p.as_bytes()[HEADER..HEADER + 4];
    assert_eq!(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), f32::MAX);
    assert!(y.iter().all(|v| v.is_finite()));
    assert!(y[0] > 0.0 && y[1] < 0.0);
}

#[test]
fn zero_bucket_has_zero_norm_and_level_zero() {
    let l = layout_of(&[("t", &[6])]);
    let c = qsgd("levels = 7, bucket_size = 3");
    let (p, y) = roundtrip(c.as_ref(), &l, &[0.0, -0.0, 0.0, 1.0, -1.0, 0.0]);
    let body = &p.as_bytes()[HEADER..];
    assert_eq!(&body[..4], &[0, 0, 0, 0]);
    // Codes (4 bits): s = 7 (level 0) for each element of the zero bucket. (In the second
    // bucket r = 7/√2 ≈ 4.95 for ±1: random neighbours, not checked here.)
    assert_eq!(body[8], 0x77);
    assert_eq!(body[9] & 0x0f, 0x07);
    assert_eq!(&y[..3], &[0.0, 0.0, 0.0]);
    assert_eq!(y[5], 0.0, "a zero in a non-zero bucket stays zero");
}

#[test]
fn streams_are_seeded_by_round_client_and_tensor() {
    let l = layout_of(&[("a", &[256]), ("b", &[256])]);
    let v = testkit::random_values(256, 4, 1.0);
    let x: Vec<f32> = v.iter().chain(&v).copied().collect();
    let c = qsgd("levels = 3");
    let u = Update::from_flat(&l, &x, &Device::Cpu).unwrap();
    let run = |round, client| {
        let cx = testkit::ctx(&l, 8, round, client);
        c.compress(&u, &mut ClientState::default(), &cx).unwrap()
    };
    assert_eq!(run(0, 0), run(0, 0));
    assert_ne!(run(0, 0), run(1, 0));
    assert_ne!(run(0, 0), run(0, 1));
    // Two identical tensors draw from different streams.
    let p = run(0, 0);
    let tensor_bytes = 4 + 256 * 3 / 8;
    let body = &p.as_bytes()[HEADER..];
    assert_ne!(&body[4..tensor_bytes], &body[tensor_bytes + 4..]);
}

#[test]
fn unbiased_over_many_rounds() {
    let l = layout_of(&[("t", &[40])]);
    let x = testkit::random_values(40, 12, 1.0);
    let c = qsgd("levels = 2, bucket_size = 8");
    let u = Update::from_flat(&l, &x, &Device::Cpu).unwrap();
    let rounds = 3000;
    let mut mean = vec![0f64; 40];
    for round in 0..rounds {
        let cx = testkit::ctx(&l, 6, round, 2);
        let p = c.compress(&u, &mut ClientState::default(), &cx).unwrap();
        for (m, v) in mean
            .iter_mut()
            .zip(c.decompress(&p, &cx).unwrap().to_flat().unwrap())
        {
            *m += v as f64 / rounds as f64;
        }
    }
    let err = rel_err(&x, &mean.iter().map(|&m| m as f32).collect::<Vec<_>>());
    assert!(err < 0.03, "mean of {rounds} decodes is {err} away from x");
}

#[test]
fn relative_error_on_gaussian_data() {
    let l = layout_of(&[("w", &[256, 256])]);
    let x = testkit::random_values(l.numel(), 3, 1.0);
    let mut errs = Vec::new();
    for params in [
        "",
        "levels = 7",
        "norm = \"max\"",
        "levels = 7, norm = \"max\"",
    ] {
        let (_, y) = roundtrip(qsgd(params).as_ref(), &l, &x);
        let e = rel_err(&x, &y);
        eprintln!("qsgd [{params}] bucket 512: rel err {e:.4}");
        errs.push(e);
    }
    // levels 127, l2: variance per element ≤ (‖v‖/s)²/4, about 0.07 here.
    assert!(errs[0] > 0.03 && errs[0] < 0.1, "{}", errs[0]);
    // levels 7, l2: most r_i are below 1 (r = 7|v|/‖v‖ ≈ 0.3|v|/σ), error about 1.6.
    assert!(errs[1] > 1.0 && errs[1] < 2.2, "{}", errs[1]);
    // The max norm spans the bucket's range: much smaller error.
    assert!(errs[2] < errs[0] && errs[3] < errs[1]);
}

#[test]
fn empty_layout_is_the_header_alone() {
    let l = Layout::default();
    let c = qsgd("");
    let (p, y) = roundtrip(c.as_ref(), &l, &[]);
    assert_eq!(p.len(), HEADER);
    assert!(y.is_empty());
    assert!(decode(c.as_ref(), &l, [p.as_bytes(), &[0]].concat()).is_err());
}

// ---------------------------------------------------------------- malformed payloads

fn good_payload(
    params: &str,
    layout: &Layout,
    x: &[f32],
) -> (Box<dyn GradientCompressor>, Vec<u8>) {
    let c = qsgd(params);
    let (p, _) = roundtrip(c.as_ref(), layout, x);
    (c, p.into_bytes())
}

#[test]
fn rejects_bad_norms() {
    let l = layout_of(&[("t", &[5])]);
    let (c, good) = good_payload("levels = 7", &l, &[0.1, -0.2, 0.3, 0.0, 0.05]);
    for (bad, what) in [
        (f32::NAN, "NaN norm"),
        (f32::NEG_INFINITY, "infinite norm"),
        (-1.0, "negative norm"),
        (-0.0, "negative zero norm"),
    ] {
        let mut b = good.clone();
        b[HEADER..HEADER + 4].copy_from_slice(&bad.to_le_bytes());
        assert_malformed(decode(c.as_ref(), &l, b), what);
    }
    let mut b = good.clone();
    b[HEADER..HEADER + 4].copy_from_slice(&f32::MAX.to_le_bytes());
    let y = decode(c.as_ref(), &l, b).unwrap().to_flat().unwrap();
    assert!(
        y.iter().all(|v| v.is_finite()),
        "the largest norm still decodes finitely"
    );
}

#[test]
fn rejects_out_of_range_codes_padding_truncation_and_trailing_bytes() {
    // levels 7: codes 0..=14 in 4 bits, so 15 is out of range.
    let l = layout_of(&[("t", &[5])]);
    let (c, good) = good_payload("levels = 7", &l, &[0.1, -0.2, 0.3, 0.0, 0.05]);
    assert_eq!(good.len(), HEADER + 4 + 3); // 20 bits -> 3 bytes, 4 padding bits
    let mut b = good.clone();
    b[HEADER + 4] |= 0x0f;
    assert_malformed(decode(c.as_ref(), &l, b), "code 15 > 2s");
    let mut b = good.clone();
    b[HEADER + 6] |= 0x10;
    assert_malformed(decode(c.as_ref(), &l, b), "non-zero padding bit");
    assert_malformed(
        decode(c.as_ref(), &l, good[..good.len() - 1].to_vec()),
        "truncated codes",
    );
    let mut b = good.clone();
    b.push(0);
    assert_malformed(decode(c.as_ref(), &l, b), "trailing byte");
    // A zero-norm bucket must carry level 0 (code s = 7).
    let (c, zero) = good_payload("levels = 7", &l, &[0.0; 5]);
    assert_eq!(&zero[HEADER + 4..], &[0x77, 0x77, 0x07]);
    let mut b = zero.clone();
    b[HEADER + 4] = 0x78;
    assert_malformed(decode(c.as_ref(), &l, b), "zero norm with a non-zero level");
    // Wide codes (levels 300, 10 bits): 601 is above 2s = 600; padding; truncation.
    let (c, wide) = good_payload("levels = 300", &l, &[0.1, -0.2, 0.3, 0.0, 0.05]);
    assert_eq!(wide.len(), HEADER + 4 + 7); // 50 bits -> 7 bytes
    let mut b = wide.clone();
    b[HEADER + 4] = (601 & 0xff) as u8;
    b[HEADER + 5] = (b[HEADER + 5] & !0x03) | (601 >> 8) as u8;
    assert_malformed(decode(c.as_ref(), &l, b), "wide code 601 > 600");
    let mut b = wide.clone();
    *b.last_mut().unwrap() |= 0x80;
    assert_malformed(decode(c.as_ref(), &l, b), "wide padding bit");
    assert_malformed(
        decode(c.as_ref(), &l, wide[..wide.len() - 2].to_vec()),
        "wide truncated",
    );
    // Decoding with another width (levels 127: 8 bits) sees a body of the wrong length.
    assert_malformed(decode(qsgd("").as_ref(), &l, good), "wrong code width");
}

// ---------------------------------------------------------------- config

#[test]
fn config_errors_name_the_key_and_the_accepted_values() {
    let e = config_error("levels = 0");
    assert!(
        e.contains("compressor.levels") && e.contains("1..=32767"),
        "{e}"
    );
    let e = config_error("levels = 32768");
    assert!(
        e.contains("compressor.levels") && e.contains("1..=32767"),
        "{e}"
    );
    let e = config_error("bucket_size = 0");
    assert!(
        e.contains("compressor.bucket_size") && e.contains(">= 1"),
        "{e}"
    );
    let e = config_error("norm = \"l1\"");
    assert!(
        e.contains("compressor.norm") && e.contains("l2") && e.contains("max"),
        "{e}"
    );
    let e = config_error("levels = 1.5");
    assert!(e.contains("compressor.levels"), "{e}");
    let e = config_error("bits = 8");
    assert!(e.contains("bits") && e.contains("levels"), "{e}");
}

#[test]
fn builds_from_the_documented_defaults() {
    let plugin = registry::find("compressor", "qsgd").unwrap();
    let mut t = cgfed_core::toml::Table::new();
    for p in plugin.params {
        assert_ne!(p.default, "-");
        let v: cgfed_core::toml::Table =
            cgfed_core::toml::from_str(&format!("v = {}", p.default)).unwrap();
        t.insert(p.key.to_string(), v["v"].clone());
    }
    let keys: Vec<&str> = plugin.params.iter().map(|p| p.key).collect();
    assert_eq!(keys, ["levels", "bucket_size", "norm"]);
    t.insert("kind".into(), "qsgd".into());
    let pt = PluginTable::from_value("compressor", &cgfed_core::toml::Value::Table(t)).unwrap();
    let c = registry::build_compressor(&pt).unwrap();
    assert_eq!(c.describe(), "qsgd(127 levels, bucket 512, l2)");
    let direct = cgfed_quantize::Qsgd::new(cgfed_quantize::QsgdConfig::default()).unwrap();
    assert_eq!(direct.code_width(), 8);
    let l = &testkit::layouts()[3];
    assert_eq!(direct.payload_len(l), expected_len(l, 127, 512));
}

// ---------------------------------------------------------------- composition

#[test]
fn second_stage_of_a_composition() {
    let c = composed("{ kind = \"qsgd\", levels = 15, bucket_size = 32 }");
    assert_eq!(c.name(), "first-half+qsgd");
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 0.95,
            payload_len: Some(|l| {
                Payload::header_len("first-half+qsgd") + 1 + expected_len(&half_layout(l), 15, 32)
                    - HEADER
            }),
            ..Expect::default()
        },
    );
    // The second stage runs on the values layout with the round's seed: the same as qsgd
    // alone on the kept values.
    let layout = &testkit::layouts()[0];
    let x = testkit::random_values(layout.numel(), 4, 0.2);
    let (p, _) = roundtrip(c.as_ref(), layout, &x);
    let vl = half_layout(layout);
    let vx: Vec<f32> = Update::from_flat(layout, &x, &Device::Cpu)
        .unwrap()
        .to_parts()
        .unwrap()
        .into_iter()
        .flat_map(|p| p[..p.len().div_ceil(2)].to_vec())
        .collect();
    let (alone, _) = roundtrip(qsgd("levels = 15, bucket_size = 32").as_ref(), &vl, &vx);
    let header = Payload::header_len("first-half+qsgd");
    assert_eq!(&p.as_bytes()[header + 1..], &alone.as_bytes()[HEADER..]);
}
