//! The padding mask: with left padding masked out, real tokens get the same logits as the
//! unpadded sequence (RoPE is relative, so the shifted positions do not matter); without
//! the mask they do not.

use candle_core::{DType, Device, IndexOp, Tensor};
use cgfed_model::{Llama, LlamaSpec};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn left_padding_with_mask_matches_unpadded() -> anyhow::Result<()> {
    let model = Llama::random(LlamaSpec::tiny(258), 5, DType::F32, &Device::Cpu)?;
    let real: Vec<u32> = (0..10).map(|i| (i * 37 % 250) as u32 + 3).collect();
    let pad = 6;
    let mut padded = vec![0u32; pad];
    padded.extend(&real);
    let unpadded = model.forward(&Tensor::new(real.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?;
    let ids = Tensor::new(padded.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mask: Vec<u32> = (0..padded.len()).map(|i| u32::from(i >= pad)).collect();
    let mask = Tensor::new(mask.as_slice(), &Device::Cpu)?.unsqueeze(0)?;

    let masked = model.forward_masked(&ids, Some(&mask))?;
    let d = max_abs_diff(&masked.i((.., pad.., ..))?, &unpadded)?;
    assert!(d < 1e-4, "masked left padding changed real logits by {d}");
    assert!(masked
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite()));

    // Without the mask the padding leaks into every real position.
    let leaky = model.forward(&ids)?;
    let d = max_abs_diff(&leaky.i((.., pad.., ..))?, &unpadded)?;
    assert!(d > 1e-3, "unmasked padding should change the logits ({d})");
    Ok(())
}

#[test]
fn mask_of_wrong_shape_is_an_error() -> anyhow::Result<()> {
    let model = Llama::random(LlamaSpec::tiny(258), 5, DType::F32, &Device::Cpu)?;
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
    let mask = Tensor::new(&[[1u32, 1]], &Device::Cpu)?;
    let msg = model
        .forward_masked(&ids, Some(&mask))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("attention mask"), "{msg}");
    Ok(())
}
