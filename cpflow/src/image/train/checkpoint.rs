//! The resumable checkpoint of an image run: one safetensors file with the current weights,
//! the EMA shadows (`ema.*`), Adam's moments (`adam.m.*`, `adam.v.*`) and, as JSON metadata,
//! the configurations, the progress, Adam's scalars and the RNG position. It also carries the
//! weights-only metadata of [`crate::image::ImageFlow::save`], so `ImageFlow::load` reads its current
//! (not averaged) weights. Written atomically.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ImageTrainState;
use super::config::ImageTrainConfig;
use crate::adam::AdamState;
use crate::checkpoint::{
    MetadataEntry, TensorLayout, check_against_model, check_counted_parameters,
    check_format_version, check_known_keys_of, naming_file, write_atomic,
};
use crate::error::{CpflowError, Result};
use crate::image::ImageFlow;
use crate::image::checkpoint::{
    IMAGE_FORMAT_VERSION, IMAGE_LAYOUT, IMAGE_METADATA_KEY, ImageCheckpointMeta,
};
use crate::image::config::ImageFlowConfig;
use crate::rng::RngState;

mod state_check;
#[cfg(test)]
mod tests_state_check;

pub(crate) use state_check::check_resumable;

/// Metadata key of the training part of an image checkpoint.
pub const IMAGE_TRAIN_METADATA_KEY: &str = "cpflow_image_train";
/// Format version of image training checkpoints.
pub const IMAGE_TRAIN_FORMAT_VERSION: u32 = 1;
/// Prefix of the EMA tensors.
pub const EMA_PREFIX: &str = "ema.";

/// The JSON part of an image training checkpoint.
///
/// ```
/// use cpflow::image::train::{
///     IMAGE_TRAIN_FORMAT_VERSION, ImageTrainCheckpointMeta, load_image_checkpoint,
///     save_image_checkpoint,
/// };
/// use cpflow::image::{ImageTrainConfig, ImageTrainState};
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let meta = ImageTrainCheckpointMeta {
///     format_version: IMAGE_TRAIN_FORMAT_VERSION,
///     flow: flow.config().clone(),
///     train: ImageTrainConfig { max_iterations: Some(1), ..Default::default() },
///     state: ImageTrainState { iteration: 1, ..Default::default() },
///     adam: cpflow::AdamState { params: Default::default(), steps: Default::default() },
///     rng: cpflow::FlowRng::seed_from_u64(3).state(),
///     ema: false,
/// };
/// // Every part survives the JSON metadata unchanged.
/// let json = serde_json::to_string(&meta)?;
/// assert_eq!(serde_json::from_str::<ImageTrainCheckpointMeta>(&json)?, meta);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTrainCheckpointMeta {
    /// Format version.
    pub format_version: u32,
    /// The model.
    pub flow: ImageFlowConfig,
    /// The training configuration of the run that wrote it.
    pub train: ImageTrainConfig,
    /// Progress.
    pub state: ImageTrainState,
    /// Adam's scalars (moments are tensors).
    pub adam: AdamState,
    /// The trainer's RNG.
    pub rng: RngState,
    /// Whether `ema.*` tensors are present.
    pub ema: bool,
}

/// A loaded image training checkpoint.
///
/// ```
/// use cpflow::image::train::{
///     IMAGE_TRAIN_FORMAT_VERSION, ImageTrainCheckpointMeta, load_image_checkpoint,
///     save_image_checkpoint,
/// };
/// use cpflow::image::{ImageTrainConfig, ImageTrainState};
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let meta = ImageTrainCheckpointMeta {
///     format_version: IMAGE_TRAIN_FORMAT_VERSION,
///     flow: flow.config().clone(),
///     train: ImageTrainConfig { max_iterations: Some(1), ..Default::default() },
///     state: ImageTrainState { iteration: 1, ..Default::default() },
///     adam: cpflow::AdamState { params: Default::default(), steps: Default::default() },
///     rng: cpflow::FlowRng::seed_from_u64(3).state(),
///     ema: false,
/// };
/// let name = format!("cpflow-doc-image-ckpt-{}.safetensors", std::process::id());
/// let path = std::env::temp_dir().join(name);
/// save_image_checkpoint(&path, &meta, flow.weight_tensors())?;
/// let ckpt = load_image_checkpoint(&path, &Device::Cpu)?;
/// assert_eq!(ckpt.meta, meta);
/// assert_eq!(ckpt.tensors.len(), flow.weight_tensors().len());
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub struct ImageTrainCheckpoint {
    /// The JSON part.
    pub meta: ImageTrainCheckpointMeta,
    /// Weights, `ema.*`, `adam.*`.
    pub tensors: HashMap<String, Tensor>,
}

/// Write a checkpoint atomically.
///
/// The file also carries the weights-only metadata of [`crate::image::ImageFlow::save`], so
/// [`crate::image::ImageFlow::load`] reads the weights it holds.
///
/// ```
/// use cpflow::image::train::{
///     IMAGE_TRAIN_FORMAT_VERSION, ImageTrainCheckpointMeta, load_image_checkpoint,
///     save_image_checkpoint,
/// };
/// use cpflow::image::{ImageTrainConfig, ImageTrainState};
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let meta = ImageTrainCheckpointMeta {
///     format_version: IMAGE_TRAIN_FORMAT_VERSION,
///     flow: flow.config().clone(),
///     train: ImageTrainConfig { max_iterations: Some(1), ..Default::default() },
///     state: ImageTrainState { iteration: 1, ..Default::default() },
///     adam: cpflow::AdamState { params: Default::default(), steps: Default::default() },
///     rng: cpflow::FlowRng::seed_from_u64(3).state(),
///     ema: false,
/// };
/// let name = format!("cpflow-doc-image-save-{}.safetensors", std::process::id());
/// let path = std::env::temp_dir().join(name);
/// save_image_checkpoint(&path, &meta, flow.weight_tensors())?;
/// let loaded = ImageFlow::load(&path, &Device::Cpu)?;
/// let (a, b) = (flow.log_prob_exact(&x)?, loaded.log_prob_exact(&x)?);
/// assert_eq!(a.to_vec1::<f64>()?, b.to_vec1::<f64>()?); // bit for bit
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn save_image_checkpoint(
    path: &Path,
    meta: &ImageTrainCheckpointMeta,
    tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    let weights_meta = ImageCheckpointMeta {
        format_version: IMAGE_FORMAT_VERSION,
        flow: meta.flow.clone(),
    };
    let mut info = HashMap::new();
    info.insert(
        IMAGE_METADATA_KEY.to_string(),
        serde_json::to_string(&weights_meta)?,
    );
    info.insert(
        IMAGE_TRAIN_METADATA_KEY.to_string(),
        serde_json::to_string(meta)?,
    );
    write_atomic(path, &crate::named_vars::serialize_finite(tensors, info)?)
}

/// Read a checkpoint written by [`save_image_checkpoint`] (tensors on `device`), checked as
/// [`crate::image::ImageFlow::load`] checks a file (finite values, checksums, the parameter
/// count before any model is built, every variable with its shape and dtype), with `ema.*`
/// tensors for every variable exactly when the metadata says so. Every refusal names the
/// file.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::image::train::load_image_checkpoint;
/// # fn main() -> cpflow::Result<()> {
/// // A file that is not a checkpoint (here: a missing one) is an error, not a panic.
/// let path = std::env::temp_dir().join("cpflow-doc-no-such-checkpoint.safetensors");
/// let missing = load_image_checkpoint(&path, &Device::Cpu);
/// assert!(matches!(missing, Err(cpflow::CpflowError::Io { .. })));
/// # Ok(())
/// # }
/// ```
pub fn load_image_checkpoint(path: &Path, device: &Device) -> Result<ImageTrainCheckpoint> {
    let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
    let (_, md) = crate::checkpoint_digest::read_header(path, &bytes)?;
    let entry = MetadataEntry {
        key: IMAGE_TRAIN_METADATA_KEY,
        kind_of_file: None,
        cpflow_file: "an image training checkpoint",
    };
    let (meta, json): (ImageTrainCheckpointMeta, _) = entry.read(path, &md)?;
    let version = meta.format_version;
    check_format_version(
        path,
        "image checkpoint",
        version,
        IMAGE_TRAIN_FORMAT_VERSION,
    )?;
    check_known_keys_of(path, IMAGE_TRAIN_METADATA_KEY, json, "flow", &meta.flow)?;
    let tensors = crate::checkpoint::load_verified_tensors(path, &bytes, device)?;
    // The tensor table against the model the metadata describes (built on the host for its
    // variables' names, shapes and dtypes, once its parameter count is known to fit the file).
    let layout = if meta.ema {
        IMAGE_LAYOUT
    } else {
        TensorLayout {
            copies: &["adam.m.", "adam.v."],
            complete: &[],
            ..IMAGE_LAYOUT
        }
    };
    let counted = meta
        .flow
        .parameter_count()
        .map_err(|e| naming_file(path, e))?;
    check_counted_parameters(path, &md, layout, counted)?;
    let model =
        ImageFlow::new(meta.flow.clone(), &Device::Cpu).map_err(|e| naming_file(path, e))?;
    check_against_model(path, &md, layout, &model.named_vars())?;
    Ok(ImageTrainCheckpoint { meta, tensors })
}
