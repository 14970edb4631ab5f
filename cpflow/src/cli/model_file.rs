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
    let json: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{} is not a safetensors file", file.display()))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
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
