//! Saving and loading image flows: one safetensors file with the weights (ActNorm init flags
//! included) and the [`ImageFlowConfig`] as JSON metadata, written atomically with
//! [`crate::checkpoint::write_atomic`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    MetadataEntry, TensorLayout, check_against_model, check_counted_parameters,
    check_format_version, check_known_keys_of, naming_file, write_atomic,
};
use crate::error::{CpflowError, Result};
use crate::image::config::ImageFlowConfig;
use crate::image::flow::ImageFlow;

/// Metadata key of an image-flow file (a tabular [`crate::Flow`] file uses `"cpflow"`).
pub const IMAGE_METADATA_KEY: &str = "cpflow_image";
/// Format version of image-flow files.
pub const IMAGE_FORMAT_VERSION: u32 = 1;

/// The JSON part of an image-flow file (under [`IMAGE_METADATA_KEY`] in the safetensors
/// metadata), written by [`ImageFlow::save`] and read by [`ImageFlow::load`].
///
/// ```
/// use cpflow::image::{IMAGE_FORMAT_VERSION, IMAGE_METADATA_KEY, ImageCheckpointMeta};
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
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-image-meta-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("model.safetensors");
/// flow.save(&path)?;
/// let bytes = std::fs::read(&path).unwrap();
/// let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)?;
/// let json = &md.metadata().as_ref().unwrap()[IMAGE_METADATA_KEY];
/// let meta: ImageCheckpointMeta = serde_json::from_str(json)?;
/// assert_eq!(meta.format_version, IMAGE_FORMAT_VERSION);
/// assert_eq!(&meta.flow, flow.config());
/// // The loaded flow gives the same log-densities, bit for bit.
/// let loaded = ImageFlow::load(&path, &Device::Cpu)?;
/// let (a, b) = (flow.log_prob_exact(&x)?, loaded.log_prob_exact(&x)?);
/// assert_eq!(a.to_vec1::<f64>()?, b.to_vec1::<f64>()?);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageCheckpointMeta {
    /// Format version.
    pub format_version: u32,
    /// The model.
    pub flow: ImageFlowConfig,
}

impl ImageFlow {
    /// The variables as `(name, tensor)` pairs.
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

    /// Save the configuration and weights atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = ImageCheckpointMeta {
            format_version: IMAGE_FORMAT_VERSION,
            flow: self.config().clone(),
        };
        let mut info = HashMap::new();
        info.insert(
            IMAGE_METADATA_KEY.to_string(),
            serde_json::to_string(&meta)?,
        );
        write_atomic(
            path,
            &crate::named_vars::serialize_finite(self.weight_tensors(), info)?,
        )
    }

    /// Load a flow saved by [`ImageFlow::save`] (or the current weights of an image
    /// training checkpoint) onto `device`. The file is checked as a flow checkpoint is
    /// ([`crate::checkpoint::load_checkpoint`]): finite values, checksums, the parameters the
    /// configuration counts against the tensor table before the model is built, then every
    /// variable present with its shape and dtype and no other tensor than the variables and
    /// their `ema.`/`adam.m.`/`adam.v.` copies. Every refusal names the file.
    pub fn load(path: &Path, device: &Device) -> Result<ImageFlow> {
        let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
        let (_, md) = crate::checkpoint_digest::read_header(path, &bytes)?;
        let entry = MetadataEntry {
            key: IMAGE_METADATA_KEY,
            kind_of_file: Some("an image-flow file"),
            cpflow_file: "a cpflow image-flow file",
        };
        let (meta, json): (ImageCheckpointMeta, _) = entry.read(path, &md)?;
        let version = meta.format_version;
        check_format_version(path, "image-flow", version, IMAGE_FORMAT_VERSION)?;
        check_known_keys_of(path, IMAGE_METADATA_KEY, json, "flow", &meta.flow)?;
        let tensors = crate::checkpoint::load_verified_tensors(path, &bytes, device)?;
        let counted = meta
            .flow
            .parameter_count()
            .map_err(|e| naming_file(path, e))?;
        check_counted_parameters(path, &md, IMAGE_LAYOUT, counted)?;
        let flow = ImageFlow::new(meta.flow, device).map_err(|e| naming_file(path, e))?;
        check_against_model(path, &md, IMAGE_LAYOUT, &flow.named_vars())?;
        flow.set_weights(&tensors, "")
            .map_err(|e| naming_file(path, e))?;
        Ok(flow)
    }
}

/// The tensors of an image-flow file: the model's variables, and in a training checkpoint
/// their EMA shadows (all of them, when any) and Adam moments.
pub(crate) const IMAGE_LAYOUT: TensorLayout<'static> = TensorLayout {
    model: "",
    copies: &["ema.", "adam.m.", "adam.v."],
    complete: &["ema."],
};
