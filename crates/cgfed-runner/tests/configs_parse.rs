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
        Experiment::build(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 1, "no config files found in {}", dir.display());
}
