//! `cgfedllm` on synthetic structured updates: TGAP beats the input-blind predictors, the
//! SNR-driven fallback, exact byte counts, save/load, malformed payloads, config errors,
//! and the conformance suite.

mod common;

use cgfed_autoencoder::CgFedLlm;
use cgfed_core::testkit::{self, Expect};
use cgfed_core::{ClientState, GradientCompressor, Payload};
use cgfed_sparsify as _;
use common::{ctx, fitted, lora_layout, structured, table, SMALL};

fn metric(r: &cgfed_core::HookReport, k: &str) -> f64 {
    *r.metrics
        .get(k)
        .unwrap_or_else(|| panic!("no metric {k}: {:?}", r.metrics.keys()))
}

#[test]
fn tgap_beats_the_input_blind_predictors_on_held_out_snapshots() {
    let layout = lora_layout();
    for preset in ["default", "pca"] {
        let extra = format!(
            "{SMALL}\npreset = \"{preset}\"\npositions = {}\nlatent_bits = 0",
            preset == "default"
        );
        let (_, r) = fitted(&extra, &layout, 4);
        let snr = metric(&r, "tgap_heldout_snr_db");
        let cos = metric(&r, "tgap_heldout_cosine");
        assert!(snr > 10.0, "{preset}: held-out SNR {snr} dB");
        assert_eq!(metric(&r, "tgap_zero_snr_db"), 0.0);
        assert!(
            cos > metric(&r, "tgap_mean_gain_cosine") + 0.2,
            "{preset}: cosine {cos} vs the mean with the codec's scales {}",
            metric(&r, "tgap_mean_gain_cosine")
        );
        assert!(snr > metric(&r, "tgap_mean_snr_db"));
        assert_eq!(metric(&r, "tgap_heldout_snapshots"), 6.0);
        assert_eq!(metric(&r, "tgap_train_snapshots"), 18.0);
        assert!(metric(&r, "ae_bytes") > 0.0);
        // Chunks are RMS-normalised: predicting zero costs an MSE of 1.
        let mse = metric(&r, "tgap_train_mse");
        assert!(mse < 0.05, "{preset}: training MSE {mse}");
        assert!(metric(&r, "tgap_val_mse") < 0.1);
        if preset == "default" {
            // Adam starts from the PCA fit and must not wander off it.
            let first = metric(&r, "tgap_first_loss");
            let last = metric(&r, "tgap_train_loss");
            assert!(last < 2.0 * first, "Adam diverged: {first} → {last}");
        }
    }
}

#[test]
fn an_untrained_decoder_is_no_better_than_the_blind_predictor() {
    // The paper's conv net with zero Adam steps is a random net, and the report must show it.
    let layout = lora_layout();
    let (_, r) = fitted(
        "preset = \"paper\"\ntgap = { rounds = 3, iterations = 0 }",
        &layout,
        4,
    );
    assert!(
        metric(&r, "tgap_heldout_cosine") < metric(&r, "tgap_mean_gain_cosine") + 0.3,
        "{:?}",
        r.metrics
    );
}

#[test]
fn fallback_triggers_above_the_threshold_and_never_at_minus_infinity() {
    let layout = lora_layout();
    let cx = ctx(&layout, 9, Some(1));
    let x = structured(&layout, 4242);
    let xs = x.to_flat().unwrap();
    // Never: exactly flags + per chunk (f32 scale + 8 f16 latents).
    let (c, _) = fitted(
        &format!("{SMALL}\nsnr_threshold_db = -inf\nlatent_bits = 0"),
        &layout,
        3,
    );
    let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
    let chunks: usize = layout.specs().iter().map(|s| s.numel().div_ceil(32)).sum();
    assert_eq!(
        p.len(),
        Payload::header_len("cgfedllm") + 1 + chunks * (4 + 8 * 2)
    );
    let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
    assert_ne!(xs, y);
    // ... or (f32 scale + f32 latent scale + 8 one-bit codes), or 3-bit codes (24 bits).
    for (bits, code_bytes) in [(1, 1), (3, 3)] {
        let (c, _) = fitted(
            &format!("{SMALL}\nsnr_threshold_db = -inf\nlatent_bits = {bits}"),
            &layout,
            3,
        );
        let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
        assert_eq!(
            p.len(),
            Payload::header_len("cgfedllm") + 1 + chunks * (4 + 4 + code_bytes)
        );
        let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
        assert!(y.iter().all(|v| v.is_finite()));
    }
    // Always (no reconstruction reaches 200 dB): every tensor dense, decoded exactly.
    let (c, _) = fitted(&format!("{SMALL}\nsnr_threshold_db = 200.0"), &layout, 3);
    let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
    let dense = Payload::header_len("none") + 4 * layout.numel();
    assert_eq!(p.len(), Payload::header_len("cgfedllm") + 1 + dense);
    assert_eq!(p.as_bytes()[Payload::header_len("cgfedllm")], 0b1111);
    assert_eq!(c.decompress(&p, &cx).unwrap().to_flat().unwrap(), xs);
    // A top-k fallback for the flagged tensors.
    let (c, _) = fitted(
        &format!(
            "{SMALL}\nsnr_threshold_db = 200.0\nfallback = {{ kind = \"topk\", ratio = 0.1 }}"
        ),
        &layout,
        3,
    );
    let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
    assert!(p.len() < dense / 3, "top-k fallback of {} bytes", p.len());
    let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
    let nonzero = y.iter().filter(|v| **v != 0.0).count();
    assert!(
        nonzero > 0 && nonzero <= layout.numel() / 10 + 4,
        "{nonzero}"
    );
}

#[test]
fn the_least_squares_scale_makes_the_codec_a_contraction() {
    // Even an untrained decoder (the paper's conv net, no Adam step) never returns more
    // error than it was given: what error feedback needs.
    let layout = lora_layout();
    let (c, _) = fitted(
        "preset = \"paper\"\nscale = \"lsq\"\nsnr_threshold_db = -inf\ntgap = { rounds = 3, iterations = 0 }",
        &layout,
        3,
    );
    for seed in 0..8 {
        let x = structured(&layout, 9000 + seed);
        let cx = ctx(&layout, 1, Some(0));
        let p = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
        let y = c.decompress(&p, &cx).unwrap().to_flat().unwrap();
        let xs = x.to_flat().unwrap();
        let e: f64 = xs
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let n: f64 = xs.iter().map(|a| f64::from(*a).powi(2)).sum();
        assert!(e <= n * (1.0 + 1e-4), "seed {seed}: error {e} > signal {n}");
    }
}

#[test]
fn a_saved_autoencoder_reloads_to_identical_outputs() {
    let layout = lora_layout();
    let (c, report) = fitted(SMALL, &layout, 3);
    let dir = tempfile::tempdir().unwrap();
    let files = c.save_fitted(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    let loaded = CgFedLlm::from_table(&table(&format!(
        "load = \"{}\"",
        dir.path().display().to_string().replace('\\', "/")
    )))
    .unwrap();
    assert_eq!(loaded.calibration_rounds(), 0);
    assert_eq!(loaded.calibration_split(), Some(0.3));
    assert_eq!(
        loaded.client_artifacts().unwrap().len() as f64,
        metric(&report, "ae_bytes")
    );
    for seed in 0..3 {
        let x = structured(&layout, 777 + seed);
        let cx = ctx(&layout, 2, Some(3));
        let a = c.compress(&x, &mut ClientState::default(), &cx).unwrap();
        let b = loaded
            .compress(&x, &mut ClientState::default(), &cx)
            .unwrap();
        assert_eq!(a, b, "payloads differ after reload");
        assert_eq!(
            c.decompress(&a, &cx).unwrap().to_flat().unwrap(),
            loaded.decompress(&b, &cx).unwrap().to_flat().unwrap()
        );
    }
    // A saved architecture cannot be contradicted.
    let err = CgFedLlm::from_table(&table(&format!(
        "load = \"{}\"\nchunk = 64",
        dir.path().display().to_string().replace('\\', "/")
    )))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("compressor.chunk") && err.contains("32"),
        "{err}"
    );
    // Position embeddings tie it to the layout.
    let other = cgfed_core::Layout::new(vec![cgfed_core::TensorSpec {
        name: "w".into(),
        shape: vec![10, 10],
    }])
    .unwrap();
    let u = structured(&other, 1);
    let err = loaded
        .compress(&u, &mut ClientState::default(), &ctx(&other, 0, Some(0)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("position embeddings"), "{err}");
}

#[test]
fn malformed_latents_are_rejected() {
    let layout = lora_layout();
    let (c, _) = fitted(
        &format!("{SMALL}\nsnr_threshold_db = -inf\nlatent_bits = 0"),
        &layout,
        3,
    );
    let cx = ctx(&layout, 0, Some(0));
    let p = c
        .compress(&structured(&layout, 5), &mut ClientState::default(), &cx)
        .unwrap();
    let h = Payload::header_len("cgfedllm");
    // The first latent value (after the flags byte and the first chunk's f32 scale) as an
    // f16 NaN, then as +inf; the scale as NaN.
    for (at, bytes) in [
        (h + 1 + 4, vec![0x00u8, 0x7e]),
        (h + 1 + 4, vec![0x00, 0x7c]),
        (h + 1, f32::NAN.to_le_bytes().to_vec()),
    ] {
        let mut b = p.as_bytes().to_vec();
        b[at..at + bytes.len()].copy_from_slice(&bytes);
        let err = c.decompress(&Payload::from_bytes(b), &cx).unwrap_err();
        assert!(
            matches!(err, cgfed_core::Error::MalformedPayload(_)),
            "{err}"
        );
    }
    // A huge scale overflows the decode: rejected, not passed on as infinities.
    let mut b = p.as_bytes().to_vec();
    b[h + 1..h + 5].copy_from_slice(&f32::MAX.to_le_bytes());
    if let Ok(u) = c.decompress(&Payload::from_bytes(b), &cx) {
        assert!(u.to_flat().unwrap().iter().all(|v| v.is_finite()));
    }
    // Padding bits of the flag byte must be zero.
    let mut b = p.as_bytes().to_vec();
    b[h] |= 0x80;
    assert!(c.decompress(&Payload::from_bytes(b), &cx).is_err());
    testkit::check_malformed(&c, &layout);
    // Bit-coded latents: a NaN latent scale, and non-zero padding after 6 one-bit codes.
    let (c, _) = fitted(
        &format!(
            "{}\nsnr_threshold_db = -inf\nlatent_bits = 1",
            SMALL.replace("latent = 8", "latent = 6")
        ),
        &layout,
        3,
    );
    let p = c
        .compress(&structured(&layout, 5), &mut ClientState::default(), &cx)
        .unwrap();
    let mut b = p.as_bytes().to_vec();
    b[h + 1 + 4..h + 1 + 8].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(c.decompress(&Payload::from_bytes(b), &cx).is_err());
    let mut b = p.as_bytes().to_vec();
    b[h + 1 + 8] |= 0xC0;
    assert!(c.decompress(&Payload::from_bytes(b), &cx).is_err());
    testkit::check_malformed(&c, &layout);
}

#[test]
fn conformance_suite_for_the_layout_free_presets() {
    let layout = lora_layout();
    for preset in ["default", "pca"] {
        let extra =
            format!("{SMALL}\npreset = \"{preset}\"\npositions = false\nsnr_threshold_db = 6.0");
        let (c, _) = fitted(&extra, &layout, 3);
        testkit::check_compressor(
            &c,
            &Expect {
                // Tensors below 6 dB go dense: no tensor keeps more than 10^(-6/20) error.
                max_rel_err: 0.502,
                ..Expect::default()
            },
        );
    }
}

#[test]
fn the_paper_preset_packs_trains_and_decodes() {
    let layout = lora_layout(); // packs into 128 × 64 → latent 64 × 2 × 1
    let (c, r) = fitted(
        "preset = \"paper\"\ntgap = { rounds = 3, iterations = 40, batch = 4, lr = 1e-3 }",
        &layout,
        3,
    );
    assert!(metric(&r, "tgap_heldout_snr_db").is_finite());
    assert!(metric(&r, "ae_params") > 100_000.0);
    let cx = ctx(&layout, 0, Some(0));
    let p = c
        .compress(&structured(&layout, 3), &mut ClientState::default(), &cx)
        .unwrap();
    // Threshold 0 dB with per-tensor max scaling: either latent + 4 scales, or fallbacks.
    let latent = 64 * 2 * 2;
    if p.as_bytes()[Payload::header_len("cgfedllm")] == 0 {
        assert_eq!(
            p.len(),
            Payload::header_len("cgfedllm") + 1 + latent + 4 * 4
        );
    }
    testkit::check_roundtrip(
        &c,
        &layout,
        &Expect {
            max_rel_err: 1.0,
            ..Expect::default()
        },
    );
    testkit::check_deterministic(&c, &layout);
    testkit::check_zero_and_nonfinite(&c, &layout);
    testkit::check_malformed(&c, &layout);
}

#[test]
fn config_errors_name_the_key() {
    let err = |extra: &str| CgFedLlm::from_table(&table(extra)).unwrap_err().to_string();
    let e = err("preset = \"resnet\"");
    assert!(
        e.contains("compressor.preset") && e.contains("paper"),
        "{e}"
    );
    let e = err("tgap = { rounds = 2, heldout_rounds = 2 }");
    assert!(e.contains("compressor.tgap.heldout_rounds"), "{e}");
    let e = err("tgap = { split = 1.5 }");
    assert!(e.contains("compressor.tgap.split"), "{e}");
    let e = err("fallback = \"cgfedllm\"");
    assert!(e.contains("compressor.fallback"), "{e}");
    let e = err("fallback = \"no-such\"");
    assert!(e.contains("no-such") && e.contains("topk"), "{e}");
    let e = err("latent = 64\nchunk = 32");
    assert!(e.contains("compressor.latent"), "{e}");
    let e = err("load = \"/no/such/dir\"");
    assert!(
        e.contains("compressor.load") && e.contains("ae.toml"),
        "{e}"
    );
    let e = err("snr_threshold_db = nan");
    assert!(e.contains("snr_threshold_db"), "{e}");
    let e = err("tgap = { rounds = 3, iterationz = 4 }");
    assert!(e.contains("iterationz"), "{e}");
}
