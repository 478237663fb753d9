//! `[privacy]` in real runs: central DP without noise is exactly the uniform mean of the
//! clipped updates; the reported ε is the accountant's; client-side noise is seeded.

use crate::common;

use cgfed_aggregators::privacy::epsilon_for;
use cgfed_plugins as _;
use cgfed_runner::{run_experiment, Quiet};
use common::{read_metrics, small_config};

#[test]
fn server_mode_without_noise_and_a_loose_clip_is_uniform_fedavg() {
    let dir = tempfile::tempdir().unwrap();
    let plain = small_config("plain", dir.path(), &["aggregator.weighting=uniform"]);
    let dp = small_config(
        "dp",
        dir.path(),
        &[
            "privacy.clip_norm=1e6",
            "privacy.noise_multiplier=0.0",
            "privacy.mode=server",
        ],
    );
    let a = run_experiment(&plain, &mut Quiet).unwrap();
    let b = run_experiment(&dp, &mut Quiet).unwrap();
    assert!(
        (a.final_eval_loss - b.final_eval_loss).abs() < 1e-5,
        "{} vs {}",
        a.final_eval_loss,
        b.final_eval_loss
    );
    // σ = 0: no guarantee, and no ε is claimed.
    assert!(read_metrics(&dp).iter().all(|m| m.epsilon.is_none()));
}

#[test]
fn reported_epsilon_is_the_accountants_and_grows_with_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut eps = Vec::new();
    for mode in ["server", "client"] {
        let cfg = small_config(
            mode,
            dir.path(),
            &[
                "privacy.clip_norm=0.05",
                "privacy.noise_multiplier=1.5",
                "privacy.delta=1e-4",
                &format!("privacy.mode={mode}"),
                "aggregator.weighting=uniform",
            ],
        );
        let summary = run_experiment(&cfg, &mut Quiet).unwrap();
        let metrics = read_metrics(&cfg);
        // 2 of 4 clients per round: q = 0.5.
        for m in &metrics {
            let expected = epsilon_for(0.5, 1.5, m.round as u64, 1e-4).unwrap().epsilon;
            let got = m.epsilon.unwrap();
            assert!(
                (got - expected).abs() <= 1e-9 * expected,
                "{got} vs {expected}"
            );
        }
        assert!(metrics.windows(2).all(|w| w[1].epsilon > w[0].epsilon));
        let report = summary.privacy.unwrap();
        assert_eq!(report.mode, mode);
        assert_eq!(report.steps, 3);
        assert_eq!(report.epsilon, metrics.last().unwrap().epsilon.unwrap());
        assert!(summary.final_eval_loss.is_finite());
        eps.push(summary.final_eval_loss);
    }
    // Same σ, S and seed but the noise enters at different places: different models.
    assert_ne!(eps[0], eps[1]);
}

#[test]
fn client_mode_noise_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, sigma: f64| {
        let cfg = small_config(
            name,
            dir.path(),
            &[
                "privacy.clip_norm=0.05",
                &format!("privacy.noise_multiplier={sigma}"),
                "privacy.mode=client",
            ],
        );
        run_experiment(&cfg, &mut Quiet).unwrap().final_eval_loss
    };
    let noised = run("a", 1.0);
    assert_eq!(noised, run("b", 1.0), "same seed, same noise");
    assert_ne!(noised, run("c", 0.0), "the noise changes the model");
}

#[test]
fn bad_privacy_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (set, key) in [
        ("privacy.clip_norm=-1", "privacy.clip_norm"),
        ("privacy.mode=local", "privacy.mode"),
        ("privacy.delta=2", "privacy.delta"),
    ] {
        let text = format!(
            "[experiment]\nname = \"x\"\noutput_dir = \"{}\"\n[federation]\nrounds = 1\nclients = 2\nclients_per_round = 1\n[privacy]\nclip_norm = 1.0\nnoise_multiplier = 1.0\n",
            dir.path().display()
        );
        let err = cgfed_runner::ExperimentConfig::from_toml_str(&text, &[set.to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
}
