//! `clip_norm` on every aggregator: fixed and median bounds, the `clipped` metric, errors.

use crate::common;

use cgfed_core::testkit::{self, random_values};
use common::*;

#[test]
fn fixed_clip_bounds_the_norm_and_keeps_the_direction() {
    let layout = &vector(2);
    // [3, 4] has norm 5: clipped to [0.6, 0.8]. [0.3, 0] is under the bound: kept.
    let ups = clients(layout, &[vec![3.0, 4.0], vec![0.3, 0.0]]);
    let out = round(
        build("fedavg", &[("clip_norm", "1.0")]).as_mut(),
        layout,
        &ups,
    );
    assert_close(&flat(&out.delta), &[(0.6 + 0.3) / 2.0, 0.4], 1e-7);
    assert_eq!(out.metrics["clipped"], 1.0);
    // integer bounds are accepted
    let out = round(
        build("median", &[("clip_norm", "2")]).as_mut(),
        layout,
        &ups[..1],
    );
    assert_close(&flat(&out.delta), &[1.2, 1.6], 1e-7);
}

#[test]
fn median_clip_uses_the_rounds_median_norm() {
    let layout = &vector(2);
    // norms 1, 2, 10 -> bound 2: only the last is scaled, to [0, 2].
    let ups = clients(layout, &[vec![1.0, 0.0], vec![0.0, 2.0], vec![0.0, 10.0]]);
    let out = round(
        build("fedavg", &[("clip_norm", "\"median\"")]).as_mut(),
        layout,
        &ups,
    );
    assert_close(&flat(&out.delta), &[1.0 / 3.0, 4.0 / 3.0], 1e-7);
    assert_eq!(out.metrics["clipped"], 1.0);
    // even count: norms 1, 2, 10, 0.5 -> bound (1 + 2)/2 = 1.5; [0, 2] -> [0, 1.5],
    // [0, 10] -> [0, 1.5]; mean [1.5, 3]/4.
    let mut four = ups.clone();
    four.push(client(layout, 3, &[0.5, 0.0], 1));
    let out = round(
        build("fedavg", &[("clip_norm", "\"median\"")]).as_mut(),
        layout,
        &four,
    );
    assert_close(&flat(&out.delta), &[1.5 / 4.0, 3.0 / 4.0], 1e-7);
    assert_eq!(out.metrics["clipped"], 2.0);
}

#[test]
fn every_aggregator_clips() {
    let layout = &testkit::layouts()[3];
    let n = layout.numel();
    let ups: Vec<_> = (0..5)
        .map(|i| client(layout, i, &random_values(n, i as u64 + 1, 3.0), 1))
        .collect();
    for name in ALL {
        let mut agg = build(name, &[("clip_norm", "0.5")]);
        let out = round(agg.as_mut(), layout, &ups);
        assert_eq!(out.metrics["clipped"], 5.0, "{name}");
        assert!(agg.describe().contains("clip 0.5"), "{}", agg.describe());
        let d = flat(&out.delta);
        if ["fedavg", "median", "trimmed-mean", "krum"].contains(name) {
            // A mean or a coordinate-wise statistic of vectors of norm ≤ 0.5 (median and
            // trimmed mean by coordinate, so bound by the per-coordinate max instead).
            for (j, &x) in d.iter().enumerate() {
                let hi = ups
                    .iter()
                    .map(|u| {
                        let v = flat(&u.update);
                        (v[j] as f64).abs() * 0.5 / norm(&v)
                    })
                    .fold(0.0, f64::max);
                assert!(
                    (x as f64).abs() <= hi * (1.0 + 1e-6),
                    "{name}: coordinate {j}"
                );
            }
        }
        if ["fedavg", "krum"].contains(name) {
            assert!(
                norm(&d) <= 0.5 * (1.0 + 1e-6),
                "{name}: ‖delta‖ = {}",
                norm(&d)
            );
        }
        // Without clipping the same round is not bounded and has no `clipped` metric.
        let out = round(build(name, &[]).as_mut(), layout, &ups);
        assert!(!out.metrics.contains_key("clipped"), "{name}");
    }
}

#[test]
fn bad_clip_values_name_the_key_and_the_accepted_values() {
    for bad in ["0.0", "-1.0", "\"mean\"", "true", "nan"] {
        for name in ALL {
            let err = config_error(name, &[("clip_norm", bad)]);
            assert!(err.contains("aggregator.clip_norm"), "{name} {bad}: {err}");
            assert!(
                err.contains("positive") && err.contains("median"),
                "{name} {bad}: {err}"
            );
        }
    }
}
