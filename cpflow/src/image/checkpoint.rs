//! Saving and loading image flows: one safetensors file with the weights (ActNorm init flags
//! included) and the [`ImageFlowConfig`] as JSON metadata, written atomically with
//! [`crate::checkpoint::write_atomic`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::error::{CpflowError, Result};
use crate::image::config::ImageFlowConfig;
use crate::image::flow::ImageFlow;

/// Metadata key of an image-flow file (a tabular [`crate::Flow`] file uses `"cpflow"`).
pub const IMAGE_METADATA_KEY: &str = "cpflow_image";
/// Format version of image-flow files.
pub const IMAGE_FORMAT_VERSION: u32 = 1;

/// The JSON part of an image-flow file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageCheckpointMeta {
    /// Format version.
    pub format_version: u32,
    /// The model.
    pub flow: ImageFlowConfig,
}

impl ImageFlow {
    /// The variables as `(name, tensor)` pairs (detached).
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
        let tensors: Vec<(String, Tensor)> = self
            .weight_tensors()
            .into_iter()
            .map(|(k, t)| Ok((k, t.contiguous()?)))
            .collect::<Result<_>>()?;
        write_atomic(path, &safetensors::serialize(tensors, Some(info))?)
    }

    /// Load a flow saved by [`ImageFlow::save`] onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<ImageFlow> {
        let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
        let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)?;
        let json = md
            .metadata()
            .as_ref()
            .and_then(|m| m.get(IMAGE_METADATA_KEY))
            .ok_or_else(|| {
                CpflowError::Checkpoint(format!(
                    "{} has no `{IMAGE_METADATA_KEY}` metadata: not a cpflow image-flow file",
                    path.display()
                ))
            })?;
        let meta: ImageCheckpointMeta = serde_json::from_str(json)?;
        if meta.format_version != IMAGE_FORMAT_VERSION {
            return Err(CpflowError::Checkpoint(format!(
                "unsupported image-flow format {} (expected {IMAGE_FORMAT_VERSION})",
                meta.format_version
            )));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        let flow = ImageFlow::new(meta.flow, device)?;
        flow.set_weights(&tensors, "")?;
        Ok(flow)
    }
}
