//! What every aggregator does with bad input: an empty round, NaN and infinities, a wrong
//! layout, unknown keys; and determinism.

use crate::common;

use cgfed_core::testkit::{self, random_values};
use cgfed_core::Error;
use common::*;

#[test]
fn an_empty_round_is_an_error() {
    let layout = &testkit::layouts()[0];
    for name in ALL {
        let err = try_round(build(name, &[]).as_mut(), layout, &[]).err();
        assert!(
            matches!(err, Some(Error::InvalidInput(_))),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn non_finite_values_are_rejected() {
    let layout = &testkit::layouts()[3];
    let n = layout.numel();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for pos in [0, n / 2, n - 1] {
            let mut v = random_values(n, 3, 1.0);
            v[pos] = bad;
            let ups = [
                client(layout, 0, &random_values(n, 1, 1.0), 1),
                client(layout, 7, &v, 1),
                client(layout, 2, &random_values(n, 2, 1.0), 1),
            ];
            for name in ALL {
                for keys in [vec![], vec![("clip_norm", "\"median\"")]] {
                    let err = try_round(build(name, &keys).as_mut(), layout, &ups).err();
                    match err {
                        Some(Error::InvalidInput(m)) => assert!(m.contains("client 7"), "{m}"),
                        other => panic!("{name} with {bad} at {pos}: {other:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn a_non_finite_global_state_is_rejected_in_product_mode() {
    let layout = &testkit::layouts()[0];
    let n = layout.numel();
    let mut g = random_values(n, 1, 1.0);
    g[5] = f32::NAN;
    let global =
        cgfed_core::Update::from_flat(layout, &g, &cgfed_core::candle_core::Device::Cpu).unwrap();
    let mut agg = build("fedavg", &[("lora", "\"product\"")]);
    let err = agg
        .aggregate(
            &clients(layout, &[vec![0.1; n]]),
            &global,
            &testkit::ctx(layout, 0, 0, 0),
        )
        .err();
    assert!(matches!(err, Some(Error::InvalidInput(_))), "{err:?}");
}

#[test]
fn an_update_of_another_layout_is_an_error() {
    let (a, b) = (&testkit::layouts()[0], &testkit::layouts()[1]);
    for name in ALL {
        let ups = [
            client(a, 0, &vec![1.0; a.numel()], 1),
            client(b, 1, &vec![1.0; b.numel()], 1),
        ];
        let err = try_round(build(name, &[]).as_mut(), a, &ups).err();
        assert!(
            matches!(err, Some(Error::LayoutMismatch(_))),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn unknown_keys_are_named() {
    for name in ALL {
        let err = config_error(name, &[("clip", "1.0")]);
        assert!(
            err.contains("aggregator") && err.contains("clip"),
            "{name}: {err}"
        );
        assert!(
            err.contains("clip_norm"),
            "{name}: the accepted keys are listed: {err}"
        );
    }
}

#[test]
fn aggregation_is_deterministic() {
    let layout = &testkit::layouts()[3];
    let n = layout.numel();
    let ups: Vec<_> = (0..6)
        .map(|i| client(layout, i, &random_values(n, i as u64 + 40, 1.0), i + 2))
        .collect();
    for name in ALL {
        let a = round(build(name, &[]).as_mut(), layout, &ups);
        let b = round(build(name, &[]).as_mut(), layout, &ups);
        assert_eq!(flat(&a.delta), flat(&b.delta), "{name}");
        assert_eq!(a.metrics, b.metrics, "{name}");
        assert_eq!(a.delta.layout(), layout, "{name}: delta layout");
        assert!(flat(&a.delta).iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn every_aggregator_builds_from_its_documented_params() {
    for name in ALL {
        let p = cgfed_core::registry::find("aggregator", name).expect("registered");
        let keys: Vec<(&str, &str)> = p
            .params
            .iter()
            .filter(|k| k.default != "-")
            .map(|k| (k.key, k.default))
            .collect();
        assert!(p.params.iter().any(|k| k.key == "clip_norm"), "{name}");
        let agg = build(name, &keys);
        assert_eq!(
            agg.describe(),
            build(name, &[]).describe(),
            "{name}: documented ≠ built-in defaults"
        );
    }
}
