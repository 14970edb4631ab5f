//! Checkpoints: one safetensors file holding the weights (and optimiser moments, best
//! weights), with the configuration, training state, optimiser scalars and RNG state as JSON
//! in the safetensors metadata. Written atomically (temporary file in the same directory,
//! fsync, rename), so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::adam::AdamState;
use crate::config::TrainConfig;
use crate::error::{CpflowError, Result};
use crate::flow::Flow;
use crate::flow_config::FlowConfig;
use crate::rng::RngState;
use crate::train_state::TrainState;

/// Metadata key under which the JSON is stored.
pub const METADATA_KEY: &str = "cpflow";
/// Checkpoint format version.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of the best-weights tensors.
pub const BEST_PREFIX: &str = "best.";

/// The JSON part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version.
    pub format_version: u32,
    /// The model.
    pub flow: FlowConfig,
    /// Training configuration (absent in a weights-only file).
    #[serde(default)]
    pub train: Option<TrainConfig>,
    /// Trainer progress.
    #[serde(default)]
    pub state: Option<TrainState>,
    /// Optimiser scalars.
    #[serde(default)]
    pub adam: Option<AdamState>,
    /// Trainer RNG.
    #[serde(default)]
    pub rng: Option<RngState>,
}

/// A loaded checkpoint: metadata and every tensor by name.
pub struct Checkpoint {
    /// The JSON part.
    pub meta: CheckpointMeta,
    /// Model weights (names as in the flow's `VarMap`), `adam.*` moments, `best.*` weights.
    pub tensors: HashMap<String, Tensor>,
}

/// Write bytes to `path` atomically: temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| CpflowError::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| CpflowError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| CpflowError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CpflowError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CpflowError::io(path, e)
    })?;
    Ok(())
}

/// Serialise tensors and metadata into safetensors bytes.
pub fn to_bytes(meta: &CheckpointMeta, tensors: Vec<(String, Tensor)>) -> Result<Vec<u8>> {
    let mut info = HashMap::new();
    info.insert(METADATA_KEY.to_string(), serde_json::to_string(meta)?);
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.contiguous()?)))
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(tensors, Some(info))?)
}

/// Write a checkpoint atomically.
pub fn save_checkpoint(
    path: &Path,
    meta: &CheckpointMeta,
    tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    write_atomic(path, &to_bytes(meta, tensors)?)
}

/// Read a checkpoint (tensors placed on `device`).
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let json = md
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            CpflowError::Checkpoint(format!(
                "{} has no `{METADATA_KEY}` metadata: not a cpflow checkpoint",
                path.display()
            ))
        })?;
    let meta: CheckpointMeta = serde_json::from_str(json)?;
    if meta.format_version != FORMAT_VERSION {
        return Err(CpflowError::Checkpoint(format!(
            "unsupported checkpoint format {} (expected {FORMAT_VERSION})",
            meta.format_version
        )));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    Ok(Checkpoint { meta, tensors })
}

impl Flow {
    /// The model's variables as `(name, tensor)` pairs (detached copies of the references).
    pub fn weight_tensors(&self) -> Vec<(String, Tensor)> {
        crate::named_vars::detached_tensors(self.named_vars())
    }

    /// Set every variable from `tensors[prefix + name]` (shapes must match; dtype and device
    /// are converted).
    pub fn set_weights(&self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        crate::named_vars::set_vars(self.named_vars(), tensors, prefix)
    }

    /// Save the model (configuration + weights, including the ActNorm init flags) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            flow: self.config().clone(),
            train: None,
            state: None,
            adam: None,
            rng: None,
        };
        save_checkpoint(path, &meta, self.weight_tensors())
    }

    /// Load a model saved by [`Flow::save`] or a training checkpoint (its current weights).
    pub fn load(path: &Path, device: &Device) -> Result<Flow> {
        let ck = load_checkpoint(path, device)?;
        let flow = Flow::new(ck.meta.flow.clone(), device)?;
        flow.set_weights(&ck.tensors, "")?;
        Ok(flow)
    }

    /// Load the best weights of a training checkpoint (falls back to the current weights when
    /// the run never validated).
    pub fn load_best(path: &Path, device: &Device) -> Result<Flow> {
        let ck = load_checkpoint(path, device)?;
        let flow = Flow::new(ck.meta.flow.clone(), device)?;
        let has_best = ck.tensors.keys().any(|k| k.starts_with(BEST_PREFIX));
        flow.set_weights(&ck.tensors, if has_best { BEST_PREFIX } else { "" })?;
        Ok(flow)
    }
}
