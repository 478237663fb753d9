//! The core wrappers (error feedback, composition, dense warm-up, dense fallback) around
//! small compressors defined here, built from config tables through the registry.

use cgfed_core::candle_core::Device;
use cgfed_core::staged::{compress_f32, decompress_f32, Staged, Structure};
use cgfed_core::testkit::{self, Expect};
use cgfed_core::toml;
use cgfed_core::wire::ByteReader;
use cgfed_core::wrappers::RESIDUAL_KEY;
use cgfed_core::{
    config::PluginTable, registry, ClientState, Factory, GradientCompressor, Layout, Payload,
    Plugin, Result, RoundCtx, TensorSpec, Update,
};

/// A first stage that keeps half the elements of every tensor: positions `(2i + p) mod n`
/// for `i < ceil(n/2)`, with `p` the parity of the round (no structure on the wire: both
/// ends know which), values laid out as `[ceil(n/2)]` per tensor.
struct KeepEven;

fn evens(n: usize) -> usize {
    n.div_ceil(2)
}

fn kept_positions(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..evens(n)).map(move |i| (2 * i + round % 2) % n)
}

impl Staged for KeepEven {
    fn split(
        &self,
        update: &Update,
        _: &mut ClientState,
        ctx: &RoundCtx,
        _: &mut cgfed_core::payload::PayloadBuilder,
    ) -> Result<Update> {
        let mut tensors = Vec::new();
        update.for_each_host(|_, spec, v| {
            let kept: Vec<f32> = kept_positions(v.len(), ctx.round).map(|i| v[i]).collect();
            tensors.push((
                spec.name.clone(),
                cgfed_core::candle_core::Tensor::from_vec(kept, evens(v.len()), &Device::Cpu)?,
            ));
            Ok(())
        })?;
        Update::new(tensors)
    }

    fn read_structure(&self, _: &mut ByteReader<'_>, ctx: &RoundCtx) -> Result<Structure> {
        let specs = ctx
            .layout
            .specs()
            .iter()
            .map(|s| TensorSpec {
                name: s.name.clone(),
                shape: vec![evens(s.numel())],
            })
            .collect();
        Ok(Structure::new(Layout::new(specs)?, ()))
    }

    fn join(&self, _: &Structure, values: &Update, ctx: &RoundCtx) -> Result<Update> {
        let parts = values
            .to_parts()?
            .into_iter()
            .zip(ctx.layout.specs())
            .map(|(kept, spec)| {
                let mut v = vec![0f32; spec.numel()];
                for (i, x) in kept_positions(spec.numel(), ctx.round).zip(kept) {
                    v[i] = x;
                }
                v
            })
            .collect();
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

impl GradientCompressor for KeepEven {
    fn name(&self) -> &str {
        "test-even"
    }
    fn compress(&self, u: &Update, s: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        compress_f32(self, self.name(), u, s, ctx)
    }
    fn decompress(&self, p: &Payload, ctx: &RoundCtx) -> Result<Update> {
        decompress_f32(self, self.name(), p, ctx)
    }
    fn as_staged(&self) -> Option<&dyn Staged> {
        Some(self)
    }
}

/// A compressor that always costs more than dense: f32 values plus 4 bytes of padding per
/// tensor, so the dense fallback must pick dense for every tensor.
struct Bloated;

impl GradientCompressor for Bloated {
    fn name(&self) -> &str {
        "test-bloated"
    }
    fn compress(&self, u: &Update, _: &mut ClientState, ctx: &RoundCtx) -> Result<Payload> {
        u.check_same_layout(&ctx.layout)?;
        u.check_finite()?;
        let mut p = Payload::builder(self.name())?;
        u.for_each_host(|_, _, v| {
            p.put_u32(0);
            p.put_f32s(v);
            Ok(())
        })?;
        Ok(p.finish())
    }
    fn decompress(&self, p: &Payload, ctx: &RoundCtx) -> Result<Update> {
        let mut r = p.open(self.name())?;
        let mut parts = Vec::new();
        for s in ctx.layout.specs() {
            if r.u32()? != 0 {
                return Err(cgfed_core::Error::malformed("padding"));
            }
            parts.push(r.f32s(s.numel())?);
        }
        r.finish()?;
        Update::from_parts(&ctx.layout, parts, &ctx.device)
    }
}

fn build_even(t: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let _: cgfed_core::builtin::none::NoneConfig = t.parse()?;
    Ok(Box::new(KeepEven))
}
fn build_bloated(t: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    let _: cgfed_core::builtin::none::NoneConfig = t.parse()?;
    Ok(Box::new(Bloated))
}

cgfed_core::inventory::submit! {
    Plugin { name: "test-even", summary: "test only: even positions", params: &[], factory: Factory::Compressor(build_even) }
}
cgfed_core::inventory::submit! {
    Plugin { name: "test-bloated", summary: "test only: larger than dense", params: &[], factory: Factory::Compressor(build_bloated) }
}

fn table(text: &str) -> PluginTable {
    let v: toml::Value = toml::from_str::<toml::Table>(&format!("c = {text}"))
        .unwrap()
        .remove("c")
        .unwrap();
    PluginTable::from_value("compressor", &v).unwrap()
}

fn build(text: &str) -> Box<dyn GradientCompressor> {
    registry::build_compressor(&table(text)).unwrap()
}

fn build_err(text: &str) -> String {
    registry::build_compressor(&table(text))
        .err()
        .expect("config must be rejected")
        .to_string()
}

fn layout() -> Layout {
    testkit::layouts()[3].clone()
}

#[test]
fn composition_sends_structure_then_the_second_stage_body() {
    let c = build(r#"{ kind = "test-even", values = { kind = "none" } }"#);
    assert_eq!(c.name(), "test-even+none");
    let l = layout();
    let cx = testkit::ctx(&l, 1, 0, 0);
    let x = testkit::random_update(&l, 3, 1.0);
    let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
    let kept: usize = l.specs().iter().map(|s| evens(s.numel())).sum();
    // No structure, and the `none` body is the kept values as f32: header + 4 per value.
    assert_eq!(p.len(), Payload::header_len("test-even+none") + 4 * kept);
    let y = c.decompress(&p, &cx).unwrap().to_parts().unwrap();
    for (xs, ys) in x.to_parts().unwrap().iter().zip(&y) {
        for (i, (a, b)) in xs.iter().zip(ys).enumerate() {
            assert_eq!(*b, if i % 2 == 0 { *a } else { 0.0 });
        }
    }
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 0.9,
            payload_len: Some(|l| {
                Payload::header_len("test-even+none")
                    + 4 * l.specs().iter().map(|s| evens(s.numel())).sum::<usize>()
            }),
            ..Expect::default()
        },
    );
}

#[test]
fn composition_needs_a_first_stage_and_plain_values() {
    let msg = build_err(r#"{ kind = "none", values = { kind = "none" } }"#);
    assert!(
        msg.contains("compressor.values") && msg.contains("first stages"),
        "{msg}"
    );
    let msg =
        build_err(r#"{ kind = "test-even", values = { kind = "none", error_feedback = true } }"#);
    assert!(
        msg.contains("compressor.values") && msg.contains("outer table"),
        "{msg}"
    );
    let msg = build_err(r#"{ kind = "test-even", values = { kind = "nope" } }"#);
    assert!(
        msg.contains("compressor.values.kind") && msg.contains("unknown compressor"),
        "{msg}"
    );
    let msg = build_err(r#"{ kind = "none", error_feedback = "yes" }"#);
    assert!(msg.contains("compressor.error_feedback"), "{msg}");
    let msg = build_err(r#"{ kind = "none", warmup_rounds = -1 }"#);
    assert!(msg.contains("compressor.warmup_rounds"), "{msg}");
}

#[test]
fn error_feedback_carries_the_residual_into_later_rounds() {
    let l = layout();
    let x = testkit::random_update(&l, 5, 1.0);
    let xv = x.to_flat().unwrap();
    let plain = build(r#"{ kind = "test-even" }"#);
    let ef = build(r#"{ kind = "test-even", error_feedback = true }"#);
    assert_eq!(
        ef.name(),
        "test-even",
        "error feedback does not change the wire"
    );
    assert!(ef.describe().contains("error feedback"));
    let mut state = ClientState::default();
    let (mut sum_ef, mut sum_plain) = (vec![0f64; xv.len()], vec![0f64; xv.len()]);
    let rounds = 8;
    for r in 0..rounds {
        let cx = testkit::ctx(&l, 1, r, 0);
        let p = ef.compress(&x, &mut state, &cx).unwrap();
        for (s, v) in sum_ef
            .iter_mut()
            .zip(ef.decompress(&p, &cx).unwrap().to_flat().unwrap())
        {
            *s += v as f64;
        }
        let p = plain
            .compress(&x, &mut ClientState::default(), &cx)
            .unwrap();
        for (s, v) in sum_plain
            .iter_mut()
            .zip(plain.decompress(&p, &cx).unwrap().to_flat().unwrap())
        {
            *s += v as f64;
        }
        // What was sent plus what is kept equals everything the client had to send.
        let e = state.buffers.get(RESIDUAL_KEY).expect("residual stored");
        for i in 0..xv.len() {
            let want = (r + 1) as f64 * xv[i] as f64;
            assert!((sum_ef[i] + e[i] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
        }
    }
    let gap = |sum: &[f64]| -> f64 {
        let num: f64 = (0..xv.len())
            .map(|i| (sum[i] - rounds as f64 * xv[i] as f64).powi(2))
            .sum();
        let den: f64 = xv.iter().map(|&v| (rounds as f64 * v as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    // Each position is sent every other round: without EF the running sum misses half of
    // every round, with EF only what the last round left in the residual.
    assert!(
        gap(&sum_ef) < 0.2 * gap(&sum_plain),
        "{} vs {}",
        gap(&sum_ef),
        gap(&sum_plain)
    );
    // A residual of another length is an error, not a silent reset.
    state.buffers.insert(RESIDUAL_KEY.into(), vec![0.0; 3]);
    let err = ef
        .compress(&x, &mut state, &testkit::ctx(&l, 1, 9, 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("residual has 3 values"), "{err}");
}

#[test]
fn warmup_sends_dense_none_payloads_first() {
    let c = build(r#"{ kind = "test-even", warmup_rounds = 2 }"#);
    let l = layout();
    let x = testkit::random_update(&l, 7, 1.0);
    for r in 0..4 {
        let cx = testkit::ctx(&l, 1, r, 0);
        let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
        let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
        assert!(
            p.open("test-even").is_ok(),
            "the header names the compressor"
        );
        if r < 2 {
            assert_eq!(p.len(), Payload::header_len("test-even") + l.dense_bytes());
            assert_eq!(y, x.to_flat().unwrap(), "round {r} is dense");
        } else {
            assert!(p.len() < Payload::header_len("test-even") + l.dense_bytes());
            let zeros = y.iter().filter(|v| **v == 0.0).count();
            assert!(zeros >= l.numel() / 2 - l.len(), "round {r} is compressed");
        }
    }
}

#[test]
fn dense_fallback_picks_the_smaller_form_per_tensor() {
    // Always larger than dense: every tensor goes dense.
    let c = build(r#"{ kind = "test-bloated", dense_fallback = true }"#);
    assert_eq!(c.name(), "fallback:test-bloated");
    let l = layout();
    let cx = testkit::ctx(&l, 1, 0, 0);
    let x = testkit::random_update(&l, 9, 1.0);
    let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
    let flags = l.len().div_ceil(8);
    assert_eq!(
        p.len(),
        Payload::header_len(c.name()) + flags + l.dense_bytes()
    );
    assert_eq!(
        c.decompress(&p, &cx).unwrap().to_flat().unwrap(),
        x.to_flat().unwrap()
    );
    // Half the values: every tensor above 1 element compresses; the 1-element one does not
    // (4 bytes of f32 plus a length byte vs 4 bytes dense).
    let c = build(r#"{ kind = "test-even", dense_fallback = true }"#);
    let one = Layout::new(vec![
        TensorSpec {
            name: "a".into(),
            shape: vec![1],
        },
        TensorSpec {
            name: "b".into(),
            shape: vec![10],
        },
    ])
    .unwrap();
    let cx = testkit::ctx(&one, 1, 0, 0);
    let x = testkit::random_update(&one, 2, 1.0);
    let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
    assert_eq!(
        p.as_bytes()[Payload::header_len(c.name())],
        0b10,
        "a dense, b compressed"
    );
    assert_eq!(p.len(), Payload::header_len(c.name()) + 1 + 4 + 1 + 4 * 5);
    let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
    let xv = x.to_flat().unwrap();
    assert_eq!(y[0], xv[0]);
    assert_eq!(
        (y[1], y[2]),
        (xv[1], 0.0),
        "round 0 keeps b's even positions"
    );
    // A flag set beyond the last tensor is malformed.
    let mut bad = p.as_bytes().to_vec();
    bad[Payload::header_len(c.name())] |= 0b100;
    assert!(c.decompress(&Payload::from_bytes(bad), &cx).is_err());
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 0.9,
            ..Expect::default()
        },
    );
}

#[test]
fn wrappers_nest_and_pass_the_conformance_suite() {
    let c = build(
        r#"{ kind = "test-even", values = { kind = "none" }, dense_fallback = true, warmup_rounds = 1, error_feedback = true }"#,
    );
    assert_eq!(c.name(), "fallback:test-even+none");
    let d = c.describe();
    assert!(
        d.contains("error feedback") && d.contains("warm-up") && d.contains("dense fallback"),
        "{d}"
    );
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 0.9,
            ..Expect::default()
        },
    );
}
