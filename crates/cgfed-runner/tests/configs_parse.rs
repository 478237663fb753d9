//! Every file in `configs/` parses and builds (data, model and plugins), without running;
//! for a comparison file (`[[variant]]` tables), every variant does.

use cgfed_plugins as _;
use cgfed_runner::{load_comparison, load_config, Experiment, ExperimentConfig};

/// Validate the model table; build everything when the model asset is in the cache (tests
/// never download: a config naming an absent asset is parsed and validated only).
fn check(cfg: &ExperimentConfig, what: &str) {
    let model: cgfed_model::ModelConfig =
        cgfed_core::config::parse_table(&cfg.model, "model").unwrap_or_else(|e| panic!("{e}"));
    model.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(name) = &model.asset {
        let spec = cgfed_model::assets::find_asset(name).unwrap_or_else(|e| panic!("{e}"));
        if !cgfed_model::assets::is_present(spec) {
            eprintln!("{what}: asset {name} not present, not built");
            return;
        }
    }
    Experiment::build(cfg).unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn every_config_file_parses_and_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let (mut seen, mut comparisons) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("[[variant]]") {
            comparisons += 1;
            let cmp = load_comparison(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            for (i, v) in cmp.variants.iter().enumerate() {
                let cfg = cmp.config(i).unwrap_or_else(|e| panic!("{e}"));
                check(&cfg, &format!("{} variant {}", path.display(), v.name));
            }
        } else {
            let cfg = load_config(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            check(&cfg, &path.display().to_string());
        }
    }
    assert!(seen >= 1, "no config files found in {}", dir.display());
    assert!(comparisons >= 1, "configs/quickstart.toml is a comparison");
}
