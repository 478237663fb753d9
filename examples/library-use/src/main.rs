//! cgfed as a library: build an experiment config in code, run it once per compressor on
//! the same seed and data split, and print a side-by-side table.
//!
//! ```sh
//! cargo run --release -p library-use
//! ```

use cgfed_plugins as _; // link every plugin so the registry can find them by name
use cgfed_runner::{run_experiment, ExperimentConfig, Quiet};

const BASE: &str = r#"
[experiment]
name = "library-use"
seed = 1
output_dir = "runs/library-use"

[data]
seq_len = 48
max_train_examples = 512
max_eval_examples = 128

[federation]
rounds = 4
clients = 6
clients_per_round = 3

[trainer]
lr = 0.01
local_steps = 6
"#;

fn main() -> anyhow::Result<()> {
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>7} {:>8}",
        "variant", "eval_0", "eval_end", "uplink_B", "ratio", "snr_db"
    );
    for compressor in ["none", "fp16"] {
        let cfg = ExperimentConfig::from_toml_str(
            BASE,
            &[
                format!("compressor.name={compressor}"),
                format!("experiment.name={compressor}"),
            ],
        )?;
        let s = run_experiment(&cfg, &mut Quiet)?;
        println!(
            "{:<8} {:>10.4} {:>10.4} {:>12} {:>7.3} {:>8}",
            compressor,
            s.initial_eval_loss,
            s.final_eval_loss,
            s.total_uplink_bytes,
            s.ratio,
            s.mean_snr_db
                .map_or("exact".to_string(), |v| format!("{v:.1}"))
        );
    }
    Ok(())
}
