//! The amortised CP-Flow posterior `q(z | x)`: a base Gaussian `z₀ = μ + σ ⊙ ε` whose `μ`,
//! `log σ` come from the encoder, pushed through `[ScalarActNorm, CPF(PICNN), …, ScalarActNorm]`
//! with every PICNN fed the encoder feature `h` (`docs/reference/images-vae.md` §3.4–3.5).
//!
//! `log q(z_K | x) = log N(z₀; μ, diag σ²) − Σ_layers log det J`, with the proper Gaussian
//! normalisation (`−½ log 2π` per dimension; the reference drops it from both `q` and the
//! prior, where it cancels).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use rand_distr::StandardNormal;

use super::config::PosteriorConfig;
use super::scalar_actnorm::ScalarActNorm;
use crate::block::CpFlowBlock;
use crate::error::{CpflowError, Result};
use crate::flow::check_matrix;
use crate::rng::FlowRng;

mod sampling;

pub use sampling::{PosteriorSample, PosteriorSlqSample, PosteriorSurrogate};

/// One layer of the posterior flow.
#[derive(Clone, Debug)]
// A flow holds a handful of layers, once: boxing the large variant would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PosteriorLayer {
    ActNorm(ScalarActNorm),
    Cpf(CpFlowBlock),
}

/// The amortised posterior `q(z | x)` of a VAE: base Gaussian from the encoder heads, then
/// CP-Flow blocks with PICNN potentials conditioned on the encoder feature.
///
/// Workflow: build it in the model's [`VarMap`] under a prefix, run
/// [`AmortizedPosterior::initialize`] once on the first batch (data-dependent ActNorm init,
/// as the reference), then per batch call one of
/// * [`AmortizedPosterior::sample_with_surrogate`] for training (CG surrogate, the
///   reference's training path; the value is not `log q`),
/// * [`AmortizedPosterior::sample_with_log_q_exact`] for the exact `log q` with exact
///   gradients (dense `d × d` Hessians; the reference's test pass),
/// * [`AmortizedPosterior::sample_with_log_q_slq`] for the SLQ estimate with standard errors
///   (the reference's validation pass).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let dev = Device::Cpu;
/// let vm = VarMap::new();
/// let cfg = PosteriorConfig::reference_vae(2, 3).with_blocks(1).with_picnn(8, 2);
/// let q = AmortizedPosterior::new(&vm, "posterior", &cfg, &dev)?;
/// let mu = Tensor::new(&[[0.1f64, -0.2], [0.3, 0.0], [0.0, 1.0]], &dev)?;
/// let log_sigma = Tensor::zeros((3, 2), DType::F64, &dev)?;
/// let h = Tensor::new(&[[1.0f64, 0.0, 2.0], [0.5, 0.5, 0.5], [-1.0, 0.0, 1.0]], &dev)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// q.initialize(&mu, &log_sigma, &h, &mut rng)?;
/// let s = q.sample_with_log_q_exact(&mu, &log_sigma, &h, &mut rng)?;
/// assert_eq!(s.z.dims(), &[3, 2]);
/// let grads = s.log_q.sum_all()?.backward()?; // reaches the flow's parameters
/// assert!(q.trainable_vars().iter().any(|v| grads.get(v.as_tensor()).is_some()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AmortizedPosterior {
    config: PosteriorConfig,
    varmap: VarMap,
    prefix: String,
    layers: Vec<PosteriorLayer>,
    device: Device,
}

impl std::fmt::Debug for AmortizedPosterior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmortizedPosterior")
            .field("config", &self.config)
            .field("prefix", &self.prefix)
            .field("layers", &self.layers)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl AmortizedPosterior {
    /// Build the layers (fresh weights from `config.init_seed`, or the ones already in
    /// `varmap`) under `<prefix>.layers.<i>.*`: ActNorms `bias`, `logs`, `initialized`;
    /// blocks `icnn.*` (the PICNN's reference names), `w0`, `w1`.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        config: &PosteriorConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let dtype = config.float.dtype();
        let d = config.latent_dim;
        let mut rng = FlowRng::seed_from_u64(config.init_seed);
        let block = config.block_config();
        let mut layers = Vec::new();
        let actnorm = |i: usize| -> Result<PosteriorLayer> {
            let p = format!("{prefix}.layers.{i}");
            Ok(PosteriorLayer::ActNorm(ScalarActNorm::new(
                varmap, &p, d, dtype, device,
            )?))
        };
        for _ in 0..config.blocks {
            if config.actnorm {
                layers.push(actnorm(layers.len())?);
            }
            let vb = VarBuilder::from_varmap(varmap, dtype, device)
                .pp(format!("{prefix}.layers.{}", layers.len()));
            layers.push(PosteriorLayer::Cpf(CpFlowBlock::new(vb, &block, &mut rng)?));
        }
        if config.actnorm {
            layers.push(actnorm(layers.len())?);
        }
        Ok(AmortizedPosterior {
            config: config.clone(),
            varmap: varmap.clone(),
            prefix: prefix.to_string(),
            layers,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PosteriorConfig {
        &self.config
    }

    /// Latent dimension `d`.
    pub fn latent_dim(&self) -> usize {
        self.config.latent_dim
    }

    /// Context dimension `d_c`.
    pub fn context_dim(&self) -> usize {
        self.config.context_dim
    }

    /// Parameter dtype.
    pub fn dtype(&self) -> DType {
        self.config.float.dtype()
    }

    /// The CP-Flow blocks in order.
    pub fn blocks(&self) -> impl Iterator<Item = &CpFlowBlock> {
        self.layers.iter().filter_map(|l| match l {
            PosteriorLayer::Cpf(b) => Some(b),
            PosteriorLayer::ActNorm(_) => None,
        })
    }

    pub(crate) fn layers(&self) -> &[PosteriorLayer] {
        &self.layers
    }

    /// The posterior's variables (name under the prefix, variable), sorted by name; init
    /// flags included.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = match self.varmap.data().lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let head = format!("{}.", self.prefix);
        let mut v: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| k.starts_with(&head))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The trainable variables (everything but the `initialized` flags), sorted by name.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.named_vars()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("initialized"))
            .map(|(_, v)| v)
            .collect()
    }

    /// Number of scalar parameters (init flags excluded).
    pub fn num_parameters(&self) -> usize {
        self.trainable_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Whether every data-dependent initialisation has run.
    pub fn is_initialized(&self) -> Result<bool> {
        for l in &self.layers {
            let ok = match l {
                PosteriorLayer::ActNorm(a) => a.is_initialized()?,
                PosteriorLayer::Cpf(b) => b.is_initialized()?,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn ensure_initialized(&self) -> Result<()> {
        if self.is_initialized()? {
            Ok(())
        } else {
            Err(CpflowError::NotInitialized)
        }
    }

    /// Standard-normal noise `ε`, `(n, d)` in the posterior's dtype, from the host RNG.
    pub fn draw_noise<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Tensor> {
        let d = self.latent_dim();
        let v: Vec<f64> = (0..n * d)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        Ok(Tensor::from_vec(v, (n, d), &self.device)?.to_dtype(self.dtype())?)
    }

    /// Validate `(μ, log σ, h, ε)`: `(B, d)`, `(B, d)`, `(B, d_c)`, `(B, d)`, finite; moved
    /// to the posterior's device and dtype (conversions keep the autodiff graph).
    pub(crate) fn check_batch(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        eps: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let (d, dt, dev) = (self.latent_dim(), self.dtype(), &self.device);
        let mu = check_matrix(mu, d, "mu", dt, dev)?;
        let ls = check_matrix(log_sigma, d, "log_sigma", dt, dev)?;
        let h = check_matrix(h, self.context_dim(), "context", dt, dev)?;
        let eps = check_matrix(eps, d, "noise", dt, dev)?;
        let b = mu.dim(0)?;
        for (what, t) in [("log_sigma", &ls), ("context", &h), ("noise", &eps)] {
            if t.dim(0)? != b {
                return Err(CpflowError::InvalidInput(format!(
                    "{what} has {} rows but mu has {b}",
                    t.dim(0)?
                )));
            }
        }
        Ok([mu, ls, h, eps])
    }

    /// `(z₀, log N(z₀; μ, σ²))` with `z₀ = μ + e^{log σ} ε`; `log N = −Σ log σ − ½‖ε‖² −
    /// (d/2) log 2π` (the reparameterised form: `(z₀ − μ)/σ = ε` exactly).
    fn base(&self, mu: &Tensor, log_sigma: &Tensor, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let z0 = (mu + (log_sigma.exp()? * eps)?)?;
        let c = -0.5 * self.latent_dim() as f64 * (2.0 * std::f64::consts::PI).ln();
        let lq = ((log_sigma.sum(1)?.neg()? - (eps.sqr()?.sum(1)? * 0.5)?)? + c)?;
        Ok((z0, lq))
    }

    /// Data-dependent initialisation (reference: one forward pass on the first training
    /// batch): draws `z₀` and initialises every ActNorm (and the PICNNs' inner ActNorms),
    /// layer by layer. Re-running it re-initialises. All or nothing: when any layer fails,
    /// every parameter and `initialized` flag is left exactly as before the call.
    pub fn initialize<R: Rng + ?Sized>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        rng: &mut R,
    ) -> Result<()> {
        let eps = self.draw_noise(mu.dim(0)?, rng)?;
        self.initialize_from_noise(mu, log_sigma, h, &eps)
    }

    /// [`AmortizedPosterior::initialize`] with the noise `ε` given.
    pub fn initialize_from_noise(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        eps: &Tensor,
    ) -> Result<()> {
        let [mu, ls, h, eps] = self.check_batch(mu, log_sigma, h, eps)?;
        let h = h.detach();
        let (mut z, _) = self.base(&mu.detach(), &ls.detach(), &eps)?;
        crate::named_vars::initialize_all_or_nothing(self.named_vars(), || {
            for l in &self.layers {
                z = match l {
                    PosteriorLayer::ActNorm(a) => {
                        a.initialize(&z)?;
                        a.forward(&z)?.0.detach()
                    }
                    PosteriorLayer::Cpf(b) => {
                        b.initialize(&z, Some(&h))?;
                        b.forward(&z, Some(&h))?.detach()
                    }
                };
            }
            Ok(())
        })
    }
}
