//! `randk`: conformance (biased and unbiased), exact length, shared positions, uniformity,
//! the n/k scale, malformed payloads, config errors, composition with fp16 and error
//! feedback.

use crate::common;

use cgfed_core::testkit::{self, Expect};
use cgfed_core::{ClientState, Layout, Payload};
use cgfed_quantize as _;
use cgfed_sparsify::randk::draw_positions;
use cgfed_sparsify::{keep_count, RandK, RandKConfig};
use common::*;
use rand::SeedableRng;

fn sum_k(l: &Layout) -> usize {
    l.specs()
        .iter()
        .map(|s| keep_count(0.01, None, s.numel()))
        .sum()
}

#[test]
fn conformance_biased() {
    testkit::check_compressor(
        build("kind = \"randk\"").as_ref(),
        &Expect {
            // The decode is a projection of x: the error is at most ‖x‖.
            max_rel_err: 1.0,
            payload_len: Some(|l| Payload::header_len("randk") + 4 * sum_k(l)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_unbiased() {
    // ‖x̂ − x‖² = Σ_kept (n/k − 1)² x² + Σ_dropped x² ≤ max(n/k − 1, 1)² ‖x‖², n/k ≤ 100.
    testkit::check_compressor(
        build("kind = \"randk\"\nunbiased = true").as_ref(),
        &Expect {
            max_rel_err: 99.0,
            payload_len: Some(|l| Payload::header_len("randk") + 4 * sum_k(l)),
            unbiased: true,
            ..Expect::default()
        },
    );
    // With a quarter kept, n/k ≤ 4, so the error is at most 3‖x‖.
    testkit::check_compressor(
        build("kind = \"randk\"\nunbiased = true\nratio = 0.25").as_ref(),
        &Expect {
            max_rel_err: 3.0,
            payload_len: Some(|l| {
                Payload::header_len("randk")
                    + 4 * l
                        .specs()
                        .iter()
                        .map(|s| keep_count(0.25, None, s.numel()))
                        .sum::<usize>()
            }),
            unbiased: true,
            ..Expect::default()
        },
    );
}

#[test]
fn defaults_from_the_registry_build() {
    let c = build(&defaults_source("randk"));
    assert_eq!(c.name(), "randk");
    assert_eq!(c.describe(), "randk (ratio 0.01 per tensor)");
    assert!(c.as_staged().is_some());
}

#[test]
fn only_values_travel_and_both_ends_draw_the_same_positions() {
    let l = layout(&[("a", &[40, 50]), ("b", &[2000]), ("c", &[1])]);
    let xv: Vec<f32> = (0..l.numel()).map(|i| 1.0 + i as f32).collect();
    let x = update(&l, &xv);
    let c = RandK::new(RandKConfig::default()).unwrap();
    let ctx = testkit::ctx(&l, 8, 3, 2);
    let (p, y) = roundtrip(&c, &x, &ctx);
    let pos = c.positions(&l, &ctx).unwrap();
    assert_eq!(
        pos.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![20, 20, 1]
    );
    // Body: exactly the kept values in layout order.
    let mut kept = Vec::new();
    let mut off = 0;
    for (spec, set) in l.specs().iter().zip(&pos) {
        assert!(set.windows(2).all(|w| w[0] < w[1]));
        kept.extend(set.iter().map(|&i| xv[off + i as usize]));
        off += spec.numel();
    }
    assert_eq!(p, with_header("randk", &f32_bytes(&kept)));
    assert_eq!(p.len(), 7 + 4 * 41);
    let mut off = 0;
    let mut flat_support = Vec::new();
    for (spec, set) in l.specs().iter().zip(&pos) {
        flat_support.extend(set.iter().map(|&i| off + i as usize));
        off += spec.numel();
    }
    assert_eq!(support(&y), flat_support);
    // The positions depend on the round, the client and the tensor, not on the data.
    let other_round = c.positions(&l, &testkit::ctx(&l, 8, 4, 2)).unwrap();
    let other_client = c.positions(&l, &testkit::ctx(&l, 8, 3, 1)).unwrap();
    assert_ne!(pos[1], other_round[1]);
    assert_ne!(pos[1], other_client[1]);
    let twins = layout(&[("p", &[1000]), ("q", &[1000])]);
    let tp = c.positions(&twins, &ctx).unwrap();
    assert_ne!(tp[0], tp[1], "tensors draw independently");
    let (_, y2) = roundtrip(&c, &update(&l, &vec![-3.0; l.numel()]), &ctx);
    assert_eq!(support(&y2), flat_support);
}

#[test]
fn draws_are_uniform_on_every_path() {
    // Each position's inclusion frequency over `trials` draws is Binomial(trials, k/n):
    // all within 5 standard deviations, and the chi-square statistic near its mean n − 1.
    for (n, k, trials) in [
        (50usize, 3usize, 20_000usize),
        (300, 200, 4_000),
        (5000, 1500, 400),
    ] {
        let mut hits = vec![0usize; n];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
        for _ in 0..trials {
            let pos = draw_positions(n, k, &mut rng);
            assert_eq!(pos.len(), k);
            assert!(pos.windows(2).all(|w| w[0] < w[1]) && pos[k - 1] < n as u32);
            for p in pos {
                hits[p as usize] += 1;
            }
        }
        let p = k as f64 / n as f64;
        let mean = trials as f64 * p;
        let sd = (trials as f64 * p * (1.0 - p)).sqrt();
        let chi2: f64 = hits
            .iter()
            .map(|&h| (h as f64 - mean).powi(2) / (mean * (1.0 - p)))
            .sum();
        assert!(
            hits.iter().all(|&h| (h as f64 - mean).abs() < 5.0 * sd),
            "n {n} k {k}: {hits:?}"
        );
        let dof = (n - 1) as f64;
        assert!(
            (chi2 - dof).abs() < 5.0 * (2.0 * dof).sqrt(),
            "n {n} k {k}: chi2 {chi2}"
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    assert_eq!(draw_positions(5, 5, &mut rng), vec![0, 1, 2, 3, 4]);
    assert!(draw_positions(5, 0, &mut rng).is_empty());
    assert!(draw_positions(0, 3, &mut rng).is_empty());
}

#[test]
fn unbiased_scales_by_n_over_k_at_join() {
    let l = layout(&[("a", &[4]), ("b", &[6])]);
    let xv = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
    let x = update(&l, &xv);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let plain = RandK::new(RandKConfig {
        k: Some(2),
        ..RandKConfig::default()
    })
    .unwrap();
    let ub = RandK::new(RandKConfig {
        k: Some(2),
        unbiased: true,
        ..RandKConfig::default()
    })
    .unwrap();
    let (p, y) = roundtrip(&plain, &x, &ctx);
    let (q, z) = roundtrip(&ub, &x, &ctx);
    assert_eq!(
        p.as_bytes(),
        q.as_bytes(),
        "the wire carries the raw values"
    );
    for i in 0..10 {
        let s = if i < 4 { 2.0 } else { 3.0 }; // n/k = 4/2 and 6/2
        assert_eq!(z[i], s * y[i]);
        assert!(y[i] == 0.0 || y[i] == xv[i]);
    }
    assert_eq!(support(&y).len(), 4);
}

#[test]
fn malformed_payloads_specific_to_randk() {
    let l = layout(&[("a", &[300])]); // k = 3
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let c = build("kind = \"randk\"");
    assert!(c
        .decompress(&with_header("randk", &f32_bytes(&[1.0, 2.0, 3.0])), &ctx)
        .is_ok());
    for (what, body) in [
        ("missing value", f32_bytes(&[1.0, 2.0])),
        ("extra value", f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
        ("NaN", f32_bytes(&[1.0, f32::NAN, 3.0])),
        ("infinity", f32_bytes(&[1.0, 2.0, f32::NEG_INFINITY])),
        ("half a value", f32_bytes(&[1.0, 2.0, 3.0])[..10].to_vec()),
    ] {
        let e = c
            .decompress(&with_header("randk", &body), &ctx)
            .expect_err(what);
        assert!(
            matches!(e, cgfed_core::Error::MalformedPayload(_)),
            "{what}: {e}"
        );
    }
    // Unbiased: n/k = 100 turns 1e37 into an overflow; the encoder refuses such an input
    // and the decoder such a payload.
    let u = build("kind = \"randk\"\nunbiased = true");
    let e = u
        .decompress(&with_header("randk", &f32_bytes(&[1.0, 1e37, 3.0])), &ctx)
        .expect_err("overflow");
    assert!(matches!(e, cgfed_core::Error::MalformedPayload(_)), "{e}");
    let x = update(&l, &vec![1e37; 300]);
    let e = u
        .compress(&x, &mut ClientState::default(), &ctx)
        .expect_err("overflow");
    assert!(e.to_string().contains("overflows"), "{e}");
    assert!(c.compress(&x, &mut ClientState::default(), &ctx).is_ok());
}

#[test]
fn config_errors_name_the_key() {
    for (src, key) in [
        ("ratio = 0.0", "compressor.ratio"),
        ("ratio = 1.1", "compressor.ratio"),
        ("k = 0", "compressor.k"),
        ("unbiased = \"yes\"", "compressor.unbiased"),
        ("scope = \"update\"", "compressor"),
    ] {
        let e = build_err(&format!("kind = \"randk\"\n{src}"));
        assert!(e.contains(&format!("`{key}")), "{src}: {e}");
    }
}

#[test]
fn composition_with_fp16() {
    let c = build("kind = \"randk\"\nvalues = { kind = \"fp16\" }");
    assert_eq!(c.name(), "randk+fp16");
    let l = layout(&[("a", &[30, 30]), ("b", &[77])]);
    let ctx = testkit::ctx(&l, 2, 1, 0);
    let xv = testkit::random_values(l.numel(), 4, 0.5);
    let (p, y) = roundtrip(c.as_ref(), &update(&l, &xv), &ctx);
    assert_eq!(p.len(), Payload::header_len("randk+fp16") + 2 * sum_k(&l));
    assert_eq!(p.len(), 12 + 2 * (9 + 1));
    let plain = RandK::new(RandKConfig::default()).unwrap();
    let pos = plain.positions(&l, &ctx).unwrap();
    let mut off = 0;
    for (spec, set) in l.specs().iter().zip(&pos) {
        for &i in set {
            let (a, b) = (xv[off + i as usize], y[off + i as usize]);
            assert!((a - b).abs() <= a.abs() / 1024.0, "{a} -> {b}");
        }
        off += spec.numel();
    }
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 1.0,
            payload_len: Some(|l| Payload::header_len("randk+fp16") + 2 * sum_k(l)),
            scale_invariant: false,
            ..Expect::default()
        },
    );
    // Unbiased composed: the fp16 values are scaled after decoding, still unbiased.
    testkit::check_compressor(
        build("kind = \"randk\"\nunbiased = true\nratio = 0.25\nvalues = { kind = \"fp16\" }")
            .as_ref(),
        &Expect {
            max_rel_err: 3.0,
            unbiased: true,
            scale_invariant: false,
            ..Expect::default()
        },
    );
}

#[test]
fn error_feedback_recovers_the_sum_of_updates() {
    let l = layout(&[("w", &[64, 64])]);
    let x = testkit::random_update(&l, 12, 0.01);
    let plain = build("kind = \"randk\"\nratio = 0.1");
    let ef = build("kind = \"randk\"\nratio = 0.1\nerror_feedback = true");
    let without = accumulated_error(plain.as_ref(), &x, 200);
    let with = accumulated_error(ef.as_ref(), &x, 200);
    // Without EF the sum holds 10 % of each element on average: error ~0.9.
    assert!(without > 0.8, "without EF {without}");
    assert!(with < 0.15, "with EF {with}");
}

#[test]
fn zero_element_tensors_are_left_out_of_the_values() {
    let l = layout(&[("a", &[0]), ("b", &[300]), ("c", &[2, 0])]);
    let xv = testkit::random_values(300, 1, 1.0);
    let x = update(&l, &xv);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    for src in [
        "kind = \"randk\"",
        "kind = \"randk\"\nunbiased = true",
        "kind = \"randk\"\nvalues = { kind = \"fp16\" }",
    ] {
        let (p, y) = roundtrip(build(src).as_ref(), &x, &ctx);
        assert_eq!(support(&y).len(), 3, "{src}");
        assert!(p.len() < 30, "{src}: {}", p.len());
    }
}
