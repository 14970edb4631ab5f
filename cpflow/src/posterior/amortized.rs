//! The amortised CP-Flow posterior `q(z | x)`: a base Gaussian `z₀ = μ + σ ⊙ ε` whose `μ`,
//! `log σ` come from the encoder, pushed through `[ScalarActNorm, CPF(PICNN), …, ScalarActNorm]`
//! with every PICNN fed the encoder feature `h` (`docs/reference/images-vae.md` §3.4–3.5).
//!
//! `log q(z_K | x) = log N(z₀; μ, diag σ²) − Σ_layers log det J`, with the proper Gaussian
//! normalisation (`−½ log 2π` per dimension; the reference drops it from both `q` and the
//! prior, where it cancels).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use krylov::{FnOperator, KrylovError};
use rand::Rng;
use rand_distr::StandardNormal;

use super::config::PosteriorConfig;
use super::scalar_actnorm::ScalarActNorm;
use crate::block::{CgReport, CpFlowBlock};
use crate::config::{SlqConfig, SurrogateParams};
use crate::dense_logdet::differentiable_logdet;
use crate::error::{CpflowError, Result};
use crate::flow::check_matrix;
use crate::rng::FlowRng;

/// One layer of the posterior flow.
#[derive(Clone, Debug)]
// A flow holds a handful of layers, once: boxing the large variant would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum PosteriorLayer {
    ActNorm(ScalarActNorm),
    Cpf(CpFlowBlock),
}

/// A posterior sample with its exact log-density (every tensor tracked: gradients reach
/// `μ`, `log σ`, the context and the flow parameters).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// # fn main() -> cpflow::Result<()> {
/// // The Gaussian posterior (no blocks): z = μ + σ ε and log q = log N(z; μ, σ²).
/// let dev = Device::Cpu;
/// let q = AmortizedPosterior::new(&VarMap::new(), "q", &PosteriorConfig::gaussian(1, 1), &dev)?;
/// let mu = Tensor::new(&[[1.0f64]], &dev)?;
/// let ls = Tensor::new(&[[2f64.ln()]], &dev)?; // σ = 2
/// let h = Tensor::zeros((1, 1), DType::F64, &dev)?;
/// let eps = Tensor::new(&[[0.5f64]], &dev)?;
/// let s = q.transform_noise_exact(&mu, &ls, &h, &eps)?;
/// assert_eq!(s.z.to_vec2::<f64>()?, vec![vec![2.0]]);
/// assert_eq!(s.z0.to_vec2::<f64>()?, s.z.to_vec2::<f64>()?);
/// assert_eq!(s.log_det.to_vec1::<f64>()?, vec![0.0]);
/// let want = -2f64.ln() - 0.125 - 0.5 * (2.0 * std::f64::consts::PI).ln();
/// assert!((s.log_q.to_vec1::<f64>()?[0] - want).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PosteriorSample {
    /// The base sample `z₀ = μ + σ ⊙ ε`, `(B, d)`.
    pub z0: Tensor,
    /// The posterior sample `z_K`, `(B, d)` (what the decoder reads).
    pub z: Tensor,
    /// `log q(z_K | x)`, `(B,)`.
    pub log_q: Tensor,
    /// `Σ_layers log det J` (the reference's `ldj`), `(B,)`.
    pub log_det: Tensor,
}

/// A posterior sample with an SLQ estimate of its log-density (detached: evaluation only).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// use rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block CP-Flow posterior over 2 latent dimensions with a 1-d context.
/// let dev = Device::Cpu;
/// let cfg = PosteriorConfig::reference_vae(2, 1).with_blocks(1).with_picnn(8, 2);
/// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
/// let mu = Tensor::new(&[[0.1f64, -0.2], [0.3, 0.0], [0.0, 1.0]], &dev)?;
/// let ls = Tensor::new(&[[0.0f64, -0.5], [0.2, 0.0], [-0.3, 0.1]], &dev)?;
/// let h = Tensor::new(&[[0.5f64], [1.0], [-1.0]], &dev)?;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// q.initialize(&mu, &ls, &h, &mut rng)?;
/// let eps = q.draw_noise(3, &mut rng)?;
/// let exact = q.transform_noise_exact(&mu, &ls, &h, &eps)?;
/// let params = cpflow::SlqConfig { probes: 4, steps: 10 };
/// let slq = q.transform_noise_slq(&mu, &ls, &h, &eps, &params, &mut rng)?;
/// // The same noise gives the same sample; the log-density is an estimate with an error.
/// let dz = (&slq.z - &exact.z)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(dz < 1e-12);
/// let (e, a) = (exact.log_q.to_vec1::<f64>()?, slq.log_q.to_vec1::<f64>()?);
/// for i in 0..3 {
///     let se = slq.std_err[i];
///     assert!(se.is_finite() && (e[i] - a[i]).abs() < 1.0, "{} vs {} ± {se}", e[i], a[i]);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PosteriorSlqSample {
    /// The posterior sample `z_K`, `(B, d)`, detached.
    pub z: Tensor,
    /// The estimate of `log q(z_K | x)`, `(B,)`, detached.
    pub log_q: Tensor,
    /// Standard error of each estimate (the blocks' SLQ errors added in quadrature; `NaN`
    /// with one probe, where no error can be estimated).
    pub std_err: Vec<f64>,
}

/// A posterior sample with the CG-surrogate training terms (tracked).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// use rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block CP-Flow posterior over 2 latent dimensions with a 1-d context.
/// let dev = Device::Cpu;
/// let cfg = PosteriorConfig::reference_vae(2, 1).with_blocks(1).with_picnn(8, 2);
/// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
/// let mu = Tensor::new(&[[0.1f64, -0.2], [0.3, 0.0], [0.0, 1.0]], &dev)?;
/// let ls = Tensor::new(&[[0.0f64, -0.5], [0.2, 0.0], [-0.3, 0.1]], &dev)?;
/// let h = Tensor::new(&[[0.5f64], [1.0], [-1.0]], &dev)?;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// q.initialize(&mu, &ls, &h, &mut rng)?;
/// let eps = q.draw_noise(3, &mut rng)?;
/// let params = cpflow::SurrogateParams::default();
/// let sur = q.transform_noise_surrogate(&mu, &ls, &h, &eps, &params, &mut rng)?;
/// let exact = q.transform_noise_exact(&mu, &ls, &h, &eps)?;
/// // Same sample and the same base density; only the log-det terms are surrogates.
/// let dz = (&sur.z - &exact.z)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(dz < 1e-12);
/// assert_eq!(sur.cg.iterations.len(), 3); // one CG system per row (one probe, one block)
/// // Its gradient reaches the flow's parameters.
/// let grads = sur.log_q_surrogate.sum_all()?.backward()?;
/// assert!(q.trainable_vars().iter().any(|v| grads.get(v).is_some()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PosteriorSurrogate {
    /// The base sample `z₀`, `(B, d)`.
    pub z0: Tensor,
    /// The posterior sample `z_K`, `(B, d)`.
    pub z: Tensor,
    /// `log N(z₀; μ, σ²) − Σ ActNorm log-dets − Σ_blocks S_k`, `(B,)`, where `S_k = (H u)ᵀv`
    /// is block `k`'s CG surrogate (`u ≈ H⁻¹v` detached). **Its value is not `log q`**
    /// (each block contributes `S_k ≈ vᵀv = d` instead of `log det H_k`); its gradient with
    /// respect to `μ`, `log σ`, the context and the flow parameters is an unbiased estimate
    /// (up to the CG tolerance) of the gradient of `log q(z_K | x)` along the
    /// reparameterised sample. Use it in place of `log q` in the training loss only.
    pub log_q_surrogate: Tensor,
    /// `log N(z₀; μ, σ²)` (exact value), `(B,)`.
    pub log_q0: Tensor,
    /// CG report, all blocks together.
    pub cg: CgReport,
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
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// use rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let dev = Device::Cpu;
/// let vm = VarMap::new();
/// let cfg = PosteriorConfig::reference_vae(2, 3).with_blocks(1).with_picnn(8, 2);
/// let q = AmortizedPosterior::new(&vm, "posterior", &cfg, &dev)?;
/// let mu = Tensor::new(&[[0.1f64, -0.2], [0.3, 0.0], [0.0, 1.0]], &dev)?;
/// let log_sigma = Tensor::zeros((3, 2), DType::F64, &dev)?;
/// let h = Tensor::new(&[[1.0f64, 0.0, 2.0], [0.5, 0.5, 0.5], [-1.0, 0.0, 1.0]], &dev)?;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
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

    /// Draw `ε` and return `(z_K, log q(z_K | x))` with the exact dense-Hessian log-dets,
    /// value and gradient exact (see [`AmortizedPosterior::transform_noise_exact`]).
    pub fn sample_with_log_q_exact<R: Rng + ?Sized>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        rng: &mut R,
    ) -> Result<PosteriorSample> {
        let eps = self.draw_noise(mu.dim(0)?, rng)?;
        self.transform_noise_exact(mu, log_sigma, h, &eps)
    }

    /// `z_K` and the exact `log q(z_K | x)` for given noise `ε`: each block's Jacobian is
    /// built densely `(B, d, d)` and its log-det taken by a host Cholesky, with the gradient
    /// through `tr(H⁻¹ ∂H)` ([`crate::dense_logdet::differentiable_logdet`]). Cost per block:
    /// `d` Hessian-vector products and one `d × d` Cholesky per sample (cheap for `d = 64`).
    pub fn transform_noise_exact(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        eps: &Tensor,
    ) -> Result<PosteriorSample> {
        self.ensure_initialized()?;
        let [mu, ls, h, eps] = self.check_batch(mu, log_sigma, h, eps)?;
        let (z0, lq0) = self.base(&mu, &ls, &eps)?;
        let mut z = z0.clone();
        let mut ld = lq0.zeros_like()?;
        for l in &self.layers {
            z = match l {
                PosteriorLayer::ActNorm(a) => {
                    let (y, l) = a.forward(&z)?;
                    ld = ld.broadcast_add(&l)?;
                    y
                }
                PosteriorLayer::Cpf(b) => {
                    let (y, hess) = b.forward_and_hessian(&z, Some(&h))?;
                    ld = (ld + differentiable_logdet(&hess)?)?;
                    y
                }
            };
        }
        Ok(PosteriorSample {
            z0,
            z,
            log_q: (lq0 - &ld)?,
            log_det: ld,
        })
    }

    /// Draw `ε` and return `z_K` with an SLQ estimate of `log q(z_K | x)` and its standard
    /// error (see [`AmortizedPosterior::transform_noise_slq`]).
    pub fn sample_with_log_q_slq<R: Rng + ?Sized>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<PosteriorSlqSample> {
        let eps = self.draw_noise(mu.dim(0)?, rng)?;
        self.transform_noise_slq(mu, log_sigma, h, &eps, params, rng)
    }

    /// `z_K` and `log q(z_K | x)` for given noise, each block's log-det estimated by
    /// stochastic Lanczos quadrature (`params.probes` Rademacher probes, `min(steps, d)`
    /// Lanczos steps; reference validation: 1 probe, 10 steps). Detached (no gradients).
    pub fn transform_noise_slq<R: Rng + ?Sized>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        eps: &Tensor,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<PosteriorSlqSample> {
        self.ensure_initialized()?;
        if params.probes == 0 || params.steps == 0 {
            return Err(CpflowError::InvalidConfig(
                "SLQ needs probes ≥ 1 and steps ≥ 1".into(),
            ));
        }
        let [mu, ls, h, eps] = self.check_batch(mu, log_sigma, h, eps)?;
        let (mu, ls, h) = (mu.detach(), ls.detach(), h.detach());
        let (mut z, lq0) = self.base(&mu, &ls, &eps)?;
        let b = z.dim(0)?;
        let mut ld = vec![0.0f64; b];
        let mut var = vec![0.0f64; b];
        let lp = params
            .to_logdet_params()
            .with_lanczos_steps(params.steps.min(self.latent_dim()));
        let mut r = rng;
        for l in &self.layers {
            z =
                match l {
                    PosteriorLayer::ActNorm(a) => {
                        let (y, l) = a.forward(&z)?;
                        let l = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                        ld.iter_mut().for_each(|v| *v += l);
                        y.detach()
                    }
                    PosteriorLayer::Cpf(blk) => {
                        let (y, op) = blk.detached_operator(&z, Some(&h))?;
                        let kop = FnOperator::new(
                        |w: &Tensor, _active: &[bool]| -> std::result::Result<Tensor, KrylovError> {
                            op.apply(w).map_err(KrylovError::operator)
                        },
                    );
                        let est = logdet::slq_logdet(&kop, &z, &mut r, &lp)?;
                        for i in 0..b {
                            ld[i] += est.estimate[i];
                            var[i] += est.std_err[i].powi(2);
                        }
                        y
                    }
                };
        }
        let ld = Tensor::from_vec(ld, b, &self.device)?.to_dtype(self.dtype())?;
        Ok(PosteriorSlqSample {
            z: z.detach(),
            log_q: (lq0.detach() - ld)?,
            std_err: var.into_iter().map(f64::sqrt).collect(),
        })
    }

    /// Draw `ε` and return the training terms (see
    /// [`AmortizedPosterior::transform_noise_surrogate`]).
    pub fn sample_with_surrogate<R: Rng + ?Sized>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<PosteriorSurrogate> {
        let eps = self.draw_noise(mu.dim(0)?, rng)?;
        self.transform_noise_surrogate(mu, log_sigma, h, &eps, params, rng)
    }

    /// The reference's training path (`docs/reference/cpflow-reference.md` §2.3,
    /// `images-vae.md` §3.5) for given noise: `z_K` and
    /// [`PosteriorSurrogate::log_q_surrogate`], whose gradient estimates that of `log q(z_K |
    /// x)` and whose value is **not** `log q`. The VAE's training loss is
    /// `mean(RE(z_K) + β·(log_q_surrogate − log p(z_K)))`.
    pub fn transform_noise_surrogate<R: Rng + ?Sized>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        eps: &Tensor,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<PosteriorSurrogate> {
        self.ensure_initialized()?;
        let [mu, ls, h, eps] = self.check_batch(mu, log_sigma, h, eps)?;
        let (z0, lq0) = self.base(&mu, &ls, &eps)?;
        let mut z = z0.clone();
        let mut lq = lq0.clone();
        let mut cg = CgReport::default();
        for l in &self.layers {
            z = match l {
                PosteriorLayer::ActNorm(a) => {
                    let (y, l) = a.forward(&z)?;
                    lq = lq.broadcast_sub(&l)?;
                    y
                }
                PosteriorLayer::Cpf(b) => {
                    let (y, s, rep) = b.forward_with_surrogate(&z, Some(&h), params, rng)?;
                    cg.extend(&rep);
                    lq = (lq - s)?;
                    y
                }
            };
        }
        Ok(PosteriorSurrogate {
            z0,
            z,
            log_q_surrogate: lq,
            log_q0: lq0,
            cg,
        })
    }
}
