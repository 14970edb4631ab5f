//! What a `--model` file holds, read from its safetensors header alone (the tensors are not
//! loaded): a vector flow of `cpflow train`, an image flow, or a VAE of `cpflow vae`. `eval`,
//! `sample` and `plot` say which command handles a file they cannot, instead of the loader's
//! "not a cpflow checkpoint" (`eval` and `sample` take image flows and VAEs too, `plot` does
//! not).

use crate::cli::shell_words::{resume_command, shell_word};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;

/// The kinds of weights files the commands meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A flow on vectors (`cpflow train` on a toy, a file or a tabular benchmark).
    Flow,
    /// An image flow (`cpflow train` with an image config such as `configs/mnist.toml`).
    Image,
    /// A VAE (`cpflow vae`).
    Vae,
    /// A safetensors file without any cpflow metadata.
    Unknown,
}

/// Largest safetensors header read (the format's own limit is 100 MB; ours hold a JSON
/// configuration and the tensor table, a few hundred kB at most).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The metadata keys of the `__metadata__` table of `file`'s safetensors header.
fn metadata_keys(file: &Path) -> Result<Vec<String>> {
    let reading = || format!("reading the safetensors header of {}", file.display());
    let mut f = std::fs::File::open(file).with_context(reading)?;
    let size = f.metadata().with_context(reading)?.len();
    if size < 8 {
        bail!(
            "{} is not a safetensors file: it holds {size} bytes, fewer than the 8 of a \
             safetensors header's length (truncated or empty)",
            file.display()
        );
    }
    let mut len = [0u8; 8];
    f.read_exact(&mut len).with_context(reading)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        bail!(
            "{} is not a safetensors file (its header would be {len} bytes)",
            file.display()
        );
    }
    if len > size - 8 {
        bail!(
            "{} is truncated or corrupt: its safetensors header would be {len} bytes, but \
             only {} follow the header's length",
            file.display(),
            size - 8
        );
    }
    let mut header = Vec::new();
    f.take(len).read_to_end(&mut header).with_context(reading)?;
    let json: serde_json::Value = serde_json::from_slice(&header).with_context(|| {
        format!(
            "{} is damaged or not a cpflow model: its safetensors header ({len} bytes) is not \
             valid JSON (a changed byte, or a file of another program)",
            file.display()
        )
    })?;
    header_metadata_keys(file, &json)
}

/// The keys of the `__metadata__` table of the parsed safetensors header `json` of `file`.
/// A header that is not the safetensors layout (an object of tensor entries, `dtype`,
/// `shape` and `data_offsets`, and an optional `__metadata__` table of strings), or whose
/// metadata has a key that is nearly one of cpflow's, is refused as damaged or foreign: one
/// changed byte in `"__metadata__"` or `"cpflow"` would otherwise read as a file without
/// cpflow metadata ([`ModelKind::Unknown`]), i.e. "not written by cpflow".
fn header_metadata_keys(file: &Path, json: &serde_json::Value) -> Result<Vec<String>> {
    let damaged = |what: String| {
        anyhow::anyhow!(
            "{} is damaged or not a cpflow model: its safetensors header {what} (a changed \
             byte in a cpflow file, or a file of another program)",
            file.display()
        )
    };
    let Some(entries) = json.as_object() else {
        return Err(damaged("is not a JSON object".into()));
    };
    let mut keys = Vec::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            let Some(table) = entry
                .as_object()
                .filter(|t| t.values().all(|v| v.is_string()))
            else {
                return Err(damaged(
                    "has a `__metadata__` entry that is not a table of strings".into(),
                ));
            };
            keys.extend(table.keys().cloned());
        } else if !is_tensor_entry(entry) {
            return Err(damaged(format!(
                "has an entry `{}` that is neither `__metadata__` nor a tensor (dtype, shape, \
                 data_offsets)",
                name.escape_debug()
            )));
        }
    }
    if kind_of_metadata(&keys) == ModelKind::Unknown
        && let Some(k) = keys.iter().find(|k| nearly_a_cpflow_key(k))
    {
        return Err(damaged(format!(
            "has the metadata key `{}`, close to but not one of cpflow's ({})",
            k.escape_debug(),
            CPFLOW_KEYS.join(", ")
        )));
    }
    Ok(keys)
}

/// The metadata keys of cpflow's files.
const CPFLOW_KEYS: [&str; 4] = [
    crate::checkpoint::METADATA_KEY,
    crate::vae::VAE_METADATA_KEY,
    crate::image::IMAGE_METADATA_KEY,
    crate::image::train::IMAGE_TRAIN_METADATA_KEY,
];

/// Whether `entry` of a safetensors header is a tensor's: an object with a string `dtype`
/// and array `shape` and `data_offsets`.
fn is_tensor_entry(entry: &serde_json::Value) -> bool {
    entry.get("dtype").is_some_and(|v| v.is_string())
        && entry.get("shape").is_some_and(|v| v.is_array())
        && entry.get("data_offsets").is_some_and(|v| v.is_array())
}

/// Whether the metadata key `key` looks like one of [`CPFLOW_KEYS`] with a damaged byte: it
/// mentions `cpflow` (any case), or has the length of one of them and differs from it in
/// at most two bytes (a flipped bit changes one byte; a foreign file's keys, e.g.
/// `format`, are not that close to them).
fn nearly_a_cpflow_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("cpflow")
        || CPFLOW_KEYS.iter().any(|c| {
            c.len() == key.len() && c.bytes().zip(key.bytes()).filter(|(a, b)| a != b).count() <= 2
        })
}

/// Whether `file`'s safetensors header has the metadata key `key` (e.g. an image training
/// checkpoint's `cpflow_image_train`).
pub fn has_metadata_key(file: &Path, key: &str) -> Result<bool> {
    Ok(metadata_keys(file)?.iter().any(|k| k == key))
}

/// The kind of model in `file`.
pub fn model_kind(file: &Path) -> Result<ModelKind> {
    Ok(kind_of_metadata(&metadata_keys(file)?))
}

/// The kind of model whose safetensors `__metadata__` has the keys `keys`.
pub fn kind_of_metadata<S: AsRef<str>>(keys: &[S]) -> ModelKind {
    let has = |k: &str| keys.iter().any(|x| x.as_ref() == k);
    if has(crate::vae::VAE_METADATA_KEY) {
        ModelKind::Vae
    } else if has(crate::image::IMAGE_METADATA_KEY)
        || has(crate::image::train::IMAGE_TRAIN_METADATA_KEY)
    {
        ModelKind::Image
    } else if has(crate::checkpoint::METADATA_KEY) {
        ModelKind::Flow
    } else {
        ModelKind::Unknown
    }
}

/// Refuses `file`, whose [`model_kind`] is `kind`, unless it holds a vector flow, for
/// `command` (`eval`, `plot`, `sample`), naming the command that handles what it holds.
/// `images_ok`: the command also takes image flows (`eval`, `sample`).
pub fn require_flow(file: &Path, kind: ModelKind, command: &str, images_ok: bool) -> Result<()> {
    let dir = crate::checkpoint::dir_of(file);
    match kind {
        ModelKind::Flow => {}
        ModelKind::Image if images_ok => {}
        ModelKind::Vae => bail!(
            "{} is a VAE of `cpflow vae`, which `cpflow {command}` does not take (it reads \
             flows of `cpflow train`): `cpflow eval --model {}` scores it on its test split, \
             `cpflow sample --model {} --grid 8x8 -o samples.png` draws from it, and `{}` \
             continues an unfinished run",
            file.display(),
            shell_word(dir),
            shell_word(dir),
            resume_command("vae", dir)
        ),
        ModelKind::Image => {
            // A model of `cpflow import-reference` has no report (it was not trained here).
            let report = dir.join("report.json");
            let scores = if report.is_file() {
                format!("; the run's own test score is in {}", report.display())
            } else {
                String::new()
            };
            bail!(
                "{} is an image flow, which `cpflow {command}` does not take (it reads flows \
                 on vectors): `cpflow eval --model {}` scores it in bits per dimension on its \
                 dataset's test split, and `cpflow sample --model {} --grid 8x8 -o \
                 samples.png` draws from it{scores}",
                file.display(),
                dir.display(),
                dir.display()
            )
        }
        ModelKind::Unknown => bail!(
            "{} has no cpflow metadata: not a model written by `cpflow train`",
            file.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;

    /// A safetensors file with one small tensor and the metadata key `key`.
    pub(crate) fn write_with_key(path: &Path, key: &str) {
        let t = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        let info = HashMap::from([(key.to_string(), "{}".to_string())]);
        let bytes = safetensors::serialize(vec![("w".to_string(), t)], Some(info)).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn kinds_come_from_the_metadata_key() {
        let dir = std::env::temp_dir().join(format!("cpflow-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        for (key, kind) in [
            (crate::vae::VAE_METADATA_KEY, ModelKind::Vae),
            (crate::image::IMAGE_METADATA_KEY, ModelKind::Image),
            (crate::checkpoint::METADATA_KEY, ModelKind::Flow),
            ("other", ModelKind::Unknown),
        ] {
            write_with_key(&p, key);
            assert_eq!(model_kind(&p).unwrap(), kind, "{key}");
        }
        write_with_key(&p, crate::vae::VAE_METADATA_KEY);
        let err = require_flow(&p, ModelKind::Vae, "plot", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VAE") && err.contains("cpflow eval") && err.contains("cpflow sample"),
            "{err}"
        );
        // The resume command is the one every other message names (a run's directory).
        let resume = resume_command("vae", &dir);
        assert!(err.contains(&format!("`{resume}` continues")), "{err}");
        // `plot` refuses an image flow, naming the commands that take it; `eval` takes it.
        write_with_key(&p, crate::image::IMAGE_METADATA_KEY);
        let err = require_flow(&p, ModelKind::Image, "plot", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cpflow plot") && err.contains("cpflow eval") && err.contains("sample"),
            "{err}"
        );
        assert!(require_flow(&p, ModelKind::Image, "eval", true).is_ok());
        assert!(has_metadata_key(&p, crate::image::IMAGE_METADATA_KEY).unwrap());
        assert!(!has_metadata_key(&p, crate::image::train::IMAGE_TRAIN_METADATA_KEY).unwrap());
        std::fs::write(&p, b"not a model").unwrap();
        assert!(model_kind(&p).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A metadata key one byte away from cpflow's, a `__metadata__` key with a changed byte
    /// and a header that is not JSON are damage; a foreign file's metadata is not.
    #[test]
    fn a_damaged_header_is_told_from_a_foreign_file() {
        let dir = std::env::temp_dir().join(format!("cpflow-damaged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        for key in ["cpflnw", "cpflow_imagd", "Cpflow-vae-x"] {
            write_with_key(&p, key);
            let e = format!("{:#}", model_kind(&p).unwrap_err());
            assert!(
                e.contains("damaged or not a cpflow model") && e.contains(key),
                "{e}"
            );
        }
        for key in ["format", "other", "__metadata"] {
            write_with_key(&p, key);
            assert_eq!(model_kind(&p).unwrap(), ModelKind::Unknown, "{key}");
        }
        write_with_key(&p, crate::checkpoint::METADATA_KEY);
        let mut bytes = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let at = text.find("__metadata__").unwrap() + 3;
        bytes[at] ^= 0x20; // `__Metadata__`
        std::fs::write(&p, &bytes).unwrap();
        let e = format!("{:#}", model_kind(&p).unwrap_err());
        assert!(e.contains("neither `__metadata__` nor a tensor"), "{e}");
        bytes[8] = b'x';
        std::fs::write(&p, &bytes).unwrap();
        let e = format!("{:#}", model_kind(&p).unwrap_err());
        assert!(e.contains("is not valid JSON"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_truncated_file_is_named_as_such() {
        let dir = std::env::temp_dir().join(format!("cpflow-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        write_with_key(&p, crate::checkpoint::METADATA_KEY);
        let whole = std::fs::read(&p).unwrap();
        let header = u64::from_le_bytes(whole[..8].try_into().unwrap()) as usize;
        // Cut inside the length, and inside the JSON header: both name what is missing.
        for (cut, expect) in [
            (0, "holds 0 bytes"),
            (5, "holds 5 bytes"),
            (8 + header / 2, "truncated or corrupt"),
        ] {
            std::fs::write(&p, &whole[..cut]).unwrap();
            let err = format!("{:#}", model_kind(&p).unwrap_err());
            assert!(err.contains(expect), "cut {cut}: {err}");
        }
        // The whole header is enough to tell the kind (the tensors are not read).
        std::fs::write(&p, &whole[..8 + header]).unwrap();
        assert_eq!(model_kind(&p).unwrap(), ModelKind::Flow);
        std::fs::remove_dir_all(&dir).ok();
    }
}
