//! `Trainer::score` on `LlamaTrainer`: batched log-likelihood scoring of continuations
//! equals a plain one-sequence computation, does not depend on batch companions or the
//! batch budget, keeps the request order, flags greedy continuations, truncates long
//! contexts from the left, reports bad requests as errors, and follows `apply_delta`.

use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::ops::log_softmax;
use cgfed_core::{
    registry, toml, EvalOutcome, Example, Layout, LocalOutcome, PluginTable, Score, ScoreRequest,
    TrainCtx, Trainer, TrainerInit, Update,
};
use cgfed_model::scoring::score_requests;
use cgfed_model::{Llama, LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};

const BOS: u32 = 256;
const VOCAB: usize = 258;

fn trainer(batch_size: usize, bos: Option<u32>) -> anyhow::Result<LlamaTrainer> {
    Ok(LlamaTrainer::new(
        LlamaSpec::tiny(VOCAB),
        LoraConfig {
            dropout: 0.3,
            ..LoraConfig::default()
        },
        TrainerConfig {
            batch_size,
            ..Default::default()
        },
        7,
        Device::Cpu,
        DType::F32,
    )?
    .with_bos(bos))
}

/// Deterministic pseudo-random token ids (bytes, never BOS/EOS).
fn tokens(len: usize, salt: usize) -> Vec<u32> {
    (0..len)
        .map(|j| ((j * 73 + salt * 151 + j * j * 7) % 256) as u32)
        .collect()
}

fn req(ctx_len: usize, cont_len: usize, salt: usize) -> ScoreRequest {
    ScoreRequest::new(tokens(ctx_len, salt), tokens(cont_len, salt + 1000))
}

/// A mix of short and long requests, some sharing a context.
fn requests() -> Vec<ScoreRequest> {
    vec![
        req(12, 3, 1),
        req(40, 1, 2),
        req(0, 5, 3),
        req(5, 20, 4),
        req(12, 4, 1),
        req(90, 7, 5),
        req(1, 1, 6),
        req(33, 12, 7),
    ]
}

/// The straightforward computation: one forward on `[BOS] + context + continuation`,
/// log-softmax over every position (f64), the sum of the continuation tokens' log-probs and
/// an argmax check of each.
fn reference(model: &Llama, bos: Option<u32>, r: &ScoreRequest) -> anyhow::Result<Score> {
    let seq: Vec<u32> = bos
        .into_iter()
        .chain(r.context.iter().copied())
        .chain(r.continuation.iter().copied())
        .collect();
    let ids = Tensor::new(seq.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let logits = model.forward(&ids)?.i(0)?.to_dtype(DType::F64)?;
    let logp = log_softmax(&logits, D::Minus1)?.to_vec2::<f64>()?;
    let n = r.continuation.len();
    let first = seq.len() - n;
    let (mut sum, mut greedy) = (0.0, true);
    for (k, &t) in r.continuation.iter().enumerate() {
        let row = &logp[first + k - 1];
        sum += row[t as usize];
        let argmax = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap();
        greedy &= argmax == t as usize;
    }
    Ok(Score {
        logprob: sum,
        tokens: n,
        greedy,
    })
}

fn assert_close(a: &[Score], b: &[Score], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x.logprob - y.logprob).abs() <= tol,
            "{what}: request {i}: {} vs {}",
            x.logprob,
            y.logprob
        );
        assert_eq!(x.tokens, y.tokens, "{what}: request {i}: tokens");
        assert_eq!(x.greedy, y.greedy, "{what}: request {i}: greedy");
    }
}

fn err<T: std::fmt::Debug>(r: cgfed_core::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn batched_scores_match_an_unbatched_reference() -> anyhow::Result<()> {
    for bos in [Some(BOS), None] {
        let mut t = trainer(4, bos)?;
        let reqs: Vec<ScoreRequest> = requests()
            .into_iter()
            .filter(|r| bos.is_some() || !r.context.is_empty())
            .collect();
        let got = t.score(&reqs)?;
        let want = reqs
            .iter()
            .map(|r| reference(t.model(), bos, r))
            .collect::<anyhow::Result<Vec<_>>>()?;
        assert_close(&got, &want, 1e-4, &format!("bos {bos:?}"));
        for (s, r) in got.iter().zip(&reqs) {
            assert_eq!(s.tokens, r.continuation.len());
            assert!(s.logprob.is_finite() && s.logprob < 0.0);
        }
    }
    Ok(())
}

#[test]
fn scores_do_not_depend_on_batch_companions_or_budget() -> anyhow::Result<()> {
    let mut t = trainer(8, Some(BOS))?;
    let set = vec![req(10, 3, 11), req(25, 2, 12), req(4, 6, 13)];
    let alone = t.score(&set)?;

    // The same requests mixed with much longer and shorter ones, in several places.
    let mut mixed = vec![req(200, 10, 21), req(0, 1, 22)];
    mixed.push(set[0].clone());
    mixed.push(req(150, 30, 23));
    mixed.push(set[1].clone());
    mixed.push(req(2, 2, 24));
    mixed.push(set[2].clone());
    let scored = t.score(&mixed)?;
    let picked = [scored[2].clone(), scored[4].clone(), scored[6].clone()];
    assert_close(&alone, &picked, 1e-5, "mixed");

    // One request per batch, everything in one batch, and the trainer's budget agree.
    let model = t.model();
    let singles = score_requests(model, Some(BOS), &mixed, 1)?;
    let one_batch = score_requests(model, Some(BOS), &mixed, usize::MAX)?;
    assert_close(&singles, &scored, 1e-5, "one per batch");
    assert_close(&one_batch, &scored, 1e-5, "one batch");
    // Deterministic.
    assert_eq!(t.score(&mixed)?, scored);
    Ok(())
}

#[test]
fn greedy_flags_match_an_argmax_check() -> anyhow::Result<()> {
    let mut t = trainer(4, Some(BOS))?;
    // Greedy-decode a few tokens after a context: that continuation is greedy by
    // construction; changing its last token makes it not greedy.
    let context = tokens(15, 31);
    let mut seq: Vec<u32> = std::iter::once(BOS)
        .chain(context.iter().copied())
        .collect();
    for _ in 0..4 {
        let ids = Tensor::new(seq.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = t.model().forward(&ids)?.i((0, seq.len() - 1))?;
        seq.push(logits.argmax(0)?.to_scalar::<u32>()?);
    }
    let greedy_cont = seq[1 + context.len()..].to_vec();
    let mut broken = greedy_cont.clone();
    *broken.last_mut().unwrap() = (broken[3] + 1) % 256;
    let mut reqs = vec![
        ScoreRequest::new(context.clone(), greedy_cont.clone()),
        ScoreRequest::new(context.clone(), broken),
        ScoreRequest::new(context.clone(), greedy_cont[..1].to_vec()),
    ];
    reqs.extend(requests());
    let got = t.score(&reqs)?;
    assert!(got[0].greedy && got[2].greedy, "{:?}", &got[..3]);
    assert!(!got[1].greedy, "{:?}", got[1]);
    for (i, (s, r)) in got.iter().zip(&reqs).enumerate() {
        let want = reference(t.model(), Some(BOS), r)?;
        assert_eq!(s.greedy, want.greedy, "request {i}");
    }
    Ok(())
}

#[test]
fn order_is_preserved() -> anyhow::Result<()> {
    let mut t = trainer(2, Some(BOS))?;
    let reqs = requests();
    let forward = t.score(&reqs)?;
    let mut reversed_reqs = reqs.clone();
    reversed_reqs.reverse();
    let mut reversed = t.score(&reversed_reqs)?;
    reversed.reverse();
    assert_close(&forward, &reversed, 1e-5, "reversed");
    // Every score belongs to its own request (lengths differ between neighbours).
    for (s, r) in forward.iter().zip(&reqs) {
        assert_eq!(s.tokens, r.continuation.len());
    }
    // Duplicates get the same score wherever they are.
    let dup = t.score(&[reqs[3].clone(), reqs[0].clone(), reqs[3].clone()])?;
    assert!((dup[0].logprob - dup[2].logprob).abs() < 1e-5);
    assert!((dup[1].logprob - forward[0].logprob).abs() < 1e-5);
    assert!(t.score(&[])?.is_empty());
    Ok(())
}

#[test]
fn long_contexts_are_truncated_from_the_left() -> anyhow::Result<()> {
    let mut t = trainer(4, Some(BOS))?;
    let max = t.model().spec().max_seq_len;
    let cont = tokens(10, 41);
    let long = ScoreRequest::new(tokens(max + 50, 42), cont.clone());
    // The model reads BOS + kept context + continuation minus its last token: max tokens.
    let kept = max + 1 - cont.len() - 1;
    let truncated = ScoreRequest::new(long.context[long.context.len() - kept..].to_vec(), cont);
    let got = t.score(&[long, truncated.clone()])?;
    assert!((got[0].logprob - got[1].logprob).abs() < 1e-5, "{got:?}");
    // Dropping one more context token changes the score: the kept tokens all count.
    let one_fewer = ScoreRequest::new(
        long_context_tail(&tokens(max + 50, 42), kept - 1),
        truncated.continuation.clone(),
    );
    let shorter = t.score(&[one_fewer])?;
    assert!((shorter[0].logprob - got[1].logprob).abs() > 1e-6);

    // A continuation of exactly max_seq_len tokens fits (after BOS alone).
    let full = ScoreRequest::new(tokens(30, 43), tokens(max, 44));
    let s = t.score(&[full])?;
    assert_eq!(s[0].tokens, max);
    assert!(s[0].logprob.is_finite());
    Ok(())
}

fn long_context_tail(context: &[u32], n: usize) -> Vec<u32> {
    context[context.len() - n..].to_vec()
}

#[test]
fn bad_requests_are_errors_naming_the_request() -> anyhow::Result<()> {
    let mut t = trainer(4, Some(BOS))?;
    let max = t.model().spec().max_seq_len;
    let mut reqs = requests();
    reqs[2].continuation.clear();
    let e = err(t.score(&reqs));
    assert!(e.contains("request 2") && e.contains("empty"), "{e}");

    let mut reqs = requests();
    reqs[5].continuation = tokens(max + 1, 51);
    let e = err(t.score(&reqs));
    assert!(e.contains("request 5") && e.contains("max_seq_len"), "{e}");

    let mut reqs = requests();
    reqs[1].context[3] = VOCAB as u32;
    let e = err(t.score(&reqs));
    assert!(e.contains("request 1") && e.contains("out of range"), "{e}");

    // Without BOS an empty context leaves the first token unconditioned.
    let mut no_bos = trainer(4, None)?;
    let e = err(no_bos.score(&[req(3, 2, 1), req(0, 2, 2)]));
    assert!(
        e.contains("request 1") && e.contains("context is empty"),
        "{e}"
    );

    // A BOS outside the vocabulary.
    let mut bad_bos = trainer(4, Some(VOCAB as u32))?;
    let e = err(bad_bos.score(&requests()));
    assert!(e.contains("BOS"), "{e}");

    // The trainer still works after errors.
    assert_eq!(t.score(&requests())?.len(), 8);
    Ok(())
}

#[test]
fn scoring_follows_apply_delta_and_leaves_the_state_alone() -> anyhow::Result<()> {
    let mut t = trainer(4, Some(BOS))?;
    let reqs = requests();
    let data: Vec<Example> = (0..3)
        .map(|i| Example {
            tokens: tokens(20, i),
            loss_start: 1,
        })
        .collect();
    let before = t.score(&reqs)?;
    let global = t.global_state()?;
    let eval = t.evaluate(&data)?;
    assert_eq!(t.score(&reqs)?, before);
    assert_eq!(t.global_state()?.to_flat()?, global.to_flat()?);
    assert_eq!(t.evaluate(&data)?, eval);

    // A delta that moves every adapter weight (B starts at zero, so this changes the model).
    let n = t.layout().numel();
    let values: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.02).collect();
    let delta = Update::from_flat(t.layout(), &values, &Device::Cpu)?;
    t.apply_delta(&delta)?;
    let after = t.score(&reqs)?;
    let want = reqs
        .iter()
        .map(|r| reference(t.model(), Some(BOS), r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    assert_close(&after, &want, 1e-4, "after apply_delta");
    let moved = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a.logprob - b.logprob).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "scores did not change after apply_delta ({moved})"
    );
    Ok(())
}

#[test]
fn scoring_is_deterministic_without_dropout_after_training() -> anyhow::Result<()> {
    // lora.dropout = 0.3: scoring must not apply it, even right after a local run.
    let mut t = trainer(2, Some(BOS))?;
    let data: Vec<Example> = (0..4)
        .map(|i| Example {
            tokens: tokens(24, i),
            loss_start: 1,
        })
        .collect();
    let start = t.global_state()?;
    let out = t.train_local(
        &start,
        &data,
        &TrainCtx {
            round: 0,
            client: 0,
            seed: 3,
            local_steps: None,
            record_snapshots: false,
        },
    )?;
    t.apply_delta(&out.delta)?;
    let reqs = requests();
    let a = t.score(&reqs)?;
    let b = t.score(&reqs)?;
    assert_eq!(a, b);
    let want = reqs
        .iter()
        .map(|r| reference(t.model(), Some(BOS), r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    assert_close(&a, &want, 1e-4, "after training");
    Ok(())
}

#[test]
fn the_factory_trainer_prepends_the_byte_bos() -> anyhow::Result<()> {
    let empty = toml::Table::new();
    let mut model = toml::Table::new();
    model.insert("preset".into(), toml::Value::String("tiny".into()));
    let mut built = registry::build_trainer(&TrainerInit {
        trainer: &PluginTable::named("trainer", "llama"),
        model: &model,
        lora: &empty,
        vocab_size: VOCAB,
        seed: 5,
    })?;
    let reqs = requests(); // request 2 has an empty context: only BOS conditions it
    let got = built.score(&reqs)?;
    let plain = LlamaTrainer::new(
        LlamaSpec::tiny(VOCAB),
        LoraConfig::default(),
        TrainerConfig::default(),
        5,
        Device::Cpu,
        DType::F32,
    )?;
    let want = reqs
        .iter()
        .map(|r| reference(plain.model(), Some(BOS), r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    assert_close(&got, &want, 1e-4, "factory");
    Ok(())
}

/// A trainer that only implements the required methods.
struct Bare(Layout);

impl Trainer for Bare {
    fn name(&self) -> &str {
        "bare"
    }
    fn layout(&self) -> &Layout {
        &self.0
    }
    fn global_state(&self) -> cgfed_core::Result<Update> {
        Update::zeros(&self.0, &Device::Cpu)
    }
    fn apply_delta(&mut self, _delta: &Update) -> cgfed_core::Result<()> {
        Ok(())
    }
    fn train_local(
        &mut self,
        _start: &Update,
        _data: &[Example],
        _ctx: &TrainCtx,
    ) -> cgfed_core::Result<LocalOutcome> {
        unimplemented!()
    }
    fn evaluate(&mut self, _data: &[Example]) -> cgfed_core::Result<EvalOutcome> {
        unimplemented!()
    }
}

#[test]
fn trainers_without_scoring_say_so() -> anyhow::Result<()> {
    let mut bare = Bare(Layout::new(Vec::new())?);
    let e = err(bare.score(&requests()));
    assert!(
        e.contains("bare") && e.contains("does not support scoring"),
        "{e}"
    );
    Ok(())
}
