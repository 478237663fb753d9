//! The model is causal: logits at a position depend only on tokens at or before it. This
//! is also what makes right-padding safe (padding comes after every real token).

use candle_core::{DType, Device, IndexOp, Tensor};
use cgfed_model::{Llama, LlamaSpec};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn model() -> anyhow::Result<Llama> {
    Ok(Llama::random(
        LlamaSpec::tiny(258),
        11,
        DType::F32,
        &Device::Cpu,
    )?)
}

#[test]
fn changing_a_later_token_leaves_earlier_logits_unchanged() -> anyhow::Result<()> {
    let model = model()?;
    let mut tokens: Vec<u32> = (0..24).map(|i| (i * 29 % 258) as u32).collect();
    let a = model.forward(&Tensor::new(tokens.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?;
    assert_eq!(a.dims(), &[1, 24, 258]);
    let changed = 15;
    tokens[changed] = 200;
    let b = model.forward(&Tensor::new(tokens.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?;
    let before = max_abs_diff(&a.i((.., ..changed, ..))?, &b.i((.., ..changed, ..))?)?;
    assert!(before < 1e-6, "earlier logits changed by {before}");
    // Sanity: the change is visible at and after the changed position (so the check above
    // would notice a leaking mask).
    for p in changed..24 {
        let d = max_abs_diff(&a.i((.., p, ..))?, &b.i((.., p, ..))?)?;
        assert!(d > 1e-6, "logits at position {p} did not change ({d})");
    }
    Ok(())
}

#[test]
fn right_padding_does_not_change_real_positions() -> anyhow::Result<()> {
    let model = model()?;
    let short: Vec<u32> = vec![5, 17, 99, 3, 250];
    let long: Vec<u32> = (0..12).map(|i| (i * 13 + 1) as u32).collect();
    let mut padded = short.clone();
    padded.resize(long.len(), 0);
    let alone = model.forward(&Tensor::new(short.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?;
    let batch = Tensor::new(&[padded, long][..].concat()[..], &Device::Cpu)?.reshape((2, 12))?;
    let both = model.forward(&batch)?;
    let d = max_abs_diff(&alone.i(0)?, &both.i((0, ..short.len(), ..))?)?;
    assert!(d < 1e-5, "padding changed real positions by {d}");
    Ok(())
}
