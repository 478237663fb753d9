//! Every file in `configs/` parses and builds (data, model and plugins), without running.

use cgfed_plugins as _;
use cgfed_runner::{load_config, Experiment};

#[test]
fn every_config_file_parses_and_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = load_config(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        seen += 1;
        // Tests never download: a config naming a model asset that is not in the cache is
        // parsed and validated, but only built when the asset is there.
        let model: cgfed_model::ModelConfig =
            cgfed_core::config::parse_table(&cfg.model, "model").unwrap_or_else(|e| panic!("{e}"));
        model
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(name) = &model.asset {
            let spec = cgfed_model::assets::find_asset(name).unwrap_or_else(|e| panic!("{e}"));
            if !cgfed_model::assets::is_present(spec) {
                eprintln!("{}: asset {name} not present, not built", path.display());
                continue;
            }
        }
        Experiment::build(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(seen >= 1, "no config files found in {}", dir.display());
}
