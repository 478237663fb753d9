//! The trainer is registered as `llama` and builds from default tables.

use cgfed_core::{registry, toml, PluginTable, TrainerInit};
use cgfed_model as _;

#[test]
fn llama_is_a_registered_trainer() -> anyhow::Result<()> {
    let plugin = registry::find("trainer", "llama")?;
    assert_eq!(plugin.kind(), "trainer");
    assert!(!plugin.summary.is_empty());
    assert!(registry::names("trainer").contains(&"llama".to_string()));
    registry::check_unique()?;

    let empty = toml::Table::new();
    let t = registry::build_trainer(&TrainerInit {
        trainer: &PluginTable::named("trainer", "llama"),
        model: &empty,
        lora: &empty,
        vocab_size: 258,
        seed: 0,
    })?;
    assert_eq!(t.name(), "llama");
    // 2 layers × (q, k, v, o) × (A, B).
    assert_eq!(t.layout().len(), 16);
    assert!(t.layout().specs()[0]
        .name
        .starts_with("model.layers.0.self_attn."));
    Ok(())
}
