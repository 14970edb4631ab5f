//! Checkpoints: one safetensors file holding the weights (and optimiser moments, best
//! weights), with the configuration, training state, optimiser scalars and RNG state as JSON
//! in the safetensors metadata. Written atomically (temporary file in the same directory,
//! fsync, rename), so a crash never leaves a half-written checkpoint. Reading one checks it
//! against its model (names, finite values, 0/1 init flags): see [`load_checkpoint`].

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

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
///
/// ```
/// use cpflow::checkpoint::{CheckpointMeta, FORMAT_VERSION};
/// use cpflow::FlowConfig;
/// let meta = CheckpointMeta::weights_only(FlowConfig::toy_reference(1));
/// assert_eq!(meta.format_version, FORMAT_VERSION);
/// assert!(meta.train.is_none() && meta.state.is_none() && meta.adam.is_none() && meta.rng.is_none());
/// // Stored as JSON in the safetensors metadata; the training parts may be absent.
/// let json = serde_json::to_string(&meta).unwrap();
/// assert_eq!(serde_json::from_str::<CheckpointMeta>(&json).unwrap(), meta);
/// let minimal = format!(r#"{{"format_version": 1, "flow": {}}}"#, serde_json::to_string(&meta.flow).unwrap());
/// assert_eq!(serde_json::from_str::<CheckpointMeta>(&minimal).unwrap(), meta);
/// ```
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

impl CheckpointMeta {
    /// The metadata of a weights-only file (what [`Flow::save`] writes): the model and no
    /// training state.
    pub fn weights_only(flow: FlowConfig) -> Self {
        CheckpointMeta {
            format_version: FORMAT_VERSION,
            flow,
            train: None,
            state: None,
            adam: None,
            rng: None,
        }
    }
}

/// A loaded checkpoint: metadata and every tensor by name.
///
/// ```
/// use cpflow::checkpoint::load_checkpoint;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// flow.initialize(&Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?)?;
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-checkpoint-{}", std::process::id()));
/// let path = dir.join("model.safetensors");
/// flow.save(&path)?;
/// let ck = load_checkpoint(&path, &Device::Cpu)?;
/// assert_eq!(&ck.meta.flow, flow.config());
/// // A weights-only file holds exactly the model's variables.
/// let mut names: Vec<String> = ck.tensors.into_keys().collect();
/// let mut vars: Vec<String> = flow.named_vars().into_iter().map(|(k, _)| k).collect();
/// names.sort();
/// vars.sort();
/// assert_eq!(names, vars);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub struct Checkpoint {
    /// The JSON part.
    pub meta: CheckpointMeta,
    /// Model weights (names as in the flow's `VarMap`), `adam.*` moments, `best.*` weights.
    pub tensors: HashMap<String, Tensor>,
}

/// Write bytes to `path` atomically: temporary file beside it (`.NAME.tmp-PID`), fsync,
/// rename. Missing parent directories are created.
///
/// ```
/// use cpflow::checkpoint::write_atomic;
/// # fn main() -> cpflow::Result<()> {
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-write-atomic-{}", std::process::id()));
/// let path = dir.join("nested").join("notes.txt");
/// write_atomic(&path, b"first")?;
/// write_atomic(&path, b"second")?; // replaces the file
/// assert_eq!(std::fs::read(&path).unwrap(), b"second");
/// // Only the file itself is left: no temporary file beside it.
/// assert_eq!(std::fs::read_dir(dir.join("nested")).unwrap().count(), 1);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = hidden_file_beside(path, "tmp");
    let dir = dir_of(path);
    std::fs::create_dir_all(dir).map_err(|e| CpflowError::io(dir, e))?;
    // A failed write (disk full, a file-size limit) or rename leaves no temporary file.
    write_synced(&tmp, bytes).map_err(|e| CpflowError::io(&tmp, e))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CpflowError::io(path, e));
    }
    sync_dir(dir);
    Ok(())
}

/// Writes `bytes` to the file `tmp` (created, or truncated) and syncs it: the first step of
/// [`write_atomic`]. On an error `tmp` is removed.
pub(crate) fn write_synced(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written =
        std::fs::File::create(tmp).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Syncs the directory `dir`, so that the renames into it are durable once its entries are
/// on disk: the last step of [`write_atomic`]. Best effort: a directory cannot be opened for
/// syncing on every platform, and the files themselves are complete.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Serialise tensors and metadata into safetensors bytes.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::checkpoint::{CheckpointMeta, METADATA_KEY, to_bytes};
/// # fn main() -> cpflow::Result<()> {
/// let meta = CheckpointMeta::weights_only(cpflow::FlowConfig::toy_reference(1));
/// let t = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?;
/// let bytes = to_bytes(&meta, vec![("w".into(), t)])?;
/// // Plain safetensors: any reader gets the tensor and the JSON metadata back.
/// let back = cpflow::candle::safetensors::load_buffer(&bytes, &Device::Cpu)?;
/// assert_eq!(back["w"].to_vec1::<f64>()?, [1.0, 2.0, 3.0]);
/// let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
/// let json = &header.metadata().as_ref().expect("metadata")[METADATA_KEY];
/// assert_eq!(serde_json::from_str::<CheckpointMeta>(json)?, meta);
/// # Ok(())
/// # }
/// ```
pub fn to_bytes(meta: &CheckpointMeta, tensors: Vec<(String, Tensor)>) -> Result<Vec<u8>> {
    let mut info = HashMap::new();
    info.insert(METADATA_KEY.to_string(), serde_json::to_string(meta)?);
    crate::named_vars::serialize_finite(tensors, info)
}

/// Write a checkpoint atomically.
///
/// ```
/// use cpflow::checkpoint::{CheckpointMeta, load_checkpoint, save_checkpoint};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// flow.initialize(&Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?)?;
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-save-checkpoint-{}", std::process::id()));
/// let path = dir.join("model.safetensors");
/// let meta = CheckpointMeta::weights_only(flow.config().clone());
/// save_checkpoint(&path, &meta, flow.weight_tensors())?;
/// // Read back and checked against the model the metadata describes.
/// let ck = load_checkpoint(&path, &Device::Cpu)?;
/// assert_eq!(ck.meta, meta);
/// assert_eq!(ck.tensors.len(), flow.named_vars().len());
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn save_checkpoint(
    path: &Path,
    meta: &CheckpointMeta,
    tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    write_atomic(path, &to_bytes(meta, tensors)?)
}

/// Read a checkpoint (tensors placed on `device`) and check it against the model its metadata
/// describes: every floating-point tensor must be finite, the file must match its checksums
/// (header and data: [`crate::checkpoint_digest::check_digests`]), the configuration may ask
/// for no more parameters than the file holds (checked before the model is built), the file
/// must hold every variable of the model, each of its shape and dtype, and nothing else than
/// the variables, their `best.` copies (all of them, when any) and their `adam.m.`/`adam.v.`
/// moments, and every ActNorm `initialized` flag must be 0 or 1. A file that breaks one of
/// these is corrupt (or written by something else), and is refused here, naming the file
/// and the tensor, rather than failing later as a Cholesky or "not initialised" error, or
/// loading as another model.
///
/// ```
/// use cpflow::CpflowError;
/// use cpflow::checkpoint::load_checkpoint;
/// # use cpflow::candle::Device;
/// # fn main() -> cpflow::Result<()> {
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-load-checkpoint-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).ok();
/// // Not a safetensors file: refused, naming the file.
/// let path = dir.join("corrupt.safetensors");
/// std::fs::write(&path, b"not a checkpoint").unwrap();
/// match load_checkpoint(&path, &Device::Cpu) {
///     Err(CpflowError::Checkpoint(msg)) => assert!(msg.contains("corrupt.safetensors"), "{msg}"),
///     other => panic!("expected a checkpoint error, got {:?}", other.err()),
/// }
/// // A missing file is an I/O error.
/// let missing = load_checkpoint(&dir.join("missing.safetensors"), &Device::Cpu);
/// assert!(matches!(missing, Err(CpflowError::Io { .. })));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    read_checked(path, device).map(|(ck, _)| ck)
}

/// [`load_checkpoint`], also returning the (freshly built, not yet loaded) model of the
/// checkpoint's configuration on `device`: the check builds it for the variable names, so the
/// loaders use it instead of building it again.
///
/// The order of the checks: the metadata, the values (finite), the checksums
/// ([`crate::checkpoint_digest::check_digests`]) and the parameter count the configuration
/// implies against the tensor table, all before the model is built; then the tensor table
/// against the model's variables (names, shapes, dtypes) and the ActNorm flags.
pub(crate) fn read_checked(path: &Path, device: &Device) -> Result<(Checkpoint, Flow)> {
    let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
    let (_, md) = crate::checkpoint_digest::read_header(path, &bytes)?;
    let (meta, json): (CheckpointMeta, _) = FLOW_ENTRY.read(path, &md)?;
    check_format_version(path, "checkpoint", meta.format_version, FORMAT_VERSION)?;
    check_known_keys_of(path, METADATA_KEY, json, "flow", &meta.flow)?;
    // Checked on the host, then moved: the checks read every value.
    let host = load_verified_tensors(path, &bytes, &Device::Cpu)?;
    check_counted_parameters(path, &md, FLOW_LAYOUT, meta.flow.parameter_count())?;
    let flow = Flow::new(meta.flow.clone(), device).map_err(|e| naming_file(path, e))?;
    check_against_model(path, &md, FLOW_LAYOUT, &flow.named_vars())?;
    check_init_flags(path, &host)?;
    let tensors = host
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(device)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok((Checkpoint { meta, tensors }, flow))
}

/// The tensors of the weights file `path` (read as `bytes`) on `device`, after the checks
/// every loader makes before it builds a model: every floating-point value finite, and the
/// checksums (header and data: [`crate::checkpoint_digest::check_digests`]) matching. Errors
/// name the file.
pub(crate) fn load_verified_tensors(
    path: &Path,
    bytes: &[u8],
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| naming_file(path, e.into()))?;
    crate::named_vars::check_loaded_finite(path, &tensors)?;
    crate::checkpoint_digest::check_digests(path, bytes)?;
    Ok(tensors)
}

/// The metadata entry of a flow checkpoint or model file.
const FLOW_ENTRY: MetadataEntry<'static> = MetadataEntry {
    key: METADATA_KEY,
    kind_of_file: Some("a flow checkpoint or model file"),
    cpflow_file: "a cpflow checkpoint",
};

/// The tensors of a flow checkpoint: the model's variables, their `best.` copies and their
/// Adam moments.
const FLOW_LAYOUT: TensorLayout<'static> = TensorLayout {
    model: "",
    copies: &[BEST_PREFIX, "adam.m.", "adam.v."],
    complete: &[BEST_PREFIX],
};

/// What a cpflow weights file is, by the key of its metadata (with the call that reads
/// it), for the messages of the loaders it was given to by mistake; `None` for a file that
/// no cpflow loader reads.
pub(crate) fn file_kind(metadata: Option<&HashMap<String, String>>) -> Option<&'static str> {
    let has = |key: &str| metadata.is_some_and(|m| m.contains_key(key));
    // An image-flow training checkpoint holds both image keys: the training one first.
    [
        (
            METADATA_KEY,
            "a flow checkpoint or model file (`Flow::load`, `Trainer::resume`)",
        ),
        (
            VAE_METADATA_KEY,
            "a VAE checkpoint or weights file (`vae::load_vae_file`, `vae::run_vae` with \
             `resume`)",
        ),
        (
            crate::image::train::IMAGE_TRAIN_METADATA_KEY,
            "an image-flow training checkpoint (`image::run_image_training` with `resume`)",
        ),
        (
            crate::image::IMAGE_METADATA_KEY,
            "an image-flow model file (`ImageFlow::load`)",
        ),
    ]
    .into_iter()
    .find(|(key, _)| has(key))
    .map(|(_, kind)| kind)
}

/// The metadata key of the VAE's files (`vae::VAE_METADATA_KEY`, which exists with the
/// `vae` feature only).
const VAE_METADATA_KEY: &str = "cpflow-vae";

/// Refuses an ActNorm `initialized` flag (of the current or the best weights) other than 0
/// or 1 in the tensors of the file `path`, in name order so the error is deterministic.
fn check_init_flags(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().filter(|n| is_init_flag(n)).collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let values = t
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        if let Some(v) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(CpflowError::Checkpoint(format!(
                "{}: tensor {name} holds {v}, but an ActNorm `initialized` flag is 0 or 1: \
                 the file is corrupt",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Whether `name` is an ActNorm init flag (of the current or the best weights; the optimiser's
/// moments of a flag are not flags).
fn is_init_flag(name: &str) -> bool {
    let var = name.strip_prefix(BEST_PREFIX).unwrap_or(name);
    !name.starts_with("adam.") && (var == "initialized" || var.ends_with(".initialized"))
}

impl Flow {
    /// The model's variables as `(name, tensor)` pairs.
    /// Each tensor is detached from the autograd graph but shares storage with the variables, so it
    /// follows later training steps and `set_weights`; take `Tensor::copy` of each for a snapshot.
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
        let meta = CheckpointMeta::weights_only(self.config().clone());
        save_checkpoint(path, &meta, self.weight_tensors())
    }

    /// Load a model saved by [`Flow::save`] or a training checkpoint (its current weights).
    pub fn load(path: &Path, device: &Device) -> Result<Flow> {
        let (ck, flow) = read_checked(path, device)?;
        flow.set_weights(&ck.tensors, "")
            .map_err(|e| naming_file(path, e))?;
        Ok(flow)
    }

    /// Load the best weights of a training checkpoint (falls back to the current weights when
    /// the run never validated).
    pub fn load_best(path: &Path, device: &Device) -> Result<Flow> {
        let (ck, flow) = read_checked(path, device)?;
        let has_best = ck.tensors.keys().any(|k| k.starts_with(BEST_PREFIX));
        flow.set_weights(&ck.tensors, if has_best { BEST_PREFIX } else { "" })
            .map_err(|e| naming_file(path, e))?;
        Ok(flow)
    }
}

mod file_error;
mod hidden_file;
mod known_keys;
mod metadata_entry;
mod tensor_table;
pub(crate) use file_error::naming_file;
#[cfg(feature = "cli")]
pub(crate) use hidden_file::hidden_file_prefix;
pub(crate) use hidden_file::{dir_of, hidden_file_beside};
pub(crate) use known_keys::check_known_keys_of;
pub(crate) use metadata_entry::{MetadataEntry, check_format_version};
pub(crate) use tensor_table::{TensorLayout, check_against_model, check_counted_parameters};

#[cfg(test)]
mod tests;
