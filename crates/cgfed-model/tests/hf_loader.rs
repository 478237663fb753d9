//! `load_hf_dir`: a random tiny model written as a HF checkpoint directory (config.json +
//! safetensors, single file or sharded, f32 or f16, tied or untied, with a tokenizer) loads
//! back into the same model; broken directories give errors naming the file and tensor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cgfed_core::TextTokenizer;
use cgfed_model::hf::load_hf_dir;
use cgfed_model::model::random_weights;
use cgfed_model::{Llama, LlamaSpec, Weights};

fn spec(tied: bool) -> LlamaSpec {
    let mut s = LlamaSpec::tiny(40);
    s.hidden_size = 32;
    s.intermediate_size = 48;
    s.max_seq_len = 64;
    s.rope_theta = 100_000.0;
    s.rms_norm_eps = 1e-6;
    s.tie_embeddings = tied;
    s
}

fn config_json(s: &LlamaSpec) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "vocab_size": s.vocab_size,
        "num_hidden_layers": s.num_layers,
        "num_attention_heads": s.num_heads,
        "num_key_value_heads": s.num_kv_heads,
        "rms_norm_eps": s.rms_norm_eps,
        "rope_theta": s.rope_theta,
        "max_position_embeddings": s.max_seq_len,
        "tie_word_embeddings": s.tie_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rope_scaling": null,
        "torch_dtype": "float32",
    })
}

/// Write `w` (converted to `store`) as a checkpoint in `shards` files (index when > 1),
/// plus an unused `rotary_emb.inv_freq` as old checkpoints have.
fn write_checkpoint(
    dir: &Path,
    s: &LlamaSpec,
    w: &Weights,
    store: DType,
    shards: usize,
) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config_json(s))?,
    )?;
    let names: Vec<&String> = w.keys().collect();
    let per = names.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (k, chunk) in names.chunks(per).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{shards:05}.safetensors", k + 1)
        };
        let mut m: HashMap<String, Tensor> = HashMap::new();
        for &n in chunk {
            m.insert(n.clone(), w[n].to_dtype(store)?);
            weight_map.insert(n.clone(), file.clone().into());
        }
        if k == 0 {
            m.insert(
                "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
                Tensor::ones(4, DType::F32, &Device::Cpu)?,
            );
        }
        candle_core::safetensors::save(&m, dir.join(&file))?;
    }
    if shards > 1 {
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string(&index)?,
        )?;
    }
    Ok(())
}

fn logits(model: &Llama) -> anyhow::Result<Vec<f32>> {
    let ids = Tensor::new(&[[1u32, 5, 9, 3, 39, 0, 7, 2]], &Device::Cpu)?;
    Ok(model.forward(&ids)?.flatten_all()?.to_vec1()?)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn single_file_f32_loads_bit_exact_tied_and_untied() -> anyhow::Result<()> {
    for tied in [true, false] {
        let s = spec(tied);
        let w = random_weights(&s, 5, DType::F32, &Device::Cpu)?;
        let dir = tempfile::tempdir()?;
        write_checkpoint(dir.path(), &s, &w, DType::F32, 1)?;
        let hf = load_hf_dir(dir.path(), DType::F32, &Device::Cpu)?;
        assert_eq!(hf.spec, s);
        assert_eq!(
            hf.weights.len(),
            w.len(),
            "only the needed tensors (tied = {tied})"
        );
        assert!(hf.tokenizer.is_none());
        let want = logits(&Llama::from_weights(s.clone(), &w)?)?;
        assert_eq!(logits(&hf.build()?)?, want, "tied = {tied}");
    }
    Ok(())
}

#[test]
fn two_shards_with_index_load_bit_exact() -> anyhow::Result<()> {
    let s = spec(false);
    let w = random_weights(&s, 6, DType::F32, &Device::Cpu)?;
    let dir = tempfile::tempdir()?;
    write_checkpoint(dir.path(), &s, &w, DType::F32, 2)?;
    assert!(dir
        .path()
        .join("model-00002-of-00002.safetensors")
        .is_file());
    let hf = load_hf_dir(dir.path(), DType::F32, &Device::Cpu)?;
    let want = logits(&Llama::from_weights(s.clone(), &w)?)?;
    assert_eq!(logits(&hf.build()?)?, want);

    // Without the index, every *.safetensors file is searched.
    std::fs::remove_file(dir.path().join("model.safetensors.index.json"))?;
    let hf = load_hf_dir(dir.path(), DType::F32, &Device::Cpu)?;
    assert_eq!(logits(&hf.build()?)?, want);
    Ok(())
}

#[test]
fn f16_and_bf16_weights_load_as_f32() -> anyhow::Result<()> {
    let s = spec(true);
    let w = random_weights(&s, 7, DType::F32, &Device::Cpu)?;
    let want = logits(&Llama::from_weights(s.clone(), &w)?)?;
    for (store, tol) in [(DType::F16, 2e-3), (DType::BF16, 2e-2)] {
        let dir = tempfile::tempdir()?;
        write_checkpoint(dir.path(), &s, &w, store, 1)?;
        let hf = load_hf_dir(dir.path(), DType::F32, &Device::Cpu)?;
        assert!(hf.weights.values().all(|t| t.dtype() == DType::F32));
        let diff = max_abs_diff(&logits(&hf.build()?)?, &want);
        assert!(diff < tol, "{store:?}: max |Δlogit| = {diff}");
    }
    Ok(())
}

#[test]
fn tokenizer_and_chat_template_load() -> anyhow::Result<()> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    let s = spec(true);
    let w = random_weights(&s, 8, DType::F32, &Device::Cpu)?;
    let dir = tempfile::tempdir()?;
    write_checkpoint(dir.path(), &s, &w, DType::F32, 1)?;
    let vocab: HashMap<String, u32> = ["<unk>", "<s>", "</s>", "the", "sun", "rises"]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.save(dir.path().join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}"#,
    )?;
    let hf = load_hf_dir(dir.path(), DType::F32, &Device::Cpu)?;
    let tok = hf.tokenizer.expect("tokenizer.json is present");
    assert_eq!(tok.encode("the sun rises")?, vec![3, 4, 5]);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(tok.chat_template().is_some_and(|t| t.contains("messages")));
    Ok(())
}

/// Write a good checkpoint, break it with `damage`, and return the load error's text.
fn load_error(damage: impl Fn(&Path) -> anyhow::Result<()>) -> anyhow::Result<String> {
    let s = spec(false);
    let w = random_weights(&s, 9, DType::F32, &Device::Cpu)?;
    let dir = tempfile::tempdir()?;
    write_checkpoint(dir.path(), &s, &w, DType::F32, 2)?;
    damage(dir.path())?;
    match load_hf_dir(dir.path(), DType::F32, &Device::Cpu) {
        Ok(_) => anyhow::bail!("damaged checkpoint loaded"),
        Err(e) => {
            eprintln!("{e}");
            Ok(e.to_string())
        }
    }
}

fn rewrite_shard(
    dir: &Path,
    file: &str,
    f: impl Fn(&mut HashMap<String, Tensor>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let path = dir.join(file);
    let mut m = candle_core::safetensors::load(&path, &Device::Cpu)?;
    f(&mut m)?;
    candle_core::safetensors::save(&m, &path)?;
    Ok(())
}

#[test]
fn errors_name_the_file_and_the_tensor() -> anyhow::Result<()> {
    let shard2 = "model-00002-of-00002.safetensors";

    let e = load_error(|d| {
        rewrite_shard(d, shard2, |m| {
            m.remove("model.norm.weight");
            Ok(())
        })
    })?;
    assert!(
        e.contains("model.norm.weight") && e.contains(shard2) && e.contains("missing"),
        "{e}"
    );

    let e = load_error(|d| {
        rewrite_shard(d, shard2, |m| {
            m.insert(
                "model.norm.weight".into(),
                Tensor::ones(31, DType::F32, &Device::Cpu)?,
            );
            Ok(())
        })
    })?;
    assert!(
        e.contains("model.norm.weight") && e.contains(shard2) && e.contains("[31]"),
        "{e}"
    );

    let e = load_error(|d| {
        let p = d.join(shard2);
        let bytes = std::fs::read(&p)?;
        std::fs::write(&p, &bytes[..bytes.len() - 100])?;
        Ok(())
    })?;
    assert!(e.contains(shard2) && e.contains("truncated"), "{e}");

    let e = load_error(|d| {
        Ok(std::fs::write(
            d.join("config.json"),
            "{\"hidden_size\": 32,",
        )?)
    })?;
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");

    let e = load_error(|d| {
        Ok(std::fs::write(
            d.join("config.json"),
            r#"{"hidden_size": 32, "vocab_size": 40}"#,
        )?)
    })?;
    assert!(
        e.contains("config.json") && e.contains("missing field"),
        "{e}"
    );

    let e = load_error(|d| {
        let mut cfg = config_json(&spec(false));
        cfg["attention_bias"] = true.into();
        Ok(std::fs::write(d.join("config.json"), cfg.to_string())?)
    })?;
    assert!(
        e.contains("config.json") && e.contains("attention_bias"),
        "{e}"
    );

    let e = load_error(|d| Ok(std::fs::remove_file(d.join("config.json"))?))?;
    assert!(e.contains("config.json"), "{e}");
    Ok(())
}
