//! `fp16` conformance and byte accounting.

use cgfed_core::testkit::{self, Expect};
use cgfed_core::{registry, ClientState, Payload, PluginTable};
use cgfed_quantize as _;

fn fp16() -> Box<dyn cgfed_core::GradientCompressor> {
    registry::build_compressor(&PluginTable::named("compressor", "fp16")).unwrap()
}

#[test]
fn conformance_suite() {
    // f16 keeps 11 significant bits: relative error per element <= 2^-11 ~ 4.9e-4.
    testkit::check_compressor(
        fp16().as_ref(),
        &Expect {
            max_rel_err: 4.9e-4,
            payload_len: Some(|l| Payload::header_len("fp16") + 2 * l.numel()),
            scale_invariant: false,
            ..Expect::default()
        },
    );
}

#[test]
fn payload_is_half_of_dense_plus_header() {
    for layout in testkit::layouts() {
        let ctx = testkit::ctx(&layout, 1, 0, 0);
        let x = testkit::random_update(&layout, 2, 0.1);
        let p = fp16()
            .compress(&x, &mut ClientState::default(), &ctx)
            .unwrap();
        assert_eq!(p.len(), Payload::header_len("fp16") + 2 * layout.numel());
    }
}

#[test]
fn rejects_values_beyond_f16_range() {
    let layout = &testkit::layouts()[1];
    let ctx = testkit::ctx(layout, 1, 0, 0);
    let mut v = testkit::random_values(layout.numel(), 3, 1.0);
    v[0] = 1e6;
    let x =
        cgfed_core::Update::from_flat(layout, &v, &cgfed_core::candle_core::Device::Cpu).unwrap();
    let err = fp16()
        .compress(&x, &mut ClientState::default(), &ctx)
        .unwrap_err();
    assert!(err.to_string().contains("f16 range"), "{err}");
}

#[test]
fn unknown_key_names_the_path() {
    let mut t = PluginTable::named("compressor", "fp16");
    t.params
        .insert("bits".into(), cgfed_core::toml::Value::Integer(8));
    let err = registry::build_compressor(&t).err().unwrap().to_string();
    assert!(err.contains("compressor.bits"), "{err}");
}
