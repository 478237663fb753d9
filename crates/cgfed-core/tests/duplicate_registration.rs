//! A name registered twice is an error (its own test binary, so the duplicate does not
//! leak into other tests).

use cgfed_core::builtin::none::NoCompression;
use cgfed_core::{registry, Error, Factory, GradientCompressor, Plugin, PluginTable, Result};

fn build(_: &PluginTable) -> Result<Box<dyn GradientCompressor>> {
    Ok(Box::new(NoCompression))
}

cgfed_core::inventory::submit! {
    Plugin { name: "none", summary: "an impostor", params: &[], factory: Factory::Compressor(build) }
}

#[test]
fn duplicate_name_is_an_error() {
    match registry::find("compressor", "none") {
        Err(Error::DuplicatePlugin { kind, name, .. }) => {
            assert_eq!((kind, name.as_str()), ("compressor", "none"));
        }
        other => panic!(
            "expected DuplicatePlugin, got {:?}",
            other.map(|p| p.summary)
        ),
    }
    let msg = registry::check_unique().unwrap_err().to_string();
    assert!(msg.contains("duplicate compressor name \"none\""), "{msg}");
    assert!(msg.contains("an impostor"), "{msg}");
}
