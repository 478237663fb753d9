//! Reading wheels (zip) and sdists (`.tar.gz`): safe member names, extraction of one member
//! or of a tree, SHA-256 verification, temporary files renamed into place.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cgfed_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::{marker_path, FetchEvent};

/// The kind of archive an asset comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A wheel (`.whl`, a zip archive).
    Wheel,
    /// A source distribution as a gzip-compressed tarball (`.tar.gz`).
    Sdist,
}

impl ArchiveFormat {
    /// The format of the archive at `path`, from its name: `.whl` or `.zip` is a
    /// [`Wheel`](ArchiveFormat::Wheel), `.tar.gz` or `.tgz` an [`Sdist`](ArchiveFormat::Sdist).
    pub fn of_path(path: &Path) -> Option<ArchiveFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".whl") || name.ends_with(".zip") {
            Some(ArchiveFormat::Wheel)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveFormat::Sdist)
        } else {
            None
        }
    }

    /// The `pip download` option that makes pip fetch this format: `--only-binary :all:`
    /// or `--no-binary :all:`.
    pub fn pip_flag(self) -> &'static str {
        match self {
            ArchiveFormat::Wheel => "--only-binary :all:",
            ArchiveFormat::Sdist => "--no-binary :all:",
        }
    }
}

/// What [`extract_tree`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Regular files extracted.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
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

/// [`extract_member_from`] for a wheel (zip archive).
pub fn extract_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    expected_sha256: &str,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    extract_member_from(
        wheel,
        ArchiveFormat::Wheel,
        member,
        dest,
        expected_sha256,
        progress,
    )
}

/// Extract `member` of `archive` to `dest`, hashing it on the way, and verify the hash
/// against `expected_sha256` (lowercase hex). The bytes go to a temporary file next to
/// `dest` that is renamed onto `dest` only when the hash matches; then the marker
/// ([`marker_path`]) is written. On a mismatch the temporary file is removed and the error
/// names both hashes and the archive.
///
/// Reports [`FetchEvent::Bytes`] about every MiB.
pub fn extract_member_from(
    archive: &Path,
    format: ArchiveFormat,
    member: &str,
    dest: &Path,
    expected_sha256: &str,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    let want = normalize_member(member)
        .map_err(|why| Error::InvalidInput(format!("asset member `{member}`: {why}")))?;
    let mut found = false;
    let mut on_member = |m: Member<'_>| -> Result<bool> {
        if m.kind != MemberKind::File {
            return Err(Error::InvalidInput(format!(
                "{}: member `{member}` is not a regular file",
                archive.display()
            )));
        }
        found = true;
        write_verified(
            archive,
            member,
            m.reader,
            m.size,
            dest,
            expected_sha256,
            progress,
        )?;
        Ok(false)
    };
    visit_members(
        archive,
        format,
        &mut |name| Ok(name == want),
        &mut on_member,
        &mut |_, _| {},
    )?;
    if !found {
        return Err(Error::InvalidInput(format!(
            "{}: no member `{member}` in the archive",
            archive.display()
        )));
    }
    Ok(())
}

/// Extract the tree under `prefix` of `archive` to the directory `dest`, after checking the
/// archive's SHA-256 against `expected_sha256` (lowercase hex).
///
/// `prefix` is a directory inside the archive (`pkg/data/`; empty for the whole archive);
/// every regular file and directory under it is extracted with its path relative to
/// `prefix`, or only those under one of the `include` subtrees (relative to `prefix`) when
/// `include` is not empty. Member names are normalised (`./`, repeated `/`); a member with
/// an absolute path or a `..` component anywhere in the archive is an error, as is a
/// symbolic link, hard link or special file in the selected tree, or a tree with no file.
///
/// The files go to a temporary directory next to `dest`, which replaces `dest` (and its
/// marker) only when every member was written; the marker ([`marker_path`]) holding the
/// hash is written last. On any error, nothing is left but what was there before — a stale
/// `dest` without a valid marker, if any.
///
/// Reports [`FetchEvent::Step`]s, and [`FetchEvent::Bytes`] about every MiB while
/// extracting (uncompressed bytes for a wheel, compressed bytes read for an sdist).
pub fn extract_tree(
    archive: &Path,
    format: ArchiveFormat,
    prefix: &str,
    include: &[&str],
    dest: &Path,
    expected_sha256: &str,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<TreeStats> {
    let bad_spec = |what: &str, why: String| Error::InvalidInput(format!("{what}: {why}"));
    let prefix_n =
        normalize_member(prefix).map_err(|why| bad_spec(&format!("prefix `{prefix}`"), why))?;
    let include_n = include
        .iter()
        .map(|i| normalize_member(i).map_err(|why| bad_spec(&format!("subtree `{i}`"), why)))
        .collect::<Result<Vec<_>>>()?;

    progress(FetchEvent::Step(format!(
        "verifying sha256 of {}",
        archive.display()
    )));
    let got = sha256_file(archive)?;
    if !got.eq_ignore_ascii_case(expected_sha256) {
        return Err(Error::InvalidInput(format!(
            "sha256 mismatch for {}: expected {expected_sha256}, got {got}",
            archive.display()
        )));
    }

    let parent = parent_dir(dest);
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = part_path(dest);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    progress(FetchEvent::Step(format!(
        "extracting {} to {}",
        if prefix.is_empty() {
            "the archive"
        } else {
            prefix
        },
        dest.display()
    )));
    let result = (|| {
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let stats = extract_selected(archive, format, &prefix_n, &include_n, &tmp, progress)?;
        if stats.files == 0 {
            return Err(Error::InvalidInput(format!(
                "{}: no file under `{prefix}`{}",
                archive.display(),
                if include.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", include.join(", "))
                }
            )));
        }
        // Replace a stale tree: its marker goes first, so a crash in between leaves a tree
        // without a valid marker, which is not present.
        let marker = marker_path(dest);
        if marker.exists() {
            fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
        }
        if dest.is_dir() {
            fs::remove_dir_all(dest).map_err(|e| Error::io(dest, e))?;
        } else if dest.exists() {
            fs::remove_file(dest).map_err(|e| Error::io(dest, e))?;
        }
        fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
        fs::write(
            &marker,
            format!("{}\n", expected_sha256.to_ascii_lowercase()),
        )
        .map_err(|e| Error::io(&marker, e))?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Write the selected members of `archive` under `root`.
fn extract_selected(
    archive: &Path,
    format: ArchiveFormat,
    prefix: &str,
    include: &[String],
    root: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<TreeStats> {
    let relative = |name: &str| -> Option<String> {
        let rel = if prefix.is_empty() {
            name
        } else {
            name.strip_prefix(prefix)?.strip_prefix('/')?
        };
        let keep = include.is_empty()
            || include.iter().any(|i| {
                rel == i
                    || rel
                        .strip_prefix(i.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            });
        (keep && !rel.is_empty()).then(|| rel.to_string())
    };
    let mut stats = TreeStats::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut on_member = |m: Member<'_>| -> Result<bool> {
        let Some(rel) = relative(&m.name) else {
            return Ok(true);
        };
        let path = root.join(&rel);
        match m.kind {
            MemberKind::Dir => fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?,
            MemberKind::File => {
                let parent = parent_dir(&path);
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                let mut out = File::create(&path).map_err(|e| Error::io(&path, e))?;
                loop {
                    let n = m.reader.read(&mut buf).map_err(|e| {
                        Error::InvalidInput(format!(
                            "{}: cannot read member `{}`: {e}",
                            archive.display(),
                            m.name
                        ))
                    })?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).map_err(|e| Error::io(&path, e))?;
                    stats.bytes += n as u64;
                }
                stats.files += 1;
            }
            MemberKind::Other(what) => {
                return Err(Error::InvalidInput(format!(
                    "{}: member `{}` is a {what}, which assets do not support",
                    archive.display(),
                    m.name
                )))
            }
        }
        Ok(true)
    };
    let mut reported = 0u64;
    visit_members(
        archive,
        format,
        &mut |name| Ok(relative(name).is_some()),
        &mut on_member,
        &mut |done, total| {
            if done == 0 || done >= total || done - reported >= 1 << 20 {
                reported = done;
                progress(FetchEvent::Bytes { done, total });
            }
        },
    )?;
    Ok(stats)
}

/// The type of an archive member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberKind {
    File,
    Dir,
    /// A symbolic link, hard link or special file (named for errors).
    Other(&'static str),
}

/// A selected member, its data readable from `reader`.
struct Member<'a> {
    /// Normalised name ([`normalize_member`]).
    name: String,
    kind: MemberKind,
    /// Uncompressed size.
    size: u64,
    reader: &'a mut dyn Read,
}

/// Walk the members of `archive`: every name is normalised (an unsafe one is an error),
/// `select` says whether a member is wanted, `visit` gets the wanted ones and returns
/// whether to go on, `bytes` sees `(done, total)` progress.
fn visit_members(
    archive: &Path,
    format: ArchiveFormat,
    select: &mut dyn FnMut(&str) -> Result<bool>,
    visit: &mut dyn FnMut(Member<'_>) -> Result<bool>,
    bytes: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let unsafe_member = |name: &str, why: String| {
        Error::InvalidInput(format!(
            "{}: refusing archive member `{name}`: {why} (path traversal)",
            archive.display()
        ))
    };
    match format {
        ArchiveFormat::Wheel => {
            let mut z = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
                Error::InvalidInput(format!(
                    "{}: not a readable zip archive: {e}",
                    archive.display()
                ))
            })?;
            let bad_zip = |e: zip::result::ZipError| {
                Error::InvalidInput(format!("{}: {e}", archive.display()))
            };
            // Names from the central directory: check all, select without reading data.
            let mut selected = Vec::new();
            for i in 0..z.len() {
                let raw = z
                    .name_for_index(i)
                    .ok_or_else(|| bad_zip(zip::result::ZipError::FileNotFound))?
                    .map_err(bad_zip)?
                    .into_owned();
                let name = normalize_member(&raw).map_err(|why| unsafe_member(&raw, why))?;
                if select(&name)? {
                    selected.push((i, name));
                }
            }
            let mut total = 0u64;
            for (i, _) in &selected {
                total += z.by_index_raw(*i).map_err(bad_zip)?.size();
            }
            let mut done = 0u64;
            bytes(0, total);
            for (i, name) in selected {
                let mut entry = z.by_index(i).map_err(bad_zip)?;
                let kind = if entry.is_symlink() {
                    MemberKind::Other("symbolic link")
                } else if entry.is_dir() {
                    MemberKind::Dir
                } else {
                    MemberKind::File
                };
                let size = entry.size();
                let mut counting = ProgressReader {
                    inner: &mut entry,
                    done,
                    bytes: &mut *bytes,
                    total,
                };
                let go_on = visit(Member {
                    name,
                    kind,
                    size,
                    reader: &mut counting,
                })?;
                done = counting.done;
                if !go_on {
                    break;
                }
            }
            bytes(total, total);
        }
        ArchiveFormat::Sdist => {
            let total = file.metadata().map_err(|e| Error::io(archive, e))?.len();
            let read = Rc::new(Cell::new(0u64));
            let counted = CountingReader {
                inner: file,
                read: Rc::clone(&read),
            };
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(counted)));
            let bad_tar = |e: std::io::Error| {
                Error::InvalidInput(format!(
                    "{}: not a readable .tar.gz archive: {e}",
                    archive.display()
                ))
            };
            bytes(0, total);
            for entry in tar.entries().map_err(bad_tar)? {
                let mut entry = entry.map_err(bad_tar)?;
                bytes(read.get(), total);
                let et = entry.header().entry_type();
                if et.is_pax_global_extensions()
                    || et.is_pax_local_extensions()
                    || et.is_gnu_longname()
                    || et.is_gnu_longlink()
                {
                    continue;
                }
                let raw_bytes = entry.path_bytes().into_owned();
                let raw = String::from_utf8(raw_bytes).map_err(|e| {
                    Error::InvalidInput(format!(
                        "{}: member name is not UTF-8: {:?}",
                        archive.display(),
                        String::from_utf8_lossy(e.as_bytes())
                    ))
                })?;
                let name = normalize_member(&raw).map_err(|why| unsafe_member(&raw, why))?;
                if !select(&name)? {
                    continue;
                }
                let kind = if et.is_file() || et.is_contiguous() {
                    MemberKind::File
                } else if et.is_dir() {
                    MemberKind::Dir
                } else if et.is_symlink() {
                    MemberKind::Other("symbolic link")
                } else if et.is_hard_link() {
                    MemberKind::Other("hard link")
                } else {
                    MemberKind::Other("special file")
                };
                let size = entry.size();
                if !visit(Member {
                    name,
                    kind,
                    size,
                    reader: &mut entry,
                })? {
                    break;
                }
            }
            bytes(total, total);
        }
    }
    Ok(())
}

/// `name` as a relative path with `/` separators and no empty or `.` components; an error
/// (why) for an absolute path, a drive prefix, a `..` component or a NUL byte.
fn normalize_member(name: &str) -> std::result::Result<String, String> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Err("absolute path".into());
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Err("absolute path (drive prefix)".into());
    }
    if name.contains('\0') {
        return Err("NUL byte in the name".into());
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` component".into()),
            c if c.split('\\').any(|p| p == "..") => return Err("`..` component".into()),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Stream `reader` (`total` bytes) to a temporary file next to `dest`, hashing it, then
/// rename it onto `dest` and write the marker if the hash is `expected_sha256`.
fn write_verified(
    archive: &Path,
    member: &str,
    reader: &mut dyn Read,
    total: u64,
    dest: &Path,
    expected_sha256: &str,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    let parent = parent_dir(dest);
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = part_path(dest);
    let result = (|| {
        let mut out = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let (mut done, mut reported) = (0u64, 0u64);
        progress(FetchEvent::Bytes { done, total });
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                Error::InvalidInput(format!(
                    "{}: cannot read member `{member}`: {e}",
                    archive.display()
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
                archive.display()
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

/// Counts the bytes read through it into a shared cell (compressed progress of an sdist).
struct CountingReader<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Reports uncompressed progress of a wheel's members while they are read.
struct ProgressReader<'a, R: ?Sized> {
    inner: &'a mut R,
    done: u64,
    total: u64,
    bytes: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read + ?Sized> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.bytes)(self.done, self.total);
        Ok(n)
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary sibling of `dest`: `<dest>.part-<pid>`.
fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(format!(".part-{}", std::process::id()));
    PathBuf::from(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
