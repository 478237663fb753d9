//! Robust aggregators: `median`, `trimmed-mean`, `krum` / multi-Krum — hand-computed
//! values, behaviour under Byzantine clients, properties.

use crate::common;

use cgfed_aggregators::{Krum, KrumConfig};
use cgfed_core::testkit::{self, random_values};
use common::*;
use proptest::prelude::*;

#[test]
fn median_per_coordinate_odd_and_even() {
    let layout = &vector(3);
    let mut agg = build("median", &[]);
    let odd = [
        vec![1.0, -5.0, 0.0],
        vec![3.0, 2.0, 0.0],
        vec![2.0, 7.0, 100.0],
    ];
    let out = round(agg.as_mut(), layout, &clients(layout, &odd));
    assert_close(&flat(&out.delta), &[2.0, 2.0, 0.0], 0.0);
    let mut even = odd.to_vec();
    even.push(vec![10.0, 3.0, -1.0]);
    // sorted columns: [1,2,3,10] -> 2.5; [-5,2,3,7] -> 2.5; [-1,0,0,100] -> 0
    let out = round(agg.as_mut(), layout, &clients(layout, &even));
    assert_close(&flat(&out.delta), &[2.5, 2.5, 0.0], 0.0);
}

#[test]
fn median_ignores_example_counts() {
    let layout = &vector(1);
    let ups = [
        client(layout, 0, &[1.0], 1000),
        client(layout, 1, &[2.0], 1),
        client(layout, 2, &[3.0], 1),
    ];
    let out = round(build("median", &[]).as_mut(), layout, &ups);
    assert_eq!(flat(&out.delta), vec![2.0]);
}

#[test]
fn trimmed_mean_drops_the_extremes() {
    let layout = &vector(2);
    // n = 5, β = 0.2: k = 1 per side. Column 0: [-100, 1, 2, 3, 50] -> mean(1, 2, 3) = 2;
    // column 1: [0, 0, 1, 1, 7] -> mean(0, 1, 1) = 2/3.
    let vals = [
        vec![50.0, 1.0],
        vec![1.0, 0.0],
        vec![-100.0, 7.0],
        vec![2.0, 1.0],
        vec![3.0, 0.0],
    ];
    let out = round(
        build("trimmed-mean", &[("beta", "0.2")]).as_mut(),
        layout,
        &clients(layout, &vals),
    );
    assert_close(&flat(&out.delta), &[2.0, 2.0 / 3.0], 1e-7);
    assert_eq!(out.metrics["trimmed_mean_clamped"], 0.0);
    // β = 0 is the plain mean: (50 + 1 − 100 + 2 + 3)/5 = −8.8, (1 + 0 + 7 + 1 + 0)/5 = 1.8
    let out = round(
        build("trimmed-mean", &[("beta", "0.0")]).as_mut(),
        layout,
        &clients(layout, &vals),
    );
    assert_close(&flat(&out.delta), &[-8.8, 1.8], 1e-6);
    // β = 0.49 with n = 5: k = ⌊2.45⌋ = 2, only the median is left.
    let out = round(
        build("trimmed-mean", &[("beta", "0.49")]).as_mut(),
        layout,
        &clients(layout, &vals),
    );
    assert_close(&flat(&out.delta), &[2.0, 1.0], 0.0);
}

#[test]
fn trimmed_mean_counts_exact_fractions() {
    // β·n = 0.3·10 = 3 exactly (in decimal): trims 3 per side, keeps 4 middle values.
    let layout = &vector(1);
    let vals: Vec<Vec<f32>> = (1..=10).map(|i| vec![i as f32]).collect();
    let out = round(
        build("trimmed-mean", &[("beta", "0.3")]).as_mut(),
        layout,
        &clients(layout, &vals),
    );
    assert_close(&flat(&out.delta), &[5.5], 1e-7); // mean of 4, 5, 6, 7
}

#[test]
fn trimmed_mean_beta_out_of_range_names_the_key() {
    for bad in ["0.5", "-0.1", "0.7"] {
        let err = config_error("trimmed-mean", &[("beta", bad)]);
        assert!(
            err.contains("aggregator.beta") && err.contains("[0, 0.5)"),
            "{err}"
        );
    }
}

/// 1-D points 0, 1, 2, 10, 11 (clients 100..104), f = 1: 2 neighbours each.
/// Scores: 0 → 1+4 = 5, 1 → 1+1 = 2, 2 → 1+4 = 5, 10 → 1+64 = 65, 11 → 1+81 = 82.
fn krum_points() -> (cgfed_core::Layout, Vec<cgfed_core::ClientUpdate>) {
    let layout = vector(1);
    let ups = [0.0f32, 1.0, 2.0, 10.0, 11.0]
        .iter()
        .enumerate()
        .map(|(i, &v)| client(&layout, 100 + i, &[v], 1))
        .collect();
    (layout, ups)
}

#[test]
fn krum_picks_the_lowest_score() {
    let (layout, ups) = krum_points();
    let out = round(build("krum", &[]).as_mut(), &layout, &ups);
    assert_eq!(flat(&out.delta), vec![1.0]);
    assert_eq!(out.metrics["krum_selected"], 1.0);
    assert_eq!(out.metrics["krum_best_client"], 101.0);
    assert_eq!(out.metrics["krum_underdetermined"], 0.0);
    let values: Vec<Vec<f32>> = ups.iter().map(|u| flat(&u.update)).collect();
    let sel = Krum::new(KrumConfig {
        byzantine: 1,
        multi: 1,
        clip_norm: None,
    })
    .select(&values);
    assert_eq!(sel.scores, vec![5.0, 2.0, 5.0, 65.0, 82.0]);
}

#[test]
fn multi_krum_breaks_ties_by_position() {
    let (layout, ups) = krum_points();
    // m = 2: position 1 (score 2), then positions 0 and 2 tie at 5 -> 0. Mean (1 + 0)/2.
    let out = round(build("krum", &[("multi", "2")]).as_mut(), &layout, &ups);
    assert_eq!(flat(&out.delta), vec![0.5]);
    assert_eq!(out.metrics["krum_selected"], 2.0);
    // m = 3: {1, 0, 2} -> mean 1; m capped at n = 5: the plain mean 24/5.
    let out = round(build("krum", &[("multi", "3")]).as_mut(), &layout, &ups);
    assert_eq!(flat(&out.delta), vec![1.0]);
    let out = round(build("krum", &[("multi", "50")]).as_mut(), &layout, &ups);
    assert_close(&flat(&out.delta), &[4.8], 1e-7);
    assert_eq!(out.metrics["krum_selected"], 5.0);
}

#[test]
fn krum_with_too_few_updates_uses_one_neighbour() {
    let layout = &vector(1);
    // n = 3, f = 1: n − f − 2 = 0 -> one neighbour. Scores 1, 1, 16: position 0 wins the tie.
    let ups = clients(layout, &[vec![0.0], vec![1.0], vec![5.0]]);
    let out = round(build("krum", &[]).as_mut(), layout, &ups);
    assert_eq!(flat(&out.delta), vec![0.0]);
    assert_eq!(out.metrics["krum_underdetermined"], 1.0);
    // n = 1: that update.
    let out = round(
        build("krum", &[("byzantine", "3")]).as_mut(),
        layout,
        &ups[2..],
    );
    assert_eq!(flat(&out.delta), vec![5.0]);
    assert_eq!(out.metrics["krum_selected"], 1.0);
    assert_eq!(out.metrics["krum_best_client"], 2.0);
}

#[test]
fn krum_config_errors_name_the_key() {
    let err = config_error("krum", &[("multi", "0")]);
    assert!(
        err.contains("aggregator.multi") && err.contains("≥ 1"),
        "{err}"
    );
    let err = config_error("krum", &[("byzantine", "-1")]);
    assert!(err.contains("aggregator.byzantine"), "{err}");
}

/// Ten honest updates `c + noise` (noise ±0.02 per coordinate) and the Byzantine ones:
/// `−10·c` (sign flipped, ×10) and `1e4·c` (huge), alternating. Returns the updates, the
/// honest mean and the honest client ids.
fn byzantine_round(
    layout: &cgfed_core::Layout,
    byzantine: usize,
) -> (Vec<cgfed_core::ClientUpdate>, Vec<f64>) {
    let n = layout.numel();
    let c = random_values(n, 1, 1.0);
    let mut ups = Vec::new();
    let mut mean = vec![0f64; n];
    for i in 0..10 {
        let v: Vec<f32> = c
            .iter()
            .zip(random_values(n, 100 + i, 0.01))
            .map(|(c, e)| c + e)
            .collect();
        mean.iter_mut()
            .zip(&v)
            .for_each(|(m, &x)| *m += x as f64 / 10.0);
        ups.push(client(layout, i as usize, &v, 1));
    }
    for b in 0..byzantine {
        let s = if b % 2 == 0 { -10.0 } else { 1e4 };
        let v: Vec<f32> = c.iter().map(|x| x * s).collect();
        // Byzantine clients claim many examples, to drag the weighted mean too.
        ups.insert(3 * b + 1, client(layout, 1000 + b, &v, 50));
    }
    (ups, mean)
}

#[test]
fn robust_aggregators_resist_byzantine_updates_and_fedavg_does_not() {
    let layout = &testkit::layouts()[3];
    for f in [2usize, 3] {
        let (ups, honest) = byzantine_round(layout, f);
        let scale: f64 = honest.iter().map(|x| x * x).sum::<f64>().sqrt();
        let multi = (10 - f).to_string();
        for (name, keys) in [
            ("median", vec![]),
            ("trimmed-mean", vec![("beta", "0.3")]),
            ("krum", vec![("byzantine", "3")]),
            ("krum", vec![("byzantine", "3"), ("multi", multi.as_str())]),
        ] {
            let out = round(build(name, &keys).as_mut(), layout, &ups);
            let d = dist(&flat(&out.delta), &honest);
            assert!(
                d < 0.02 * scale,
                "{name} {keys:?}, f = {f}: {d} from the honest mean (‖mean‖ {scale})"
            );
            if name == "krum" {
                assert!(
                    out.metrics["krum_best_client"] < 1000.0,
                    "krum picked a Byzantine update"
                );
            }
        }
        let out = round(build("fedavg", &[]).as_mut(), layout, &ups);
        let d = dist(&flat(&out.delta), &honest);
        assert!(
            d > 10.0 * scale,
            "fedavg, f = {f}: only {d} from the honest mean"
        );
    }
}

#[test]
fn krum_never_selects_a_byzantine_update() {
    let layout = &testkit::layouts()[0];
    for f in [2usize, 3] {
        let (ups, _) = byzantine_round(layout, f);
        let values: Vec<Vec<f32>> = ups.iter().map(|u| flat(&u.update)).collect();
        for multi in 1..=10 {
            let sel = Krum::new(KrumConfig {
                byzantine: 3,
                multi,
                clip_norm: None,
            })
            .select(&values);
            for &i in &sel.selected {
                assert!(
                    ups[i].client < 1000,
                    "f = {f}, m = {multi}: selected Byzantine position {i}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Median and trimmed mean do not depend on the client order and lie within the
    /// per-coordinate [min, max] of the inputs.
    #[test]
    fn coordinate_aggregators_are_permutation_invariant_and_bounded(
        n in 1usize..9, numel in 1usize..20, seed in 0u64..10_000,
        beta in 0.0f64..0.49, rotate in 0usize..9, swap in 0usize..9,
        exp in -20i32..20,
    ) {
        let layout = vector(numel);
        let scale = 10f32.powi(exp);
        let vals: Vec<Vec<f32>> = (0..n).map(|i| random_values(numel, seed * 17 + i as u64, scale)).collect();
        let mut perm = vals.clone();
        perm.rotate_left(rotate % n);
        perm.swap(0, swap % n);
        let beta = beta.to_string();
        for (name, keys) in [("median", vec![]), ("trimmed-mean", vec![("beta", beta.as_str())])] {
            let a = flat(&round(build(name, &keys).as_mut(), &layout, &clients(&layout, &vals)).delta);
            let b = flat(&round(build(name, &keys).as_mut(), &layout, &clients(&layout, &perm)).delta);
            prop_assert_eq!(&a, &b, "{} depends on the order", name);
            for (j, &x) in a.iter().enumerate() {
                let lo = vals.iter().map(|v| v[j]).fold(f32::INFINITY, f32::min);
                let hi = vals.iter().map(|v| v[j]).fold(f32::NEG_INFINITY, f32::max);
                prop_assert!(lo <= x && x <= hi, "{}: {} outside [{}, {}]", name, x, lo, hi);
            }
        }
    }
}
