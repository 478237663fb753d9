//! `approx-topk`: conformance, the kept count around k, the hierarchical step, `kept()`,
//! malformed payloads, config errors and composition.

use crate::common;

use cgfed_core::testkit::{self, Expect};
use cgfed_core::{ClientState, Payload};
use cgfed_quantize as _;
use cgfed_sparsify::{index_set_len, keep_count, ApproxTopK, ApproxTopKConfig, Scope};
use common::*;

#[test]
fn conformance_scope_tensor() {
    testkit::check_compressor(
        build("kind = \"approx-topk\"").as_ref(),
        &Expect {
            max_rel_err: 1.0,
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_scope_update_and_small_samples() {
    testkit::check_compressor(
        build("kind = \"approx-topk\"\nscope = \"update\"\nratio = 0.1").as_ref(),
        &Expect {
            max_rel_err: 1.0,
            ..Expect::default()
        },
    );
    // Tensors larger than the sample: the threshold comes from 1000 drawn elements.
    testkit::check_compressor(
        build("kind = \"approx-topk\"\nratio = 0.2\nsample_ratio = 0.001\nmax_overshoot = 1.0")
            .as_ref(),
        &Expect {
            max_rel_err: 1.0,
            ..Expect::default()
        },
    );
}

#[test]
fn defaults_from_the_registry_build() {
    let c = build(&defaults_source("approx-topk"));
    assert_eq!(c.name(), "approx-topk");
    assert!(c.as_staged().is_some());
    let d = ApproxTopKConfig::default();
    assert_eq!(d.sample_size(100), 100);
    assert_eq!(d.sample_size(50_000), 1000);
    assert_eq!(d.sample_size(1_000_000), 10_000);
    assert_eq!(d.cap(100), 130);
    assert_eq!(d.cap(1), 1);
}

/// The kept positions of the decode, and whether they are exactly those with |x| above
/// the smallest kept |x| (every element at or above the threshold is kept).
fn kept_is_a_threshold_set(x: &[f32], y: &[f32]) -> bool {
    let kept = support(y);
    let thr = kept
        .iter()
        .map(|&i| x[i].abs())
        .fold(f32::INFINITY, f32::min);
    (0..x.len()).all(|i| (x[i].abs() >= thr) == (y[i] != 0.0)) && kept.iter().all(|&i| x[i] == y[i])
}

#[test]
fn kept_count_on_gaussian_data_is_near_k() {
    // 2^20 elements: k = 10486, sample 10486, k_s = 105, so the kept count has a relative
    // spread of about 1/sqrt(105) ~ 10 %. Over 24 rounds every count lies within 40 %
    // (4 sigma) below k and never above the cap 1.3 k, and the mean within 8 % of k.
    let l = layout(&[("w", &[1024, 1024])]);
    let x = testkit::random_update(&l, 77, 0.01);
    let xv = x.to_flat().unwrap();
    let c = ApproxTopK::new(ApproxTopKConfig::default()).unwrap();
    let k = keep_count(0.01, None, l.numel());
    let mut total = 0usize;
    let rounds = 24;
    for r in 0..rounds {
        let ctx = testkit::ctx(&l, 9, r, 1);
        let p = cgfed_core::GradientCompressor::compress(&c, &x, &mut ClientState::default(), &ctx)
            .unwrap();
        let kept = c.kept(&p, &ctx).unwrap();
        assert!(
            kept as f64 >= 0.6 * k as f64 && kept <= c.config().cap(k),
            "round {r}: kept {kept}, k {k}"
        );
        total += kept;
        if r < 3 {
            let y = cgfed_core::GradientCompressor::decompress(&c, &p, &ctx)
                .unwrap()
                .to_flat()
                .unwrap();
            assert_eq!(support(&y).len(), kept);
            if kept <= k {
                assert!(kept_is_a_threshold_set(&xv, &y));
            }
        }
    }
    let mean = total as f64 / rounds as f64;
    assert!(
        (mean / k as f64 - 1.0).abs() < 0.08,
        "mean kept {mean}, k {k}"
    );
}

#[test]
fn small_tensors_use_every_element_and_keep_exactly_k() {
    // n <= 1000: the whole tensor is the sample, the threshold is the exact k-th largest.
    let l = layout(&[("a", &[10, 90]), ("b", &[37])]);
    let xv = testkit::random_values(l.numel(), 3, 1.0);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let (p, y) = roundtrip(
        build("kind = \"approx-topk\"\nratio = 0.05").as_ref(),
        &xv_update(&l, &xv),
        &ctx,
    );
    assert_eq!(support(&y[..900]), naive_top_k(&xv[..900], 45));
    assert_eq!(support(&y[900..]), naive_top_k(&xv[900..], 2));
    // Same body as topk: the index sets then the f32 values.
    let top = build("kind = \"topk\"\nratio = 0.05");
    let (q, _) = roundtrip(top.as_ref(), &xv_update(&l, &xv), &ctx);
    assert_eq!(
        p.body("approx-topk").unwrap(),
        q.body("topk").unwrap(),
        "same selection, same body"
    );
}

fn xv_update(l: &cgfed_core::Layout, v: &[f32]) -> cgfed_core::Update {
    update(l, v)
}

#[test]
fn overshoot_keeps_exactly_k_with_the_tie_rule() {
    // A constant tensor: the threshold keeps all 5000 > 1.3 k, so exactly k = 50 are kept,
    // the first 50 (ties to the lower index).
    let l = layout(&[("w", &[5000])]);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let c = ApproxTopK::new(ApproxTopKConfig::default()).unwrap();
    let x = update(&l, &vec![0.5; 5000]);
    let p = cgfed_core::GradientCompressor::compress(&c, &x, &mut ClientState::default(), &ctx)
        .unwrap();
    assert_eq!(c.kept(&p, &ctx).unwrap(), 50);
    let y = cgfed_core::GradientCompressor::decompress(&c, &p, &ctx)
        .unwrap()
        .to_flat()
        .unwrap();
    assert_eq!(support(&y), (0..50).collect::<Vec<_>>());
    // Half zeros, half ties: still exactly k, and an all-zero update encodes cleanly.
    let mut v = vec![0.0; 5000];
    for i in (0..5000).step_by(2) {
        v[i] = -1.0;
    }
    let (_, y) = roundtrip(&c, &update(&l, &v), &ctx);
    assert_eq!(support(&y), (0..100).step_by(2).collect::<Vec<_>>());
    let (p, y) = roundtrip(&c, &update(&l, &vec![0.0; 5000]), &ctx);
    assert_eq!(c.kept(&p, &ctx).unwrap(), 50);
    assert!(y.iter().all(|&v| v == 0.0));
}

#[test]
fn scope_update_keeps_one_threshold_across_tensors() {
    let l = layout(&[("a", &[200, 100]), ("b", &[30_000]), ("c", &[3])]);
    let n = l.numel();
    let mut xv = testkit::random_values(n, 21, 1.0);
    for v in &mut xv[..20_000] {
        *v *= 10.0; // tensor a is much larger: most kept elements come from it
    }
    let x = update(&l, &xv);
    let cfg = ApproxTopKConfig {
        scope: Scope::Update,
        ..ApproxTopKConfig::default()
    };
    let c = ApproxTopK::new(cfg).unwrap();
    let ctx = testkit::ctx(&l, 2, 0, 0);
    let (p, y) = roundtrip(&c, &x, &ctx);
    let counts = c.kept_counts(&p, &ctx).unwrap();
    let k = keep_count(0.01, None, n);
    let kept: usize = counts.iter().sum();
    assert!(kept >= 1 && kept <= c.config().cap(k), "{counts:?}");
    assert!(counts[0] > 5 * counts[1], "{counts:?}");
    if kept <= k {
        assert!(kept_is_a_threshold_set(&xv, &y));
    }
    // Exact length: header + index sets + 4 per kept value.
    let mut len = Payload::header_len("approx-topk") + 4 * kept;
    let mut off = 0;
    for spec in l.specs() {
        let m = spec.numel();
        let set: Vec<u32> = support(&y[off..off + m])
            .iter()
            .map(|&i| i as u32)
            .collect();
        len += index_set_len(&set, m);
        off += m;
    }
    assert_eq!(p.len(), len);
}

#[test]
fn kept_reads_composed_payloads_and_rejects_others() {
    let c = ApproxTopK::new(ApproxTopKConfig::default()).unwrap();
    let composed = build("kind = \"approx-topk\"\nvalues = { kind = \"bf16\" }");
    assert_eq!(composed.name(), "approx-topk+bf16");
    let l = layout(&[("w", &[300, 300]), ("v", &[50])]);
    let ctx = testkit::ctx(&l, 1, 4, 0);
    let x = testkit::random_update(&l, 2, 1.0);
    let (p, y) = roundtrip(composed.as_ref(), &x, &ctx);
    assert_eq!(c.kept(&p, &ctx).unwrap(), support(&y).len());
    assert_eq!(c.kept_counts(&p, &ctx).unwrap().len(), 2);
    let (q, _) = roundtrip(build("kind = \"topk\"").as_ref(), &x, &ctx);
    assert!(c.kept(&q, &ctx).is_err());
    assert!(c.kept(&Payload::from_bytes(vec![]), &ctx).is_err());
}

#[test]
fn malformed_payloads_specific_to_approx_topk() {
    // One tensor of 100: k = 1, cap = max(1, floor(1.3)) = 1; with ratio 0.1, k = 10, cap 13.
    let l = layout(&[("a", &[100])]);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let c = build("kind = \"approx-topk\"\nratio = 0.1");
    let delta = |count: u64, gaps: &[u64]| {
        let mut b = varint(count << 2 | 1);
        for &g in gaps {
            b.extend(varint(g));
        }
        b.extend(f32_bytes(&vec![1.5; gaps.len()]));
        with_header("approx-topk", &b)
    };
    assert!(c.decompress(&delta(13, &[0; 13]), &ctx).is_ok());
    assert!(c.decompress(&delta(1, &[99]), &ctx).is_ok());
    for (what, p) in [
        ("kept nothing", delta(0, &[])),
        ("above the cap", delta(14, &[0; 14])),
        ("index >= n", delta(1, &[100])),
        ("count > n", delta(101, &[0; 101])),
        ("truncated set", {
            let mut b = varint(3 << 2 | 1);
            b.push(0);
            with_header("approx-topk", &b)
        }),
    ] {
        let e = c.decompress(&p, &ctx).expect_err(what);
        assert!(
            matches!(e, cgfed_core::Error::MalformedPayload(_)),
            "{what}: {e}"
        );
    }
    // Scope update over two tensors of 100: k(200) = 20, cap 26; the total counts.
    let l2 = layout(&[("a", &[100]), ("b", &[100])]);
    let ctx2 = testkit::ctx(&l2, 1, 0, 0);
    let cu = build("kind = \"approx-topk\"\nratio = 0.1\nscope = \"update\"");
    let two = |ca: u64, cb: u64| {
        let mut b = varint(ca << 2 | 1);
        b.extend(vec![0u8; ca as usize]);
        b.extend(varint(cb << 2 | 1));
        b.extend(vec![0u8; cb as usize]);
        b.extend(f32_bytes(&vec![1.0; (ca + cb) as usize]));
        with_header("approx-topk", &b)
    };
    assert!(cu.decompress(&two(26, 0), &ctx2).is_ok());
    assert!(cu.decompress(&two(0, 3), &ctx2).is_ok());
    for (ca, cb) in [(0, 0), (20, 7), (27, 0)] {
        assert!(cu.decompress(&two(ca, cb), &ctx2).is_err(), "{ca}+{cb}");
    }
}

#[test]
fn config_errors_name_the_key() {
    for (src, key) in [
        ("ratio = 0.0", "compressor.ratio"),
        ("ratio = 2.0", "compressor.ratio"),
        ("sample_ratio = 0.0", "compressor.sample_ratio"),
        ("sample_ratio = 1.01", "compressor.sample_ratio"),
        ("max_overshoot = 0.9", "compressor.max_overshoot"),
        ("max_overshoot = inf", "compressor.max_overshoot"),
        ("max_overshoot = nan", "compressor.max_overshoot"),
        ("scope = \"all\"", "compressor.scope"),
        ("k = 5", "compressor"),
    ] {
        let e = build_err(&format!("kind = \"approx-topk\"\n{src}"));
        assert!(e.contains(&format!("`{key}")), "{src}: {e}");
    }
}

#[test]
fn deterministic_per_round_and_client_and_error_feedback() {
    let l = layout(&[("w", &[100, 100])]);
    let x = testkit::random_update(&l, 5, 1.0);
    let c = build("kind = \"approx-topk\"");
    let a = roundtrip(c.as_ref(), &x, &testkit::ctx(&l, 1, 0, 0)).0;
    let b = roundtrip(c.as_ref(), &x, &testkit::ctx(&l, 1, 0, 0)).0;
    assert_eq!(a, b);
    // Another round draws another sample (the payloads differ almost surely).
    let others: Vec<_> = (1..6)
        .map(|r| roundtrip(c.as_ref(), &x, &testkit::ctx(&l, 1, r, 0)).0)
        .collect();
    assert!(others.iter().any(|p| p != &a));
    let plain = build("kind = \"approx-topk\"\nratio = 0.1");
    let ef = build("kind = \"approx-topk\"\nratio = 0.1\nerror_feedback = true");
    let l = layout(&[("w", &[64, 64])]);
    let x = testkit::random_update(&l, 12, 0.01);
    assert!(accumulated_error(plain.as_ref(), &x, 150) > 0.5);
    assert!(accumulated_error(ef.as_ref(), &x, 150) < 0.12);
}

#[test]
fn zero_element_tensors_and_huge_overshoot() {
    let l = layout(&[("a", &[0]), ("b", &[3000]), ("c", &[2, 0])]);
    let xv = testkit::random_values(3000, 1, 1.0);
    let x = update(&l, &xv);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    for src in [
        "kind = \"approx-topk\"",
        "kind = \"approx-topk\"\nscope = \"update\"",
        "kind = \"approx-topk\"\nmax_overshoot = 1e300",
        "kind = \"approx-topk\"\nvalues = { kind = \"bf16\" }",
    ] {
        let (_, y) = roundtrip(build(src).as_ref(), &x, &ctx);
        assert!(!support(&y).is_empty(), "{src}");
        assert!(
            kept_is_a_threshold_set(&xv, &y) || src.contains("bf16"),
            "{src}"
        );
    }
    // A constant update with an unbounded overshoot keeps everything at the threshold.
    let c = build("kind = \"approx-topk\"\nmax_overshoot = 1e300");
    let (_, y) = roundtrip(c.as_ref(), &update(&l, &vec![2.0; 3000]), &ctx);
    assert_eq!(support(&y).len(), 3000);
}
