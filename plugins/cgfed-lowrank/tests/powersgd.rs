//! `powersgd`: conformance, exact sizes, hand-checked factors, warm start, malformed
//! payloads, config errors, composition and error feedback through the registry.

use cgfed_core::candle_core::Device;
use cgfed_core::metrics::rel_err;
use cgfed_core::testkit::{self, Expect};
use cgfed_core::toml;
use cgfed_core::{
    registry, ClientState, Error, GradientCompressor, Layout, Payload, PluginTable, RoundCtx,
    TensorSpec, Update,
};
use cgfed_lowrank::powersgd::{self, q_state_key, values_count, values_layout};
use cgfed_quantize as _;

fn spec(name: &str, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        shape: shape.to_vec(),
    }
}

fn layout(specs: &[(&str, &[usize])]) -> Layout {
    Layout::new(specs.iter().map(|(n, s)| spec(n, s)).collect()).unwrap()
}

/// A compressor from the registry with `params` (a TOML fragment) in its table.
fn build(params: &str) -> Box<dyn GradientCompressor> {
    try_build(params).unwrap()
}

fn try_build(params: &str) -> cgfed_core::Result<Box<dyn GradientCompressor>> {
    let mut table = PluginTable::named("compressor", "powersgd");
    table.params = params.parse::<toml::Table>().unwrap();
    registry::build_compressor(&table)
}

fn update(layout: &Layout, values: &[f32]) -> Update {
    Update::from_flat(layout, values, &Device::Cpu).unwrap()
}

fn flat(u: &Update) -> Vec<f32> {
    u.to_flat().unwrap()
}

/// `A·Bᵀ` for `A` (`n × k`) and `B` (`m × k`), both row-major.
fn product(a: &[f32], b: &[f32], n: usize, m: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            out[i * m + j] = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
        }
    }
    out
}

/// A rank-`k` `n × m` matrix with singular-value-like weights `1, 1/2, 1/3, …`.
fn low_rank(n: usize, m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut a = testkit::random_values(n * k, seed, 1.0);
    let b = testkit::random_values(m * k, seed + 1, 1.0);
    for (i, v) in a.iter_mut().enumerate() {
        *v /= (i % k + 1) as f32;
    }
    product(&a, &b, n, m, k)
}

fn roundtrip(
    c: &dyn GradientCompressor,
    x: &Update,
    state: &mut ClientState,
    ctx: &RoundCtx,
) -> (Payload, Vec<f32>) {
    let p = c.compress(x, state, ctx).unwrap();
    let y = c.decompress(&p, ctx).unwrap();
    (p, flat(&y))
}

#[test]
fn conformance_suite() {
    // Rank 4 of the suite's Gaussian matrices: in its mixed layout the [8, 48], [48, 8]
    // and [16, 8] tensors keep 4 of their 8 directions (the [4, 32] ones of the first
    // layout are dense: (4 + 32)·4 ≥ 128). The best rank-4 approximation of such a
    // matrix already loses about a third of the norm (measured 0.56 with 16 power steps);
    // one power step from a random Q gives 0.68 on the suite's input and at most 0.714
    // over 200 other seeds. The reconstruction is an orthogonal projection, so the error
    // can never exceed 1; 0.78 leaves a margin over the seed-to-seed spread.
    testkit::check_compressor(
        build("").as_ref(),
        &Expect {
            max_rel_err: 0.78,
            payload_len: Some(|l| powersgd::payload_len(l, 4)),
            ..Expect::default()
        },
    );
}

#[test]
fn conformance_suite_rank_1_without_warm_start() {
    // Rank 1 factors every matrix of the suite; a Gaussian matrix keeps only its top
    // direction: measured 0.914 on the suite's input, at most 0.923 over 200 seeds,
    // bounded by 1 (projection).
    testkit::check_compressor(
        build("rank = 1\nwarm_start = false\npower_iterations = 2").as_ref(),
        &Expect {
            max_rel_err: 0.96,
            payload_len: Some(|l| powersgd::payload_len(l, 1)),
            ..Expect::default()
        },
    );
}

#[test]
fn payload_length_formula() {
    let l = layout(&[
        ("a", &[4, 32]),    // (4+32)·4 = 144 ≥ 128: dense, 128 values
        ("b", &[8, 48]),    // (8+48)·4 = 224 values
        ("c", &[16, 8]),    // (16+8)·4 = 96 values
        ("d", &[7]),        // vector: 7 values
        ("e", &[4, 5, 6]),  // n = 4, m = 30: (34)·4 = 136 ≥ 120: dense, 120 values
        ("f", &[3, 0, 4]),  // empty: nothing
        ("g", &[10, 3, 4]), // n = 10, m = 12: (22)·4 = 88 < 120: 88 values
    ]);
    let want_values = 128 + 224 + 96 + 7 + 120 + 88;
    assert_eq!(values_count(&l, 4), want_values);
    assert_eq!(powersgd::payload_len(&l, 4), 10 + 4 * want_values);
    assert_eq!(Payload::header_len("powersgd"), 10);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let x = testkit::random_update(&l, 2, 0.3);
    let c = build("");
    let (p, y) = roundtrip(c.as_ref(), &x, &mut ClientState::default(), &ctx);
    assert_eq!(p.len(), 10 + 4 * want_values);
    // Dense tensors come back exactly.
    let xv = flat(&x);
    assert_eq!(&y[..128], &xv[..128]);
    // At rank 1 every matrix here is factored: (4+32) + (8+48) + (16+8) + 7 + (4+30) +
    // (10+12).
    assert_eq!(values_count(&l, 1), 36 + 56 + 24 + 7 + 34 + 22);
}

#[test]
fn values_layout_names_and_shapes() {
    let l = layout(&[
        ("w", &[8, 48]),
        ("bias", &[7]),
        ("x", &[10, 3, 4]),
        ("z", &[0]),
    ]);
    let v = values_layout(&l, 2).unwrap();
    let got: Vec<(String, Vec<usize>)> = v
        .specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = vec![
        ("bias".into(), vec![7]),
        ("w/P".into(), vec![8, 2]),
        ("w/Q".into(), vec![48, 2]),
        ("x/P".into(), vec![10, 2]),
        ("x/Q".into(), vec![12, 2]),
    ];
    assert_eq!(got, want);
    // A factor name that clashes with a tensor name is a clean error on both ends.
    let clash = layout(&[("w", &[8, 48]), ("w/P", &[3])]);
    assert!(values_layout(&clash, 2).is_err());
    let c = build("rank = 2");
    let ctx = testkit::ctx(&clash, 1, 0, 0);
    let x = testkit::random_update(&clash, 1, 1.0);
    assert!(c.compress(&x, &mut ClientState::default(), &ctx).is_err());
}

#[test]
fn rank_one_matrix_by_hand() {
    // M = u·vᵀ with u = [1, 2, 2] (‖u‖ = 3), v = [1, 0, -1, 2]: rank 1, (3+4)·1 < 12.
    let u = [1f32, 2.0, 2.0];
    let v = [1f32, 0.0, -1.0, 2.0];
    let m: Vec<f32> = u
        .iter()
        .flat_map(|a| v.iter().map(move |b| a * b))
        .collect();
    let l = layout(&[("m", &[3, 4])]);
    let ctx = testkit::ctx(&l, 3, 0, 0);
    let c = build("rank = 1");
    let mut state = ClientState::default();
    let (p, y) = roundtrip(c.as_ref(), &update(&l, &m), &mut state, &ctx);
    assert_eq!(p.len(), 10 + 4 * 7);
    // Body: P (3 values) then Q (4 values): "m/P" < "m/Q".
    let body: Vec<f32> = p.as_bytes()[10..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (pv, qv) = body.split_at(3);
    // P = ±u/‖u‖ = ±[1/3, 2/3, 2/3] and Q = Mᵀ·P = ±‖u‖·v = ±[3, 0, -3, 6].
    let s = pv[0].signum();
    for (got, want) in pv.iter().zip([1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]) {
        assert!((got - s * want).abs() < 1e-6, "P = {pv:?}");
    }
    for (got, want) in qv.iter().zip([3.0, 0.0, -3.0, 6.0]) {
        assert!((got - s * want).abs() < 1e-5, "Q = {qv:?}");
    }
    for (a, b) in y.iter().zip(&m) {
        assert!((a - b).abs() < 1e-5, "{y:?} vs {m:?}");
    }
    // The state holds exactly this Q.
    assert_eq!(state.buffers.len(), 1);
    assert_eq!(state.buffers[&q_state_key("m")], qv.to_vec());
}

#[test]
fn low_rank_matrix_is_reconstructed_exactly() {
    let (n, m) = (40, 60);
    let l = layout(&[("w", &[n, m])]);
    for (true_rank, params) in [
        (4, "rank = 4"),
        (3, "rank = 4"),
        (1, "rank = 2\nwarm_start = false"),
        (4, "rank = 4\npower_iterations = 3"),
    ] {
        let x = update(&l, &low_rank(n, m, true_rank, 7));
        let c = build(params);
        let ctx = testkit::ctx(&l, 5, 0, 0);
        let (_, y) = roundtrip(c.as_ref(), &x, &mut ClientState::default(), &ctx);
        let err = rel_err(&flat(&x), &y);
        assert!(
            err < 1e-4,
            "rank {true_rank} with `{params}`: rel err {err:e}"
        );
    }
}

#[test]
fn warm_start_lowers_the_error_over_rounds() {
    // Rank-4 signal with weights 1, 1/2, 1/3, 1/4 plus noise; r = 2. A single power step
    // from a random Q mixes the top directions with the rest; warm-started rounds converge
    // to the top-2 subspace.
    let (n, m, r) = (64, 96, 2);
    let l = layout(&[("w", &[n, m])]);
    let mut xv = low_rank(n, m, 4, 11);
    for (a, b) in xv.iter_mut().zip(testkit::random_values(n * m, 12, 0.3)) {
        *a += b;
    }
    let x = update(&l, &xv);
    let errs = |params: &str| -> (Vec<f64>, ClientState) {
        let c = build(params);
        let mut state = ClientState::default();
        let e = (0..12)
            .map(|round| {
                let ctx = testkit::ctx(&l, 9, round, 1);
                rel_err(&xv, &roundtrip(c.as_ref(), &x, &mut state, &ctx).1)
            })
            .collect();
        (e, state)
    };
    let (warm, state) = errs(&format!("rank = {r}"));
    let (cold, cold_state) = errs(&format!("rank = {r}\nwarm_start = false"));
    let (best, _) = errs(&format!(
        "rank = {r}\nwarm_start = false\npower_iterations = 16"
    ));
    eprintln!("warm {warm:.4?}\ncold {cold:.4?}\nbest {best:.4?}");
    assert!(
        warm[11] < 0.9 * warm[0],
        "warm start did not lower the error: {warm:?}"
    );
    assert!(
        warm[11] <= best[0] * 1.01,
        "warm start did not converge: {warm:?} vs {best:?}"
    );
    let cold_mean = cold[1..].iter().sum::<f64>() / 11.0;
    assert!(warm[11] < cold_mean, "{warm:?} vs {cold:?}");
    // State: exactly `powersgd/q/w` with m·r values; nothing without warm start.
    let keys: Vec<&String> = state.buffers.keys().collect();
    assert_eq!(keys, vec![&q_state_key("w")]);
    assert_eq!(state.buffers[&q_state_key("w")].len(), m * r);
    assert_eq!(q_state_key("w"), "powersgd/q/w");
    assert!(state.counters.is_empty());
    assert!(cold_state.is_empty());
}

#[test]
fn warm_start_ignores_a_stale_q_of_the_wrong_size() {
    let l = layout(&[("w", &[16, 24])]);
    let x = update(&l, &low_rank(16, 24, 2, 3));
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let c = build("rank = 2");
    let mut state = ClientState::default();
    state.buffers.insert(q_state_key("w"), vec![f32::NAN; 5]);
    let (_, y) = roundtrip(c.as_ref(), &x, &mut state, &ctx);
    assert!(rel_err(&flat(&x), &y) < 1e-4);
    assert_eq!(state.buffers[&q_state_key("w")].len(), 24 * 2);
}

#[test]
fn zero_matrix_gives_zeros_and_the_next_round_recovers() {
    let l = layout(&[("w", &[20, 30]), ("v", &[5])]);
    let c = build("rank = 3");
    let mut state = ClientState::default();
    let ctx0 = testkit::ctx(&l, 1, 0, 0);
    let zero = Update::zeros(&l, &Device::Cpu).unwrap();
    let (p, y) = roundtrip(c.as_ref(), &zero, &mut state, &ctx0);
    assert!(y.iter().all(|&v| v == 0.0), "{y:?}");
    assert_eq!(p.len(), powersgd::payload_len(&l, 3));
    // The stored Q is all zeros; the next round must redraw it rather than stay at zero.
    assert!(state.buffers[&q_state_key("w")].iter().all(|&v| v == 0.0));
    // Layout order: "v" then "w".
    let xv = [vec![1.0, 2.0, 3.0, 4.0, 5.0], low_rank(20, 30, 3, 5)].concat();
    let x = update(&l, &xv);
    let (_, y) = roundtrip(c.as_ref(), &x, &mut state, &testkit::ctx(&l, 1, 1, 0));
    assert!(rel_err(&xv, &y) < 1e-4, "{}", rel_err(&xv, &y));
}

#[test]
fn dense_tensors_are_exact_and_vectors_never_factored() {
    // [2, 2]: (2 + 2)·1 ≥ 4, not smaller; [3, 3] would be factored ((3 + 3)·1 < 9).
    let l = layout(&[("row", &[1, 100]), ("vec", &[50]), ("small", &[2, 2])]);
    assert_eq!(values_count(&l, 1), 100 + 50 + 4);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let x = testkit::random_update(&l, 4, 1.0);
    let c = build("rank = 1");
    let mut state = ClientState::default();
    let (_, y) = roundtrip(c.as_ref(), &x, &mut state, &ctx);
    assert_eq!(y, flat(&x));
    assert!(state.is_empty());
}

#[test]
fn different_rounds_draw_different_starts() {
    let l = layout(&[("w", &[16, 32])]);
    let x = testkit::random_update(&l, 4, 1.0);
    let c = build("warm_start = false");
    let a = c
        .compress(&x, &mut ClientState::default(), &testkit::ctx(&l, 1, 0, 0))
        .unwrap();
    let b = c
        .compress(&x, &mut ClientState::default(), &testkit::ctx(&l, 1, 1, 0))
        .unwrap();
    let a2 = c
        .compress(&x, &mut ClientState::default(), &testkit::ctx(&l, 1, 0, 0))
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(a, a2);
}

fn good_payload(rank: usize) -> (Layout, RoundCtx, Box<dyn GradientCompressor>, Vec<u8>) {
    let l = layout(&[("bias", &[3]), ("w", &[6, 10])]);
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let c = build(&format!("rank = {rank}"));
    let x = testkit::random_update(&l, 8, 1.0);
    let p = c.compress(&x, &mut ClientState::default(), &ctx).unwrap();
    (l, ctx, c, p.into_bytes())
}

fn expect_malformed(c: &dyn GradientCompressor, ctx: &RoundCtx, bytes: Vec<u8>, what: &str) {
    match c.decompress(&Payload::from_bytes(bytes), ctx) {
        Err(Error::MalformedPayload(_)) => {}
        other => panic!("{what}: expected a malformed-payload error, got {other:?}"),
    }
}

#[test]
fn malformed_payloads_are_rejected() {
    let (_, ctx, c, good) = good_payload(2);
    // bias (3) + w/P (6·2) + w/Q (10·2) = 35 values.
    assert_eq!(good.len(), 10 + 4 * 35);
    assert!(c
        .decompress(&Payload::from_bytes(good.clone()), &ctx)
        .is_ok());
    // Truncated by one byte, by one value, and one value too many.
    expect_malformed(
        c.as_ref(),
        &ctx,
        good[..good.len() - 1].to_vec(),
        "truncated",
    );
    expect_malformed(
        c.as_ref(),
        &ctx,
        good[..good.len() - 4].to_vec(),
        "one value short",
    );
    let mut long = good.clone();
    long.extend(1f32.to_le_bytes());
    expect_malformed(c.as_ref(), &ctx, long, "one value too many");
    // A payload of rank 3 decoded as rank 2: the value count does not match.
    let (_, _, _, rank3) = good_payload(3);
    expect_malformed(
        c.as_ref(),
        &ctx,
        rank3,
        "rank-3 payload for a rank-2 decoder",
    );
    // NaN and infinity in P, in Q and in a dense value.
    for (at, v) in [
        (3, f32::NAN),
        (3, f32::INFINITY),
        (20, f32::NEG_INFINITY),
        (0, f32::NAN),
    ] {
        let mut b = good.clone();
        let o = 10 + 4 * at;
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        expect_malformed(c.as_ref(), &ctx, b, &format!("{v} at value {at}"));
    }
    // Finite but huge factors whose product overflows f32.
    let mut b = good.clone();
    for at in 3..35 {
        let o = 10 + 4 * at;
        b[o..o + 4].copy_from_slice(&3e38f32.to_le_bytes());
    }
    expect_malformed(c.as_ref(), &ctx, b, "P·Qᵀ beyond f32");
    // Another compressor's header.
    let mut b = good.clone();
    b[2] = b'q';
    expect_malformed(c.as_ref(), &ctx, b, "wrong name");
}

#[test]
fn a_corrupted_but_finite_factor_decodes_to_finite_values() {
    let (l, ctx, c, good) = good_payload(2);
    let mut b = good.clone();
    let o = 10 + 4 * 5;
    b[o..o + 4].copy_from_slice(&1e10f32.to_le_bytes());
    let y = c.decompress(&Payload::from_bytes(b), &ctx).unwrap();
    assert_eq!(y.layout(), &l);
    assert!(flat(&y).iter().all(|v| v.is_finite()));
}

#[test]
fn config_errors_name_the_key() {
    for (params, key) in [
        ("rank = 0", "compressor.rank"),
        ("rank = 5000", "compressor.rank"),
        ("rank = -1", "compressor.rank"),
        ("rank = \"four\"", "compressor.rank"),
        ("power_iterations = 0", "compressor.power_iterations"),
        ("power_iterations = 17", "compressor.power_iterations"),
        ("warm_start = 1", "compressor.warm_start"),
        ("ranks = 4", "compressor"),
    ] {
        let err = try_build(params)
            .err()
            .unwrap_or_else(|| panic!("`{params}` accepted"));
        let msg = err.to_string();
        assert!(msg.contains(key), "`{params}`: {msg}");
        assert!(matches!(err, Error::Config { .. }), "`{params}`: {err:?}");
    }
    let msg = try_build("rank = 0").err().unwrap().to_string();
    assert!(msg.contains("1..=4096"), "{msg}");
    // The key path follows the table (downlink, a values stage, …).
    let mut table = PluginTable::named("downlink", "powersgd");
    table.params = "rank = 0".parse().unwrap();
    let msg = registry::build_compressor(&table)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("downlink.rank"), "{msg}");
    // The constructor validates too.
    let cfg = powersgd::PowerSgdConfig {
        rank: 0,
        ..Default::default()
    };
    assert!(powersgd::PowerSgd::new(cfg).is_err());
}

#[test]
fn registered_defaults_are_accepted() {
    let plugin = registry::find("compressor", "powersgd").unwrap();
    let mut table = PluginTable::named("compressor", "powersgd");
    for p in plugin.params {
        assert_ne!(p.default, "-");
        table
            .params
            .insert(p.key.to_string(), p.default.parse::<toml::Value>().unwrap());
    }
    let keys: Vec<&str> = plugin.params.iter().map(|p| p.key).collect();
    assert_eq!(keys, ["rank", "warm_start", "power_iterations"]);
    let c = registry::build_compressor(&table).unwrap();
    assert_eq!(
        c.describe(),
        "powersgd rank 4 (1 power iteration, warm start on)"
    );
    assert_eq!(
        powersgd::PowerSgd::new(Default::default())
            .unwrap()
            .config(),
        &powersgd::PowerSgdConfig::default()
    );
}

#[test]
fn composition_with_fp16_through_the_registry() {
    let l = layout(&[
        ("a.lora_A", &[8, 48]),
        ("a.lora_B", &[48, 8]),
        ("norm", &[13]),
    ]);
    let c = build("values = { kind = \"fp16\" }");
    assert_eq!(c.name(), "powersgd+fp16");
    let plain = build("");
    for seed in 0..3 {
        let ctx = testkit::ctx(&l, seed, seed as usize, 0);
        let x = testkit::random_update(&l, seed + 30, 0.05);
        let (p, y) = roundtrip(c.as_ref(), &x, &mut ClientState::default(), &ctx);
        assert_eq!(
            p.len(),
            Payload::header_len("powersgd+fp16") + 2 * values_count(&l, 4)
        );
        assert_eq!(values_count(&l, 4), 2 * (8 + 48) * 4 + 13);
        // fp16 adds ~1e-3 relative to the factors: the result is the f32 one within that.
        let (_, y32) = roundtrip(plain.as_ref(), &x, &mut ClientState::default(), &ctx);
        assert!(rel_err(&y32, &y) < 2e-3, "{}", rel_err(&y32, &y));
    }
    // The composed compressor passes the conformance suite as well.
    testkit::check_compressor(
        c.as_ref(),
        &Expect {
            max_rel_err: 0.78,
            payload_len: Some(|l| {
                Payload::header_len("powersgd+fp16") + 2 * powersgd::values_count(l, 4)
            }),
            scale_invariant: false,
            ..Expect::default()
        },
    );
}

#[test]
fn error_feedback_tracks_the_sum_of_updates() {
    // A fixed Gaussian update, rank 4 of a 32 × 48 matrix (plus a dense vector). With error
    // feedback the decoded payloads sum to T·x − e_T with a bounded residual e_T, so the
    // relative error of the sum falls like 1/T; without it every round loses the same
    // ~80 %.
    let (n, m) = (32, 48);
    let l = layout(&[("w", &[n, m]), ("b", &[6])]);
    let x = testkit::random_update(&l, 21, 0.1);
    let xv = flat(&x);
    let xn: f64 = xv.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    let rounds = 80;
    // Relative error of the running sum after every round, and the final state.
    let run = |params: &str| -> (Vec<f64>, ClientState) {
        let c = build(params);
        let mut state = ClientState::default();
        let mut sum = vec![0f64; xv.len()];
        let mut errs = Vec::new();
        for round in 0..rounds {
            let ctx = testkit::ctx(&l, 2, round, 0);
            let p = c.compress(&x, &mut state, &ctx).unwrap();
            // The server decodes from the bytes alone.
            let y = flat(&c.decompress(&p, &ctx).unwrap());
            for (s, v) in sum.iter_mut().zip(&y) {
                *s += f64::from(*v);
            }
            let t = (round + 1) as f64;
            let err: f64 = sum
                .iter()
                .zip(&xv)
                .map(|(a, b)| (a - f64::from(*b) * t).powi(2))
                .sum::<f64>()
                .sqrt();
            errs.push(err / (t * xn));
        }
        (errs, state)
    };
    let (ef, state) = run("rank = 4\nerror_feedback = true");
    let (plain, _) = run("rank = 4");
    eprintln!(
        "relative error of the sum after 10/40/80 rounds: EF {:.4} {:.4} {:.4}, plain {:.4} {:.4} {:.4}",
        ef[9], ef[39], ef[79], plain[9], plain[39], plain[79]
    );
    assert!(ef[79] < 0.08, "EF sum error {}", ef[79]);
    // Bounded residual: ‖e_T‖ = err·T·‖x‖ does not grow from T = 40 to T = 80.
    assert!(
        80.0 * ef[79] < 1.25 * 40.0 * ef[39],
        "{} vs {}",
        ef[79],
        ef[39]
    );
    assert!(
        plain[79] > 0.5 && plain[79] > 0.9 * plain[9],
        "plain {plain:?}"
    );
    let residual = cgfed_core::wrappers::ErrorFeedback::residual(&state).unwrap();
    let rn: f64 = residual
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((rn / (80.0 * xn) - ef[79]).abs() < 1e-3, "residual {rn}");
    // Both the EF residual and the warm-start Q live in the one client state.
    assert!(state.buffers.contains_key(&q_state_key("w")));
}

#[test]
fn dense_fallback_wrapper_works_per_tensor() {
    let l = layout(&[("w", &[16, 40]), ("b", &[5])]);
    let c = build("rank = 2\ndense_fallback = true");
    let ctx = testkit::ctx(&l, 1, 0, 0);
    let x = update(
        &l,
        &[vec![1.0, 2.0, 3.0, 4.0, 5.0], low_rank(16, 40, 2, 1)].concat(),
    );
    let (_, y) = roundtrip(c.as_ref(), &x, &mut ClientState::default(), &ctx);
    assert!(rel_err(&flat(&x), &y) < 1e-4);
}

/// SmolLM2-135M-like LoRA update: 30 layers × {q, k, v, o} × {lora_A [8, 576], lora_B
/// [576, 8] (q, o) or [192, 8] (k, v)}; sizes and errors on Gaussian values at r = 1, 2, 4
/// (printed with `--nocapture`).
#[test]
fn smollm2_lora_layout_sizes() {
    let mut specs = Vec::new();
    for layer in 0..30 {
        for (proj, out) in [("q", 576), ("k", 192), ("v", 192), ("o", 576)] {
            let base = format!("layers.{layer}.{proj}_proj");
            specs.push(spec(&format!("{base}.lora_A"), &[8, 576]));
            specs.push(spec(&format!("{base}.lora_B"), &[out, 8]));
        }
    }
    let l = Layout::new(specs).unwrap();
    assert_eq!(l.len(), 240);
    let x = testkit::random_update(&l, 40, 1e-3);
    let xv = flat(&x);
    for r in [1usize, 2, 4, 7, 8] {
        let c = build(&format!("rank = {r}"));
        let ctx = testkit::ctx(&l, 1, 0, 0);
        let (p, y) = roundtrip(c.as_ref(), &x, &mut ClientState::default(), &ctx);
        // Factored for r < 8·576/584 ≈ 7.9 (A, q/o B) and r < 8·192/200 = 7.68 (k/v B).
        // Per layer: four lora_A and the q/o lora_B have (8 + 576)·r values, the k/v
        // lora_B (192 + 8)·r.
        let want = if r < 8 {
            30 * (6 * (8 + 576) + 2 * (192 + 8)) * r
        } else {
            l.numel()
        };
        assert_eq!(values_count(&l, r), want);
        assert_eq!(p.len(), 10 + 4 * want);
        eprintln!(
            "SmolLM2 LoRA r={r}: {} bytes ({:.1}x smaller than {} dense), rel err {:.3}",
            p.len(),
            l.dense_bytes() as f64 / p.len() as f64,
            l.dense_bytes(),
            rel_err(&xv, &y)
        );
    }
}
