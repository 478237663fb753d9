//! `fedavg` arithmetic and config.

use crate::common;

use cgfed_core::testkit;
use common::*;

#[test]
fn weights_by_example_count() {
    let layout = &testkit::layouts()[0];
    let n = layout.numel();
    let mut agg = build("fedavg", &[]);
    // (1·10 + 4·30) / 40 = 3.25
    let out = round(
        agg.as_mut(),
        layout,
        &[
            client(layout, 0, &vec![1.0; n], 10),
            client(layout, 1, &vec![4.0; n], 30),
        ],
    );
    assert_close(&flat(&out.delta), &vec![3.25; n], 1e-7);
    assert!(out.base_residual.is_none());
    assert_eq!(out.base_residual_bytes, 0);
    assert!(out.metrics.is_empty(), "{:?}", out.metrics);
}

#[test]
fn uniform_weighting_ignores_counts() {
    let layout = &testkit::layouts()[0];
    let n = layout.numel();
    let mut agg = build("fedavg", &[("weighting", "\"uniform\"")]);
    let out = round(
        agg.as_mut(),
        layout,
        &[
            client(layout, 0, &vec![1.0; n], 10),
            client(layout, 1, &vec![4.0; n], 30),
        ],
    );
    assert_close(&flat(&out.delta), &vec![2.5; n], 1e-7);
}

#[test]
fn per_coordinate_weighted_mean() {
    let layout = &vector(3);
    let mut agg = build("fedavg", &[]);
    // weights 1/4, 3/4: [0.25·1 + 0.75·(-3), 0.25·2 + 0.75·0, 0.25·(-4) + 0.75·8]
    let out = round(
        agg.as_mut(),
        layout,
        &[
            client(layout, 0, &[1.0, 2.0, -4.0], 1),
            client(layout, 1, &[-3.0, 0.0, 8.0], 3),
        ],
    );
    assert_close(&flat(&out.delta), &[-2.0, 0.5, 5.0], 1e-7);
}

#[test]
fn zero_examples_everywhere_is_an_error() {
    let layout = &vector(2);
    let mut agg = build("fedavg", &[]);
    let err = try_round(agg.as_mut(), layout, &[client(layout, 0, &[1.0, 1.0], 0)])
        .expect_err("zero total weight");
    assert!(err.to_string().contains("uniform"), "{err}");
    // uniform weighting does not need counts
    let mut agg = build("fedavg", &[("weighting", "\"uniform\"")]);
    let out = round(agg.as_mut(), layout, &[client(layout, 0, &[1.0, 1.0], 0)]);
    assert_close(&flat(&out.delta), &[1.0, 1.0], 0.0);
}

#[test]
fn bad_weighting_lists_accepted_values() {
    let err = config_error("fedavg", &[("weighting", "\"median\"")]);
    assert!(err.contains("aggregator.weighting"), "{err}");
    assert!(err.contains("examples") && err.contains("uniform"), "{err}");
}

#[test]
fn describe_names_the_keys() {
    assert_eq!(
        build("fedavg", &[]).describe(),
        "fedavg (weighting examples, lora factors)"
    );
    assert_eq!(
        build(
            "fedavg",
            &[
                ("lora", "\"product\""),
                ("clip_norm", "1.0"),
                ("weighting", "\"uniform\"")
            ]
        )
        .describe(),
        "fedavg (weighting uniform, lora product, clip 1.0)"
    );
}
