//! The VAE: encoder, posterior `q(z | x)` (Gaussian or CP-Flow), decoder, and the
//! per-image quantities of training and evaluation (`docs/reference/images-vae.md` §3.3–3.5).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

mod importance;

use super::data::VaeLikelihood;
use super::likelihood::bernoulli_log_likelihood;
use super::network::{Decoder, Encoder, EncoderOutput, VaeArchitecture};
use crate::block::CgReport;
use crate::config::{FloatType, SurrogateParams};
use crate::error::{CpflowError, Result};
use crate::posterior::{
    AmortizedPosterior, CustomPosteriorPotential, PosteriorConfig, PosteriorSample,
};

/// Which posterior the VAE uses.
///
/// ```
/// use cpflow::vae::{PosteriorKind, VaeModelConfig};
/// assert_eq!(serde_json::to_string(&PosteriorKind::CpFlow).unwrap(), r#""cp-flow""#);
/// // The Gaussian posterior is the flow without blocks.
/// let gauss = VaeModelConfig { posterior: PosteriorKind::Gaussian, ..Default::default() };
/// assert_eq!(gauss.posterior_config().blocks, 0);
/// assert_eq!(VaeModelConfig::default().posterior_config().blocks, 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PosteriorKind {
    /// The diagonal Gaussian `N(μ, diag σ²)` (Table 3's baseline row).
    Gaussian,
    /// The Gaussian pushed through CP-Flow blocks with PICNN potentials (Table 3's
    /// CP-Flow row).
    CpFlow,
}

/// The posterior's name in messages: `Gaussian`, `CP-Flow`.
///
/// ```
/// use cpflow::vae::PosteriorKind;
/// assert_eq!(PosteriorKind::CpFlow.to_string(), "CP-Flow");
/// ```
impl std::fmt::Display for PosteriorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PosteriorKind::Gaussian => "Gaussian",
            PosteriorKind::CpFlow => "CP-Flow",
        })
    }
}

/// Everything needed to rebuild a [`Vae`].
///
/// ```
/// use cpflow::vae::VaeModelConfig;
/// let cfg: VaeModelConfig = toml::from_str("latent_dim = 32\nblocks = 2\ninit_seed = 7").unwrap();
/// assert_eq!((cfg.latent_dim, cfg.width, cfg.depth), (32, 64, 5)); // PICNN(64, 5) by default
/// let q = cfg.posterior_config();
/// assert_eq!((q.latent_dim, q.context_dim, q.blocks), (32, 256, 2));
/// assert_eq!(q.init_seed, 8); // the posterior draws from its own seed
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeModelConfig {
    /// Latent dimension (reference 64).
    pub latent_dim: usize,
    /// Encoder/decoder widths.
    pub architecture: VaeArchitecture,
    /// Gaussian or CP-Flow posterior.
    pub posterior: PosteriorKind,
    /// CP-Flow blocks (reference 4).
    pub blocks: usize,
    /// PICNN width (reference 64).
    pub width: usize,
    /// PICNN depth (reference 5).
    pub depth: usize,
    /// Float type of the encoder and decoder (reference f64).
    pub network_float: FloatType,
    /// Float type of the posterior (reference f64).
    pub posterior_float: FloatType,
    /// Seed of the initial weights.
    pub init_seed: u64,
    /// The CP-Flow posterior's block potential as a conditional network of your own
    /// (registered with [`crate::register_conditional_potential`]) instead of the PICNN
    /// (`width`, `depth` unused); TOML `[model.custom_posterior]` with `name` and `settings`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_posterior: Option<CustomPosteriorPotential>,
}

impl Default for VaeModelConfig {
    fn default() -> Self {
        VaeModelConfig {
            latent_dim: 64,
            architecture: VaeArchitecture::reference(),
            posterior: PosteriorKind::CpFlow,
            blocks: 4,
            width: 64,
            depth: 5,
            network_float: FloatType::F64,
            posterior_float: FloatType::F64,
            init_seed: 0,
            custom_posterior: None,
        }
    }
}

impl VaeModelConfig {
    /// The posterior's configuration.
    pub fn posterior_config(&self) -> PosteriorConfig {
        let c = self.architecture.feature_dim;
        let cfg = match self.posterior {
            PosteriorKind::Gaussian => PosteriorConfig::gaussian(self.latent_dim, c),
            PosteriorKind::CpFlow => {
                let q = PosteriorConfig::reference_vae(self.latent_dim, c)
                    .with_blocks(self.blocks)
                    .with_picnn(self.width, self.depth);
                match &self.custom_posterior {
                    Some(custom) => q.with_custom_potential(custom.clone()),
                    None => q,
                }
            }
        };
        cfg.with_float(self.posterior_float)
            .with_init_seed(self.init_seed.wrapping_add(1))
    }
}

/// One batch: the decoder's inputs `(B, 1, H, W)` and, for the categorical likelihood, the
/// class targets `(B, H·W)` (`u32`).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeBatch, VaeLikelihood, VaeModelConfig};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let cfg = VaeModelConfig {
///     latent_dim: 2,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let frey = Vae::new(&cfg, VaeLikelihood::Categorical256, (28, 20), &Device::Cpu)?;
/// let grey: Vec<u32> = (0..2 * 560).map(|i| i % 256).collect();
/// let levels = Tensor::from_vec(grey, (2, 560), &Device::Cpu)?;
/// let x = (levels.to_dtype(DType::F64)? / 255.0)?.reshape((2, 1, 28, 20))?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// // The 256-way likelihood needs the grey levels as class targets.
/// let no_targets = VaeBatch { x: x.clone(), targets: None };
/// assert!(frey.neg_elbo_exact(&no_targets, &mut rng).is_err());
/// let batch = VaeBatch { x, targets: Some(levels) };
/// assert_eq!(frey.neg_elbo_exact(&batch, &mut rng)?.neg_elbo.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct VaeBatch {
    /// Images `(B, 1, H, W)` in the network's float type.
    pub x: Tensor,
    /// Class targets for the 256-way likelihood (`None` for binary data).
    pub targets: Option<Tensor>,
}

/// The training loss of one batch and what it is made of.
///
/// ```
/// use cpflow::vae::{Adamax, AdamaxParams};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeBatch};
/// # use cpflow::vae::{VaeLikelihood, VaeModelConfig};
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A tiny VAE (2 channels, 2 latent dimensions, Gaussian posterior) on two 28×28 images.
/// let cfg = VaeModelConfig {
///     latent_dim: 2,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
/// let pixels: Vec<f64> = (0..2 * 784).map(|i| f64::from(i % 3 == 0)).collect(); // 0/1
/// let x = Tensor::from_vec(pixels, (2, 1, 28, 28), &Device::Cpu)?;
/// let batch = VaeBatch { x, targets: None };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// vae.initialize(&batch, &mut rng)?;
/// let cg = cpflow::posterior::reference_vae_surrogate_params();
/// let terms = vae.train_terms(&batch, 1.0, &cg, &mut rng)?;
/// assert!(terms.loss.to_scalar::<f64>()?.is_finite() && terms.reconstruction > 0.0);
/// assert!(terms.cg.iterations.is_empty()); // the Gaussian posterior has no block
/// // One Adamax step moves every weight (read to the host first: the tensors of
/// // `weight_tensors` share the variables' storage).
/// let values = |v: &Vae| -> cpflow::candle::Result<Vec<Vec<f64>>> {
///     v.weight_tensors().iter().map(|(_, t)| t.flatten_all()?.to_vec1::<f64>()).collect()
/// };
/// let before = values(&vae)?;
/// let mut opt = Adamax::new(vae.trainable_named_vars(), AdamaxParams::default())?;
/// opt.step(&terms.loss.backward()?)?;
/// assert!(before.iter().zip(values(&vae)?).all(|(a, b)| *a != b));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct VaeTrainTerms {
    /// `(Σ_b −log p(x|z) + β Σ_b KL̂_surrogate) / B`, a scalar to differentiate.
    pub loss: Tensor,
    /// Mean reconstruction term `−log p(x | z)` (nats per image).
    pub reconstruction: f64,
    /// CG report of the posterior's blocks (empty for the Gaussian posterior).
    pub cg: CgReport,
}

/// Per-image negative ELBO with its parts (nats).
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeBatch};
/// # use cpflow::vae::{VaeLikelihood, VaeModelConfig};
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A tiny VAE (2 channels, 2 latent dimensions, Gaussian posterior) on two 28×28 images.
/// let cfg = VaeModelConfig {
///     latent_dim: 2,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
/// let pixels: Vec<f64> = (0..2 * 784).map(|i| f64::from(i % 3 == 0)).collect(); // 0/1
/// let x = Tensor::from_vec(pixels, (2, 1, 28, 28), &Device::Cpu)?;
/// let batch = VaeBatch { x, targets: None };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// vae.initialize(&batch, &mut rng)?;
/// let e = vae.neg_elbo_exact(&batch, &mut rng)?;
/// assert_eq!(e.neg_elbo.len(), 2);
/// for i in 0..2 {
///     // −ELBO = reconstruction + KL, image by image.
///     assert!((e.neg_elbo[i] - e.reconstruction[i] - e.kl[i]).abs() < 1e-9);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct NegElbo {
    /// `−log p(x|z) + log q(z|x) − log p(z)` per image.
    pub neg_elbo: Vec<f64>,
    /// `−log p(x|z)` per image.
    pub reconstruction: Vec<f64>,
    /// `log q(z|x) − log p(z)` per image (the single-sample KL estimate).
    pub kl: Vec<f64>,
}

/// The VAE of the paper's Table 3.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeBatch, VaeLikelihood, VaeModelConfig};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let cfg = VaeModelConfig {
///     latent_dim: 4,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 8, head_channels: 4 },
///     posterior: PosteriorKind::CpFlow, blocks: 1, width: 8, depth: 2,
///     ..Default::default()
/// };
/// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
/// // Pixel intensities in [0, 1] that differ between images (ActNorm initialises on them).
/// let x = (Tensor::arange(0f64, 3.0 * 784.0, &Device::Cpu)?.reshape((3, 1, 28, 28))? * 0.37)?
///     .sin()?
///     .abs()?;
/// let batch = VaeBatch { x, targets: None };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// vae.initialize(&batch, &mut rng)?;
/// let e = vae.neg_elbo_exact(&batch, &mut rng)?;
/// assert_eq!(e.neg_elbo.len(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Vae {
    config: VaeModelConfig,
    likelihood: VaeLikelihood,
    image_hw: (usize, usize),
    varmap: VarMap,
    encoder: Encoder,
    decoder: Decoder,
    posterior: AmortizedPosterior,
    device: Device,
}

impl std::fmt::Debug for Vae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vae")
            .field("config", &self.config)
            .field("likelihood", &self.likelihood)
            .field("image_hw", &self.image_hw)
            .finish_non_exhaustive()
    }
}

impl Vae {
    /// Build the VAE for `(height, width)` images with freshly initialised weights.
    pub fn new(
        config: &VaeModelConfig,
        likelihood: VaeLikelihood,
        image_hw: (usize, usize),
        device: &Device,
    ) -> Result<Self> {
        if config.latent_dim == 0 {
            return Err(CpflowError::InvalidConfig("latent_dim must be ≥ 1".into()));
        }
        if config.custom_posterior.is_some() && config.posterior != PosteriorKind::CpFlow {
            return Err(CpflowError::InvalidConfig(
                "custom_posterior sets the CP-Flow posterior's potential: it needs posterior = \"cp-flow\""
                    .into(),
            ));
        }
        config.check_size(likelihood, image_hw)?;
        let varmap = VarMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(config.init_seed);
        let dt = config.network_float.dtype();
        let a = &config.architecture;
        let z = config.latent_dim;
        let encoder = Encoder::new(
            &varmap, "encoder", a, image_hw, z, likelihood, dt, device, &mut rng,
        )?;
        let decoder = Decoder::new(
            &varmap, "decoder", a, image_hw, z, likelihood, dt, device, &mut rng,
        )?;
        let posterior =
            AmortizedPosterior::new(&varmap, "posterior", &config.posterior_config(), device)?;
        Ok(Vae {
            config: config.clone(),
            likelihood,
            image_hw,
            varmap,
            encoder,
            decoder,
            posterior,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VaeModelConfig {
        &self.config
    }

    /// The decoder's likelihood.
    pub fn likelihood(&self) -> VaeLikelihood {
        self.likelihood
    }

    /// Image size `(height, width)`.
    pub fn image_hw(&self) -> (usize, usize) {
        self.image_hw
    }

    /// The posterior.
    pub fn posterior(&self) -> &AmortizedPosterior {
        &self.posterior
    }

    /// The decoder (`z` to output logits; [`Vae::decoded_means`] turns them into pixels).
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The float type of the encoder and decoder.
    pub fn network_dtype(&self) -> DType {
        self.config.network_float.dtype()
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All variables, sorted by name (ActNorm flags included).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        crate::named_vars::sorted_vars(&self.varmap)
    }

    /// The trainable variables, sorted by name (ActNorm flags excluded).
    pub fn trainable_named_vars(&self) -> Vec<(String, Var)> {
        let trainable = self.posterior.trainable_vars();
        self.named_vars()
            .into_iter()
            .filter(|(k, v)| {
                !k.starts_with("posterior")
                    || trainable
                        .iter()
                        .any(|t| t.as_tensor().id() == v.as_tensor().id())
            })
            .collect()
    }

    /// Number of scalar parameters (encoder, decoder, posterior).
    pub fn num_parameters(&self) -> usize {
        crate::named_vars::count_parameters(&self.named_vars())
    }

    /// The weights as `(name, tensor)` pairs.
    /// Each tensor is detached from the autograd graph but shares storage with the variables, so it
    /// follows later training steps and `set_weights`; take `Tensor::copy` of each for a snapshot.
    pub fn weight_tensors(&self) -> Vec<(String, Tensor)> {
        crate::named_vars::detached_tensors(self.named_vars())
    }

    /// Set every weight from `tensors[prefix + name]`.
    pub fn set_weights(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<()> {
        crate::named_vars::set_vars(self.named_vars(), tensors, prefix)
    }

    fn check_batch(&self, batch: &VaeBatch) -> Result<()> {
        let (h, w) = self.image_hw;
        let d = batch.x.dims();
        if d.len() != 4 || d[1] != 1 || d[2] != h || d[3] != w {
            return Err(CpflowError::InvalidInput(format!(
                "VAE batch must be (B, 1, {h}, {w}), got {}",
                super::shape_text::tuple_text(d)
            )));
        }
        if self.likelihood == VaeLikelihood::Categorical256 && batch.targets.is_none() {
            return Err(CpflowError::InvalidInput(
                "the 256-way likelihood needs class targets".into(),
            ));
        }
        Ok(())
    }

    /// Encode `x` `(B, 1, H, W)` and cast the outputs to the posterior's float type.
    pub fn encode(&self, x: &Tensor) -> Result<EncoderOutput> {
        let e = self.encoder.forward(&x.to_dtype(self.network_dtype())?)?;
        let pd = self.posterior.dtype();
        Ok(EncoderOutput {
            mu: e.mu.to_dtype(pd)?,
            log_sigma: e.log_sigma.to_dtype(pd)?,
            feature: e.feature.to_dtype(pd)?,
        })
    }

    /// The encoder's outputs in the posterior's float type (tests only).
    #[cfg(test)]
    pub(crate) fn encode_for_tests(&self, x: &Tensor) -> Result<EncoderOutput> {
        self.encode(x)
    }

    /// `log p(x | z)` per image (in the posterior's float type), `z` `(B, d)`.
    pub fn log_likelihood(&self, batch: &VaeBatch, z: &Tensor) -> Result<Tensor> {
        let z = z.to_dtype(self.network_dtype())?;
        let ll = match (self.likelihood, &batch.targets) {
            (VaeLikelihood::Bernoulli, _) => {
                let logits = self.decoder.forward(&z)?;
                bernoulli_log_likelihood(&logits, &batch.x.to_dtype(logits.dtype())?)?
            }
            (VaeLikelihood::Categorical256, Some(t)) => {
                self.decoder.categorical_log_likelihood(&z, t)?
            }
            (VaeLikelihood::Categorical256, None) => {
                return Err(CpflowError::InvalidInput(
                    "the 256-way likelihood needs class targets".into(),
                ));
            }
        };
        Ok(ll.to_dtype(self.posterior.dtype())?)
    }

    /// `log N(z; 0, I)` per row, constants included.
    fn log_prior(z: &Tensor) -> Result<Tensor> {
        let d = z.dim(1)? as f64;
        Ok(((z.sqr()?.sum(1)? * -0.5)? - 0.5 * d * (2.0 * std::f64::consts::PI).ln())?)
    }

    /// Data-dependent initialisation (the reference's first forward pass): the posterior's
    /// ActNorms from the first training batch.
    pub fn initialize<R: Rng + ?Sized>(&self, batch: &VaeBatch, rng: &mut R) -> Result<()> {
        self.check_batch(batch)?;
        let e = self.encode(&batch.x)?;
        self.posterior
            .initialize(&e.mu, &e.log_sigma, &e.feature, rng)
    }

    /// The training loss at warm-up factor `beta` with the CG surrogate for the CP-Flow
    /// blocks (`images-vae.md` §3.5): `β` multiplies the whole KL term, log-det included.
    pub fn train_terms<R: Rng + ?Sized>(
        &self,
        batch: &VaeBatch,
        beta: f64,
        cg: &SurrogateParams,
        rng: &mut R,
    ) -> Result<VaeTrainTerms> {
        self.check_batch(batch)?;
        let b = batch.x.dim(0)? as f64;
        let e = self.encode(&batch.x)?;
        let s = self
            .posterior
            .sample_with_surrogate(&e.mu, &e.log_sigma, &e.feature, cg, rng)?;
        let ll = self.log_likelihood(batch, &s.z)?;
        let kl = (s.log_q_surrogate - Self::log_prior(&s.z)?)?;
        let loss = ((ll.neg()?.sum_all()? + (kl.sum_all()? * beta)?)? / b)?;
        let reconstruction = -ll
            .detach()
            .to_dtype(DType::F64)?
            .mean_all()?
            .to_scalar::<f64>()?;
        Ok(VaeTrainTerms {
            loss,
            reconstruction,
            cg: s.cg,
        })
    }

    /// One posterior sample per image of the checked `batch`, with its exact `log q`
    /// (nothing tracked).
    pub(super) fn posterior_sample_exact<R: Rng + ?Sized>(
        &self,
        batch: &VaeBatch,
        rng: &mut R,
    ) -> Result<PosteriorSample> {
        self.check_batch(batch)?;
        let e = self.encode(&batch.x.detach())?;
        let (mu, ls, h) = (e.mu.detach(), e.log_sigma.detach(), e.feature.detach());
        let eps = self.posterior.draw_noise(mu.dim(0)?, rng)?;
        self.posterior
            .transform_noise_exact_detached(&mu, &ls, &h, &eps)
    }

    /// The single-sample negative ELBO per image with the exact `log q` (dense log-dets):
    /// what Table 3 reports (`images-vae.md` §3.7). Detached.
    pub fn neg_elbo_exact<R: Rng + ?Sized>(
        &self,
        batch: &VaeBatch,
        rng: &mut R,
    ) -> Result<NegElbo> {
        let s = self.posterior_sample_exact(batch, rng)?;
        let z = s.z.detach();
        let ll = to_vec(&self.log_likelihood(batch, &z)?)?;
        let lq = to_vec(&s.log_q)?;
        let lp = to_vec(&Self::log_prior(&z)?)?;
        let kl: Vec<f64> = lq.iter().zip(&lp).map(|(q, p)| q - p).collect();
        Ok(NegElbo {
            neg_elbo: ll.iter().zip(&kl).map(|(l, k)| k - l).collect(),
            reconstruction: ll.iter().map(|l| -l).collect(),
            kl,
        })
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
