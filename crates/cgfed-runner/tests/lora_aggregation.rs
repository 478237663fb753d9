//! LoRA aggregation on a real trainer: `fedavg` with `lora = "product"` makes the
//! effective weights exactly `W₀ + s·Σᵢ wᵢ·BᵢAᵢ` (FedIT factors + a base residual), while
//! the default `lora = "factors"` (FedIT) is off by `s·Σᵢ wᵢ(Bᵢ − B̄)(Aᵢ − Ā)`.

use std::sync::Arc;

use cgfed_core::candle_core::{DType, Device, Tensor};
use cgfed_core::{
    registry, ClientUpdate, Example, Phase, PluginTable, RoundCtx, TrainCtx, Trainer, Update,
};
use cgfed_model::{LlamaSpec, LlamaTrainer, LoraConfig, TrainerConfig};
use cgfed_plugins as _;

fn trainer() -> LlamaTrainer {
    LlamaTrainer::new(
        LlamaSpec::tiny(258),
        LoraConfig::default(),
        TrainerConfig {
            lr: 0.02,
            local_steps: 4,
            batch_size: 4,
            ..Default::default()
        },
        1,
        Device::Cpu,
        DType::F32,
    )
    .unwrap()
}

fn data(client: usize) -> Vec<Example> {
    (0..6 + 2 * client)
        .map(|i| Example {
            tokens: (0..16)
                .map(|j| ((j * (7 + client) + i * 13 + client * 50) % 256) as u32)
                .collect(),
            loss_start: 1,
        })
        .collect()
}

/// One round of three clients from the trainer's global state: their updates and the
/// global state they started from.
fn client_updates(t: &mut LlamaTrainer) -> (Vec<ClientUpdate>, Update) {
    let global = t.global_state().unwrap();
    let updates = (0..3)
        .map(|c| {
            let d = data(c);
            let out = t
                .train_local(
                    &global,
                    &d,
                    &TrainCtx {
                        round: 0,
                        client: c,
                        seed: 4,
                        local_steps: None,
                        record_snapshots: false,
                    },
                )
                .unwrap();
            ClientUpdate {
                client: c,
                update: out.delta,
                num_examples: out.num_examples,
                train_loss: out.train_loss,
            }
        })
        .collect();
    (updates, global)
}

fn ctx(t: &LlamaTrainer) -> RoundCtx {
    RoundCtx {
        round: 0,
        client: None,
        seed: 4,
        phase: Phase::Train,
        layout: Arc::new(t.layout().clone()),
        device: Device::Cpu,
    }
}

/// `Σᵢ wᵢ·BᵢAᵢ` for module `m` (weights by example count).
fn exact_product(m: &str, global: &Update, updates: &[ClientUpdate]) -> Tensor {
    let total: usize = updates.iter().map(|u| u.num_examples).sum();
    let (a0, b0) = (
        global.get(&format!("{m}.lora_A")).unwrap(),
        global.get(&format!("{m}.lora_B")).unwrap(),
    );
    let mut acc: Option<Tensor> = None;
    for u in updates {
        let a = (a0 + u.update.get(&format!("{m}.lora_A")).unwrap()).unwrap();
        let b = (b0 + u.update.get(&format!("{m}.lora_B")).unwrap()).unwrap();
        let p = b
            .matmul(&a)
            .unwrap()
            .affine(u.num_examples as f64 / total as f64, 0.0)
            .unwrap();
        acc = Some(match acc {
            None => p,
            Some(s) => (s + p).unwrap(),
        });
    }
    acc.unwrap()
}

fn modules(t: &LlamaTrainer) -> Vec<String> {
    t.layout()
        .specs()
        .iter()
        .filter_map(|s| s.name.strip_suffix(".lora_A").map(str::to_string))
        .collect()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Effective weight after aggregation minus the exact one, per module, and the largest
/// exact product change (for scale).
fn aggregation_error(lora: &str) -> (f32, f32) {
    let mut t = trainer();
    let scale = LoraConfig::default().scale();
    let base = t.model().weights().unwrap();
    let (updates, global) = client_updates(&mut t);
    let mut table = PluginTable::named("aggregator", "fedavg");
    table.params.insert("lora".into(), lora.into());
    let mut agg = registry::build_aggregator(&table).unwrap();
    let out = agg.aggregate(&updates, &global, &ctx(&t)).unwrap();
    t.apply_delta(&out.delta).unwrap();
    if let Some(r) = &out.base_residual {
        t.merge_into_base(r).unwrap();
    }
    let merged = t.model().merged_weights().unwrap();
    let (mut worst, mut size) = (0.0f32, 0.0f32);
    for m in modules(&t) {
        let w = format!("{m}.weight");
        let exact = exact_product(&m, &global, &updates)
            .affine(scale, 0.0)
            .unwrap();
        let expected = (&base[&w] + &exact).unwrap();
        worst = worst.max(max_abs(&(&merged[&w] - &expected).unwrap()));
        size = size.max(max_abs(&exact));
    }
    (worst, size)
}

#[test]
fn product_mode_is_exact() {
    let (err, size) = aggregation_error("product");
    assert!(size > 1e-4, "clients did not move B·A ({size})");
    assert!(
        err <= 1e-5 * size.max(1.0),
        "exact mode off by {err} (scale {size})"
    );
}

#[test]
fn factor_mode_has_the_fedit_error() {
    let (err, size) = aggregation_error("factors");
    let (exact_err, _) = aggregation_error("product");
    // FedIT's error is the clients' factor cross-covariance: real, and much larger than
    // the exact mode's rounding.
    assert!(
        err > 100.0 * exact_err.max(1e-9),
        "fedit {err} vs exact {exact_err}"
    );
    assert!(
        err < size,
        "fedit error {err} should be a fraction of the update {size}"
    );
}
