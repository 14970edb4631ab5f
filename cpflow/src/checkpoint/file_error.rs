//! Errors met while loading a weights file, made to name it: a configuration refused by the
//! model's constructor, a weight of another shape, a bad RNG state otherwise said nothing of
//! which file they came from.

use std::path::Path;

use crate::error::CpflowError;

/// `e`, met while loading the file `path`, as an error that names the file: unchanged when
/// its message already does (or it is an I/O error, which names its own file), else a
/// [`CpflowError::Checkpoint`] `"PATH: <message>: <its causes>"` (the causes are printed in
/// the message, as the loaders' other checkpoint errors do).
pub(crate) fn naming_file(path: &Path, e: CpflowError) -> CpflowError {
    let shown = path.display().to_string();
    if matches!(e, CpflowError::Io { .. }) || e.to_string().contains(&shown) {
        return e;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    CpflowError::Checkpoint(format!("{shown}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message gets the path and the causes once; one that names the file, or an I/O
    /// error, is kept as it is.
    #[test]
    fn errors_get_the_path_once() {
        let path = Path::new("run/model.safetensors");
        let e = naming_file(path, CpflowError::InvalidConfig("width must be ≥ 1".into()));
        assert_eq!(
            e.to_string(),
            "checkpoint error: run/model.safetensors: invalid configuration: width must be ≥ 1"
        );
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let e = naming_file(path, CpflowError::Json(json)).to_string();
        assert!(
            e.starts_with("checkpoint error: run/model.safetensors: JSON (de)serialisation failed: expected value"),
            "{e}"
        );
        let named = CpflowError::Checkpoint("run/model.safetensors: corrupt".into());
        assert_eq!(
            naming_file(path, named).to_string(),
            "checkpoint error: run/model.safetensors: corrupt"
        );
        let io = CpflowError::io(Path::new("x"), std::io::Error::other("gone"));
        assert!(matches!(naming_file(path, io), CpflowError::Io { .. }));
    }
}
