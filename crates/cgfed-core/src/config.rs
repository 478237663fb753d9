//! Config helpers shared by every plugin: a plugin's TOML table ([`PluginTable`]) and
//! parsing a table into a typed config with errors that name the key path.
//!
//! A plugin's config struct is its constructor: a serde struct with
//! `#[serde(deny_unknown_fields)]`, documented defaults and a `validate()`; the factory
//! calls [`PluginTable::parse`] then builds the runtime object.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A plugin's TOML table: `kind = "..."` (or `name = "..."`) plus the plugin's own keys.
///
/// ```toml
/// [compressor]
/// kind = "topk"
/// ratio = 0.01
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PluginTable {
    /// Dotted path of the table in the config (e.g. `compressor`), used in error messages.
    pub key: String,
    /// The plugin name (the `kind` or `name` key).
    pub name: String,
    /// Which key gave the name: `kind` or `name` (for error messages).
    pub name_key: &'static str,
    /// The other keys, given to the plugin's factory.
    pub params: toml::Table,
}

impl PluginTable {
    /// Split `value` (the table at `key`) into the plugin name and its parameters.
    /// A bare string is accepted as a name with no parameters (`compressor = "fp16"`).
    pub fn from_value(key: &str, value: &toml::Value) -> Result<Self> {
        match value {
            toml::Value::String(name) => Ok(Self {
                key: key.to_string(),
                name: name.clone(),
                name_key: "name",
                params: toml::Table::new(),
            }),
            toml::Value::Table(t) => {
                let mut params = t.clone();
                let name = match (params.remove("kind"), params.remove("name")) {
                    (Some(_), Some(_)) => {
                        return Err(Error::config(
                            format!("{key}.kind"),
                            "give the plugin as `kind` or as `name`, not both",
                        ))
                    }
                    (Some(v), None) => (v, "kind"),
                    (None, Some(v)) => (v, "name"),
                    (None, None) => {
                        return Err(Error::config(
                            format!("{key}.kind"),
                            "missing; every plugin table needs `kind = \"...\"` (or `name`; see `cgfed list`)",
                        ))
                    }
                };
                let name_key = name.1;
                let name = match name {
                    (toml::Value::String(s), _) => s,
                    (other, k) => {
                        return Err(Error::config(
                            format!("{key}.{k}"),
                            format!("expected a string, found {}", other.type_str()),
                        ))
                    }
                };
                Ok(Self {
                    key: key.to_string(),
                    name,
                    name_key,
                    params,
                })
            }
            other => Err(Error::config(
                key,
                format!(
                    "expected a table or a plugin name, found {}",
                    other.type_str()
                ),
            )),
        }
    }

    /// A table with only a name.
    pub fn named(key: &str, name: &str) -> Self {
        Self {
            key: key.to_string(),
            name: name.to_string(),
            name_key: "name",
            params: toml::Table::new(),
        }
    }

    /// Parse the parameters into the plugin's config struct; errors name `key.param`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        parse_table(&self.params, &self.key)
    }
}

/// Deserialize `table` into `T`; an error names the full dotted key path (`prefix.a.b`) and
/// keeps serde's message (which lists accepted fields and variants).
pub fn parse_table<T: DeserializeOwned>(table: &toml::Table, prefix: &str) -> Result<T> {
    let value = toml::Value::Table(table.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = join_key(prefix, if path == "." { "" } else { &path });
        // toml appends "in `key`" location lines; the key path is already in `key`.
        let msg = e.into_inner().to_string();
        let msg = msg.lines().next().unwrap_or_default().trim().to_string();
        Error::config(key, msg)
    })
}

/// `prefix.rest`, skipping empty parts.
pub fn join_key(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Error helper for `validate()` methods: `key` must satisfy `ok`, else `message`.
pub fn ensure(ok: bool, key: impl Into<String>, message: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(key, message))
    }
}
