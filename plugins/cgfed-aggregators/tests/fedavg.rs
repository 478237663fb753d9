//! `fedavg` arithmetic and config.

use cgfed_aggregators as _;
use cgfed_core::candle_core::Device;
use cgfed_core::testkit;
use cgfed_core::{registry, ClientUpdate, PluginTable, Update};

fn client(layout: &cgfed_core::Layout, client: usize, fill: f32, n: usize) -> ClientUpdate {
    let v = vec![fill; layout.numel()];
    ClientUpdate {
        client,
        update: Update::from_flat(layout, &v, &Device::Cpu).unwrap(),
        num_examples: n,
        train_loss: 0.0,
    }
}

#[test]
fn weights_by_example_count() {
    let layout = &testkit::layouts()[0];
    let ctx = testkit::ctx(layout, 0, 0, 0);
    let mut agg = registry::build_aggregator(&PluginTable::named("aggregator", "fedavg")).unwrap();
    // (1*10 + 4*30) / 40 = 3.25
    let out = agg
        .aggregate(
            &[client(layout, 0, 1.0, 10), client(layout, 1, 4.0, 30)],
            &ctx,
        )
        .unwrap();
    for v in out.to_flat().unwrap() {
        assert!((v - 3.25).abs() < 1e-6, "{v}");
    }
}

#[test]
fn uniform_weighting_ignores_counts() {
    let layout = &testkit::layouts()[0];
    let ctx = testkit::ctx(layout, 0, 0, 0);
    let mut t = PluginTable::named("aggregator", "fedavg");
    t.params.insert("weighting".into(), "uniform".into());
    let mut agg = registry::build_aggregator(&t).unwrap();
    let out = agg
        .aggregate(
            &[client(layout, 0, 1.0, 10), client(layout, 1, 4.0, 30)],
            &ctx,
        )
        .unwrap();
    for v in out.to_flat().unwrap() {
        assert!((v - 2.5).abs() < 1e-6, "{v}");
    }
}

#[test]
fn bad_weighting_lists_accepted_values() {
    let mut t = PluginTable::named("aggregator", "fedavg");
    t.params.insert("weighting".into(), "median".into());
    let err = registry::build_aggregator(&t).err().unwrap().to_string();
    assert!(err.contains("aggregator.weighting"), "{err}");
    assert!(err.contains("examples") && err.contains("uniform"), "{err}");
}

#[test]
fn empty_round_is_an_error_not_a_panic() {
    let layout = &testkit::layouts()[0];
    let ctx = testkit::ctx(layout, 0, 0, 0);
    let mut agg = registry::build_aggregator(&PluginTable::named("aggregator", "fedavg")).unwrap();
    assert!(agg.aggregate(&[], &ctx).is_err());
}
