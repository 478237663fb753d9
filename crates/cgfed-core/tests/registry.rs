//! Registry lookups: known names, unknown names listing the registered ones.

use cgfed_core::{registry, Error, PluginTable};

#[test]
fn builtin_none_is_registered() {
    let p = registry::find("compressor", "none").unwrap();
    assert_eq!(p.kind(), "compressor");
    assert!(!p.summary.is_empty());
    assert!(registry::names("compressor").contains(&"none".to_string()));
    registry::check_unique().unwrap();
}

#[test]
fn unknown_name_lists_registered_names() {
    match registry::find("compressor", "topkk") {
        Err(Error::UnknownPlugin {
            kind,
            name,
            registered,
        }) => {
            assert_eq!(kind, "compressor");
            assert_eq!(name, "topkk");
            assert!(registered.contains(&"none".to_string()));
        }
        other => panic!("expected UnknownPlugin, got {:?}", other.map(|p| p.name)),
    }
    let msg = registry::build_compressor(&PluginTable::named("compressor", "topkk"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("compressor.name"), "{msg}");
    assert!(
        msg.contains("unknown compressor \"topkk\"; registered: "),
        "{msg}"
    );
    assert!(msg.contains("none"), "{msg}");
}

#[test]
fn unknown_aggregator_and_trainer_are_errors() {
    let msg = registry::build_aggregator(&PluginTable::named("aggregator", "fedsgd"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("unknown aggregator \"fedsgd\""), "{msg}");
}

#[test]
fn plugin_table_requires_a_string_name() {
    let v: cgfed_core::toml::Value =
        cgfed_core::toml::from_str::<cgfed_core::toml::Table>("c = { level = 3 }")
            .unwrap()
            .remove("c")
            .unwrap();
    let msg = PluginTable::from_value("compressor", &v)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("compressor.kind"), "{msg}");
    let v = cgfed_core::toml::Value::Integer(3);
    let msg = PluginTable::from_value("compressor", &v)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`compressor`"), "{msg}");
}

fn table(text: &str) -> cgfed_core::toml::Value {
    cgfed_core::toml::from_str::<cgfed_core::toml::Table>(text)
        .unwrap()
        .remove("c")
        .unwrap()
}

#[test]
fn kind_and_name_both_name_the_plugin() {
    let t = PluginTable::from_value("compressor", &table(r#"c = { kind = "none" }"#)).unwrap();
    assert_eq!((t.name.as_str(), t.name_key), ("none", "kind"));
    assert!(t.params.is_empty());
    let t = PluginTable::from_value("compressor", &table(r#"c = { name = "none" }"#)).unwrap();
    assert_eq!((t.name.as_str(), t.name_key), ("none", "name"));
    let msg = PluginTable::from_value("compressor", &table(r#"c = { kind = "none", name = "x" }"#))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("compressor.kind") && msg.contains("not both"),
        "{msg}"
    );
    let msg = PluginTable::from_value("compressor", &table("c = { kind = 1 }"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("compressor.kind") && msg.contains("string"),
        "{msg}"
    );
    // An unknown plugin named with `kind` is reported at `kind`.
    let t = PluginTable::from_value("compressor", &table(r#"c = { kind = "topkk" }"#)).unwrap();
    let msg = registry::build_compressor(&t).err().unwrap().to_string();
    assert!(msg.contains("compressor.kind"), "{msg}");
}
