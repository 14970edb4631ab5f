//! Sampling from an [`AmortizedPosterior`] with `log q(z_K | x)`: exact (dense Hessians,
//! [`PosteriorSample`]), estimated by SLQ with standard errors ([`PosteriorSlqSample`]), or
//! as the CG-surrogate training terms ([`PosteriorSurrogate`]); each from drawn noise
//! (`sample_*`) or given noise (`transform_noise_*`).

use candle_core::{DType, Tensor};
use krylov::{FnOperator, KrylovError};
use rand::Rng;

use super::{AmortizedPosterior, PosteriorLayer};
use crate::block::CgReport;
use crate::config::{SlqConfig, SurrogateParams};
use crate::dense_logdet::differentiable_logdet;
use crate::error::{CpflowError, Result};

/// A posterior sample with its exact log-density (every tensor tracked: gradients reach
/// `μ`, `log σ`, the context and the flow parameters).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
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
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block CP-Flow posterior over 2 latent dimensions with a 1-d context.
/// let dev = Device::Cpu;
/// let cfg = PosteriorConfig::reference_vae(2, 1).with_blocks(1).with_picnn(8, 2);
/// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
/// let mu = Tensor::new(&[[0.1f64, -0.2], [0.3, 0.0], [0.0, 1.0]], &dev)?;
/// let ls = Tensor::new(&[[0.0f64, -0.5], [0.2, 0.0], [-0.3, 0.1]], &dev)?;
/// let h = Tensor::new(&[[0.5f64], [1.0], [-1.0]], &dev)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
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
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block CP-Flow posterior over 2 latent dimensions with a 1-d context.
/// let dev = Device::Cpu;
/// let cfg = PosteriorConfig::reference_vae(2, 1).with_blocks(1).with_picnn(8, 2);
/// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
/// let mu = Tensor::new(&[[0.1f64, -0.2], [0.3, 0.0], [0.0, 1.0]], &dev)?;
/// let ls = Tensor::new(&[[0.0f64, -0.5], [0.2, 0.0], [-0.3, 0.1]], &dev)?;
/// let h = Tensor::new(&[[0.5f64], [1.0], [-1.0]], &dev)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
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

impl AmortizedPosterior {
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
