//! Every key of a model configuration read from a weights file must be one the
//! configuration has. serde skips an unknown key and takes the field's default: a flipped
//! byte in a key (`"zero_shift"` → `"zero_sGift"`) loaded as another model, with the default
//! activation shift. `deny_unknown_fields` cannot say it everywhere (the ICNN configurations
//! also read `cpflow ot`'s `[potential]` table, whose unknown keys the CLI names itself;
//! serde ignores it on the unit variants of internally tagged enums, serde-rs/serde#2123),
//! so the loaders compare the keys of the file's JSON with those of the configuration read
//! from it and serialised again, as `cpflow ot` does for its TOML: a key serde skipped is
//! missing there.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{CpflowError, Result};

/// The dotted path of the first key of `written` (depth first, arrays element by element)
/// that `read` lacks, below `at`.
fn first_unknown_key(written: &Value, read: &Value, at: &str) -> Option<String> {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => w.iter().find_map(|(k, v)| {
            let here = format!("{at}.{k}");
            match r.get(k) {
                None => Some(here),
                Some(rv) => first_unknown_key(v, rv, &here),
            }
        }),
        (Value::Array(w), Value::Array(r)) => w
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (v, rv))| first_unknown_key(v, rv, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Refuses the configuration `read`, deserialised from the JSON `written` found at `at`
/// (`"cpflow.flow"`: the metadata key and the field) in the file `path`, when `written` has
/// a key `read` does not (serde skipped it): the file is damaged or of another version.
pub(crate) fn check_known_keys<T: Serialize>(
    path: &Path,
    at: &str,
    written: &Value,
    read: &T,
) -> Result<()> {
    let again = serde_json::to_value(read)?;
    match first_unknown_key(written, &again, at) {
        None => Ok(()),
        Some(key) => Err(CpflowError::Checkpoint(format!(
            "{}: unknown key `{key}` in the model configuration (no such setting: the file is \
             corrupt or was written by another program)",
            path.display()
        ))),
    }
}

/// [`check_known_keys`] on the field `field` of the metadata `key`'s JSON text `json`
/// (the configuration `read` was deserialised from it).
pub(crate) fn check_known_keys_of<T: Serialize>(
    path: &Path,
    key: &str,
    json: &str,
    field: &str,
    read: &T,
) -> Result<()> {
    let written: Value = serde_json::from_str(json)?;
    let written = written.get(field).unwrap_or(&Value::Null);
    check_known_keys(path, &format!("{key}.{field}"), written, read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowConfig;

    /// A key serde skipped is named with its path, at any depth (a unit layer, an ICNN
    /// setting); the configuration's own keys pass.
    #[test]
    fn skipped_keys_are_named_with_their_path() {
        let cfg = FlowConfig::toy_reference(1);
        let written = serde_json::to_value(&cfg).unwrap();
        let path = Path::new("m.safetensors");
        check_known_keys(path, "cpflow.flow", &written, &cfg).unwrap();
        let mut extra = written.clone();
        extra["layers"][0]["junk"] = Value::from(1);
        let err = check_known_keys(path, "cpflow.flow", &extra, &cfg).unwrap_err();
        assert!(
            err.to_string()
                .contains("m.safetensors: unknown key `cpflow.flow.layers[0].junk`"),
            "{err}"
        );
        let mut flipped = written.clone();
        let pot = flipped["layers"][1]["potential"].as_object_mut().unwrap();
        let v = pot.remove("zero_shift").unwrap();
        pot.insert("zero_sGift".into(), v);
        let read: FlowConfig = serde_json::from_value(flipped.clone()).unwrap();
        let err = check_known_keys(path, "cpflow.flow", &flipped, &read).unwrap_err();
        assert!(
            err.to_string()
                .contains("`cpflow.flow.layers[1].potential.zero_sGift`"),
            "{err}"
        );
    }
}
