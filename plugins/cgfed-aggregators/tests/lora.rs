//! `fedavg` with `lora = "product"`: the exact LoRA product's residual for the base weights.

use crate::common;

use cgfed_core::candle_core::Device;
use cgfed_core::testkit::{self, random_values};
use cgfed_core::{Aggregated, ClientUpdate, Layout, TensorSpec, Update};
use common::*;
use proptest::prelude::*;

fn spec(name: &str, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        shape: shape.to_vec(),
    }
}

fn product_round(
    keys: &[(&str, &str)],
    layout: &Layout,
    global: &[f32],
    updates: &[ClientUpdate],
) -> Aggregated {
    let mut agg = build("fedavg", keys);
    let g = Update::from_flat(layout, global, &Device::Cpu).unwrap();
    agg.aggregate(updates, &g, &testkit::ctx(layout, 0, 0, 0))
        .unwrap()
}

#[test]
fn residual_matches_a_hand_computed_example() {
    // m.lora_A [1, 2] = [1, 0], m.lora_B [2, 1] = [0, 1]ᵀ; two clients, uniform weights.
    let layout = &Layout::new(vec![spec("m.lora_A", &[1, 2]), spec("m.lora_B", &[2, 1])]).unwrap();
    let global = [1.0, 0.0, 0.0, 1.0];
    // Client 1: A₁ = [2, 0], B₁ = [1, 1]ᵀ.  Client 2: A₂ = [0, 2], B₂ = [-1, 1]ᵀ.
    let ups = [
        client(layout, 0, &[1.0, 0.0, 1.0, 0.0], 1),
        client(layout, 1, &[-1.0, 2.0, -1.0, 0.0], 1),
    ];
    let out = product_round(&[("lora", "\"product\"")], layout, &global, &ups);
    // Delta: the FedIT mean of the factor deltas.
    assert_close(&flat(&out.delta), &[0.0, 1.0, 0.0, 0.0], 0.0);
    // B₁A₁ = [[2,0],[2,0]], B₂A₂ = [[0,-2],[0,2]], mean [[1,-1],[1,1]];
    // Ā = [1, 1], B̄ = [0, 1]ᵀ, B̄Ā = [[0,0],[1,1]]  =>  R = [[1,-1],[0,0]].
    let res = out.base_residual.expect("product mode has a residual");
    assert_eq!(res.layout().specs(), &[spec("m", &[2, 2])]);
    assert_close(&flat(&res), &[1.0, -1.0, 0.0, 0.0], 1e-7);
    // min(4·2·2, 4·k·r·(out+in) = 4·2·1·4) = 16
    assert_eq!(out.base_residual_bytes, 16);
    // BA = [[0,0],[1,0]]: mean product − BA = [[1,-1],[0,1]], ‖·‖ = √3; ‖R‖ = √2.
    let rel = out.metrics["lora_fedit_rel_err"];
    assert!((rel - (2.0f64 / 3.0).sqrt()).abs() < 1e-9, "{rel}");
}

#[test]
fn residual_bytes_take_the_cheaper_exact_form() {
    let layout = &testkit::layouts()[0]; // a.lora_A [4, 32], a.lora_B [32, 4]
    let n = layout.numel();
    let ups = |k: usize| -> Vec<ClientUpdate> {
        (0..k)
            .map(|i| client(layout, i, &random_values(n, i as u64 + 1, 0.1), 1))
            .collect()
    };
    let global = random_values(n, 99, 1.0);
    let keys = [("lora", "\"product\"")];
    // k = 2: 4·2·4·(32+32) = 2048 < 4·32·32 = 4096
    assert_eq!(
        product_round(&keys, layout, &global, &ups(2)).base_residual_bytes,
        2048
    );
    // k = 5: 4·5·4·64 = 5120 > 4096
    assert_eq!(
        product_round(&keys, layout, &global, &ups(5)).base_residual_bytes,
        4096
    );
}

#[test]
fn identical_b_deltas_leave_no_residual() {
    let layout = &Layout::new(vec![spec("m.lora_A", &[2, 3]), spec("m.lora_B", &[4, 2])]).unwrap();
    let global = random_values(layout.numel(), 5, 1.0);
    let db = random_values(8, 6, 0.5);
    let ups: Vec<_> = (0..3)
        .map(|i| {
            let mut v = random_values(6, 10 + i as u64, 0.5);
            v.extend_from_slice(&db);
            client(layout, i, &v, i + 1)
        })
        .collect();
    let out = product_round(&[("lora", "\"product\"")], layout, &global, &ups);
    let r = flat(&out.base_residual.unwrap());
    assert!(norm(&r) < 1e-6, "‖R‖ = {}", norm(&r));
    assert!(out.metrics["lora_fedit_rel_err"] < 1e-6);
}

#[test]
fn factor_mode_sends_no_residual() {
    let layout = &testkit::layouts()[0];
    let ups = clients(layout, &[random_values(layout.numel(), 1, 1.0)]);
    let out = product_round(&[], layout, &random_values(layout.numel(), 2, 1.0), &ups);
    assert!(out.base_residual.is_none());
    assert!(!out.metrics.contains_key("lora_fedit_rel_err"));
}

#[test]
fn a_layout_without_lora_pairs_is_an_error_on_the_lora_key() {
    let layout = &testkit::layouts()[1]; // bias [7]
    let mut agg = build("fedavg", &[("lora", "\"product\"")]);
    let err = try_round(agg.as_mut(), layout, &clients(layout, &[vec![1.0; 7]]))
        .expect_err("no pairs")
        .to_string();
    assert!(
        err.contains("aggregator.lora") && err.contains("factors"),
        "{err}"
    );
}

#[test]
fn an_unpaired_factor_is_an_error() {
    let layout = &Layout::new(vec![spec("m.lora_A", &[2, 3])]).unwrap();
    let mut agg = build("fedavg", &[("lora", "\"product\"")]);
    let err = try_round(agg.as_mut(), layout, &clients(layout, &[vec![1.0; 6]]))
        .expect_err("unpaired")
        .to_string();
    assert!(err.contains("m.lora_B"), "{err}");
}

#[test]
fn bad_lora_mode_names_the_key_and_values() {
    let err = config_error("fedavg", &[("lora", "\"exact\"")]);
    assert!(err.contains("aggregator.lora"), "{err}");
    assert!(err.contains("factors") && err.contains("product"), "{err}");
}

/// Reference: per module (out × in, row-major, f64) the direct `Σ wᵢ BᵢAᵢ − B̄Ā` and the
/// covariance form `Σ wᵢ (Bᵢ − B̄)(Aᵢ − Ā)`, and the denominator `Σ wᵢ BᵢAᵢ − BA`.
struct Reference {
    direct: Vec<f64>,
    covariance: Vec<f64>,
    fedit_error: Vec<f64>,
}

fn matmul(b: &[f64], a: &[f64], out: usize, r: usize, inp: usize) -> Vec<f64> {
    let mut m = vec![0.0; out * inp];
    for o in 0..out {
        for c in 0..inp {
            m[o * inp + c] = (0..r).map(|q| b[o * r + q] * a[q * inp + c]).sum();
        }
    }
    m
}

/// `a0` [r, in], `b0` [out, r] and per client (ΔA, ΔB), weights normalised.
fn reference(
    a0: &[f32],
    b0: &[f32],
    deltas: &[(Vec<f32>, Vec<f32>)],
    w: &[f64],
    (out, r, inp): (usize, usize, usize),
) -> Reference {
    let add = |x: &[f32], d: &[f32]| -> Vec<f64> {
        x.iter()
            .zip(d)
            .map(|(&x, &d)| x as f64 + d as f64)
            .collect()
    };
    let ai: Vec<Vec<f64>> = deltas.iter().map(|(da, _)| add(a0, da)).collect();
    let bi: Vec<Vec<f64>> = deltas.iter().map(|(_, db)| add(b0, db)).collect();
    let wmean = |xs: &[Vec<f64>]| -> Vec<f64> {
        (0..xs[0].len())
            .map(|e| xs.iter().zip(w).map(|(x, w)| w * x[e]).sum())
            .collect()
    };
    let (abar, bbar) = (wmean(&ai), wmean(&bi));
    let products: Vec<Vec<f64>> = ai
        .iter()
        .zip(&bi)
        .map(|(a, b)| matmul(b, a, out, r, inp))
        .collect();
    let mean_product = wmean(&products);
    let fedit = matmul(&bbar, &abar, out, r, inp);
    let direct: Vec<f64> = mean_product
        .iter()
        .zip(&fedit)
        .map(|(m, f)| m - f)
        .collect();
    let mut covariance = vec![0.0; out * inp];
    for ((a, b), &wi) in ai.iter().zip(&bi).zip(w) {
        let da: Vec<f64> = a.iter().zip(&abar).map(|(x, m)| x - m).collect();
        let db: Vec<f64> = b.iter().zip(&bbar).map(|(x, m)| x - m).collect();
        for (c, p) in covariance.iter_mut().zip(matmul(&db, &da, out, r, inp)) {
            *c += wi * p;
        }
    }
    let base: Vec<f64> = matmul(
        &b0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        &a0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        out,
        r,
        inp,
    );
    let fedit_error = mean_product.iter().zip(&base).map(|(m, b)| m - b).collect();
    Reference {
        direct,
        covariance,
        fedit_error,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// On random factors, sizes, weights and client counts: the residual equals both the
    /// direct definition and the covariance identity, `lora_fedit_rel_err` equals
    /// ‖R‖/‖Σwᵢ BᵢAᵢ − BA‖, and the delta is the weighted mean of the factor deltas.
    #[test]
    fn residual_identity_holds_on_random_factors(
        k in 1usize..5, r in 1usize..4, out in 1usize..7, inp in 1usize..7,
        seed in 0u64..10_000, counts in prop::collection::vec(1usize..50, 5),
        scale in prop::sample::select(vec![1e-2f32, 1.0, 10.0]),
    ) {
        let layout = Layout::new(vec![
            spec("x.lora_A", &[r, inp]),
            spec("x.lora_B", &[out, r]),
            spec("y", &[3]),
        ]).unwrap();
        let (na, nb) = (r * inp, out * r);
        let global = random_values(layout.numel(), seed, 1.0);
        let deltas: Vec<(Vec<f32>, Vec<f32>)> = (0..k)
            .map(|i| {
                let s = seed * 31 + i as u64 + 1;
                (random_values(na, s, scale), random_values(nb, s + 7777, scale))
            })
            .collect();
        let ups: Vec<ClientUpdate> = deltas
            .iter()
            .enumerate()
            .map(|(i, (da, db))| {
                let mut v = da.clone();
                v.extend_from_slice(db);
                v.extend_from_slice(&random_values(3, seed + 99 + i as u64, 1.0));
                client(&layout, i, &v, counts[i])
            })
            .collect();
        let total: usize = counts[..k].iter().sum();
        let w: Vec<f64> = counts[..k].iter().map(|&c| c as f64 / total as f64).collect();
        let want = reference(&global[..na], &global[na..na + nb], &deltas, &w, (out, r, inp));
        let got = product_round(&[("lora", "\"product\"")], &layout, &global, &ups);
        let res = flat(got.base_residual.as_ref().unwrap());
        // f32 inputs, f64 arithmetic on both sides: agreement to f32 output precision,
        // relative to the size of the products.
        let big = want.fedit_error.iter().chain(&want.direct).fold(1e-30f64, |m, x| m.max(x.abs()))
            .max((scale as f64).powi(2));
        prop_assert_eq!(res.len(), out * inp);
        for ((got, direct), cov) in res.iter().zip(&want.direct).zip(&want.covariance) {
            prop_assert!((direct - cov).abs() <= 1e-9 * big, "identity: {} vs {}", direct, cov);
            prop_assert!((*got as f64 - direct).abs() <= 1e-6 * big, "{} vs {}", got, direct);
        }
        let rn: f64 = want.direct.iter().map(|x| x * x).sum::<f64>().sqrt();
        let dn: f64 = want.fedit_error.iter().map(|x| x * x).sum::<f64>().sqrt();
        let rel = got.metrics["lora_fedit_rel_err"];
        if dn > 1e-6 * big {
            prop_assert!((rel - rn / dn).abs() <= 1e-5 * (1.0 + rn / dn), "{} vs {}", rel, rn / dn);
        }
        prop_assert_eq!(got.base_residual_bytes, (4 * out * inp).min(4 * k * r * (out + inp)));
        let delta = flat(&got.delta);
        for (e, d) in delta.iter().enumerate() {
            let want: f64 = ups.iter().zip(&w).map(|(u, w)| w * flat(&u.update)[e] as f64).sum();
            prop_assert!((*d as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()));
        }
    }
}

#[test]
fn clipping_happens_before_the_residual() {
    // One module, r = 1: A [1, 2], B [2, 1]; clip to norm 1 with uniform weights.
    let layout = &Layout::new(vec![spec("m.lora_A", &[1, 2]), spec("m.lora_B", &[2, 1])]).unwrap();
    let global = [1.0, 0.0, 0.0, 1.0];
    // Client 1 delta has norm 2 (clipped to half), client 2 norm 0.5 (kept).
    let d1 = [2.0f32, 0.0, 0.0, 0.0];
    let d2 = [0.0f32, 0.0, 0.5, 0.0];
    let ups = [client(layout, 0, &d1, 1), client(layout, 1, &d2, 1)];
    let out = product_round(
        &[
            ("lora", "\"product\""),
            ("clip_norm", "1.0"),
            ("weighting", "\"uniform\""),
        ],
        layout,
        &global,
        &ups,
    );
    assert_eq!(out.metrics["clipped"], 1.0);
    let clipped = [
        (vec![1.0f32, 0.0], vec![0.0f32, 0.0]),
        (vec![0.0, 0.0], vec![0.5, 0.0]),
    ];
    let want = reference(&global[..2], &global[2..], &clipped, &[0.5, 0.5], (2, 1, 2));
    let res = flat(out.base_residual.as_ref().unwrap());
    for (g, w) in res.iter().zip(&want.direct) {
        assert!((*g as f64 - w).abs() < 1e-7, "{g} vs {w}");
    }
    // A₁ = [2, 0], A₂ = [1, 0], B₁ = [0, 1]ᵀ, B₂ = [0.5, 1]ᵀ: R = ½·Σ(Bᵢ−B̄)(Aᵢ−Ā)
    // = ½·([-0.25, 0]ᵀ·[0.5, 0] + [0.25, 0]ᵀ·[-0.5, 0]) = [[-0.125, 0], [0, 0]].
    assert_close(&res, &[-0.125, 0.0, 0.0, 0.0], 1e-7);
    assert_close(&flat(&out.delta), &[0.5, 0.0, 0.25, 0.0], 1e-7);
}
