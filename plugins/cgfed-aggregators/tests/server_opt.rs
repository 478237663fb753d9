//! Server optimizers: `fedavgm`, `fedadam`, `fedyogi`, `fedadagrad` — hand-computed rounds,
//! state checkpoints, describe strings and config errors.

use crate::common;

use cgfed_core::testkit::{self, random_values};
use cgfed_core::{Aggregator, ClientUpdate, Error, Layout};
use common::*;

fn single(layout: &Layout, values: &[f32]) -> Vec<ClientUpdate> {
    vec![client(layout, 0, values, 1)]
}

#[test]
fn fedavgm_accumulates_momentum() {
    let layout = &vector(2);
    let mut agg = build("fedavgm", &[("momentum", "0.5"), ("server_lr", "2.0")]);
    // Round 1: mean of [0, -2] and [2, -2] = [1, -2]; v = [1, -2]; delta = 2·v.
    let r1 = round(
        agg.as_mut(),
        layout,
        &clients(layout, &[vec![0.0, -2.0], vec![2.0, -2.0]]),
    );
    assert_close(&flat(&r1.delta), &[2.0, -4.0], 1e-7);
    // Round 2: mean [3, 0]; v = 0.5·[1, -2] + [3, 0] = [3.5, -1]; delta = [7, -2].
    let r2 = round(agg.as_mut(), layout, &single(layout, &[3.0, 0.0]));
    assert_close(&flat(&r2.delta), &[7.0, -2.0], 1e-7);
}

#[test]
fn fedavgm_without_momentum_is_fedavg() {
    let layout = &testkit::layouts()[3];
    let n = layout.numel();
    let ups: Vec<_> = (0..4)
        .map(|i| client(layout, i, &random_values(n, i as u64 + 3, 1.0), 3 * i + 1))
        .collect();
    // Hand-computed weighted mean with weights 1, 4, 7, 10 (/ 22).
    let want: Vec<f64> = (0..n)
        .map(|e| {
            ups.iter()
                .map(|u| u.num_examples as f64 * flat(&u.update)[e] as f64)
                .sum::<f64>()
                / 22.0
        })
        .collect();
    let mut m = build("fedavgm", &[("momentum", "0.0"), ("server_lr", "1.0")]);
    let mut avg = build("fedavg", &[]);
    for _ in 0..3 {
        let a = flat(&round(m.as_mut(), layout, &ups).delta);
        let b = flat(&round(avg.as_mut(), layout, &ups).delta);
        assert_eq!(a, b, "fedavgm(β=0, η=1) differs from fedavg");
        assert_close(&a, &want, 1e-6);
    }
}

/// Rounds with mean deltas [1, -2] then [0.5, 3]; τ = β1 = β2 = 0.5, η = 1. By hand:
/// m₁ = [0.5, -1], m₂ = 0.5·m₁ + 0.5·[0.5, 3] = [0.5, 1]; v₀ = τ² = 0.25.
fn two_rounds(name: &str) -> (Vec<f32>, Vec<f32>) {
    let layout = &vector(2);
    let keys = [
        ("server_lr", "1.0"),
        ("beta1", "0.5"),
        ("beta2", "0.5"),
        ("tau", "0.5"),
    ];
    let mut agg = build(name, &keys);
    let a = flat(&round(agg.as_mut(), layout, &single(layout, &[1.0, -2.0])).delta);
    let b = flat(&round(agg.as_mut(), layout, &single(layout, &[0.5, 3.0])).delta);
    (a, b)
}

#[test]
fn fedadam_two_rounds_by_hand() {
    // v₁ = 0.5·0.25 + 0.5·[1, 4] = [0.625, 2.125]
    // v₂ = 0.5·v₁ + 0.5·[0.25, 9] = [0.4375, 5.5625]
    let (a, b) = two_rounds("fedadam");
    let s = f64::sqrt;
    assert_close(&a, &[0.5 / (s(0.625) + 0.5), -1.0 / (s(2.125) + 0.5)], 1e-6);
    assert_close(
        &b,
        &[0.5 / (s(0.4375) + 0.5), 1.0 / (s(5.5625) + 0.5)],
        1e-6,
    );
}

#[test]
fn fedyogi_two_rounds_by_hand() {
    // v₁ = 0.25 − 0.5·[1, 4]·sign(0.25 − [1, 4]) = [0.75, 2.25]
    // v₂ = v₁ − 0.5·[0.25, 9]·sign(v₁ − [0.25, 9]) = [0.75 − 0.125, 2.25 + 4.5]
    let (a, b) = two_rounds("fedyogi");
    let s = f64::sqrt;
    assert_close(&a, &[0.5 / (s(0.75) + 0.5), -0.5], 1e-6);
    assert_close(&b, &[0.5 / (s(0.625) + 0.5), 1.0 / (s(6.75) + 0.5)], 1e-6);
}

#[test]
fn fedadagrad_two_rounds_by_hand() {
    // v₁ = 0.25 + [1, 4] = [1.25, 4.25]; v₂ = v₁ + [0.25, 9] = [1.5, 13.25]
    let (a, b) = two_rounds("fedadagrad");
    let s = f64::sqrt;
    assert_close(&a, &[0.5 / (s(1.25) + 0.5), -1.0 / (s(4.25) + 0.5)], 1e-6);
    assert_close(&b, &[0.5 / (s(1.5) + 0.5), 1.0 / (s(13.25) + 0.5)], 1e-6);
}

#[test]
fn fedadagrad_ignores_beta2() {
    let layout = &vector(2);
    let ups = single(layout, &[1.0, -2.0]);
    let mut a = build("fedadagrad", &[("beta2", "0.1")]);
    let mut b = build("fedadagrad", &[("beta2", "0.9")]);
    for _ in 0..2 {
        assert_eq!(
            flat(&round(a.as_mut(), layout, &ups).delta),
            flat(&round(b.as_mut(), layout, &ups).delta)
        );
    }
}

fn rounds(agg: &mut dyn Aggregator, layout: &Layout, from: u64, count: u64) -> Vec<Vec<f32>> {
    (from..from + count)
        .map(|r| {
            let ups: Vec<_> = (0..3)
                .map(|i| {
                    client(
                        layout,
                        i,
                        &random_values(layout.numel(), 10 * r + i as u64, 0.1),
                        i + 1,
                    )
                })
                .collect();
            flat(&round(agg, layout, &ups).delta)
        })
        .collect()
}

#[test]
fn restored_state_continues_exactly() {
    let layout = &testkit::layouts()[3];
    for name in ["fedavgm", "fedadam", "fedyogi", "fedadagrad"] {
        let keys = [("clip_norm", "\"median\"")];
        let mut original = build(name, &keys);
        rounds(original.as_mut(), layout, 0, 2);
        let saved = original.save_state().unwrap();
        let mut restored = build(name, &keys);
        restored.load_state(&saved).unwrap();
        let mut fresh = build(name, &keys);
        let want = rounds(original.as_mut(), layout, 2, 2);
        assert_eq!(
            rounds(restored.as_mut(), layout, 2, 2),
            want,
            "{name}: restored state diverged"
        );
        assert_ne!(
            rounds(fresh.as_mut(), layout, 2, 2),
            want,
            "{name}: the state made no difference"
        );
        // Saving again gives the same bytes as the original would.
        assert_eq!(
            restored.save_state().unwrap(),
            original.save_state().unwrap()
        );
    }
}

#[test]
fn state_before_the_first_round_and_empty_bytes_mean_no_state() {
    let layout = &vector(2);
    let ups = single(layout, &[1.0, -2.0]);
    let mut fresh = build("fedadam", &[]);
    let want = flat(&round(fresh.as_mut(), layout, &ups).delta);
    for bytes in [build("fedadam", &[]).save_state().unwrap(), Vec::new()] {
        let mut agg = build("fedadam", &[]);
        rounds(agg.as_mut(), layout, 0, 2); // some state, then replaced by "none"
        agg.load_state(&bytes).unwrap();
        assert_eq!(flat(&round(agg.as_mut(), layout, &ups).delta), want);
    }
}

#[test]
fn garbage_and_foreign_states_are_errors() {
    let layout = &testkit::layouts()[0];
    let mut adam = build("fedadam", &[]);
    rounds(adam.as_mut(), layout, 0, 1);
    let good = adam.save_state().unwrap();
    let mut target = build("fedadam", &[]);
    for cut in [1, 8, good.len() / 2, good.len() - 1] {
        assert!(
            target.load_state(&good[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let junk: Vec<u8> = random_values(300, 1, 1e3)
        .iter()
        .map(|v| v.to_bits() as u8)
        .collect();
    assert!(target.load_state(&junk).is_err());
    // another aggregator's state
    let err = build("fedyogi", &[])
        .load_state(&good)
        .expect_err("foreign state");
    assert!(err.to_string().contains("fedadam"), "{err}");
    let mut m = build("fedavgm", &[]);
    rounds(m.as_mut(), layout, 0, 1);
    assert!(build("fedadam", &[])
        .load_state(&m.save_state().unwrap())
        .is_err());
    // every byte flipped in turn: errors or a state, never a panic
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0xff;
        let _ = build("fedadam", &[]).load_state(&b);
    }
}

#[test]
fn a_state_for_another_layout_is_an_error() {
    let (a, b) = (&testkit::layouts()[0], &testkit::layouts()[3]);
    for name in ["fedavgm", "fedadam"] {
        let mut on_a = build(name, &[]);
        rounds(on_a.as_mut(), a, 0, 1);
        let saved = on_a.save_state().unwrap();
        // Loaded into a fresh aggregator, the next round on another layout fails.
        let mut fresh = build(name, &[]);
        fresh.load_state(&saved).unwrap();
        let err = try_round(fresh.as_mut(), b, &clients(b, &[vec![0.1; b.numel()]]))
            .expect_err("layout mismatch");
        assert!(matches!(err, Error::LayoutMismatch(_)), "{name}: {err}");
        // Loaded into an aggregator that already runs on another layout, it fails at once.
        let mut on_b = build(name, &[]);
        rounds(on_b.as_mut(), b, 0, 1);
        assert!(matches!(
            on_b.load_state(&saved),
            Err(Error::LayoutMismatch(_))
        ));
    }
}

#[test]
fn describe_lists_the_keys() {
    assert_eq!(
        build("fedadam", &[("clip_norm", "1.0")]).describe(),
        "fedadam (server_lr 0.01, beta1 0.9, beta2 0.99, tau 0.001, weighting examples, clip 1.0)"
    );
    assert_eq!(
        build("fedadagrad", &[]).describe(),
        "fedadagrad (server_lr 0.01, beta1 0.9, tau 0.001, weighting examples)"
    );
    assert_eq!(
        build("fedavgm", &[("weighting", "\"uniform\"")]).describe(),
        "fedavgm (server_lr 1.0, momentum 0.9, weighting uniform)"
    );
}

#[test]
fn bad_values_name_the_key_and_the_range() {
    for (name, key, value, range) in [
        ("fedavgm", "server_lr", "0.0", "positive"),
        ("fedavgm", "momentum", "1.0", "[0, 1)"),
        ("fedadam", "beta1", "1.5", "[0, 1)"),
        ("fedyogi", "beta2", "-0.1", "[0, 1)"),
        ("fedadagrad", "tau", "-1.0", "positive"),
        ("fedadam", "server_lr", "\"fast\"", "f64"),
    ] {
        let err = config_error(name, &[(key, value)]);
        assert!(err.contains(&format!("aggregator.{key}")), "{err}");
        assert!(err.contains(range), "{name} {key}: {err}");
    }
    let err = config_error("fedadam", &[("beta_1", "0.9")]);
    assert!(err.contains("beta_1") && err.contains("beta1"), "{err}");
}
