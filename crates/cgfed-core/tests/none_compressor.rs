//! The dense reference compressor: conformance suite, exact bytes, lossless.

use cgfed_core::testkit::{self, Expect};
use cgfed_core::{registry, ClientState, Payload, PluginTable};

fn none() -> Box<dyn cgfed_core::GradientCompressor> {
    registry::build_compressor(&PluginTable::named("compressor", "none")).unwrap()
}

#[test]
fn conformance_suite() {
    testkit::check_compressor(
        none().as_ref(),
        &Expect {
            payload_len: Some(|l| Payload::header_len("none") + 4 * l.numel()),
            ..Expect::default()
        },
    );
}

#[test]
fn payload_is_dense_plus_header_and_lossless() {
    for layout in testkit::layouts() {
        let ctx = testkit::ctx(&layout, 1, 0, 0);
        let x = testkit::random_update(&layout, 4, 3.0);
        let p = none()
            .compress(&x, &mut ClientState::default(), &ctx)
            .unwrap();
        assert_eq!(p.len(), layout.dense_bytes() + Payload::header_len("none"));
        let y = none().decompress(&p, &ctx).unwrap();
        assert_eq!(x.to_flat().unwrap(), y.to_flat().unwrap());
    }
}

#[test]
fn unknown_key_is_rejected() {
    let mut t = PluginTable::named("compressor", "none");
    t.params
        .insert("level".into(), cgfed_core::toml::Value::Integer(1));
    let msg = registry::build_compressor(&t).err().unwrap().to_string();
    assert!(msg.contains("compressor.level"), "{msg}");
}
