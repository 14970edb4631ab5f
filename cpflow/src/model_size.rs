//! Parameter counts of whole models from their configurations, checked against
//! [`icnn::MAX_MODEL_PARAMETERS`] before anything is built.
//!
//! Each ICNN refuses an oversized configuration of its own, but a flow multiplies blocks:
//! `blocks = 10¹⁵` of a small network built its layer list for minutes, silently, before the
//! first network was made. The builders here ([`crate::FlowConfig::validate`],
//! [`crate::image::ImageFlowConfig::multiscale`], the CLI's flow layouts,
//! [`crate::posterior::PosteriorConfig::validate`]) count first and refuse with a message
//! that names the model. A network of your own ([`crate::PotentialConfig::Custom`]) has no
//! count here (its builder is yours): it adds its block's `w₀`, `w₁` and nothing more to the
//! bound that is checked, and its own builder answers for its size.
//!
//! Counts saturate at `usize::MAX` instead of overflowing.

use crate::block::BlockConfig;
use crate::error::Result;
use crate::potential::PotentialConfig;

/// `a·b`, saturating.
pub(crate) fn mul(a: usize, b: usize) -> usize {
    a.saturating_mul(b)
}

/// `a + b`, saturating.
pub(crate) fn add(a: usize, b: usize) -> usize {
    a.saturating_add(b)
}

/// Parameters of an ActNorm over `features` units (bias and log-scale; the init flag is not
/// a parameter).
pub(crate) fn actnorm(features: usize) -> usize {
    mul(2, features)
}

/// Parameters of a block's own scalars: `w₁`, and `w₀` when it is trained.
fn block_scalars(block: &BlockConfig) -> usize {
    1 + usize::from(block.trainable_w0)
}

/// A model's parameter count with networks of your own counted as 0 (`at_least`, what the
/// bound is checked against), and whether it had none (then the count is exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Count {
    pub(crate) at_least: usize,
    pub(crate) exact: bool,
}

impl Count {
    /// An exact count of `n`.
    pub(crate) fn of(n: usize) -> Self {
        Count {
            at_least: n,
            exact: true,
        }
    }

    /// The count of `block`: its potential's (0 and inexact for a network of your own) and
    /// its scalars.
    pub(crate) fn of_block(block: &BlockConfig) -> Self {
        let potential = block.potential.parameter_count();
        Count {
            at_least: add(potential.unwrap_or(0), block_scalars(block)),
            exact: potential.is_some(),
        }
    }

    /// `self + other`.
    pub(crate) fn plus(self, other: Count) -> Self {
        Count {
            at_least: add(self.at_least, other.at_least),
            exact: self.exact && other.exact,
        }
    }

    /// `n` copies of `self`.
    pub(crate) fn times(self, n: usize) -> Self {
        Count {
            at_least: mul(n, self.at_least),
            exact: self.exact,
        }
    }

    /// The count when it is exact.
    pub(crate) fn exact(self) -> Option<usize> {
        self.exact.then_some(self.at_least)
    }
}

impl PotentialConfig {
    /// Scalar parameters of the network this configuration builds, counted without building
    /// it; `None` for a network of your own (its builder decides). Saturates at `usize::MAX`.
    ///
    /// ```
    /// use cpflow::PotentialConfig;
    /// let c = cpflow::icnn::Icnn3Config { dim: 2, width: 8, depth: 3, ..Default::default() };
    /// assert_eq!(PotentialConfig::Icnn3(c.clone()).parameter_count(), Some(c.parameter_count()));
    /// ```
    pub fn parameter_count(&self) -> Option<usize> {
        Some(match self {
            PotentialConfig::Icnn(c) => c.parameter_count(),
            PotentialConfig::Icnn2(c) => c.parameter_count(),
            PotentialConfig::Icnn3(c) => c.parameter_count(),
            PotentialConfig::DenseIcnn2(c) => c.parameter_count(),
            PotentialConfig::Picnn(c) => c.parameter_count(),
            PotentialConfig::ConvIcnn(c) => c.parameter_count(),
            PotentialConfig::ConvIcnn2(c) => c.parameter_count(),
            PotentialConfig::ConvIcnn3(c) => c.parameter_count(),
            PotentialConfig::Custom(_) | PotentialConfig::CustomConditional(_) => return None,
        })
    }
}

impl BlockConfig {
    /// Scalar parameters of the block: its potential's, `w₁`, and `w₀` when it is trained.
    /// `None` for a potential of your own.
    ///
    /// ```
    /// use cpflow::{BlockConfig, PotentialConfig};
    /// let c = cpflow::icnn::Icnn2Config { dim: 2, width: 8, depth: 3, ..Default::default() };
    /// let block = BlockConfig::new(PotentialConfig::Icnn2(c.clone()));
    /// assert_eq!(block.parameter_count(), Some(c.parameter_count() + 2));
    /// ```
    pub fn parameter_count(&self) -> Option<usize> {
        Count::of_block(self).exact()
    }
}

/// Refuse a model (`model` names it) whose counted parameters exceed
/// [`icnn::MAX_MODEL_PARAMETERS`].
pub(crate) fn check_model_size(model: &str, count: usize) -> Result<()> {
    Ok(icnn::check_parameter_count(model, count)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use crate::flow_config::{FlowConfig, LayerConfig};
    use crate::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
    use crate::{Flow, PotentialConfig};

    /// A configuration read from a file (a checkpoint's metadata, a saved model) is checked
    /// when the model is built from it: an edited depth was built layer by layer, gigabytes
    /// deep, before anything was said (found by fuzzing the checkpoint reader).
    #[test]
    fn models_read_from_files_are_checked_when_built() {
        let json = serde_json::to_string(&FlowConfig::toy_reference(1)).unwrap();
        let deep = json.replace("\"depth\":20", "\"depth\":100000000");
        assert_ne!(deep, json);
        let cfg: FlowConfig = serde_json::from_str(&deep).unwrap();
        let err = Flow::new(cfg, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("a flow of 2 layers (dim 2)"), "{err}");
        assert!(err.contains("a model may have at most"), "{err}");

        // Many small blocks: each network is fine, their sum is not.
        let mut cfg = FlowConfig::toy_reference(1);
        let LayerConfig::Cpf(block) = cfg.layers[1].clone() else {
            panic!("the toy layout is [ActNorm, CPF]")
        };
        let per_block = block.parameter_count().unwrap();
        let blocks = (icnn::MAX_MODEL_PARAMETERS / per_block) + 1;
        cfg.layers = vec![LayerConfig::Cpf(block); blocks];
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("a model may have at most")
        );
        cfg.layers.truncate(blocks - 1);
        assert_eq!(cfg.parameter_count(), Some((blocks - 1) * per_block));
        cfg.validate().unwrap();

        let ms = MultiscaleConfig::mnist();
        let json = serde_json::to_string(&ImageFlowConfig::multiscale(&ms).unwrap()).unwrap();
        let deep = json.replace("\"depth\":3", "\"depth\":100000000");
        assert_ne!(deep, json);
        let cfg: ImageFlowConfig = serde_json::from_str(&deep).unwrap();
        let err = ImageFlow::new(cfg, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("an image flow of"), "{err}");
        assert!(matches!(ms.potential, PotentialConfig::ConvIcnn(_)));
    }
}
