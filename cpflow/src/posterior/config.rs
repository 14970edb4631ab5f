//! The serialisable description of an amortised posterior `q(z | x)`.

use icnn::{ActivationKind, PicnnConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::block::BlockConfig;
use crate::config::{FloatType, SurrogateParams};
use crate::custom_conditional_potential::CustomConditionalConfig;
use crate::error::{CpflowError, Result};
use crate::model_size::{self, Count};
use crate::potential::PotentialConfig;

/// Everything needed to rebuild an [`AmortizedPosterior`](super::AmortizedPosterior).
///
/// The layers are, with `actnorm = true` and `K = blocks`,
/// `[ScalarActNorm, CPF₁, ScalarActNorm, …, CPF_K, ScalarActNorm]`
/// (`docs/reference/images-vae.md` §3.4); every CP-Flow block's potential is a
/// [`icnn::Picnn`] `(latent_dim, context_dim, width, depth, …)` fed the same context. With
/// `actnorm = false` there are no ActNorms at all (the reference keeps the closing one), and
/// with `blocks = 0, actnorm = false` the posterior is the plain diagonal Gaussian
/// `N(μ, diag σ²)` — the VAE's Gaussian baseline through the same code.
///
/// ```
/// use cpflow::posterior::PosteriorConfig;
/// let cfg = PosteriorConfig::reference_vae(64, 256);
/// assert_eq!((cfg.blocks, cfg.width, cfg.depth), (4, 64, 5));
/// let json = serde_json::to_string(&cfg).unwrap();
/// assert_eq!(serde_json::from_str::<PosteriorConfig>(&json).unwrap(), cfg);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PosteriorConfig {
    /// Latent dimension `d` (reference `z_size`, 64).
    pub latent_dim: usize,
    /// Context dimension `d_c` (the encoder feature; reference 256).
    pub context_dim: usize,
    /// Number of CP-Flow blocks `K` (reference `num_flows`, 4).
    pub blocks: usize,
    /// PICNN width `h` (reference `icnn_dimh`, 64).
    pub width: usize,
    /// PICNN depth `L` (reference `num_icnn_layers`, 5).
    pub depth: usize,
    /// PICNN activation (reference: gaussian softplus).
    pub activation: ActivationKind,
    /// Shift the activation to 0 at 0 (reference `zero_softplus = 1`).
    pub zero_shift: bool,
    /// `s(u) − u/2` on the first PICNN layer (reference `symm_act_first = 1`).
    pub symm_act_first: bool,
    /// Scalar ActNorms before every block and after the last (reference `actnorm = 1`).
    pub actnorm: bool,
    /// Whether `w₀` (the quadratic weight) is trained (reference: yes).
    pub trainable_w0: bool,
    /// Initial `w₁` (reference `bias_w1 = 0`).
    pub bias_w1: f64,
    /// Floating-point type (reference: float64).
    pub float: FloatType,
    /// Seed of the host RNG that draws the initial PICNN weights.
    pub init_seed: u64,
    /// A conditional potential of your own for every block instead of the PICNN (`width`,
    /// `depth`, `activation`, `zero_shift` and `symm_act_first` are then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_potential: Option<CustomPosteriorPotential>,
}

/// The blocks' potential `F(z; h)` as a network of your own: the conditional builder
/// registered under `name` with [`crate::register_conditional_potential`] (the same registry
/// as conditional flows'), called for each block with `dim = latent_dim`, `context_dim` and
/// `settings`. The network must be convex in `z` for every context `h`; check its
/// derivatives with `icnn::check_derivatives`.
///
/// ```
/// use cpflow::posterior::{CustomPosteriorPotential, PosteriorConfig};
/// let custom = CustomPosteriorPotential { name: "my-picnn".into(), settings: Default::default() };
/// let cfg = PosteriorConfig::reference_vae(8, 4).with_custom_potential(custom);
/// let block = cfg.block_config();
/// assert_eq!((block.potential.dim(), block.potential.context_dim()), (8, Some(4)));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPosteriorPotential {
    /// The name its builder is registered under.
    pub name: String,
    /// Free numeric settings for the builder, saved with the model.
    #[serde(default)]
    pub settings: BTreeMap<String, f64>,
}

impl PosteriorConfig {
    /// The reference VAE posterior (`train_vae.py` defaults): 4 blocks, PICNN width 64, depth
    /// 5, gaussian softplus, zero-shifted, symmetric first activation, scalar ActNorms,
    /// trainable `w₀`, `bias_w1 = 0`, f64.
    pub fn reference_vae(latent_dim: usize, context_dim: usize) -> Self {
        PosteriorConfig {
            latent_dim,
            context_dim,
            blocks: 4,
            width: 64,
            depth: 5,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: true,
            symm_act_first: true,
            actnorm: true,
            trainable_w0: true,
            bias_w1: 0.0,
            float: FloatType::F64,
            init_seed: 0,
            custom_potential: None,
        }
    }

    /// The diagonal Gaussian posterior `N(μ, diag σ²)`: no blocks, no ActNorm.
    pub fn gaussian(latent_dim: usize, context_dim: usize) -> Self {
        PosteriorConfig {
            blocks: 0,
            actnorm: false,
            ..Self::reference_vae(latent_dim, context_dim)
        }
    }

    /// Builder: number of CP-Flow blocks.
    pub fn with_blocks(mut self, blocks: usize) -> Self {
        self.blocks = blocks;
        self
    }

    /// Builder: PICNN width and depth.
    pub fn with_picnn(mut self, width: usize, depth: usize) -> Self {
        self.width = width;
        self.depth = depth;
        self
    }

    /// Builder: scalar ActNorms on or off.
    pub fn with_actnorm(mut self, actnorm: bool) -> Self {
        self.actnorm = actnorm;
        self
    }

    /// Builder: float type.
    pub fn with_float(mut self, float: FloatType) -> Self {
        self.float = float;
        self
    }

    /// Builder: weight-init seed.
    pub fn with_init_seed(mut self, seed: u64) -> Self {
        self.init_seed = seed;
        self
    }

    /// Builder: the blocks' potential is the registered conditional network `custom`.
    pub fn with_custom_potential(mut self, custom: CustomPosteriorPotential) -> Self {
        self.custom_potential = Some(custom);
        self
    }

    /// The configuration of each CP-Flow block (a PICNN potential, or the custom one).
    pub fn block_config(&self) -> BlockConfig {
        let potential = match &self.custom_potential {
            Some(c) => PotentialConfig::CustomConditional(CustomConditionalConfig {
                name: c.name.clone(),
                dim: self.latent_dim,
                context_dim: self.context_dim,
                settings: c.settings.clone(),
            }),
            None => PotentialConfig::Picnn(PicnnConfig {
                dim: self.latent_dim,
                context_dim: self.context_dim,
                width: self.width,
                depth: self.depth,
                activation: self.activation,
                zero_shift: self.zero_shift,
                symm_act_first: self.symm_act_first,
            }),
        };
        BlockConfig {
            potential,
            trainable_w0: self.trainable_w0,
            bias_w1: self.bias_w1,
        }
    }

    /// Scalar parameters of the posterior this configuration builds (its blocks' and scalar
    /// ActNorms'), counted without building it; `None` with a potential of your own.
    /// Saturates at `usize::MAX`.
    ///
    /// ```
    /// use cpflow::candle::Device;
    /// use cpflow::candle_nn::VarMap;
    /// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
    /// let cfg = PosteriorConfig::reference_vae(4, 3).with_blocks(2).with_picnn(8, 2);
    /// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &Device::Cpu)?;
    /// assert_eq!(cfg.parameter_count(), Some(q.num_parameters()));
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn parameter_count(&self) -> Option<usize> {
        self.count().exact()
    }

    /// The parameters of the blocks and of the ActNorms.
    pub(crate) fn count(&self) -> Count {
        let actnorm = Count::of(if self.actnorm {
            model_size::actnorm(1)
        } else {
            0
        });
        let block = Count::of_block(&self.block_config());
        block.plus(actnorm).times(self.blocks).plus(actnorm)
    }

    /// Check the dimensions and the size (at most [`icnn::MAX_MODEL_PARAMETERS`] parameters).
    pub fn validate(&self) -> Result<()> {
        if self.latent_dim == 0 || self.context_dim == 0 {
            return Err(CpflowError::InvalidConfig(
                "posterior latent and context dimensions must be positive".into(),
            ));
        }
        if self.blocks > 0
            && self.custom_potential.is_none()
            && (self.width == 0 || self.depth == 0)
        {
            return Err(CpflowError::InvalidConfig(
                "posterior PICNN width and depth must be positive".into(),
            ));
        }
        if !self.bias_w1.is_finite() {
            return Err(CpflowError::InvalidConfig("bias_w1 must be finite".into()));
        }
        model_size::check_model_size(
            &format!(
                "a posterior of {} blocks (latent_dim {}, context_dim {})",
                self.blocks, self.latent_dim, self.context_dim
            ),
            self.count().at_least,
        )
    }
}

/// The reference VAE's CG settings for the training surrogate (`images-vae.md` §3.4: `atol =
/// rtol = 1e-5`, at most 64 iterations, one Rademacher probe). The reference stops CG on the
/// whole batch; cpflow stops each system on its own residual.
///
/// ```
/// let p = cpflow::posterior::reference_vae_surrogate_params();
/// assert_eq!((p.probes, p.cg_atol, p.cg_rtol, p.cg_max_iters), (1, 1e-5, 1e-5, Some(64)));
/// ```
pub fn reference_vae_surrogate_params() -> SurrogateParams {
    SurrogateParams {
        probes: 1,
        cg_atol: 1e-5,
        cg_rtol: 1e-5,
        cg_max_iters: Some(64),
        ..SurrogateParams::default()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_nn::VarMap;

    use super::*;
    use crate::posterior::AmortizedPosterior;

    /// The count checked in `validate` agrees with the built posterior (Gaussian, with and
    /// without ActNorms, one and several blocks); an absurd number of blocks or depth is
    /// refused before the first block is built.
    #[test]
    fn posteriors_are_counted_before_they_are_built() {
        let mut cases = vec![PosteriorConfig::gaussian(3, 2)];
        for blocks in [1, 3] {
            for actnorm in [true, false] {
                let cfg = PosteriorConfig::reference_vae(3, 2)
                    .with_blocks(blocks)
                    .with_picnn(6, 2)
                    .with_actnorm(actnorm);
                cases.push(cfg);
            }
        }
        for cfg in cases {
            let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &Device::Cpu).unwrap();
            assert_eq!(cfg.parameter_count(), Some(q.num_parameters()), "{cfg:?}");
        }
        let small = PosteriorConfig::reference_vae(3, 2);
        for cfg in [
            small.clone().with_blocks(1_000_000_000_000_000),
            small.clone().with_blocks(usize::MAX),
            small.with_picnn(64, 100_000_000),
        ] {
            let varmap = VarMap::new();
            let err = AmortizedPosterior::new(&varmap, "q", &cfg, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a model may have at most"), "{err}");
            assert!(varmap.all_vars().is_empty());
        }
    }
}
