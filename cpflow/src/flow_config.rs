//! The serialisable description of a flow: its layers, prior, float type and init seed.

use icnn::{ActivationKind, Icnn3Config};
use serde::{Deserialize, Serialize};

use crate::block::BlockConfig;
use crate::config::FloatType;
use crate::error::{CpflowError, Result};
use crate::model_size::{self, Count};
use crate::potential::PotentialConfig;
use crate::prior::GaussianPrior;

/// One layer of a [`crate::Flow`].
///
/// ```
/// use cpflow::{BlockConfig, FlowConfig, LayerConfig, PotentialConfig};
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 3, width: 4, depth: 2, ..Default::default() });
/// // `FlowConfig::tabular(3, 1, pot)` spelled out: [ActNorm, CPF, ActNorm].
/// let layers = vec![LayerConfig::ActNorm, LayerConfig::Cpf(BlockConfig::new(pot.clone())), LayerConfig::ActNorm];
/// assert_eq!(FlowConfig::tabular(3, 1, pot).layers, layers);
/// // In configuration files a layer is tagged by `layer`.
/// let json = serde_json::to_value(&layers[0]).unwrap();
/// assert_eq!(json, serde_json::json!({ "layer": "act_norm" }));
/// ```
// Unknown keys are refused (a damaged checkpoint); serde does not apply it to the unit
// variant `ActNorm` (serde-rs/serde#2123): the loaders' key check does (`checkpoint::known_keys`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layer", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerConfig {
    /// ActNorm with log-det and data-dependent initialisation.
    ActNorm,
    /// A CP-Flow block.
    Cpf(BlockConfig),
}

/// Everything needed to rebuild a [`crate::Flow`] (saved in checkpoints).
///
/// ```
/// use cpflow::FlowConfig;
/// let cfg = FlowConfig::toy_reference(1);
/// assert_eq!(cfg.dim, 2);
/// assert_eq!(cfg.layers.len(), 2); // [ActNorm, CPF]
/// let json = serde_json::to_string(&cfg).unwrap();
/// assert_eq!(serde_json::from_str::<FlowConfig>(&json).unwrap(), cfg);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Data dimension `d`.
    pub dim: usize,
    /// Layers applied in order from data `x` to latent `z`.
    pub layers: Vec<LayerConfig>,
    /// Prior on `z`.
    #[serde(default)]
    pub prior: GaussianPrior,
    /// Floating-point type of the parameters.
    #[serde(default)]
    pub float: FloatType,
    /// Seed of the host RNG that draws the initial ICNN weights.
    #[serde(default)]
    pub init_seed: u64,
}

impl FlowConfig {
    /// The reference tabular layout `[ActNorm, CPF₁, ActNorm, …, CPF_K, ActNorm]` with the same
    /// potential configuration in every block, trainable `w₀`, standard-normal prior.
    pub fn tabular(dim: usize, blocks: usize, potential: PotentialConfig) -> Self {
        let mut layers = vec![LayerConfig::ActNorm];
        for _ in 0..blocks {
            layers.push(LayerConfig::Cpf(BlockConfig::new(potential.clone())));
            layers.push(LayerConfig::ActNorm);
        }
        FlowConfig {
            dim,
            layers,
            prior: GaussianPrior::standard(),
            float: FloatType::F32,
            init_seed: 0,
        }
    }

    /// The reference toy model (`train_toy.py`, `docs/reference/cpflow-reference.md` §4.2): `Icnn3(2, width 32,
    /// depth 20, symmetric first activation, gaussian softplus, zero-shifted)`, f64. One block:
    /// `[ActNorm, CPF]`, trainable `w₀`, prior `N(0, e²I)`. More blocks:
    /// `[ActNorm, CPF, …, CPF, ActNorm]`, fixed `w₀`, prior `N(0, I)`.
    pub fn toy_reference(blocks: usize) -> Self {
        let potential = PotentialConfig::Icnn3(Icnn3Config {
            dim: 2,
            width: 32,
            depth: 20,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: true,
            symm_act_first: true,
        });
        let (layers, prior) = if blocks == 1 {
            (
                vec![
                    LayerConfig::ActNorm,
                    LayerConfig::Cpf(BlockConfig::new(potential)),
                ],
                GaussianPrior::with_log_var(2.0),
            )
        } else {
            let block = BlockConfig {
                potential,
                trainable_w0: false,
                bias_w1: 0.0,
            };
            let mut layers = vec![LayerConfig::ActNorm];
            for _ in 0..blocks {
                layers.push(LayerConfig::Cpf(block.clone()));
                layers.push(LayerConfig::ActNorm);
            }
            (layers, GaussianPrior::standard())
        };
        FlowConfig {
            dim: 2,
            layers,
            prior,
            float: FloatType::F64,
            init_seed: 0,
        }
    }

    /// A single CP-Flow block without ActNorm (the reference OT experiment uses
    /// `Icnn3(d, 64, 5, gaussian softplus, zero-shifted)` this way), prior `N(0, I)`, f64.
    pub fn single_block(potential: PotentialConfig) -> Self {
        let dim = potential.dim();
        FlowConfig {
            dim,
            layers: vec![LayerConfig::Cpf(BlockConfig::new(potential))],
            prior: GaussianPrior::standard(),
            float: FloatType::F64,
            init_seed: 0,
        }
    }

    /// Builder: set the float type.
    pub fn with_float(mut self, float: FloatType) -> Self {
        self.float = float;
        self
    }

    /// Builder: set the prior.
    pub fn with_prior(mut self, prior: GaussianPrior) -> Self {
        self.prior = prior;
        self
    }

    /// Builder: set the weight-init seed.
    pub fn with_init_seed(mut self, seed: u64) -> Self {
        self.init_seed = seed;
        self
    }

    /// Number of CP-Flow blocks.
    pub fn num_blocks(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| matches!(l, LayerConfig::Cpf(_)))
            .count()
    }

    /// The context dimension (conditional flows), checked to agree across blocks.
    pub fn context_dim(&self) -> Result<Option<usize>> {
        let mut out: Option<usize> = None;
        let mut any_uncond = false;
        for l in &self.layers {
            if let LayerConfig::Cpf(b) = l {
                match b.potential.context_dim() {
                    Some(c) => {
                        if out.is_some_and(|o| o != c) {
                            return Err(CpflowError::InvalidConfig(
                                "blocks disagree on the context dimension".into(),
                            ));
                        }
                        out = Some(c);
                    }
                    None => any_uncond = true,
                }
            }
        }
        if out.is_some() && any_uncond {
            return Err(CpflowError::InvalidConfig(
                "mixing conditional (PICNN) and unconditional blocks is not supported".into(),
            ));
        }
        Ok(out)
    }

    /// Scalar parameters of the flow this configuration builds (its ActNorms' and blocks'),
    /// counted without building it; `None` when a block's potential is a network of your own.
    /// Saturates at `usize::MAX`.
    ///
    /// ```
    /// use cpflow::candle::Device;
    /// use cpflow::{Flow, FlowConfig};
    /// let cfg = FlowConfig::toy_reference(3);
    /// let flow = Flow::new(cfg.clone(), &Device::Cpu)?;
    /// assert_eq!(cfg.parameter_count(), Some(flow.num_parameters()));
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn parameter_count(&self) -> Option<usize> {
        self.count().exact()
    }

    /// The parameters of the layers.
    fn count(&self) -> Count {
        self.layers.iter().fold(Count::of(0), |n, l| {
            n.plus(match l {
                LayerConfig::ActNorm => Count::of(model_size::actnorm(self.dim)),
                LayerConfig::Cpf(b) => Count::of_block(b),
            })
        })
    }

    /// Check consistency (dimensions, non-empty, at most [`icnn::MAX_MODEL_PARAMETERS`]
    /// parameters) and every block's potential ([`PotentialConfig::validate`]), without
    /// building anything. A refused layer is named in the message.
    ///
    /// ```
    /// use cpflow::{FlowConfig, PotentialConfig};
    /// use cpflow::icnn::Icnn3Config;
    /// let pot = |width| PotentialConfig::Icnn3(Icnn3Config { dim: 2, width, depth: 2, ..Default::default() });
    /// FlowConfig::tabular(2, 1, pot(4)).validate()?;
    /// // [ActNorm, CPF, ActNorm]: the block is layer 1.
    /// let err = FlowConfig::tabular(2, 1, pot(5)).validate().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid configuration: layer 1: Icnn3 needs an even width, got 5"
    /// );
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(CpflowError::InvalidConfig(
                "flow dimension must be positive".into(),
            ));
        }
        if self.layers.is_empty() {
            return Err(CpflowError::InvalidConfig(
                "a flow needs at least one layer".into(),
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if let LayerConfig::Cpf(b) = l
                && b.potential.dim() != self.dim
            {
                return Err(CpflowError::InvalidConfig(format!(
                    "layer {i}: potential dimension {} differs from the flow dimension {}",
                    b.potential.dim(),
                    self.dim
                )));
            }
            // A non-finite value would be saved as JSON `null` and the model could not be
            // loaded back (nor a checkpoint resumed).
            if let LayerConfig::Cpf(b) = l {
                if !b.bias_w1.is_finite() {
                    return Err(CpflowError::InvalidConfig(format!(
                        "layer {i}: bias_w1 must be finite, got {:?}",
                        b.bias_w1
                    )));
                }
                let settings = match &b.potential {
                    PotentialConfig::Custom(c) => Some((&c.name, &c.settings)),
                    PotentialConfig::CustomConditional(c) => Some((&c.name, &c.settings)),
                    _ => None,
                };
                if let Some((name, settings)) = settings
                    && let Some((k, v)) = settings.iter().find(|(_, v)| !v.is_finite())
                {
                    return Err(CpflowError::InvalidConfig(format!(
                        "layer {i}: setting `{k}` of the custom potential `{name}` must be \
                         finite, got {v}"
                    )));
                }
            }
        }
        self.prior.validate()?;
        self.context_dim()?;
        model_size::check_model_size(
            &format!("a flow of {} layers (dim {})", self.layers.len(), self.dim),
            self.count().at_least,
        )?;
        // After the size check, which names an oversized flow as a whole: what each block's
        // network would refuse when built (an odd `Icnn3` width, a zero depth, …).
        for (i, l) in self.layers.iter().enumerate() {
            if let LayerConfig::Cpf(b) = l {
                b.potential.validate().map_err(|e| in_layer(i, e))?;
            }
        }
        Ok(())
    }
}

/// A refused configuration `e` of layer `i`, its message prefixed with `layer {i}: ` as the
/// other layer checks; any other error passes unchanged.
fn in_layer(i: usize, e: CpflowError) -> CpflowError {
    match e {
        CpflowError::InvalidConfig(m) | CpflowError::Icnn(icnn::IcnnError::InvalidConfig(m)) => {
            CpflowError::InvalidConfig(format!("layer {i}: {m}"))
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use icnn::{ConvIcnn2Config, Icnn3Config, ImageShape, PicnnConfig};

    use super::*;

    /// A block's network is checked by `validate`, named by its layer, before anything is
    /// built; the same flow with an even width passes.
    /// A finite but extreme prior log-variance (σ² underflowing to 0 made every density NaN)
    /// is refused by the flow's `validate`, as a non-finite one is.
    #[test]
    fn validate_refuses_an_extreme_prior_log_variance() {
        let icnn3 = PotentialConfig::Icnn3(Icnn3Config {
            dim: 3,
            width: 4,
            depth: 2,
            ..Default::default()
        });
        let mut cfg = FlowConfig::tabular(3, 1, icnn3);
        cfg.prior = GaussianPrior::with_log_var(-80.0);
        cfg.validate().unwrap();
        for log_var in [-800.0, 800.0, f64::NAN] {
            cfg.prior = GaussianPrior::with_log_var(log_var);
            let msg = cfg.validate().unwrap_err().to_string();
            assert!(
                msg.contains("prior log-variance") && msg.contains("±80"),
                "{msg}"
            );
        }
    }

    #[test]
    fn validate_names_the_block_whose_network_is_refused() {
        let icnn3 = |width| {
            PotentialConfig::Icnn3(Icnn3Config {
                dim: 3,
                width,
                depth: 2,
                ..Default::default()
            })
        };
        FlowConfig::tabular(3, 2, icnn3(4)).validate().unwrap();
        // [ActNorm, CPF, ActNorm, CPF, ActNorm]: the second block is layer 3.
        let mut cfg = FlowConfig::tabular(3, 2, icnn3(4));
        cfg.layers[3] = LayerConfig::Cpf(BlockConfig::new(icnn3(5)));
        let err = cfg.validate().unwrap_err();
        assert!(matches!(err, CpflowError::InvalidConfig(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("layer 3") && msg.contains("even width"),
            "{msg}"
        );
        let err = FlowConfig::single_block(icnn3(5)).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: layer 0: Icnn3 needs an even width, got 5"
        );

        // Conditional and convolutional blocks too.
        let picnn = PotentialConfig::Picnn(PicnnConfig {
            dim: 2,
            context_dim: 3,
            width: 0,
            ..Default::default()
        });
        let err = FlowConfig::tabular(2, 1, picnn).validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("layer 1: width must be at least 1"),
            "{err}"
        );
        let conv = PotentialConfig::ConvIcnn2(ConvIcnn2Config {
            image: ImageShape::new(1, 2, 2),
            width: 3,
            depth: 2,
        });
        let err = FlowConfig::single_block(conv).validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("layer 0: ConvIcnn2 needs an even width"),
            "{err}"
        );
    }
}
