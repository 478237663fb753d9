//! `load_gguf` on small GGUF files written here from a random tiny model's HF weights,
//! the way llama.cpp's converter writes them (llama.cpp names, Q/K rows permuted for
//! interleaved RoPE, dims reversed by candle's writer).
//!
//! - F32 round trip: logits equal the original model's within 1e-5.
//! - F16 / Q8_0 / Q4_0 / Q4_1: within a tolerance relative to the largest logit, set a few
//!   times above the measured error (measured max |Δ| / max |logit| on this model: F16
//!   ≈3e-4, Q8_0 ≈9e-3, Q4_0/Q4_1 ≈0.14).
//! - The permutation convention is llama.cpp's: candle-transformers' `quantized_llama`
//!   (interleaved RoPE on the GGUF weights as stored) gives the same last-position logits
//!   as our model on the un-permuted weights.
//! - Bad files (truncated, missing tensor, wrong shape, other architecture) are errors
//!   naming the file and the tensor.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Tensor};
use cgfed_model::gguf::{hf_to_gguf_name, load_gguf, permute_qk, unpermute_qk};
use cgfed_model::model::random_weights;
use cgfed_model::{Llama, LlamaSpec, Weights};

/// Hidden 64 and FFN 128 keep every matrix row a multiple of 32 (the Q4/Q8 block size).
fn spec(tied: bool) -> LlamaSpec {
    LlamaSpec {
        vocab_size: 96,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_seq_len: 64,
        tie_embeddings: tied,
    }
}

fn metadata(s: &LlamaSpec, arch: &str) -> Vec<(String, Value)> {
    let u = |v: usize| Value::U32(v as u32);
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("llama.embedding_length".into(), u(s.hidden_size)),
        ("llama.block_count".into(), u(s.num_layers)),
        ("llama.attention.head_count".into(), u(s.num_heads)),
        ("llama.attention.head_count_kv".into(), u(s.num_kv_heads)),
        ("llama.feed_forward_length".into(), u(s.intermediate_size)),
        (
            "llama.rope.freq_base".into(),
            Value::F32(s.rope_theta as f32),
        ),
        ("llama.rope.dimension_count".into(), u(s.head_dim())),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(s.rms_norm_eps as f32),
        ),
        ("llama.context_length".into(), u(s.max_seq_len)),
    ]
}

/// GGUF tensors (llama.cpp names, Q/K permuted), matrices stored as `qtype`, norms as F32.
fn gguf_tensors(
    s: &LlamaSpec,
    w: &Weights,
    qtype: GgmlDType,
) -> anyhow::Result<Vec<(String, QTensor)>> {
    let mut out = Vec::new();
    for (hf, t) in w {
        let name = hf_to_gguf_name(hf).expect("every HF weight has a GGUF name");
        let t = if name.ends_with("attn_q.weight") {
            permute_qk(t, s.num_heads)?
        } else if name.ends_with("attn_k.weight") {
            permute_qk(t, s.num_kv_heads)?
        } else {
            t.clone()
        };
        let dt = if t.rank() == 1 { GgmlDType::F32 } else { qtype };
        out.push((name, QTensor::quantize(&t, dt)?));
    }
    Ok(out)
}

fn write(path: &Path, md: &[(String, Value)], tensors: &[(String, QTensor)]) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md, &ts)?;
    Ok(())
}

fn ids() -> anyhow::Result<Tensor> {
    let ids: Vec<u32> = (0..24u32).map(|i| (i * 37 + 5) % 96).collect();
    Ok(Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?)
}

/// (max |Δ logits|, max |logit|) between the original model and the GGUF round trip.
fn round_trip(tied: bool, qtype: GgmlDType) -> anyhow::Result<(f32, f32)> {
    let dev = Device::Cpu;
    let s = spec(tied);
    let w = random_weights(&s, 7, DType::F32, &dev)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.gguf");
    write(&path, &metadata(&s, "llama"), &gguf_tensors(&s, &w, qtype)?)?;
    let g = load_gguf(&path, DType::F32, &dev)?;
    assert_eq!(g.spec, s);
    assert!(g.tokenizer.is_none());
    assert!(!g.add_bos_token);
    let want = Llama::from_weights(s.clone(), &w)?.forward(&ids()?)?;
    let got = Llama::from_weights(g.spec, &g.weights)?.forward(&ids()?)?;
    let diff: f32 = (want.clone() - got)?.abs()?.max_all()?.to_scalar()?;
    let scale: f32 = want.abs()?.max_all()?.to_scalar()?;
    Ok((diff, scale))
}

#[test]
fn f32_round_trip_is_exact_tied_and_untied() -> anyhow::Result<()> {
    for tied in [true, false] {
        let (diff, _) = round_trip(tied, GgmlDType::F32)?;
        assert!(diff < 1e-5, "tied={tied}: max |Δ| = {diff}");
    }
    Ok(())
}

#[test]
fn quantized_round_trips_are_close() -> anyhow::Result<()> {
    for (qtype, rel_tol) in [
        (GgmlDType::F16, 2e-3),
        (GgmlDType::Q8_0, 3e-2),
        (GgmlDType::Q4_0, 0.35),
        (GgmlDType::Q4_1, 0.35),
    ] {
        for tied in [true, false] {
            let (diff, scale) = round_trip(tied, qtype)?;
            let rel = diff / scale;
            println!("{qtype:?} tied={tied}: max |Δ| {diff:.2e}, relative {rel:.2e}");
            assert!(
                rel < rel_tol,
                "{qtype:?} tied={tied}: max |Δ| / max |logit| = {rel} (≥ {rel_tol})"
            );
        }
    }
    Ok(())
}

#[test]
fn permutation_round_trips() -> anyhow::Result<()> {
    let w = Tensor::arange(0f32, 64.0 * 3.0, &Device::Cpu)?.reshape((64, 3))?;
    let p = permute_qk(&w, 4)?;
    // Head 0, interleaved row 1 is HF row head_dim / 2 = 8 (the first of the second half).
    assert_eq!(p.i(1)?.to_vec1::<f32>()?, w.i(8)?.to_vec1::<f32>()?);
    let back = unpermute_qk(&p, 4)?;
    assert_eq!(back.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
    assert!(permute_qk(&w, 5).is_err());
    Ok(())
}

/// candle-transformers' `quantized_llama` reads the GGUF weights as stored (permuted) and
/// applies interleaved RoPE; it must agree with our model on the un-permuted weights.
#[test]
fn matches_quantized_llama_reference() -> anyhow::Result<()> {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let dev = Device::Cpu;
    let s = spec(false);
    let w = random_weights(&s, 11, DType::F32, &dev)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.gguf");
    write(
        &path,
        &metadata(&s, "llama"),
        &gguf_tensors(&s, &w, GgmlDType::F32)?,
    )?;
    let mut f = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut f)?;
    let mut reference = ModelWeights::from_gguf(content, &mut f, &dev)?;
    let g = load_gguf(&path, DType::F32, &dev)?;
    let ours = Llama::from_weights(g.spec, &g.weights)?;
    let ids = ids()?;
    let n = ids.dim(1)?;
    let want = reference.forward(&ids, 0)?.squeeze(0)?;
    let got = ours.forward(&ids)?.i((0, n - 1))?;
    let diff: f32 = (want - got)?.abs()?.max_all()?.to_scalar()?;
    assert!(diff < 1e-4, "max |Δ| vs quantized_llama = {diff}");
    Ok(())
}

fn expect_err(path: &Path, needles: &[&str]) -> anyhow::Result<()> {
    let err = load_gguf(path, DType::F32, &Device::Cpu)
        .err()
        .ok_or_else(|| anyhow::anyhow!("loading {} should fail", path.display()))?
        .to_string();
    println!("{err}");
    assert!(
        err.contains(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error does not mention `{n}`: {err}");
    }
    Ok(())
}

#[test]
fn bad_files_name_file_and_tensor() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let s = spec(true);
    let w = random_weights(&s, 3, DType::F32, &dev)?;
    let md = metadata(&s, "llama");
    let tensors = gguf_tensors(&s, &w, GgmlDType::F32)?;
    let dir = tempfile::tempdir()?;

    // Truncated: the last tensor in the file loses its tail.
    let path = dir.path().join("truncated.gguf");
    write(&path, &md, &tensors)?;
    let len = std::fs::metadata(&path)?.len();
    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.set_len(len - 100)?;
    drop(f);
    let last = &tensors.last().expect("tensors").0;
    expect_err(&path, &[last.as_str(), "bytes"])?;

    // Truncated inside the header.
    let path = dir.path().join("header.gguf");
    write(&path, &md, &tensors)?;
    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.set_len(200)?;
    drop(f);
    expect_err(&path, &["GGUF"])?;

    // Missing tensor.
    let path = dir.path().join("missing.gguf");
    let fewer: Vec<_> = tensors
        .iter()
        .filter(|(n, _)| n != "blk.1.ffn_up.weight")
        .map(|(n, t)| {
            Ok((
                n.clone(),
                QTensor::quantize(&t.dequantize(&dev)?, t.dtype())?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    write(&path, &md, &fewer)?;
    expect_err(
        &path,
        &[
            "missing tensor `blk.1.ffn_up.weight`",
            "model.layers.1.mlp.up_proj.weight",
        ],
    )?;

    // Wrong shape.
    let path = dir.path().join("shape.gguf");
    let mut wrong = gguf_tensors(&s, &w, GgmlDType::F32)?;
    for (n, t) in wrong.iter_mut() {
        if n == "blk.0.attn_v.weight" {
            *t = QTensor::quantize(&Tensor::zeros((64, 64), DType::F32, &dev)?, GgmlDType::F32)?;
        }
    }
    write(&path, &md, &wrong)?;
    expect_err(
        &path,
        &["blk.0.attn_v.weight", "[64, 64]", "expected [32, 64]"],
    )?;

    // Other architecture.
    let path = dir.path().join("arch.gguf");
    let mut other = md.clone();
    other[0].1 = Value::String("gpt2".into());
    write(&path, &other, &tensors)?;
    expect_err(&path, &["architecture `gpt2`"])?;

    // Missing metadata.
    let path = dir.path().join("meta.gguf");
    let fewer_md: Vec<_> = md
        .iter()
        .filter(|(k, _)| k != "llama.block_count")
        .cloned()
        .collect();
    write(&path, &fewer_md, &tensors)?;
    expect_err(&path, &["llama.block_count"])?;

    // A tensor type candle cannot read (20 = IQ4_NL): patch the type id in the header.
    let path = dir.path().join("qtype.gguf");
    write(&path, &md, &tensors)?;
    let mut bytes = std::fs::read(&path)?;
    let name = b"blk.0.attn_q.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor name in header");
    let ty = at + name.len() + 4 + 2 * 8;
    assert_eq!(bytes[ty..ty + 4], 0u32.to_le_bytes(), "F32 type id");
    bytes[ty..ty + 4].copy_from_slice(&20u32.to_le_bytes());
    std::fs::write(&path, bytes)?;
    expect_err(&path, &["blk.0.attn_q.weight", "type id 20"])?;

    // Not a file at all.
    let missing = dir.path().join("nope.gguf");
    let err = load_gguf(&missing, DType::F32, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.gguf"), "{err}");
    Ok(())
}

#[test]
fn loads_in_requested_dtype() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let s = spec(true);
    let w = random_weights(&s, 5, DType::F32, &dev)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.gguf");
    write(
        &path,
        &metadata(&s, "llama"),
        &gguf_tensors(&s, &w, GgmlDType::Q8_0)?,
    )?;
    let g = load_gguf(&path, DType::F64, &dev)?;
    assert!(g.weights.values().all(|t| t.dtype() == DType::F64));
    assert_eq!(g.weights.len(), w.len());
    Ok(())
}
