//! Loading a llama.cpp GGUF file ([`load_gguf`]) into HF-named [`Weights`], a
//! [`LlamaSpec`] and, when the file carries one, its tokenizer.
//!
//! # Format notes
//!
//! - Tensor names follow llama.cpp (`token_embd.weight`, `blk.3.attn_q.weight`, …) and are
//!   mapped to HF names ([`gguf_to_hf_name`], [`hf_to_gguf_name`]); an absent
//!   `output.weight` means tied embeddings.
//! - GGUF stores dims as `[ne0, ne1]` (fastest first); candle's reader already reverses
//!   them, so a matrix arrives as `[rows, cols]` = `[out, in]`, the HF layout.
//! - Every tensor is dequantized to f32 with candle ([`QTensor::dequantize`]: F32, F16,
//!   BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and the K-quants), then converted to the
//!   requested dtype.
//! - llama.cpp's `convert_hf_to_gguf.py` permutes the rows of `q_proj` / `k_proj` for
//!   interleaved RoPE (`permute(w, n_head)`); [`unpermute_qk`] undoes it so the weights
//!   work with this crate's HF-layout (rotate-half) RoPE. [`permute_qk`] is the forward
//!   permutation, for writing GGUF files in tests.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! let m = cgfed_model::gguf::load_gguf(
//!     std::path::Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"),
//!     DType::F32,
//!     &Device::Cpu,
//! )?;
//! let model = cgfed_model::Llama::from_weights(m.spec.clone(), &m.weights)?;
//! # Ok::<(), cgfed_core::Error>(())
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use cgfed_core::{Error, Result};

use crate::config::LlamaSpec;
use crate::gguf_tokenizer::{add_bos_token, tokenizer_from_gguf};
use crate::model::{weight_shapes, Weights};
use crate::tokenizer::HfTokenizer;

/// A model read from a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufModel {
    /// The shape, from the `llama.*` metadata (vocabulary size from the embedding rows).
    pub spec: LlamaSpec,
    /// Every base weight under its HF name, dequantized, in the requested dtype, with
    /// `q_proj` / `k_proj` in the HF row order. Ready for
    /// [`Llama::from_weights`](crate::Llama::from_weights).
    pub weights: Weights,
    /// The tokenizer rebuilt from the `tokenizer.ggml.*` metadata, if the file has one.
    pub tokenizer: Option<HfTokenizer>,
    /// Whether the model expects BOS in front of every sequence
    /// (`tokenizer.ggml.add_bos_token`, default false).
    pub add_bos_token: bool,
}

/// Read a LLaMA GGUF file: shape, weights (dequantized to f32, then converted to `dtype`
/// and placed on `device`) and tokenizer.
///
/// Errors name the file and, where one is concerned, the tensor: unreadable or truncated
/// file, an architecture other than `llama`, missing metadata, a missing, unexpected or
/// wrongly shaped tensor, a quantization type candle cannot dequantize, an unsupported
/// tokenizer.
pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<GgufModel> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        // candle rejects an unknown tensor type without naming the tensor: find it.
        let detail = match unsupported_tensor_type(path) {
            Some((name, id)) => format!(
                "tensor `{name}` has GGML type id {id}, which cannot be dequantized \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K..Q8_K)"
            ),
            None => format!("not a readable GGUF file: {e}"),
        };
        Error::InvalidInput(detail).in_file(path)
    })?;
    load_content(&content, &mut reader, dtype, device).map_err(|e| e.in_file(path))
}

fn load_content(
    content: &Content,
    reader: &mut BufReader<File>,
    dtype: DType,
    device: &Device,
) -> Result<GgufModel> {
    let md = &content.metadata;
    let arch = meta_str(md, "general.architecture")?;
    if arch != "llama" {
        return Err(Error::InvalidInput(format!(
            "architecture `{arch}` is not supported (general.architecture must be `llama`)"
        )));
    }
    let infos = &content.tensor_infos;
    let embed = infos.get("token_embd.weight").ok_or_else(|| {
        Error::InvalidInput("missing tensor `token_embd.weight` (model.embed_tokens.weight)".into())
    })?;
    let vocab_size = match embed.shape.dims() {
        [rows, _] => *rows,
        dims => {
            return Err(Error::InvalidInput(format!(
                "tensor `token_embd.weight` has shape {dims:?}, expected [vocab, hidden]"
            )))
        }
    };
    let tied = !infos.contains_key("output.weight");
    let spec = spec_from_metadata(md, vocab_size, tied)?;

    let expected = weight_shapes(&spec);
    let wanted: BTreeSet<String> = expected
        .iter()
        .filter_map(|(hf, _)| hf_to_gguf_name(hf))
        .collect();
    let mut unexpected: Vec<&str> = infos
        .keys()
        .map(String::as_str)
        .filter(|k| !wanted.contains(*k))
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort_unstable();
        return Err(Error::InvalidInput(format!(
            "unexpected tensor `{}` for a {}-layer llama model (e.g. `rope_freqs.weight` means \
             RoPE scaling, which is not supported)",
            unexpected.join("`, `"),
            spec.num_layers
        )));
    }

    let mut weights = Weights::new();
    for (hf, shape) in &expected {
        let name = hf_to_gguf_name(hf)
            .ok_or_else(|| Error::Other(format!("no GGUF name for weight `{hf}`")))?;
        let info = infos
            .get(&name)
            .ok_or_else(|| Error::InvalidInput(format!("missing tensor `{name}` ({hf})")))?;
        if info.shape.dims() != shape.as_slice() {
            return Err(Error::InvalidInput(format!(
                "tensor `{name}` ({hf}) has shape {:?} (GGUF ne order {:?}), expected {shape:?}",
                info.shape.dims(),
                info.shape.dims().iter().rev().collect::<Vec<_>>()
            )));
        }
        let tensor_err = |what: &str, e: candle_core::Error| {
            Error::InvalidInput(format!(
                "tensor `{name}` ({:?}): {what}: {e}",
                info.ggml_dtype
            ))
        };
        let q: QTensor = info
            .read(reader, content.tensor_data_offset, device)
            .map_err(|e| tensor_err("cannot read", e))?;
        let mut t = q
            .dequantize(device)
            .map_err(|e| tensor_err("cannot dequantize", e))?;
        if name.ends_with(".attn_q.weight") {
            t = unpermute_qk(&t, spec.num_heads)?;
        } else if name.ends_with(".attn_k.weight") {
            t = unpermute_qk(&t, spec.num_kv_heads)?;
        }
        weights.insert(hf.clone(), t.to_dtype(dtype)?);
    }

    let tokenizer = tokenizer_from_gguf(md)?;
    if let Some(tok) = &tokenizer {
        let n = cgfed_core::TextTokenizer::vocab_size(tok);
        if n > vocab_size {
            return Err(Error::InvalidInput(format!(
                "tokenizer has {n} tokens but `token_embd.weight` only {vocab_size} rows"
            )));
        }
    }
    Ok(GgufModel {
        spec,
        weights,
        tokenizer,
        add_bos_token: add_bos_token(md)?,
    })
}

/// GGML type ids candle can read and dequantize (`GgmlDType::from_u32`).
const SUPPORTED_TYPE_IDS: [u32; 15] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];

/// The first tensor whose GGML type id candle does not support, with that id, from a
/// minimal re-parse of the GGUF header (`None` if the header cannot be parsed or every
/// type is supported).
fn unsupported_tensor_type(path: &Path) -> Option<(String, u32)> {
    let mut h = HeaderScan {
        r: BufReader::new(File::open(path).ok()?),
        v1: false,
    };
    if h.u32()? != 0x4655_4747 {
        return None;
    }
    h.v1 = h.u32()? == 1;
    let n_tensors = h.len()?;
    let n_kv = h.len()?;
    for _ in 0..n_kv {
        h.string()?;
        let ty = h.u32()?;
        h.skip_value(ty, 0)?;
    }
    for _ in 0..n_tensors {
        let name = h.string()?;
        let n_dims = h.u32()?;
        for _ in 0..n_dims.min(8) {
            h.len()?;
        }
        let ty = h.u32()?;
        h.skip(8)?;
        if !SUPPORTED_TYPE_IDS.contains(&ty) {
            return Some((name, ty));
        }
    }
    None
}

/// A forward-only reader of GGUF header fields (little-endian; lengths are u32 in v1,
/// u64 later).
struct HeaderScan {
    r: BufReader<File>,
    v1: bool,
}

impl HeaderScan {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).ok()?;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn len(&mut self) -> Option<u64> {
        if self.v1 {
            self.u32().map(u64::from)
        } else {
            self.bytes().map(u64::from_le_bytes)
        }
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let got = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink()).ok()?;
        (got == n).then_some(())
    }

    fn string(&mut self) -> Option<String> {
        let n = self.len()?;
        let mut v = Vec::new();
        (&mut self.r).take(n).read_to_end(&mut v).ok()?;
        (v.len() as u64 == n).then(|| String::from_utf8_lossy(&v).into_owned())
    }

    /// Skip one metadata value of type `ty` (GGUF value type ids).
    fn skip_value(&mut self, ty: u32, depth: usize) -> Option<()> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let n = self.len()?;
                self.skip(n)
            }
            9 if depth < 4 => {
                let elem = self.u32()?;
                let n = self.len()?;
                (0..n).try_for_each(|_| self.skip_value(elem, depth + 1))
            }
            _ => None,
        }
    }
}

/// The model shape from `llama.*` metadata. `vocab_size` comes from the embedding rows,
/// `tie_embeddings` from the absence of `output.weight`.
///
/// Keys: `llama.embedding_length`, `llama.block_count`, `llama.attention.head_count`,
/// `llama.attention.head_count_kv` (default: `head_count`), `llama.feed_forward_length`,
/// `llama.rope.freq_base` (default 10000), `llama.attention.layer_norm_rms_epsilon`
/// (default 1e-5), `llama.context_length`. A `llama.rope.dimension_count` other than the
/// head dimension (partial RoPE) is an error.
pub fn spec_from_metadata(
    md: &HashMap<String, Value>,
    vocab_size: usize,
    tie_embeddings: bool,
) -> Result<LlamaSpec> {
    let num_heads = meta_usize(md, "llama.attention.head_count")?;
    let spec = LlamaSpec {
        vocab_size,
        hidden_size: meta_usize(md, "llama.embedding_length")?,
        intermediate_size: meta_usize(md, "llama.feed_forward_length")?,
        num_layers: meta_usize(md, "llama.block_count")?,
        num_heads,
        num_kv_heads: meta_opt(md, "llama.attention.head_count_kv", meta_usize)?
            .unwrap_or(num_heads),
        rope_theta: meta_opt(md, "llama.rope.freq_base", meta_f64)?.unwrap_or(10_000.0),
        rms_norm_eps: meta_opt(md, "llama.attention.layer_norm_rms_epsilon", meta_f64)?
            .unwrap_or(1e-5),
        max_seq_len: meta_usize(md, "llama.context_length")?,
        tie_embeddings,
    };
    spec.validate()?;
    if let Some(rope_dim) = meta_opt(md, "llama.rope.dimension_count", meta_usize)? {
        if rope_dim != spec.head_dim() {
            return Err(Error::InvalidInput(format!(
                "llama.rope.dimension_count = {rope_dim} differs from the head dimension {} \
                 (partial RoPE is not supported)",
                spec.head_dim()
            )));
        }
    }
    Ok(spec)
}

/// The HF name of a llama.cpp tensor name, if it is one of a LLaMA's base weights.
///
/// `token_embd.weight` → `model.embed_tokens.weight`, `output_norm.weight` →
/// `model.norm.weight`, `output.weight` → `lm_head.weight`, `blk.N.attn_q.weight` →
/// `model.layers.N.self_attn.q_proj.weight` (likewise `attn_k`, `attn_v`, `attn_output` →
/// `o_proj`), `blk.N.ffn_{gate,up,down}.weight` → `model.layers.N.mlp.{gate,up,down}_proj.weight`,
/// `blk.N.attn_norm.weight` → `input_layernorm`, `blk.N.ffn_norm.weight` →
/// `post_attention_layernorm`.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_leaf = BLOCK_NAMES
        .iter()
        .find(|(g, _)| *g == leaf.strip_suffix(".weight").unwrap_or("\0"))?
        .1;
    Some(format!("model.layers.{layer}.{hf_leaf}.weight"))
}

/// The llama.cpp tensor name of an HF weight name (inverse of [`gguf_to_hf_name`]).
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let leaf = leaf.strip_suffix(".weight")?;
    let g = BLOCK_NAMES.iter().find(|(_, h)| *h == leaf)?.0;
    Some(format!("blk.{layer}.{g}.weight"))
}

/// Per-block tensor names: (llama.cpp, HF) without the `.weight` suffix.
const BLOCK_NAMES: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// llama.cpp's row permutation of `q_proj` / `k_proj` (HF layout → interleaved-RoPE
/// layout), as `permute(w, n_head)` in `convert_hf_to_gguf.py`:
/// `w.reshape(n_head, 2, head_dim / 2, in).swapaxes(1, 2).reshape(out, in)`.
///
/// # Shapes
/// `[n_head * head_dim, in]` → same.
pub fn permute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = qk_dims(w, n_head)?;
    Ok(w.reshape((n_head, 2, out / n_head / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

/// Inverse of [`permute_qk`]: back to the HF (rotate-half RoPE) row order.
///
/// # Shapes
/// `[n_head * head_dim, in]` → same.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = qk_dims(w, n_head)?;
    Ok(w.reshape((n_head, out / n_head / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

fn qk_dims(w: &Tensor, n_head: usize) -> Result<(usize, usize)> {
    let (out, inp) = w.dims2()?;
    if n_head == 0 || out % (2 * n_head) != 0 {
        return Err(Error::InvalidInput(format!(
            "cannot (un)permute a [{out}, {inp}] q/k projection for {n_head} heads: rows must \
             be a multiple of 2 × heads"
        )));
    }
    Ok((out, inp))
}

/// A required metadata value.
pub(crate) fn meta<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value> {
    md.get(key)
        .ok_or_else(|| Error::InvalidInput(format!("missing metadata `{key}`")))
}

/// An optional metadata value, parsed with `f` when present.
pub(crate) fn meta_opt<T>(
    md: &HashMap<String, Value>,
    key: &str,
    f: fn(&HashMap<String, Value>, &str) -> Result<T>,
) -> Result<Option<T>> {
    if md.contains_key(key) {
        f(md, key).map(Some)
    } else {
        Ok(None)
    }
}

/// A required string.
pub(crate) fn meta_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a str> {
    match meta(md, key)? {
        Value::String(s) => Ok(s),
        v => Err(type_err(key, "a string", v)),
    }
}

/// A required non-negative integer (any integer type).
pub(crate) fn meta_usize(md: &HashMap<String, Value>, key: &str) -> Result<usize> {
    let v = meta(md, key)?;
    value_usize(v).ok_or_else(|| type_err(key, "a non-negative integer", v))
}

/// A required number (any integer or float type). An f32 is converted through its
/// shortest decimal form, so `1e-5f32` becomes `1e-5`, not `9.9999997e-6`.
pub(crate) fn meta_f64(md: &HashMap<String, Value>, key: &str) -> Result<f64> {
    let v = meta(md, key)?;
    match v {
        Value::F32(x) => Ok(x.to_string().parse::<f64>().unwrap_or(*x as f64)),
        Value::F64(x) => Ok(*x),
        v => value_usize(v)
            .map(|n| n as f64)
            .ok_or_else(|| type_err(key, "a number", v)),
    }
}

/// A required boolean.
pub(crate) fn meta_bool(md: &HashMap<String, Value>, key: &str) -> Result<bool> {
    match meta(md, key)? {
        Value::Bool(b) => Ok(*b),
        v => Err(type_err(key, "a boolean", v)),
    }
}

/// An integer value as usize, if it is a non-negative integer.
pub(crate) fn value_usize(v: &Value) -> Option<usize> {
    let n: i128 = match v {
        Value::U8(x) => *x as i128,
        Value::I8(x) => *x as i128,
        Value::U16(x) => *x as i128,
        Value::I16(x) => *x as i128,
        Value::U32(x) => *x as i128,
        Value::I32(x) => *x as i128,
        Value::U64(x) => *x as i128,
        Value::I64(x) => *x as i128,
        _ => return None,
    };
    usize::try_from(n).ok()
}

fn type_err(key: &str, want: &str, v: &Value) -> Error {
    Error::InvalidInput(format!(
        "metadata `{key}` must be {want}, got {:?}",
        v.value_type()
    ))
}
