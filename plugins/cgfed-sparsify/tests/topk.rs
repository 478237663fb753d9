//! `topk`: conformance (both scopes), exact wire bytes, tie rule, malformed payloads,
//! config errors, composition with bf16 and error feedback.

use crate::common;

use cgfed_core::testkit::{self, Expect, TopK as TopKPromise};
use cgfed_core::wire::indices;
use cgfed_core::{ClientState, Payload};
use cgfed_quantize as _;
use cgfed_sparsify::keep_count;
use common::*;

fn k01(n: usize) -> usize {
    keep_count(0.01, None, n)
}

#[test]
fn conformance_scope_tensor() {
    // Kept values are exact, so the error is that of a projection: below 1.
    testkit::check_compressor(
        build("kind = \"topk\"").as_ref(),
        &Expect {
            max_rel_err: 1.0,
            top_k: Some(TopKPromise::PerTensor(k01)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_scope_update() {
    testkit::check_compressor(
        build("kind = \"topk\"\nscope = \"update\"").as_ref(),
        &Expect {
            max_rel_err: 1.0,
            top_k: Some(TopKPromise::Global(k01)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_absolute_k_and_large_ratio() {
    testkit::check_compressor(
        build("kind = \"topk\"\nk = 3").as_ref(),
        &Expect {
            max_rel_err: 1.0,
            top_k: Some(TopKPromise::PerTensor(|n| n.min(3))),
            ..Expect::default()
        },
    );
    // Keeping 60 % of a Gaussian-like update loses little of its energy.
    testkit::check_compressor(
        build("kind = \"topk\"\nratio = 0.6\nscope = \"update\"").as_ref(),
        &Expect {
            max_rel_err: 0.3,
            top_k: Some(TopKPromise::Global(|n| keep_count(0.6, None, n))),
            ..Expect::default()
        },
    );
}

#[test]
fn defaults_from_the_registry_build() {
    let c = build(&defaults_source("topk"));
    assert_eq!(c.name(), "topk");
    assert_eq!(c.describe(), "topk (ratio 0.01 per tensor)");
    assert!(c.as_staged().is_some());
}

/// `6 + Σ I(S_i, n_i) + 4·K` with the reference sets.
fn expected_len(layout: &cgfed_core::Layout, x: &[f32], k_of: impl Fn(usize) -> usize) -> usize {
    let mut off = 0;
    let mut len = Payload::header_len("topk");
    for spec in layout.specs() {
        let n = spec.numel();
        let set: Vec<u32> = naive_top_k(&x[off..off + n], k_of(n))
            .into_iter()
            .map(|i| i as u32)
            .collect();
        len += indices::cheapest(&set, n).1 + 4 * set.len();
        off += n;
    }
    len
}

#[test]
fn payload_length_formula_and_exact_support() {
    let c = build("kind = \"topk\"");
    for (i, layout) in testkit::layouts()
        .into_iter()
        .chain([layout(&[("big", &[300, 700]), ("small", &[5])])])
        .enumerate()
    {
        let ctx = testkit::ctx(&layout, 1, 0, 0);
        let xv = testkit::random_values(layout.numel(), i as u64 + 40, 0.3);
        let x = update(&layout, &xv);
        let (p, y) = roundtrip(c.as_ref(), &x, &ctx);
        assert_eq!(p.len(), expected_len(&layout, &xv, k01), "layout {i}");
        let mut off = 0;
        for spec in layout.specs() {
            let n = spec.numel();
            let want = naive_top_k(&xv[off..off + n], k01(n));
            let got: Vec<usize> = support(&y[off..off + n]);
            assert_eq!(got, want, "layout {i} `{}`", spec.name);
            for &j in &want {
                assert_eq!(y[off + j], xv[off + j]);
            }
            off += n;
        }
    }
}

#[test]
fn exact_on_a_large_update_with_ties_in_both_scopes() {
    let l = layout(&[("a", &[512, 1024]), ("b", &[3000]), ("c", &[40, 40])]);
    let n = l.numel();
    // Values on a coarse grid: many exact ties at the threshold.
    let xv: Vec<f32> = testkit::random_values(n, 5, 1.0)
        .iter()
        .map(|v| (v * 20.0).round() / 20.0)
        .collect();
    let x = update(&l, &xv);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let (_, y) = roundtrip(
        build("kind = \"topk\"\nscope = \"update\"").as_ref(),
        &x,
        &ctx,
    );
    assert_eq!(support(&y), naive_top_k(&xv, k01(n)));
    let (_, y) = roundtrip(build("kind = \"topk\"\nratio = 0.05").as_ref(), &x, &ctx);
    let mut off = 0;
    for spec in l.specs() {
        let m = spec.numel();
        assert_eq!(
            support(&y[off..off + m]),
            naive_top_k(&xv[off..off + m], keep_count(0.05, None, m))
        );
        off += m;
    }
}

#[test]
fn hand_checked_example_bytes() {
    // |x| = 0.1 5 3 3 3 0.2 0 1: k = 3 keeps 5 (index 1), then the ties at 3 go to the
    // lower indices 2 and 3 (not 4).
    let l = layout(&[("a", &[2, 4])]);
    let xv = [0.1, -5.0, 3.0, 3.0, -3.0, 0.2, 0.0, 1.0];
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let (p, y) = roundtrip(
        build("kind = \"topk\"\nk = 3").as_ref(),
        &update(&l, &xv),
        &ctx,
    );
    assert_eq!(y, vec![0.0, -5.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0]);
    // Bitmap (1 byte) beats delta-varint (3 bytes) and Elias-Fano (2 bytes) here.
    let mut body = vec![3 << 2, 0b0000_1110];
    body.extend(f32_bytes(&[-5.0, 3.0, 3.0]));
    assert_eq!(p, with_header("topk", &body));
    assert_eq!(p.len(), 6 + 2 + 12);
}

#[test]
fn ties_go_to_the_lower_index_across_tensors() {
    let l = layout(&[("a", &[3]), ("b", &[3])]);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let x = update(&l, &[1.0, -1.0, 1.0, 1.0, 1.0, -1.0]);
    let (_, y) = roundtrip(
        build("kind = \"topk\"\nk = 4\nscope = \"update\"").as_ref(),
        &x,
        &ctx,
    );
    assert_eq!(y, vec![1.0, -1.0, 1.0, 1.0, 0.0, 0.0]);
    let (_, y) = roundtrip(build("kind = \"topk\"\nk = 2").as_ref(), &x, &ctx);
    assert_eq!(y, vec![1.0, -1.0, 0.0, 1.0, 1.0, 0.0]);
    // A tensor may keep nothing in scope update; its index set is then just the count.
    let x = update(&l, &[0.5, 4.0, 0.5, -4.0, 0.1, 0.2]);
    let (p, y) = roundtrip(
        build("kind = \"topk\"\nk = 1\nscope = \"update\"").as_ref(),
        &x,
        &ctx,
    );
    assert_eq!(y, vec![0.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    let set_a = indices::cheapest(&[1], 3).1;
    let set_b = cgfed_sparsify::index_set_len(&[], 3);
    assert_eq!(set_b, 1);
    assert_eq!(p.len(), 6 + set_a + set_b + 4);
}

#[test]
fn malformed_payloads_specific_to_topk() {
    let l = layout(&[("a", &[8])]);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let c = build("kind = \"topk\"\nk = 1");
    let delta = |count: u64, gaps: &[u64], vals: &[f32]| {
        let mut b = varint(count << 2 | 1);
        for &g in gaps {
            b.extend(varint(g));
        }
        b.extend(f32_bytes(vals));
        with_header("topk", &b)
    };
    // The crafted form itself decodes: position 3 holds 2.5.
    let y = c.decompress(&delta(1, &[3], &[2.5]), &ctx).unwrap();
    assert_eq!(
        y.to_flat().unwrap(),
        vec![0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0]
    );
    let bad = [
        ("index >= n", delta(1, &[8], &[2.5])),
        ("count != k", delta(2, &[0, 0], &[1.0, 2.0])),
        ("count > n", delta(9, &[0; 9], &[1.0; 9])),
        ("absurd count", delta(1 << 40, &[0], &[1.0])),
        ("NaN value", delta(1, &[3], &[f32::NAN])),
        ("infinite value", delta(1, &[3], &[f32::INFINITY])),
        ("missing value", delta(1, &[3], &[])),
        ("extra value", delta(1, &[3], &[1.0, 2.0])),
        (
            "unknown index code",
            with_header("topk", &[1 << 2 | 3, 0, 0, 0, 0, 0]),
        ),
    ];
    for (what, p) in bad {
        let e = c.decompress(&p, &ctx).expect_err(what);
        assert!(
            matches!(e, cgfed_core::Error::MalformedPayload(_)),
            "{what}: {e}"
        );
    }

    // Scope update: counts must add up to k(N) = 3.
    let l2 = layout(&[("a", &[4]), ("b", &[4])]);
    let ctx2 = testkit::ctx(&l2, 1, 0, 0);
    let cu = build("kind = \"topk\"\nk = 3\nscope = \"update\"");
    let two_sets = |ca: u64, cb: u64| {
        let mut b = varint(ca << 2 | 1);
        b.extend(vec![0u8; ca as usize]);
        b.extend(varint(cb << 2 | 1));
        b.extend(vec![0u8; cb as usize]);
        b.extend(f32_bytes(&vec![1.0; (ca + cb) as usize]));
        with_header("topk", &b)
    };
    assert!(cu.decompress(&two_sets(3, 0), &ctx2).is_ok());
    assert!(cu.decompress(&two_sets(1, 2), &ctx2).is_ok());
    for (ca, cb) in [(1, 1), (2, 2), (4, 0), (0, 0), (3, 1)] {
        let e = cu.decompress(&two_sets(ca, cb), &ctx2).expect_err("sum");
        assert!(e.to_string().contains("keep"), "{ca}+{cb}: {e}");
    }

    // Truncation inside an Elias-Fano index set of a real payload.
    let big = layout(&[("w", &[100, 100])]);
    let ctxb = testkit::ctx(&big, 1, 0, 0);
    let cb = build("kind = \"topk\"");
    let x = testkit::random_update(&big, 3, 1.0);
    let p = cb.compress(&x, &mut ClientState::default(), &ctxb).unwrap();
    let set_len = {
        let set: Vec<u32> = naive_top_k(&x.to_flat().unwrap(), 100)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let (code, len) = indices::cheapest(&set, 10_000);
        assert_eq!(code, indices::IndexCode::EliasFano);
        len
    };
    let head = Payload::header_len("topk");
    for cut in [head + 1, head + set_len / 2, head + set_len - 1] {
        let e = cb
            .decompress(&Payload::from_bytes(p.as_bytes()[..cut].to_vec()), &ctxb)
            .expect_err("truncated");
        assert!(matches!(e, cgfed_core::Error::MalformedPayload(_)), "{e}");
    }
}

#[test]
fn config_errors_name_the_key() {
    for (src, key) in [
        ("kind = \"topk\"\nratio = 0.0", "compressor.ratio"),
        ("kind = \"topk\"\nratio = 1.5", "compressor.ratio"),
        ("kind = \"topk\"\nratio = -0.1", "compressor.ratio"),
        ("kind = \"topk\"\nratio = nan", "compressor.ratio"),
        ("kind = \"topk\"\nratio = \"a lot\"", "compressor.ratio"),
        ("kind = \"topk\"\nk = 0", "compressor.k"),
        ("kind = \"topk\"\nk = -4", "compressor.k"),
        ("kind = \"topk\"\nscope = \"global\"", "compressor.scope"),
    ] {
        let e = build_err(src);
        assert!(e.contains(&format!("`{key}`")), "{src}: {e}");
    }
    let e = build_err("kind = \"topk\"\nratoi = 0.1");
    assert!(e.contains("ratoi") && e.contains("compressor"), "{e}");
    let e = build_err("kind = \"topk\"\nscope = \"global\"");
    assert!(e.contains("tensor") && e.contains("update"), "{e}");
    // In a downlink table the key path follows the table.
    let mut t = table("kind = \"topk\"\nratio = 2.0");
    t.key = "downlink".into();
    let e = cgfed_core::registry::build_compressor(&t)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`downlink.ratio`"), "{e}");
    // Ratio 1 keeps everything.
    let l = layout(&[("a", &[5])]);
    let xv = [1.0, -2.0, 3.0, 0.5, 0.25];
    let (_, y) = roundtrip(
        build("kind = \"topk\"\nratio = 1.0").as_ref(),
        &update(&l, &xv),
        &testkit::ctx(&l, 1, 0, 0),
    );
    assert_eq!(y, xv);
}

#[test]
fn composition_with_bf16() {
    let c = build("kind = \"topk\"\nvalues = { kind = \"bf16\" }");
    assert_eq!(c.name(), "topk+bf16");
    let l = layout(&[("a", &[16, 64]), ("b", &[7])]);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let xv = testkit::random_values(l.numel(), 8, 0.02);
    let (p, y) = roundtrip(c.as_ref(), &update(&l, &xv), &ctx);
    let mut structure = 0;
    let mut k_total = 0;
    let mut off = 0;
    for spec in l.specs() {
        let n = spec.numel();
        let want = naive_top_k(&xv[off..off + n], k01(n));
        let set: Vec<u32> = want.iter().map(|&i| i as u32).collect();
        structure += indices::cheapest(&set, n).1;
        k_total += want.len();
        assert_eq!(support(&y[off..off + n]), want);
        for &j in &want {
            // bf16 round to nearest even: exactly what the second stage must return.
            let bits = xv[off + j].to_bits();
            let rounded = f32::from_bits((bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff_0000);
            assert_eq!(y[off + j], rounded, "{}", xv[off + j]);
        }
        off += n;
    }
    assert_eq!(
        p.len(),
        Payload::header_len("topk+bf16") + structure + 2 * k_total
    );
    // The composed payload passes the conformance suite too.
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 1.0,
            ..Expect::default()
        },
    );
}

#[test]
fn error_feedback_recovers_the_sum_of_updates() {
    let l = layout(&[("w", &[64, 64])]);
    let x = testkit::random_update(&l, 12, 0.01);
    let plain = build("kind = \"topk\"\nratio = 0.1");
    let ef = build("kind = \"topk\"\nratio = 0.1\nerror_feedback = true");
    assert_eq!(ef.describe(), "topk (ratio 0.1 per tensor), error feedback");
    let without = accumulated_error(plain.as_ref(), &x, 200);
    let with_50 = accumulated_error(ef.as_ref(), &x, 50);
    let with_200 = accumulated_error(ef.as_ref(), &x, 200);
    // Without EF the error stays at that of one round (~0.75 for top 10 % of a Gaussian).
    assert!(without > 0.6, "without EF {without}");
    // With EF the residual is bounded, so the relative error falls like 1/rounds.
    assert!(with_200 < 0.1, "with EF after 200 rounds {with_200}");
    assert!(with_200 < with_50, "{with_200} !< {with_50}");
}

#[test]
fn zero_element_tensors_cost_one_byte() {
    let l = layout(&[("a", &[0]), ("b", &[300]), ("c", &[2, 0])]);
    let xv = testkit::random_values(300, 1, 1.0);
    let x = update(&l, &xv);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let want = naive_top_k(&xv, 3);
    let set: Vec<u32> = want.iter().map(|&i| i as u32).collect();
    for src in ["kind = \"topk\"", "kind = \"topk\"\nscope = \"update\""] {
        let (p, y) = roundtrip(build(src).as_ref(), &x, &ctx);
        assert_eq!(support(&y), want, "{src}");
        assert_eq!(
            p.len(),
            6 + 1 + indices::cheapest(&set, 300).1 + 1 + 12,
            "{src}"
        );
    }
    let (p, _) = roundtrip(
        build("kind = \"topk\"\nvalues = { kind = \"bf16\" }").as_ref(),
        &x,
        &ctx,
    );
    assert_eq!(
        p.len(),
        Payload::header_len("topk+bf16") + 2 + indices::cheapest(&set, 300).1 + 6
    );
}

#[test]
fn non_contiguous_and_f64_tensors_are_read_once_as_host_f32() {
    use cgfed_core::candle_core::{DType, Device, Tensor};
    let v = testkit::random_values(200 * 300, 6, 1.0);
    let t = Tensor::from_vec(v, (200, 300), &Device::Cpu).unwrap();
    let tt = t.t().unwrap(); // [300, 200], not contiguous
    assert!(!tt.is_contiguous());
    let strided = cgfed_core::Update::new(vec![("w".into(), tt.clone())]).unwrap();
    let dense = cgfed_core::Update::new(vec![("w".into(), tt.contiguous().unwrap())]).unwrap();
    let wide =
        cgfed_core::Update::new(vec![("w".into(), tt.to_dtype(DType::F64).unwrap())]).unwrap();
    let ctx = testkit::ctx(dense.layout(), 1, 0, 0);
    for src in [
        "kind = \"topk\"",
        "kind = \"topk\"\nscope = \"update\"",
        "kind = \"approx-topk\"",
    ] {
        let c = build(src);
        let (p, _) = roundtrip(c.as_ref(), &dense, &ctx);
        let (q, _) = roundtrip(c.as_ref(), &strided, &ctx);
        let (r, _) = roundtrip(c.as_ref(), &wide, &ctx);
        assert_eq!(p, q, "{src}");
        assert_eq!(p, r, "{src}");
    }
}
