//! `check_model`: runs on a random tiny model, and on SmolLM2-135M (when the asset is in
//! the cache) gives a low NLL on ordinary English and continues "…sets in the" with " west".

use std::time::Instant;

use candle_core::{DType, Device};
use cgfed_core::{Result, TextTokenizer};
use cgfed_model::assets::{asset_path, find_asset, is_present};
use cgfed_model::check::{check_model, check_model_with_bos, CHECK_PROMPT};
use cgfed_model::gguf::load_gguf;
use cgfed_model::{Llama, LlamaSpec};

/// One id per UTF-8 byte; BOS 256, EOS 257.
struct Bytes;

impl TextTokenizer for Bytes {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes: Vec<u8> = ids.iter().filter_map(|&i| u8::try_from(i).ok()).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn vocab_size(&self) -> usize {
        258
    }
    fn bos_id(&self) -> Option<u32> {
        Some(256)
    }
    fn eos_id(&self) -> Option<u32> {
        Some(257)
    }
}

#[test]
fn runs_on_a_tiny_random_model() -> anyhow::Result<()> {
    let spec = LlamaSpec {
        max_seq_len: 512,
        ..LlamaSpec::tiny(258)
    };
    let model = Llama::random(spec, 1, DType::F32, &Device::Cpu)?;
    let r = check_model(&model, &Bytes, 4)?;
    assert!(r.nll.is_finite() && r.nll > 0.0, "{r:?}");
    // A random model is close to uniform over 258 ids.
    assert!((r.nll - 258f64.ln()).abs() < 1.0, "{r:?}");
    assert!(r.tokens > 100);
    assert_eq!(r.prompt, CHECK_PROMPT);
    let with_bos = check_model_with_bos(&model, &Bytes, 0, true)?;
    assert_eq!(with_bos.tokens, r.tokens + 1);
    assert_eq!(with_bos.continuation, "");
    Ok(())
}

#[test]
fn passage_longer_than_the_model_is_an_error() -> anyhow::Result<()> {
    let model = Llama::random(LlamaSpec::tiny(258), 1, DType::F32, &Device::Cpu)?;
    let err = check_model(&model, &Bytes, 1).unwrap_err().to_string();
    assert!(err.contains("check passage"), "{err}");
    Ok(())
}

#[test]
fn smollm2_when_present() -> anyhow::Result<()> {
    let spec = find_asset("smollm2-135m")?;
    if !is_present(spec) {
        println!("skipped: SmolLM2 asset not present; run `cgfed fetch smollm2-135m`");
        return Ok(());
    }
    let t0 = Instant::now();
    let g = load_gguf(&asset_path(spec), DType::F32, &Device::Cpu)?;
    let tok = g.tokenizer.expect("SmolLM2 ships a tokenizer");
    let model = Llama::from_weights(g.spec, &g.weights)?;
    let load = t0.elapsed();
    let t1 = Instant::now();
    let r = check_model_with_bos(&model, &tok, 8, g.add_bos_token)?;
    println!(
        "SmolLM2-135M: load {:.2?}, check {:.2?}: NLL {:.3} nats/token over {} tokens; \
         {:?} -> {:?}",
        load,
        t1.elapsed(),
        r.nll,
        r.tokens,
        r.prompt,
        r.continuation
    );
    assert!(r.nll < 2.0, "{r:?}");
    assert!(r.continuation.starts_with(" west"), "{r:?}");
    Ok(())
}
