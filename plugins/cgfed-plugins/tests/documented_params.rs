//! Every registered compressor and aggregator accepts exactly what `cgfed list` documents:
//! built from its documented defaults it builds, and a misspelt key is rejected.

use cgfed_core::{registry, toml, PluginTable};
use cgfed_plugins as _;

fn documented_table(kind: &str, p: &cgfed_core::Plugin) -> PluginTable {
    let mut t = PluginTable::named(kind, p.name);
    for param in p.params {
        if param.default == "-" {
            continue;
        }
        let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {}", param.default))
            .unwrap_or_else(|e| {
                panic!(
                    "{} `{}`: default {:?} is not TOML: {e}",
                    p.name, param.key, param.default
                )
            })
            .remove("v")
            .expect("v");
        t.params.insert(param.key.to_string(), v);
    }
    t
}

#[test]
fn every_plugin_builds_from_its_documented_defaults() {
    let mut seen = 0;
    for p in registry::plugins() {
        match p.kind() {
            "compressor" => {
                let mut t = documented_table("compressor", p);
                registry::build_plain_compressor(&t).unwrap_or_else(|e| {
                    panic!("compressor {}: documented defaults rejected: {e}", p.name)
                });
                // The wrapper keys' defaults are accepted too (`values` has no default).
                for (key, default, _) in cgfed_core::wrappers::WRAPPER_KEYS {
                    if let Ok(mut v) = toml::from_str::<toml::Table>(&format!("v = {default}")) {
                        t.params.insert(key.to_string(), v.remove("v").expect("v"));
                    }
                }
                let c = registry::build_compressor(&t)
                    .unwrap_or_else(|e| panic!("compressor {} with wrapper defaults: {e}", p.name));
                assert_eq!(c.name(), p.name, "default wrappers change nothing");
                t.params
                    .insert("no_such_key".into(), toml::Value::Integer(1));
                let msg = registry::build_compressor(&t)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                assert!(
                    msg.contains("no_such_key"),
                    "compressor {}: unknown key accepted ({msg})",
                    p.name
                );
                seen += 1;
            }
            "aggregator" => {
                let t = documented_table("aggregator", p);
                registry::build_aggregator(&t).unwrap_or_else(|e| {
                    panic!("aggregator {}: documented defaults rejected: {e}", p.name)
                });
            }
            _ => {}
        }
    }
    for name in [
        "none",
        "fp16",
        "bf16",
        "kbit",
        "qsgd",
        "sign",
        "topk",
        "approx-topk",
        "randk",
        "powersgd",
    ] {
        assert!(
            registry::find("compressor", name).is_ok(),
            "{name} is not registered"
        );
    }
    assert!(seen >= 10);
    registry::check_unique().unwrap();
}
