//! `bf16` conformance, byte accounting and range.

use cgfed_core::testkit::{self, Expect};
use cgfed_core::{registry, ClientState, Payload, PluginTable};
use cgfed_quantize as _;

fn bf16() -> Box<dyn cgfed_core::GradientCompressor> {
    registry::build_compressor(&PluginTable::named("compressor", "bf16")).unwrap()
}

#[test]
fn conformance_suite() {
    // bf16 keeps 8 significant bits: relative error per element <= 2^-9 ~ 1.95e-3.
    testkit::check_compressor(
        bf16().as_ref(),
        &Expect {
            max_rel_err: 1.96e-3,
            payload_len: Some(|l| Payload::header_len("bf16") + 2 * l.numel()),
            ..Expect::default()
        },
    );
}

#[test]
fn payload_is_half_of_dense_plus_header() {
    for layout in testkit::layouts() {
        let ctx = testkit::ctx(&layout, 1, 0, 0);
        let x = testkit::random_update(&layout, 2, 0.1);
        let p = bf16()
            .compress(&x, &mut ClientState::default(), &ctx)
            .unwrap();
        assert_eq!(p.len(), Payload::header_len("bf16") + 2 * layout.numel());
    }
}

#[test]
fn keeps_values_fp16_cannot_hold() {
    let layout = &testkit::layouts()[1];
    let ctx = testkit::ctx(layout, 1, 0, 0);
    let mut v = testkit::random_values(layout.numel(), 3, 1.0);
    v[0] = 1.0e6; // beyond f16's 65504
    v[1] = 1.0e-7; // an f16 subnormal
    let x = cgfed_core::Update::from_flat(layout, &v, &ctx.device).unwrap();
    let c = bf16();
    let p = c.compress(&x, &mut ClientState::default(), &ctx).unwrap();
    let y = c.decompress(&p, &ctx).unwrap();
    let back: Vec<f32> = y.to_parts().unwrap().concat();
    for i in 0..2 {
        let rel = ((back[i] - v[i]) / v[i]).abs();
        assert!(rel <= 1.96e-3, "{} -> {} ({rel})", v[i], back[i]);
    }
}
