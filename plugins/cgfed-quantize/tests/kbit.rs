//! `kbit`: conformance (8, 4 and 1 bits, nearest and stochastic), the exact payload
//! length, hand-checked codes, crafted malformed payloads, config errors, composition as a
//! second stage through the registry, and error feedback.

use crate::common;

use cgfed_core::candle_core::Device;
use cgfed_core::metrics::rel_err;
use cgfed_core::testkit::{self, Expect};
use cgfed_core::{registry, ClientState, GradientCompressor, Layout, Payload, PluginTable, Update};
use cgfed_quantize as _;
use common::{assert_malformed, composed, decode, half_layout, layout_of, residual, roundtrip};

const HEADER: usize = 2 + 4; // version, name length, "kbit"

fn kbit(params: &str) -> Box<dyn GradientCompressor> {
    common::build("kbit", params)
}

fn config_error(params: &str) -> String {
    common::config_error("kbit", params)
}

/// The documented length: header + Σ_t 4·ceil(n_t/B) + ceil(n_t·bits/8).
fn expected_len(layout: &Layout, bits: usize, block: usize) -> usize {
    HEADER
        + layout
            .specs()
            .iter()
            .map(|s| 4 * s.numel().div_ceil(block) + (s.numel() * bits).div_ceil(8))
            .sum::<usize>()
}

// ---------------------------------------------------------------- conformance

#[test]
fn conformance_8_bits_nearest() {
    // Default config: 8 bits, blocks of 64, nearest. Step 2a/255 per block; on the
    // suite's Gaussian-like data the relative error is ~0.005.
    testkit::check_compressor(
        kbit("").as_ref(),
        &Expect {
            max_rel_err: 0.01,
            payload_len: Some(|l| expected_len(l, 8, 64)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_4_bits_nearest() {
    testkit::check_compressor(
        kbit("bits = 4").as_ref(),
        &Expect {
            max_rel_err: 0.15,
            payload_len: Some(|l| expected_len(l, 4, 64)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_1_bit_nearest() {
    testkit::check_compressor(
        kbit("bits = 1, block_size = 16").as_ref(),
        // ±absmax per block of 16: about 1.3 on the suite's Gaussian-like data.
        &Expect {
            max_rel_err: 1.6,
            payload_len: Some(|l| expected_len(l, 1, 16)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_8_bits_stochastic_is_unbiased() {
    testkit::check_compressor(
        kbit("rounding = \"stochastic\"").as_ref(),
        &Expect {
            max_rel_err: 0.015,
            payload_len: Some(|l| expected_len(l, 8, 64)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_3_bits_stochastic_odd_blocks() {
    testkit::check_compressor(
        kbit("bits = 3, block_size = 5, rounding = \"stochastic\"").as_ref(),
        &Expect {
            max_rel_err: 0.4,
            payload_len: Some(|l| expected_len(l, 3, 5)),
            unbiased: true,
            ..Expect::default()
        },
    );
}

// ---------------------------------------------------------------- lengths and values

#[test]
fn payload_length_formula_for_every_width_and_block() {
    let mut layouts = testkit::layouts();
    layouts.push(layout_of(&[
        ("big", &[3, 333]),
        ("one", &[1]),
        ("z", &[17]),
    ]));
    for bits in 1..=8usize {
        for block in [1usize, 3, 8, 64, 1000] {
            let c = kbit(&format!("bits = {bits}, block_size = {block}"));
            for layout in &layouts {
                let x = testkit::random_values(layout.numel(), bits as u64, 0.3);
                let (p, y) = roundtrip(c.as_ref(), layout, &x);
                assert_eq!(
                    p.len(),
                    expected_len(layout, bits, block),
                    "bits {bits} block {block}"
                );
                assert!(y.iter().all(|v| v.is_finite()));
            }
        }
    }
    // The formula in numbers: 4096 elements, 8 bits, blocks of 64 -> 64 scales.
    let l = layout_of(&[("w", &[64, 64])]);
    assert_eq!(expected_len(&l, 8, 64), 6 + 4 * 64 + 4096);
    assert_eq!(expected_len(&l, 1, 64), 6 + 4 * 64 + 512);
}

#[test]
fn two_bit_codes_by_hand() {
    // a = 1, L = 3, levels -1, -1/3, 1/3, 1. t = (x + 1)·1.5:
    // 1 -> 3, -1 -> 0, 0.3 -> 1.95 -> 2, 0 -> 1.5 -> 2 (ties up), -0.4 -> 0.9 -> 1.
    let l = layout_of(&[("t", &[5])]);
    let c = kbit("bits = 2, block_size = 64");
    let (p, y) = roundtrip(c.as_ref(), &l, &[1.0, -1.0, 0.3, 0.0, -0.4]);
    let body = &p.as_bytes()[HEADER..];
    // codes 3,0,2,2,1 LSB first: 0b10_10_00_11 = 0xA3, then 0b01 = 0x01.
    assert_eq!(body, &[0x00, 0x00, 0x80, 0x3f, 0xA3, 0x01]);
    let third = 1.0f32 / 3.0;
    assert_eq!(y, vec![1.0, -1.0, third, third, -third]);
}

#[test]
fn eight_bit_codes_by_hand() {
    // a = 0.5, L = 255, t = (x/a + 1)·127.5: 0.5 -> 255, -0.25 -> 63.75 -> 64,
    // 0.1 -> 153, -0.5 -> 0.
    let l = layout_of(&[("t", &[4])]);
    let (p, y) = roundtrip(kbit("").as_ref(), &l, &[0.5, -0.25, 0.1, -0.5]);
    let body = &p.as_bytes()[HEADER..];
    assert_eq!(&body[..4], &0.5f32.to_le_bytes());
    assert_eq!(&body[4..], &[255, 64, 153, 0]);
    assert_eq!(y[0], 0.5);
    assert_eq!(y[3], -0.5);
    assert!((y[1] - (-127.0 / 255.0 * 0.5)).abs() < 1e-7);
    assert!((y[2] - 0.1).abs() < 1e-7);
}

#[test]
fn one_bit_is_plus_minus_absmax_per_block() {
    let l = layout_of(&[("t", &[5])]);
    let c = kbit("bits = 1, block_size = 2");
    let (p, y) = roundtrip(c.as_ref(), &l, &[0.5, -0.1, 0.0, -2.0, 0.25]);
    assert_eq!(p.len(), HEADER + 3 * 4 + 1);
    // Blocks [0.5, -0.1] (a = 0.5), [0, -2] (a = 2), [0.25] (a = 0.25); zero -> +a.
    assert_eq!(y, vec![0.5, -0.5, 2.0, -2.0, 0.25]);
    // Codes 1,0,1,0,1 in one byte: 0b10101.
    assert_eq!(*p.as_bytes().last().unwrap(), 0b10101);
}

#[test]
fn blocks_stay_within_tensors_and_keep_signs() {
    let l = layout_of(&[("a", &[3]), ("b", &[2])]);
    let c = kbit("bits = 4, block_size = 4");
    let (p, y) = roundtrip(c.as_ref(), &l, &[1.0, 2.0, -3.0, 1e-3, -1e-3]);
    // One block per tensor: tensor `b` gets its own scale 1e-3, so its values are exact.
    assert_eq!(p.len(), HEADER + (4 + 2) + (4 + 1));
    assert_eq!(&y[3..], &[1e-3, -1e-3]);
    assert_eq!(y[2], -3.0);
    assert!(y[0] > 0.0 && y[1] > 0.0);
}

#[test]
fn zero_block_has_zero_scale_and_decodes_to_zeros() {
    let l = layout_of(&[("t", &[6])]);
    for bits in [1u32, 3, 8] {
        let c = kbit(&format!("bits = {bits}, block_size = 3"));
        let (p, y) = roundtrip(c.as_ref(), &l, &[0.0, -0.0, 0.0, 1.0, -1.0, 0.5]);
        let body = &p.as_bytes()[HEADER..];
        assert_eq!(&body[..4], &[0, 0, 0, 0], "scale of the zero block");
        assert_eq!(&y[..3], &[0.0, 0.0, 0.0]);
        assert!(y[..3].iter().all(|v| v.is_sign_positive()));
        assert_eq!(&y[3..5], &[1.0, -1.0]);
    }
}

#[test]
fn empty_layout_is_the_header_alone() {
    let l = Layout::default();
    for c in [kbit(""), kbit("bits = 3, rounding = \"stochastic\"")] {
        let (p, y) = roundtrip(c.as_ref(), &l, &[]);
        assert_eq!(p.len(), HEADER);
        assert!(y.is_empty());
        assert!(decode(c.as_ref(), &l, [p.as_bytes(), &[0]].concat()).is_err());
    }
}

#[test]
fn relative_error_on_gaussian_data_by_width() {
    let l = layout_of(&[("w", &[256, 256])]);
    let x = testkit::random_values(l.numel(), 3, 1.0);
    let mut last = 0.0;
    for bits in (1..=8).rev() {
        let (_, y) = roundtrip(kbit(&format!("bits = {bits}")).as_ref(), &l, &x);
        let e = rel_err(&x, &y);
        eprintln!("kbit bits={bits} block=64 nearest: rel err {e:.4}");
        assert!(e > last, "fewer bits must not be more accurate");
        last = e;
    }
    let (_, y) = roundtrip(kbit("").as_ref(), &l, &x);
    assert!(rel_err(&x, &y) < 0.008);
}

#[test]
fn stochastic_rounding_picks_a_neighbouring_level_and_is_seeded() {
    let l = layout_of(&[("t", &[64])]);
    let x = testkit::random_values(64, 8, 1.0);
    let c = kbit("bits = 2, rounding = \"stochastic\"");
    let u = Update::from_flat(&l, &x, &Device::Cpu).unwrap();
    let a = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let levels = [-a, -a / 3.0, a / 3.0, a];
    let mut mean = vec![0f64; 64];
    let rounds = 2000;
    for round in 0..rounds {
        let cx = testkit::ctx(&l, 9, round, 4);
        let p = c.compress(&u, &mut ClientState::default(), &cx).unwrap();
        let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
            let below = levels.iter().rev().find(|&&v| v <= xi + 1e-6).unwrap();
            let above = levels.iter().find(|&&v| v >= xi - 1e-6).unwrap();
            assert!(
                (yi - below).abs() < 1e-6 || (yi - above).abs() < 1e-6,
                "{xi} -> {yi}"
            );
            mean[i] += yi as f64 / rounds as f64;
        }
        // Another client (another seed) draws other numbers; the same ctx repeats.
        let again = c.compress(&u, &mut ClientState::default(), &cx).unwrap();
        assert_eq!(p, again);
    }
    for (m, &xi) in mean.iter().zip(&x) {
        assert!((m - xi as f64).abs() < 0.05 * a as f64, "mean {m} vs {xi}");
    }
}

// ---------------------------------------------------------------- malformed payloads

fn good_payload(
    params: &str,
    layout: &Layout,
    x: &[f32],
) -> (Box<dyn GradientCompressor>, Vec<u8>) {
    let c = kbit(params);
    let (p, _) = roundtrip(c.as_ref(), layout, x);
    (c, p.into_bytes())
}

#[test]
fn rejects_bad_scales() {
    let l = layout_of(&[("t", &[5])]);
    let (c, good) = good_payload("bits = 3", &l, &[0.1, -0.2, 0.3, 0.0, 0.05]);
    for (bad, what) in [
        (f32::NAN, "NaN scale"),
        (f32::INFINITY, "infinite scale"),
        (-0.3, "negative scale"),
        (-0.0, "negative zero scale"),
    ] {
        let mut b = good.clone();
        b[HEADER..HEADER + 4].copy_from_slice(&bad.to_le_bytes());
        assert_malformed(decode(c.as_ref(), &l, b), what);
    }
    // A larger finite scale is a valid (different) payload.
    let mut b = good.clone();
    b[HEADER..HEADER + 4].copy_from_slice(&1e30f32.to_le_bytes());
    assert!(decode(c.as_ref(), &l, b).is_ok());
}

#[test]
fn rejects_truncation_padding_trailing_bytes_and_zero_block_codes() {
    let l = layout_of(&[("t", &[5])]);
    let (c, good) = good_payload("bits = 3", &l, &[0.1, -0.2, 0.3, 0.0, 0.05]);
    assert_eq!(good.len(), HEADER + 4 + 2); // 15 bits of codes -> 2 bytes, 1 padding bit
    assert_malformed(
        decode(c.as_ref(), &l, good[..good.len() - 1].to_vec()),
        "truncated codes",
    );
    assert_malformed(
        decode(c.as_ref(), &l, good[..HEADER + 2].to_vec()),
        "truncated scale",
    );
    let mut b = good.clone();
    *b.last_mut().unwrap() |= 0x80;
    assert_malformed(decode(c.as_ref(), &l, b), "non-zero padding bit");
    let mut b = good.clone();
    b.push(0);
    assert_malformed(decode(c.as_ref(), &l, b), "trailing byte");
    // A zero scale must come with the zero code 2^(bits-1) = 4 everywhere.
    let (c, zero) = good_payload("bits = 3", &l, &[0.0; 5]);
    let codes = u16::from_le_bytes([zero[HEADER + 4], zero[HEADER + 5]]);
    assert_eq!(codes, 4 | 4 << 3 | 4 << 6 | 4 << 9 | 4 << 12);
    assert!(decode(c.as_ref(), &l, zero.clone()).is_ok());
    let mut b = zero.clone();
    b[HEADER + 4] ^= 1;
    assert_malformed(decode(c.as_ref(), &l, b), "zero block with another code");
}

#[test]
fn rejects_a_payload_for_another_layout_or_name() {
    let l = layout_of(&[("t", &[64])]);
    let (c, good) = good_payload("", &l, &testkit::random_values(64, 1, 1.0));
    let longer = layout_of(&[("t", &[65])]);
    assert_malformed(decode(c.as_ref(), &longer, good.clone()), "layout too long");
    let shorter = layout_of(&[("t", &[63])]);
    assert_malformed(
        decode(c.as_ref(), &shorter, good.clone()),
        "layout too short",
    );
    // Another bit width reads the same bytes as a different, wrong-length body.
    let four = kbit("bits = 4");
    assert_malformed(decode(four.as_ref(), &l, good), "wrong bit width");
}

// ---------------------------------------------------------------- config

#[test]
fn config_errors_name_the_key_and_the_accepted_values() {
    let e = config_error("bits = 9");
    assert!(e.contains("compressor.bits") && e.contains("1..=8"), "{e}");
    let e = config_error("bits = 0");
    assert!(e.contains("compressor.bits") && e.contains("1..=8"), "{e}");
    let e = config_error("bits = -1");
    assert!(e.contains("compressor.bits"), "{e}");
    let e = config_error("block_size = 0");
    assert!(
        e.contains("compressor.block_size") && e.contains(">= 1"),
        "{e}"
    );
    let e = config_error("rounding = \"up\"");
    assert!(
        e.contains("compressor.rounding") && e.contains("nearest") && e.contains("stochastic"),
        "{e}"
    );
    let e = config_error("bitz = 4");
    assert!(e.contains("compressor.bitz") || e.contains("bitz"), "{e}");
    assert!(e.contains("bits"), "lists the accepted keys: {e}");
}

#[test]
fn builds_from_the_documented_defaults() {
    let plugin = registry::find("compressor", "kbit").unwrap();
    let mut t = cgfed_core::toml::Table::new();
    for p in plugin.params {
        if p.default != "-" {
            let v: cgfed_core::toml::Table =
                cgfed_core::toml::from_str(&format!("v = {}", p.default)).unwrap();
            t.insert(p.key.to_string(), v["v"].clone());
        }
    }
    let keys: Vec<&str> = plugin.params.iter().map(|p| p.key).collect();
    assert_eq!(keys, ["bits", "block_size", "rounding"]);
    t.insert("kind".into(), "kbit".into());
    let pt = PluginTable::from_value("compressor", &cgfed_core::toml::Value::Table(t)).unwrap();
    let c = registry::build_compressor(&pt).unwrap();
    assert_eq!(c.describe(), "kbit(8 bits, block 64, nearest)");
    let direct = cgfed_quantize::Kbit::new(cgfed_quantize::KbitConfig::default()).unwrap();
    let l = &testkit::layouts()[3];
    assert_eq!(direct.payload_len(l), expected_len(l, 8, 64));
}

// ---------------------------------------------------------------- composition

#[test]
fn second_stage_of_a_composition() {
    let c = composed("{ kind = \"kbit\", bits = 8, block_size = 16 }");
    assert_eq!(c.name(), "first-half+kbit");
    let plain = kbit("bits = 8, block_size = 16");
    for layout in testkit::layouts() {
        let x = testkit::random_values(layout.numel(), 4, 0.2);
        let (p, y) = roundtrip(c.as_ref(), &layout, &x);
        // Header, the structure (one varint byte), then exactly kbit's body for the values.
        let vl = half_layout(&layout);
        let header = Payload::header_len("first-half+kbit");
        assert_eq!(p.len(), header + 1 + expected_len(&vl, 8, 16) - HEADER);
        // The kept halves decode as kbit alone decodes them; the rest is zero.
        let vx: Vec<f32> = Update::from_flat(&layout, &x, &Device::Cpu)
            .unwrap()
            .to_parts()
            .unwrap()
            .into_iter()
            .flat_map(|p| p[..p.len().div_ceil(2)].to_vec())
            .collect();
        let (_, vy) = roundtrip(plain.as_ref(), &vl, &vx);
        let mut off = 0;
        let mut k = 0;
        for s in layout.specs() {
            let n = s.numel();
            let keep = n.div_ceil(2);
            assert_eq!(&y[off..off + keep], &vy[k..k + keep]);
            assert!(y[off + keep..off + n].iter().all(|&v| v == 0.0));
            off += n;
            k += keep;
        }
    }
}

#[test]
fn composition_passes_the_conformance_suite() {
    // Half the elements are dropped: relative error about 1/√2 on the suite's data.
    testkit::check_compressor(
        composed("{ kind = \"kbit\", bits = 4, rounding = \"stochastic\" }").as_ref(),
        &Expect {
            max_rel_err: 0.9,
            payload_len: Some(|l| {
                Payload::header_len("first-half+kbit") + 1 + expected_len(&half_layout(l), 4, 64)
                    - HEADER
            }),
            ..Expect::default()
        },
    );
}

// ---------------------------------------------------------------- error feedback

#[test]
fn error_feedback_makes_one_bit_track_the_sum() {
    let layout = &testkit::layouts()[3];
    let plain = kbit("bits = 1");
    let ef = kbit("bits = 1, error_feedback = true");
    assert_eq!(
        ef.describe(),
        "kbit(1 bits, block 64, nearest), error feedback"
    );
    let (p240, p960) = (
        residual(plain.as_ref(), layout, 240),
        residual(plain.as_ref(), layout, 960),
    );
    let (e240, e960) = (
        residual(ef.as_ref(), layout, 240),
        residual(ef.as_ref(), layout, 960),
    );
    eprintln!(
        "kbit 1 bit, ‖Σ decoded − T·x‖/‖x‖ at T = 240, 960: plain {p240:.1}, {p960:.1}; \
         error feedback {e240:.2}, {e960:.2}"
    );
    // Without EF the error of the sum grows like T (1-bit absmax loses > 100 % per round).
    assert!(p240 > 240.0 && p960 > 3.9 * p240, "{p240} {p960}");
    // With EF it is the residual, which stays bounded (a 1-bit sigma-delta loop saturates
    // at about 20‖x‖ on 64-element blocks): the average of the decodes converges to x.
    assert!(e240 < 25.0 && e960 < 25.0, "{e240} {e960}");
    assert!(
        (e960 - e240).abs() < 0.2 * e240,
        "residual keeps growing: {e240} -> {e960}"
    );
    assert!(e960 / 960.0 < 0.03, "average drift {}", e960 / 960.0);
    // Two bits keep a much smaller residual.
    let ef2 = kbit("bits = 2, error_feedback = true");
    assert!(residual(ef2.as_ref(), layout, 240) < 1.0);
}
