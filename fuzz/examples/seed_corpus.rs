//! Writes a seed corpus of valid inputs for both fuzz targets:
//!
//! ```sh
//! cd fuzz && cargo run --release --example seed_corpus   # -> corpus/decoders, corpus/indices
//! ```
//!
//! `decoders`: for every config of `cgfed_fuzz::CONFIGS` and every layout, the payloads of
//! rounds 0 and 3 (one client state carried across them, so warm starts and residuals show
//! up) for a random update, a sparse one and a zero one. `indices`: `put_indices` output
//! (the cheapest code) plus hand-written bitmap and delta-varint codes of the same sets, for
//! several `n` in both `n` encodings.

use std::fs;
use std::path::Path;

use cgfed_core::candle_core::Device;
use cgfed_core::wire::{indices, varint};
use cgfed_core::{ClientState, Payload, Update};
use cgfed_fuzz::{compressors, ctx, layout_byte, layouts, CONFIGS};

fn random_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * scale)
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    if let Err(e) = fs::write(&path, bytes) {
        panic!("write {}: {e}", path.display());
    }
}

fn decoders(dir: &Path) -> usize {
    let mut written = 0;
    for (ci, built) in compressors().iter().enumerate() {
        let comp = match built {
            Ok(c) => c,
            Err(e) => {
                println!("note: config {ci} ({:?}) skipped: {e}", CONFIGS[ci]);
                continue;
            }
        };
        for (li, layout) in layouts().iter().enumerate() {
            let n = layout.numel();
            let random = random_values(n, (ci * 31 + li) as u64 + 1, 1e-2);
            let sparse: Vec<f32> = random
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 5 == 0 { v * 1e3 } else { 0.0 })
                .collect();
            let zeros = vec![0.0; n];
            for (kind, values) in [("rand", &random), ("sparse", &sparse), ("zero", &zeros)] {
                let update = match Update::from_flat(layout, values, &Device::Cpu) {
                    Ok(u) => u,
                    Err(e) => panic!("update: {e}"),
                };
                let mut state = ClientState::default();
                for round in [0, 3] {
                    let c = ctx(layout, round);
                    let payload = match comp.compress(&update, &mut state, &c) {
                        Ok(p) => p,
                        Err(e) => {
                            println!("note: config {ci} layout {li} round {round}: {e}");
                            continue;
                        }
                    };
                    if let Err(e) = comp.decompress(&payload, &c) {
                        println!(
                            "BUG? config {ci} layout {li} round {round}: own payload rejected: {e}"
                        );
                    }
                    let mut input = vec![ci as u8, layout_byte(li, round)];
                    input.extend_from_slice(payload.as_bytes());
                    write(dir, &format!("c{ci:02}-l{li}-r{round}-{kind}"), &input);
                    written += 1;
                }
            }
        }
    }
    written
}

fn index_input(n: usize, body: &[u8]) -> Vec<u8> {
    let mut v = if n <= u16::MAX as usize {
        let mut v = vec![0u8];
        v.extend_from_slice(&(n as u16).to_le_bytes());
        v
    } else {
        let mut v = vec![1u8];
        v.extend_from_slice(&(n as u32).to_le_bytes());
        v
    };
    v.extend_from_slice(body);
    v
}

fn indices_corpus(dir: &Path) -> usize {
    let mut written = 0;
    for (ni, &n) in [1usize, 7, 8, 100, 1000, 65_535, 100_000]
        .iter()
        .enumerate()
    {
        let mut s = (n as u64) | 1;
        let mut sets: Vec<Vec<u32>> = vec![Vec::new(), (0..n.min(64) as u32).collect()];
        for k in [1usize, 3, n / 100, n / 10, n / 2, n - n / 8] {
            let k = k.clamp(1, n);
            let mut picked = vec![false; n];
            let mut count = 0;
            while count < k {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let i = (s % n as u64) as usize;
                if !picked[i] {
                    picked[i] = true;
                    count += 1;
                }
            }
            sets.push((0..n as u32).filter(|&i| picked[i as usize]).collect());
        }
        for (si, set) in sets.iter().enumerate() {
            // The cheapest code, as put_indices writes it.
            let mut b = match Payload::builder("i") {
                Ok(b) => b,
                Err(e) => panic!("{e}"),
            };
            if let Err(e) = indices::put_indices(&mut b, set, n) {
                panic!("put_indices: {e}");
            }
            let bytes = b.finish().into_bytes();
            let body = &bytes[Payload::header_len("i")..];
            write(dir, &format!("n{ni}-s{si}-cheapest"), &index_input(n, body));
            // Bitmap and delta-varint by hand (small sets only for the bitmap).
            if n <= 1000 {
                let mut body = Vec::new();
                varint::encode((set.len() as u64) << 2, &mut body);
                let start = body.len();
                body.resize(start + n.div_ceil(8), 0);
                for &i in set {
                    body[start + i as usize / 8] |= 1 << (i % 8);
                }
                write(dir, &format!("n{ni}-s{si}-bitmap"), &index_input(n, &body));
                written += 1;
            }
            let mut body = Vec::new();
            varint::encode((set.len() as u64) << 2 | 1, &mut body);
            let mut next = 0u32;
            for &i in set {
                varint::encode((i - next) as u64, &mut body);
                next = i + 1;
            }
            write(dir, &format!("n{ni}-s{si}-delta"), &index_input(n, &body));
            written += 2;
        }
    }
    written
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (dec, idx) = (root.join("decoders"), root.join("indices"));
    for d in [&dec, &idx] {
        if let Err(e) = fs::create_dir_all(d) {
            panic!("mkdir {}: {e}", d.display());
        }
    }
    let a = decoders(&dec);
    let b = indices_corpus(&idx);
    println!(
        "wrote {a} inputs to {} and {b} to {}",
        dec.display(),
        idx.display()
    );
}
