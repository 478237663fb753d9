//! Differential privacy building blocks: the RDP accountant against published values and
//! against Google's `dp_accounting`, clipping, Gaussian noise, and the `[privacy]` config.
//!
//! Tolerances. RDP values: relative 1e-6 — this crate and dp_accounting run the same
//! series, differing only in how ln C(α, i) (running sum vs. `gammaln`) and ln erfc
//! (series/continued fraction vs. `log_ndtr`) are rounded, ~1e-13 relative per term; a
//! tiny RDP is the log of a sum of O(1) terms, which amplifies that. Measured worst case
//! on the grid below: 5.5e-12. ε: relative 1e-4 — ε is a minimum over discrete orders of
//! RDP-plus-constant terms, so RDP errors pass through unchanged (measured worst case
//! 7e-15), while a wrong formula (the classic instead of the tight conversion, a mis-scaled
//! q, a missing ln α term) moves ε by 1% to 30%; 1e-4 separates the two by orders of
//! magnitude and matches the precision the published values are quoted with.

use cgfed_aggregators::privacy::{
    add_gaussian_noise, clip_update, default_orders, epsilon_for, l2_norm, rdp_sampled_gaussian,
    rdp_to_epsilon, Conversion, DpConfig, DpMode, PrivacyReport, RdpAccountant,
};
use cgfed_core::candle_core::Device;
use cgfed_core::{toml, Error, Layout, TensorSpec, Update};

// ---------------------------------------------------------------------------------------
// helpers

fn close(got: f64, want: f64, rel: f64) -> bool {
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rel * want.abs()
}

#[track_caller]
fn assert_rel(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        close(got, want, rel),
        "{what}: got {got}, want {want} (rel err {:e}, tol {rel:e})",
        ((got - want) / want).abs()
    );
}

fn layout(shapes: &[(&str, &[usize])]) -> Layout {
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

fn update(layout: &Layout, values: &[f32]) -> Update {
    Update::from_flat(layout, values, &Device::Cpu).unwrap()
}

/// 100 000 elements in two tensors; value i is a fixed non-trivial pattern.
fn big_update() -> Update {
    let l = layout(&[("a.weight", &[300, 200]), ("b.bias", &[40_000])]);
    let values: Vec<f32> = (0..l.numel())
        .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
        .collect();
    update(&l, &values)
}

fn flat(u: &Update) -> Vec<f32> {
    u.to_flat().unwrap()
}

/// Reference norm, computed here in f64 from the f32 values.
fn norm_of(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>()
        .sqrt()
}

fn table(src: &str) -> toml::Table {
    src.parse().unwrap()
}

#[track_caller]
fn config_error(src: &str) -> (String, String) {
    match DpConfig::from_table(&table(src)) {
        Err(Error::Config { key, message }) => (key, message),
        other => panic!("expected a config error for {src:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: cgfed_core::Result<T>) {
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "expected InvalidInput, got {r:?}"
    );
}

/// `compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy`'s orders (TensorFlow Privacy).
fn tf_privacy_orders() -> Vec<f64> {
    [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5]
        .into_iter()
        .chain((5..64).map(f64::from))
        .chain([128., 256., 512.])
        .collect()
}

// ---------------------------------------------------------------------------------------
// published values

/// dp_accounting's own unit test `test_compute_rdp_poisson_sampled_gaussian`
/// (google/differential-privacy, python/dp_accounting/dp_accounting/rdp/
/// rdp_privacy_accountant_test.py): q = 0.01, σ = 2.5, 50 steps, RDP at
/// orders 1.5, 2.5, 5, 50, 100 (published to 9 significant digits).
#[test]
fn published_rdp_dp_accounting_unit_test() {
    let orders = vec![1.5, 2.5, 5.0, 50.0, 100.0];
    let want = [
        6.70579741e-04,
        1.08548710e-03,
        2.18075656e-03,
        2.38460375e-02,
        1.67416308e02,
    ];
    let mut acc = RdpAccountant::new(orders.clone()).unwrap();
    acc.compose_sampled_gaussian(0.01, 2.5, 50).unwrap();
    for ((a, got), want) in orders.iter().zip(acc.rdp()).zip(want) {
        assert_rel(*got, want, 1e-6, &format!("RDP at order {a}"));
    }
}

/// TensorFlow Privacy's `compute_dp_sgd_privacy_test.py` (`test_compute_dp_sgd_privacy`,
/// cases Test0–Test2): `compute_dp_sgd_privacy(n, batch_size, noise_multiplier, epochs,
/// delta)` with q = batch/n, steps = ⌈epochs·n/batch⌉ and that library's orders; the test
/// asserts ε (to 7 places) and the optimal order.
#[test]
fn published_epsilon_tf_privacy_compute_dp_sgd_privacy() {
    let cases: [(f64, f64, f64, f64, f64, f64, f64); 3] = [
        // n, batch, σ, epochs, δ, ε, order
        (60000., 150., 1.3, 15., 1e-5, 0.7242234026109595, 19.0),
        (100000., 100., 1.0, 30., 1e-7, 1.4154988495444842, 13.0),
        (100000000., 1024., 0.1, 10., 1e-7, 5907982.3113978775, 1.25),
    ];
    for (n, batch, sigma, epochs, delta, eps, order) in cases {
        let q = batch / n;
        let steps = (epochs * n / batch).ceil() as u64;
        let mut acc = RdpAccountant::new(tf_privacy_orders()).unwrap();
        acc.compose_sampled_gaussian(q, sigma, steps).unwrap();
        let report = acc.epsilon(delta).unwrap();
        assert_rel(report.epsilon, eps, 1e-4, &format!("ε for n={n} σ={sigma}"));
        assert_eq!(report.order, order, "optimal order for n={n} σ={sigma}");
        assert_eq!(report.steps, steps);
    }
}

/// Opacus documentation, `opacus.scripts.compute_dp_sgd_privacy`
/// (https://opacus.ai/api/compute_dp_sgd_privacy.html): sample rate 0.01, noise multiplier
/// 1.0, 3 epochs = 300 steps, δ = 1e-5, alphas 2 5 10 20 100 → "epsilon = 2.39", "The
/// optimal alpha is 5.0". Printed to 2 decimals, so the tolerance is the rounding (±0.005).
#[test]
fn published_epsilon_opacus_docs() {
    let mut acc = RdpAccountant::new(vec![2.0, 5.0, 10.0, 20.0, 100.0]).unwrap();
    acc.compose_sampled_gaussian(0.01, 1.0, 300).unwrap();
    let report = acc.epsilon(1e-5).unwrap();
    assert!(
        (report.epsilon - 2.39).abs() <= 0.005,
        "ε = {}",
        report.epsilon
    );
    assert_eq!(report.order, 5.0);
    // The classic conversion is distinctly looser here (≈ 3.02): the default is the tight one.
    assert!(report.epsilon_classic > report.epsilon + 0.5);
}

/// dp_accounting's `test_compute_epsilon_delta_pure_dp`: RDP ≡ 1.1 at orders 2..=32,
/// δ = 1e-5 → ε = 1.32783806176 at order 32 ("computed by hand").
#[test]
fn published_conversion_pure_dp() {
    let orders: Vec<f64> = (2..33).map(f64::from).collect();
    let rdp = vec![1.1; orders.len()];
    let (eps, order) = rdp_to_epsilon(&orders, &rdp, 1e-5, Conversion::Tight).unwrap();
    assert_rel(eps, 1.32783806176, 1e-9, "ε");
    assert_eq!(order, 32.0);
    // Classic by hand: 1.1 + ln(1e5)/31.
    let (classic, order) = rdp_to_epsilon(&orders, &rdp, 1e-5, Conversion::Classic).unwrap();
    assert_rel(classic, 1.1 + 1e5f64.ln() / 31.0, 1e-12, "classic ε");
    assert_eq!(order, 32.0);
}

/// dp_accounting's `test_compute_epsilon_delta_gaussian`: the Gaussian mechanism (q = 1)
/// with σ = 4.530877117 is exactly (1, 1e-6)-DP; at orders 0.001·i the RDP bound gives
/// ε ≈ 1 (asserted to 7 places there). Order 1.0 is left out (this crate needs α > 1; the
/// tight conversion skips α ≤ 1.01 anyway).
#[test]
fn published_conversion_gaussian_one_epsilon() {
    let orders: Vec<f64> = (1001..100_000).map(|i| 0.001 * i as f64).collect();
    let mut acc = RdpAccountant::new(orders).unwrap();
    acc.compose_sampled_gaussian(1.0, 4.530877117, 1).unwrap();
    let report = acc.epsilon(1e-6).unwrap();
    assert!(
        (report.epsilon - 1.0).abs() < 5e-7,
        "ε = {}",
        report.epsilon
    );
}

// ---------------------------------------------------------------------------------------
// dp_accounting reference grid
//
// Produced with dp_accounting 0.6.0 (numpy 2.4.6, scipy 1.17.1, Python 3.11) by:
//
//   from dp_accounting.rdp import rdp_privacy_accountant as r
//   import dp_accounting as dpa, math
//   for q in [0.001, 0.02, 0.3]:
//     for s in [0.6, 1.1, 4.0]:
//       for a in [1.25, 2, 3.7, 8, 20.5, 64, 256]:
//         print(q, s, float(a), float(r._compute_rdp_poisson_subsampled_gaussian(q, s, [a])[0]))
//   for q, s, T, d in CASES:
//     acc = dpa.rdp.RdpAccountant()   # default orders
//     acc.compose(dpa.SelfComposedDpEvent(
//         dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(s)), T))
//     eps, order = acc.get_epsilon_and_optimal_order(d)
//     classic = min(rr - math.log(d) / (a - 1) for a, rr in zip(acc._orders, acc._rdp))
//     print(q, s, T, d, float(eps), float(order), float(classic))
//
// `inf`: the fractional-order series did not converge in 1000 terms (dp_accounting logs
// "failed to converge ... Excluding this order"); this crate must agree.

/// (q, σ, α, RDP of one step).
const RDP_GRID: [(f64, f64, f64, f64); 63] = [
    (0.001, 0.6, 1.25, 9.782147014538749e-06),
    (0.001, 0.6, 2.0, 1.5083126921131761e-05),
    (0.001, 0.6, 3.7, 3.439221305144789e-05),
    (0.001, 0.6, 8.0, 3.216537751710345),
    (0.001, 0.6, 20.5, 21.210223082779464),
    (0.001, 0.6, 64.0, 81.87148670071656),
    (0.001, 0.6, 256.0, 348.62071104018526),
    (0.001, 1.1, 1.25, 8.058767173224174e-07),
    (0.001, 1.1, 2.0, 1.2851825679463916e-06),
    (0.001, 1.1, 3.7, 2.3850208992570594e-06),
    (0.001, 1.1, 8.0, 5.198342494844628e-06),
    (0.001, 1.1, 20.5, 1.2091806426950953),
    (0.001, 1.1, 64.0, 19.428878803563205),
    (0.001, 1.1, 256.0, 98.85027945157184),
    (0.001, 4.0, 1.25, 4.0684653672887554e-08),
    (0.001, 4.0, 2.0, 6.449445683764463e-08),
    (0.001, 4.0, 3.7, 1.1932809591398944e-07),
    (0.001, 4.0, 8.0, 2.5807974799256716e-07),
    (0.001, 4.0, 20.5, 6.618743623508714e-07),
    (0.001, 4.0, 64.0, 2.072290466294457e-06),
    (0.001, 4.0, 256.0, 1.0652757384639067),
    (0.02, 0.6, 1.25, 0.003297529017622104),
    (0.02, 0.6, 2.0, 0.006015168812560065),
    (0.02, 0.6, 3.7, 0.17940149761874907),
    (0.02, 0.6, 8.0, 6.640227877512518),
    (0.02, 0.6, 20.5, 24.35958265241315),
    (0.02, 0.6, 64.0, 84.91477028019999),
    (0.02, 0.6, 256.0, 351.6281912834395),
    (0.02, 1.1, 1.25, 0.0003446070098942314),
    (0.02, 1.1, 2.0, 0.0005139412670767907),
    (0.02, 1.1, 3.7, 0.0010121947026653629),
    (0.02, 1.1, 8.0, 0.002877037549463206),
    (0.02, 1.1, 20.5, 4.358439974286101),
    (0.02, 1.1, 64.0, 22.472162383046623),
    (0.02, 1.1, 256.0, 101.85775969482604),
    (0.02, 4.0, 1.25, 1.9232402667806113e-05),
    (0.02, 4.0, 2.0, 2.579745081005794e-05),
    (0.02, 4.0, 3.7, 4.783034963527455e-05),
    (0.02, 4.0, 8.0, 0.00010399660647138061),
    (0.02, 4.0, 20.5, 0.00027094271707128157),
    (0.02, 4.0, 64.0, 0.0008996887521603806),
    (0.02, 4.0, 256.0, 4.072641621030554),
    (0.3, 0.6, 1.25, f64::INFINITY),
    (0.3, 0.6, 2.0, 0.8575981980794158),
    (0.3, 0.6, 3.7, 3.4908289342325),
    (0.3, 0.6, 8.0, 9.735142201461217),
    (0.3, 0.6, 20.5, 27.20650722280265),
    (0.3, 0.6, 64.0, 87.6658054051292),
    (0.3, 0.6, 256.0, 354.3468612892519),
    (0.3, 1.1, 1.25, f64::INFINITY),
    (0.3, 1.1, 2.0, 0.1094519890509),
    (0.3, 1.1, 3.7, 0.3332264257077563),
    (0.3, 1.1, 8.0, 1.938265480231409),
    (0.3, 1.1, 20.5, 7.205359626633297),
    (0.3, 1.1, 64.0, 25.22319750797585),
    (0.3, 1.1, 256.0, 104.57642970063844),
    (0.3, 4.0, 1.25, f64::INFINITY),
    (0.3, 4.0, 2.0, 0.005787720091315798),
    (0.3, 4.0, 3.7, 0.011118327457016417),
    (0.3, 4.0, 8.0, 0.025230741338171412),
    (0.3, 4.0, 20.5, 0.08059305890618014),
    (0.3, 4.0, 64.0, 0.8268883096839564),
    (0.3, 4.0, 256.0, 6.79130601431023),
];

/// (q, σ, T, δ, ε tight, optimal order, ε classic) at the default orders.
const EPSILON_GRID: [(f64, f64, u64, f64, f64, f64, f64); 8] = [
    (
        0.01,
        1.0,
        100,
        1e-05,
        1.2141452944480204,
        8.8,
        1.6118268936450886,
    ),
    (
        0.001,
        0.8,
        10000,
        1e-06,
        1.7036252861577152,
        8.2,
        2.125919269165664,
    ),
    (
        0.1,
        2.0,
        50,
        1e-05,
        1.843951861015158,
        9.5,
        2.2098284833297037,
    ),
    (
        0.05,
        1.5,
        1000,
        1e-05,
        6.019017203522756,
        4.4,
        6.700534165579,
    ),
    (
        1.0,
        5.0,
        10,
        1e-05,
        2.8136532471298397,
        7.9,
        3.234858613811872,
    ),
    (
        0.2,
        0.5,
        20,
        0.001,
        21.22994403010583,
        1.7,
        22.875287583766976,
    ),
    (
        0.003,
        1.2,
        5000,
        1e-07,
        1.2350172923679543,
        16.0,
        1.4843950616548443,
    ),
    (
        0.5,
        1.0,
        3,
        1e-05,
        6.482462905381858,
        3.7,
        7.272658866226506,
    ),
];

#[test]
fn rdp_matches_dp_accounting_at_integer_and_fractional_orders() {
    let mut fractional = 0;
    for (q, sigma, alpha, want) in RDP_GRID {
        let got = rdp_sampled_gaussian(q, sigma, alpha).unwrap();
        assert_rel(got, want, 1e-6, &format!("RDP q={q} σ={sigma} α={alpha}"));
        fractional += usize::from(alpha.fract() != 0.0);
    }
    assert_eq!(fractional, 27, "the grid covers both series");
}

#[test]
fn epsilon_matches_dp_accounting() {
    for (q, sigma, steps, delta, eps, order, classic) in EPSILON_GRID {
        let r = epsilon_for(q, sigma, steps, delta).unwrap();
        let what = format!("q={q} σ={sigma} T={steps} δ={delta}");
        assert_rel(r.epsilon, eps, 1e-4, &format!("ε {what}"));
        assert_rel(r.order, order, 1e-12, &format!("order {what}"));
        assert_rel(
            r.epsilon_classic,
            classic,
            1e-4,
            &format!("classic ε {what}"),
        );
        assert_eq!(
            (r.sampling_rate, r.noise_multiplier, r.steps, r.delta),
            (Some(q), Some(sigma), steps, delta)
        );
        assert_eq!(r.accountant, "rdp");
    }
}

// ---------------------------------------------------------------------------------------
// closed forms, special cases, monotonicity

#[test]
fn default_orders_are_dp_accountings() {
    let orders = default_orders();
    assert_eq!(orders.len(), 99 + 53 + 4);
    assert_eq!(&orders[..3], &[1.1, 1.2, 1.3]);
    assert_eq!(orders[98], 1.0 + 99.0 / 10.0); // 10.9
    assert_eq!(&orders[99..101], &[11.0, 12.0]);
    assert_eq!(&orders[151..], &[63.0, 128.0, 256.0, 512.0, 1024.0]);
    assert_eq!(RdpAccountant::default().orders(), orders.as_slice());
}

#[test]
fn full_participation_is_the_gaussian_mechanism() {
    let (sigma, steps) = (1.7, 12u64);
    let mut acc = RdpAccountant::default();
    acc.compose_sampled_gaussian(1.0, sigma, steps).unwrap();
    for (&a, &got) in acc.orders().iter().zip(acc.rdp()) {
        let want = a * steps as f64 / (2.0 * sigma * sigma);
        assert_rel(got, want, 1e-14, &format!("α = {a}"));
    }
}

#[test]
fn no_sampling_costs_nothing_and_no_noise_costs_everything() {
    let mut acc = RdpAccountant::default();
    acc.compose_sampled_gaussian(0.0, 1.0, 1000).unwrap();
    acc.compose_sampled_gaussian(0.0, 0.0, 1000).unwrap(); // q = 0 wins over σ = 0
    assert!(acc.rdp().iter().all(|&r| r == 0.0));
    let r = acc.epsilon(1e-5).unwrap();
    assert_eq!((r.epsilon, r.epsilon_classic > 0.0), (0.0, true));
    assert_eq!(r.steps, 2000);

    let r = epsilon_for(0.1, 0.0, 5, 1e-5).unwrap();
    assert_eq!(r.epsilon, f64::INFINITY);
    assert_eq!(r.epsilon_classic, f64::INFINITY);
    assert_eq!(rdp_sampled_gaussian(0.5, 0.0, 2.0).unwrap(), f64::INFINITY);
    // Zero steps add nothing, even with no noise.
    let r = epsilon_for(0.1, 0.0, 0, 1e-5).unwrap();
    assert_eq!(r.epsilon, 0.0);
}

#[test]
fn composition_adds_rdp() {
    let mut once = RdpAccountant::default();
    once.compose_sampled_gaussian(0.05, 1.3, 30).unwrap();
    let mut split = RdpAccountant::default();
    for steps in [10, 5, 15] {
        split.compose_sampled_gaussian(0.05, 1.3, steps).unwrap();
    }
    for (a, b) in once.rdp().iter().zip(split.rdp()) {
        assert_rel(*b, *a, 1e-12, "split composition");
    }
    let single = rdp_sampled_gaussian(0.05, 1.3, 4.0).unwrap();
    let i = once.orders().iter().position(|&a| a == 4.0).unwrap();
    assert_rel(once.rdp()[i], 30.0 * single, 1e-12, "T · RDP");
    // Mixed mechanisms: the report does not pretend to one (q, σ).
    split.compose_sampled_gaussian(0.1, 1.3, 1).unwrap();
    let r = split.epsilon(1e-5).unwrap();
    assert_eq!((r.sampling_rate, r.noise_multiplier), (None, None));
    assert_eq!(r.steps, 31);
}

#[test]
fn epsilon_decreases_with_noise_and_grows_with_rounds_and_sampling() {
    let eps = |q, sigma, steps| epsilon_for(q, sigma, steps, 1e-5).unwrap().epsilon;
    let sigmas = [0.5, 0.7, 1.0, 1.5, 2.0, 4.0, 10.0];
    for w in sigmas.windows(2) {
        assert!(eps(0.05, w[1], 100) < eps(0.05, w[0], 100), "σ {w:?}");
    }
    let steps = [1, 10, 100, 1000, 10000];
    for w in steps.windows(2) {
        assert!(eps(0.01, 1.0, w[1]) > eps(0.01, 1.0, w[0]), "T {w:?}");
    }
    let qs = [0.001, 0.01, 0.05, 0.2, 0.5, 1.0];
    for w in qs.windows(2) {
        assert!(eps(w[1], 1.0, 100) > eps(w[0], 1.0, 100), "q {w:?}");
    }
}

#[test]
fn tight_conversion_never_exceeds_classic() {
    for (q, sigma, steps) in [
        (0.01, 0.8, 500),
        (0.3, 2.0, 10),
        (1.0, 1.0, 1),
        (0.001, 5.0, 1),
    ] {
        for delta in [1e-3, 1e-5, 1e-9] {
            let r = epsilon_for(q, sigma, steps, delta).unwrap();
            assert!(
                r.epsilon <= r.epsilon_classic,
                "q={q} σ={sigma} T={steps} δ={delta}: {} > {}",
                r.epsilon,
                r.epsilon_classic
            );
        }
    }
}

#[test]
fn accountant_rejects_bad_inputs() {
    let mut acc = RdpAccountant::default();
    assert_invalid(acc.compose_sampled_gaussian(-0.1, 1.0, 1));
    assert_invalid(acc.compose_sampled_gaussian(1.5, 1.0, 1));
    assert_invalid(acc.compose_sampled_gaussian(f64::NAN, 1.0, 1));
    assert_invalid(acc.compose_sampled_gaussian(0.1, -1.0, 1));
    assert_invalid(acc.compose_sampled_gaussian(0.1, f64::NAN, 1));
    assert_invalid(acc.compose_sampled_gaussian(0.1, f64::INFINITY, 1));
    assert_eq!(
        acc.steps(),
        0,
        "a rejected composition leaves the state alone"
    );
    for delta in [0.0, 1.0, -1e-5, f64::NAN] {
        assert_invalid(acc.epsilon(delta));
    }
    assert_invalid(RdpAccountant::new(vec![]));
    for bad in [1.0, 0.5, f64::NAN, f64::INFINITY, 20_000.0] {
        assert_invalid(RdpAccountant::new(vec![2.0, bad]));
        assert_invalid(rdp_sampled_gaussian(0.1, 1.0, bad));
    }
    assert_invalid(rdp_to_epsilon(&[2.0], &[0.1, 0.2], 1e-5, Conversion::Tight));
    assert_invalid(rdp_to_epsilon(&[2.0], &[f64::NAN], 1e-5, Conversion::Tight));
}

#[test]
fn report_roundtrips_through_json_even_when_infinite() {
    let finite = epsilon_for(0.01, 1.0, 100, 1e-5)
        .unwrap()
        .with_mode("client");
    let json = serde_json::to_string(&finite).unwrap();
    let back: PrivacyReport = serde_json::from_str(&json).unwrap();
    // serde_json's default float parser may be 1 ulp off: compare numbers loosely.
    assert_rel(back.epsilon, finite.epsilon, 1e-15, "epsilon");
    assert_rel(
        back.epsilon_classic,
        finite.epsilon_classic,
        1e-15,
        "epsilon_classic",
    );
    assert_eq!(
        (back.order, back.steps, back.sampling_rate, &back.mode),
        (
            finite.order,
            finite.steps,
            finite.sampling_rate,
            &finite.mode
        )
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "epsilon",
        "delta",
        "order",
        "epsilon_classic",
        "sampling_rate",
        "noise_multiplier",
        "steps",
        "mode",
        "accountant",
    ] {
        assert!(v.get(key).is_some(), "missing `{key}` in {json}");
    }
    assert_eq!(v["mode"], "client");
    assert_eq!(v["accountant"], "rdp");

    let infinite = epsilon_for(0.01, 0.0, 100, 1e-5).unwrap();
    let json = serde_json::to_string(&infinite).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["epsilon"].is_null(), "{json}");
    let back: PrivacyReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.epsilon, f64::INFINITY);
    assert_eq!(back.epsilon_classic, f64::INFINITY);
}

// ---------------------------------------------------------------------------------------
// clipping

#[test]
fn clip_bounds_the_global_norm_over_all_tensors() {
    // Two tensors [3] and [4]: per-tensor norms 3 and 4, global norm 5.
    let l = layout(&[("a", &[1]), ("b", &[1])]);
    let u = update(&l, &[3.0, 4.0]);
    let (clipped, norm) = clip_update(&u, 1.0).unwrap();
    assert_eq!(norm, 5.0);
    let v = flat(&clipped);
    assert_rel(v[0] as f64, 0.6, 2e-6, "a");
    assert_rel(v[1] as f64, 0.8, 2e-6, "b");
    assert!(norm_of(&v) <= 1.0);
    assert_eq!(clipped.layout(), u.layout());
}

#[test]
fn clip_preserves_direction_and_never_exceeds_the_bound() {
    let u = big_update();
    let x = flat(&u);
    let n = norm_of(&x);
    assert!(n > 10.0);
    for bound in [n / 2.0, n / 1000.0, n * (1.0 - 1e-9), 1e-3] {
        let (clipped, norm) = clip_update(&u, bound).unwrap();
        assert_rel(norm, n, 1e-12, "reported norm");
        let y = flat(&clipped);
        let after = norm_of(&y);
        assert!(after <= bound, "norm {after} > bound {bound}");
        assert!(
            after >= bound * (1.0 - 1e-5),
            "norm {after} far below bound {bound}"
        );
        // Same direction: every element is the input times bound/‖x‖.
        let factor = bound / n;
        for (xi, yi) in x.iter().zip(&y) {
            let want = *xi as f64 * factor;
            assert!(
                (*yi as f64 - want).abs() <= 2e-6 * want.abs(),
                "{yi} vs {want}"
            );
        }
    }
}

#[test]
fn clip_leaves_small_updates_untouched() {
    let u = big_update();
    let x = flat(&u);
    let n = norm_of(&x);
    // (Not exactly `n`: this test's f64 sum and the crate's may round differently.)
    for bound in [n * (1.0 + 1e-9), n * 1.5, 1e9] {
        let (same, norm) = clip_update(&u, bound).unwrap();
        assert_rel(norm, n, 1e-12, "norm");
        assert!(flat(&same) == x, "bound {bound}: values changed");
    }
    assert_rel(l2_norm(&u).unwrap(), n, 1e-12, "l2_norm");
    // The empty update has norm 0 and nothing to clip.
    let empty = Update::new(vec![]).unwrap();
    let (out, norm) = clip_update(&empty, 1.0).unwrap();
    assert_eq!((norm, out.len()), (0.0, 0));
}

#[test]
fn clip_rejects_bad_bounds_and_non_finite_updates() {
    let u = big_update();
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_invalid(clip_update(&u, bad));
    }
    let l = layout(&[("a", &[3])]);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let u = update(&l, &[1.0, bad, 2.0]);
        assert_invalid(clip_update(&u, 1.0));
        assert_invalid(l2_norm(&u));
    }
}

// ---------------------------------------------------------------------------------------
// noise

/// Empirical mean, std and fraction within one std of `noise`.
fn moments(noise: &[f64], std: f64) -> (f64, f64, f64) {
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let var = noise.iter().map(|z| (z - mean) * (z - mean)).sum::<f64>() / (n - 1.0);
    let within = noise.iter().filter(|z| z.abs() <= std).count() as f64 / n;
    (mean, var.sqrt(), within)
}

/// With n = 10⁵ samples: the mean's standard error is std/√n, the sample std's relative
/// standard error ≈ 1/√(2n) = 0.0022, and P(|z| ≤ std) = 0.6827 has standard error
/// √(p(1−p)/n) = 0.0015. Each check allows 5 standard errors (a false alarm has chance
/// < 1e-6 per check; the seeds are fixed, so the test is deterministic). A uniform
/// distribution with the same variance would put 0.577 within one std: caught.
#[track_caller]
fn assert_gaussian(noise: &[f64], std: f64) {
    let n = noise.len() as f64;
    let (mean, sd, within) = moments(noise, std);
    assert!(
        mean.abs() <= 5.0 * std / n.sqrt(),
        "mean {mean} for std {std}"
    );
    assert!(
        (sd / std - 1.0).abs() <= 5.0 / (2.0 * n).sqrt(),
        "std {sd}, want {std}"
    );
    let p = 0.682_689_492_137_086;
    assert!(
        (within - p).abs() <= 5.0 * (p * (1.0 - p) / n).sqrt(),
        "{within} within one std, want {p}"
    );
}

#[test]
fn noise_is_centred_gaussian_with_the_requested_std() {
    let u = big_update();
    let x = flat(&u);
    for (std, seed) in [(0.5, 1u64), (3.0, 2), (1e-3, 3)] {
        let noised = add_gaussian_noise(&u, std, seed).unwrap();
        assert_eq!(noised.layout(), u.layout());
        assert!(noised.device().is_cpu());
        let noise: Vec<f64> = flat(&noised)
            .iter()
            .zip(&x)
            .map(|(y, x)| *y as f64 - *x as f64)
            .collect();
        assert_eq!(noise.len(), 100_000);
        assert_gaussian(&noise, std);
    }
}

#[test]
fn noise_is_deterministic_per_seed() {
    let u = big_update();
    let a = flat(&add_gaussian_noise(&u, 1.0, 42).unwrap());
    let b = flat(&add_gaussian_noise(&u, 1.0, 42).unwrap());
    let c = flat(&add_gaussian_noise(&u, 1.0, 43).unwrap());
    assert!(a == b, "same seed, different noise");
    let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert!(same < a.len() / 100, "{same} of {} equal", a.len());
    // Zero std is the identity.
    assert!(flat(&add_gaussian_noise(&u, 0.0, 42).unwrap()) == flat(&u));
}

#[test]
fn noise_rejects_bad_std_and_non_finite_updates() {
    let u = big_update();
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert_invalid(add_gaussian_noise(&u, bad, 0));
    }
    let l = layout(&[("a", &[2])]);
    assert_invalid(add_gaussian_noise(&update(&l, &[f32::NAN, 0.0]), 1.0, 0));
}

/// Client mode: m clients each add N(0, σ²S²/m) to their (here zero) update; the mean of
/// the m noised updates has std σS/m, the central-DP value.
#[test]
fn client_mode_noise_averages_to_the_central_std() {
    let cfg = DpConfig::from_table(&table(
        "clip_norm = 2.0\nnoise_multiplier = 1.5\nmode = \"client\"",
    ))
    .unwrap();
    let m = 4usize;
    let l = layout(&[("w", &[100_000])]);
    let zero = Update::zeros(&l, &Device::Cpu).unwrap();
    let per_client = cfg.noise_std(m).unwrap();
    assert_rel(per_client, 1.5 * 2.0 / 2.0, 1e-15, "σS/√m");
    let mut mean = vec![0.0f64; l.numel()];
    for client in 0..m {
        let noised = flat(&add_gaussian_noise(&zero, per_client, 100 + client as u64).unwrap());
        for (acc, v) in mean.iter_mut().zip(noised) {
            *acc += v as f64 / m as f64;
        }
    }
    let central = 1.5 * 2.0 / m as f64;
    assert_rel(cfg.mean_noise_std(m).unwrap(), central, 1e-15, "σS/m");
    assert_gaussian(&mean, central);
}

// ---------------------------------------------------------------------------------------
// config

#[test]
fn config_defaults() {
    let cfg = DpConfig::from_table(&table("clip_norm = 1.0\nnoise_multiplier = 1.1")).unwrap();
    assert_eq!(cfg.clip_norm, 1.0);
    assert_eq!(cfg.noise_multiplier, 1.1);
    assert_eq!(cfg.mode, DpMode::Server);
    assert_eq!(cfg.delta, 1e-5);
    assert_eq!(cfg.orders, None);
    assert_eq!(
        cfg.accountant().unwrap().orders(),
        default_orders().as_slice()
    );
}

#[test]
fn config_accepts_every_key_and_integers() {
    let cfg = DpConfig::from_table(&table(
        "clip_norm = 2\nnoise_multiplier = 0\nmode = \"client\"\ndelta = 1e-6\norders = [2, 4.5, 32]",
    ))
    .unwrap();
    assert_eq!(
        (cfg.clip_norm, cfg.noise_multiplier, cfg.mode, cfg.delta),
        (2.0, 0.0, DpMode::Client, 1e-6)
    );
    assert_eq!(cfg.orders.as_deref(), Some(&[2.0, 4.5, 32.0][..]));
    assert_eq!(cfg.mode.to_string(), "client");
    assert_eq!(cfg.accountant().unwrap().orders(), &[2.0, 4.5, 32.0]);
}

#[test]
fn config_errors_name_the_key_and_the_accepted_values() {
    let base = "clip_norm = 1.0\nnoise_multiplier = 1.0\n";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "noise_multiplier = 1.0",
            "privacy.clip_norm",
            &["missing", "> 0"],
        ),
        (
            "clip_norm = 1.0",
            "privacy.noise_multiplier",
            &["missing", ">= 0"],
        ),
        (
            "clip_norm = 0.0\nnoise_multiplier = 1.0",
            "privacy.clip_norm",
            &["> 0"],
        ),
        (
            "clip_norm = -1\nnoise_multiplier = 1.0",
            "privacy.clip_norm",
            &["> 0"],
        ),
        (
            "clip_norm = nan\nnoise_multiplier = 1.0",
            "privacy.clip_norm",
            &["finite"],
        ),
        (
            "clip_norm = inf\nnoise_multiplier = 1.0",
            "privacy.clip_norm",
            &["finite"],
        ),
        (
            "clip_norm = \"1\"\nnoise_multiplier = 1.0",
            "privacy.clip_norm",
            &[],
        ),
        (
            "clip_norm = 1.0\nnoise_multiplier = -0.5",
            "privacy.noise_multiplier",
            &[">= 0"],
        ),
        (
            "clip_norm = 1.0\nnoise_multiplier = inf",
            "privacy.noise_multiplier",
            &["finite"],
        ),
    ];
    for (src, key, words) in cases {
        let (k, msg) = config_error(src);
        assert_eq!(&k, key, "{src}: {msg}");
        for w in *words {
            assert!(msg.contains(w), "{src}: `{msg}` lacks `{w}`");
        }
    }
    let more: &[(&str, &str, &[&str])] = &[
        ("mode = \"both\"", "privacy.mode", &["server", "client"]),
        ("delta = 0.0", "privacy.delta", &["(0, 1)"]),
        ("delta = 1.0", "privacy.delta", &["(0, 1)"]),
        (
            "delta = 2e-5\ndelta_typo = 1",
            "privacy.delta_typo",
            &["delta_typo", "clip_norm", "orders"],
        ),
        ("orders = []", "privacy.orders", &["at least one"]),
        ("orders = [2, 1.0]", "privacy.orders", &["(1, 10000]", "1"]),
        ("orders = [2, 20000]", "privacy.orders", &["(1, 10000]"]),
    ];
    for (extra, key, words) in more {
        let src = format!("{base}{extra}");
        let (k, msg) = config_error(&src);
        assert_eq!(&k, key, "{src}: {msg}");
        for w in *words {
            assert!(msg.contains(w), "{src}: `{msg}` lacks `{w}`");
        }
    }
}

#[test]
fn noise_std_per_mode() {
    let server = DpConfig::from_table(&table("clip_norm = 0.5\nnoise_multiplier = 1.2")).unwrap();
    let client = DpConfig {
        mode: DpMode::Client,
        ..server.clone()
    };
    for m in [1usize, 3, 10, 100] {
        let mf = m as f64;
        assert_rel(server.noise_std(m).unwrap(), 1.2 * 0.5, 1e-15, "server: σS");
        assert_rel(
            client.noise_std(m).unwrap(),
            1.2 * 0.5 / mf.sqrt(),
            1e-15,
            "client: σS/√m",
        );
        assert_rel(
            server.mean_noise_std(m).unwrap(),
            0.6 / mf,
            1e-15,
            "mean, server",
        );
        assert_rel(
            client.mean_noise_std(m).unwrap(),
            0.6 / mf,
            1e-15,
            "mean, client",
        );
    }
    assert_invalid(server.noise_std(0));
    assert_invalid(client.mean_noise_std(0));
}

#[test]
fn config_clip_uses_clip_norm() {
    let cfg = DpConfig::from_table(&table("clip_norm = 0.25\nnoise_multiplier = 1.0")).unwrap();
    let u = big_update();
    let (clipped, norm) = cfg.clip(&u).unwrap();
    assert_rel(norm, norm_of(&flat(&u)), 1e-12, "norm");
    let after = norm_of(&flat(&clipped));
    assert!(after <= 0.25 && after > 0.25 * (1.0 - 1e-5), "{after}");
}

#[test]
fn privacy_report_for_a_federated_run() {
    let cfg = DpConfig::from_table(&table(
        "clip_norm = 1.0\nnoise_multiplier = 1.0\nmode = \"client\"\ndelta = 1e-6",
    ))
    .unwrap();
    // 10 of 1000 clients per round for 100 rounds: q = 0.01, T = 100.
    let r = cfg.privacy_report(10, 1000, 100).unwrap();
    let want = epsilon_for(0.01, 1.0, 100, 1e-6).unwrap();
    assert_eq!(r.mode, "client");
    assert_eq!(r.epsilon, want.epsilon);
    assert_eq!(r.order, want.order);
    assert_eq!((r.sampling_rate, r.steps, r.delta), (Some(0.01), 100, 1e-6));
    // The mode does not change ε (same noise in the mean, secure-aggregation assumption).
    let server = DpConfig {
        mode: DpMode::Server,
        ..cfg.clone()
    };
    let rs = server.privacy_report(10, 1000, 100).unwrap();
    assert_eq!((rs.epsilon, rs.mode.as_str()), (r.epsilon, "server"));
    // Orders override: the optimum is one of the given orders.
    let few = DpConfig {
        orders: Some(vec![3.0, 40.0]),
        ..cfg.clone()
    };
    let rf = few.privacy_report(10, 1000, 100).unwrap();
    assert!([3.0, 40.0].contains(&rf.order));
    assert!(rf.epsilon >= r.epsilon, "fewer orders can only be looser");
    assert_invalid(cfg.privacy_report(0, 1000, 100));
    assert_invalid(cfg.privacy_report(11, 10, 100));
}
