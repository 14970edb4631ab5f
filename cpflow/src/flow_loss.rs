//! Training objectives: the CG surrogate (reference training) and the exact NLL with a
//! differentiable dense log-det (reference OT experiment).

use candle_core::Tensor;
use rand::Rng;

use crate::block::CgReport;
use crate::config::SurrogateParams;
use crate::dense_logdet::differentiable_logdet;
use crate::error::Result;
use crate::flow::{Flow, Layer};

/// The output of [`Flow::surrogate_loss`].
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig, SurrogateParams};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let params = SurrogateParams { cg_atol: 1e-12, ..Default::default() };
/// let out = flow.surrogate_loss(&x, &params, &mut FlowRng::seed_from_u64(0))?;
/// assert_eq!((out.cg.iterations.len(), out.cg.converged), (3, 3));
/// // With u = H⁻¹v solved exactly, the block's term is S = (Hu)ᵀv = vᵀv = d = 2, not a
/// // log-det: the loss is −mean(log N(z)) − 2.
/// let (z, _) = flow.transform(&x)?;
/// let log_prior = flow.prior().log_prob(&z)?.mean_all()?.to_scalar::<f64>()?;
/// let loss = out.loss.to_scalar::<f64>()?;
/// assert!((loss - (-log_prior - 2.0)).abs() < 1e-8, "{loss}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SurrogateLoss {
    /// Scalar training loss `−mean(log N(z) + Σ ActNorm log-dets + Σ_blocks S)`, parameter
    /// tracking. **Its value is not an NLL**: each block contributes `S ≈ vᵀv = d` instead
    /// of its log-det; only its gradient estimates the NLL gradient.
    pub loss: Tensor,
    /// CG report, all blocks together.
    pub cg: CgReport,
}

impl Flow {
    /// The CG-surrogate training objective (`docs/reference/cpflow-reference.md` §2.3). Its gradient w.r.t. the
    /// parameters is an unbiased (up to the CG tolerance) estimate of the gradient of the
    /// mean NLL; its value is **not** an NLL (see [`SurrogateLoss::loss`]).
    ///
    /// ```
    /// # use cpflow::candle::{Device, Tensor};
    /// # use cpflow::{Flow, FlowConfig, PotentialConfig, SurrogateParams};
    /// # use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4]], &Device::Cpu)?;
    /// flow.initialize(&x)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let out = flow.surrogate_loss(&x, &SurrogateParams::default(), &mut rng)?;
    /// let grads = out.loss.backward()?; // one first-order backward pass
    /// assert!(flow.named_vars().iter().any(|(_, v)| grads.get(v.as_tensor()).is_some()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn surrogate_loss<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<SurrogateLoss> {
        self.surrogate_loss_given_opt(x, None, params, rng)
    }

    /// [`Flow::surrogate_loss`] for a conditional flow.
    pub fn surrogate_loss_given<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        ctx: &Tensor,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<SurrogateLoss> {
        self.surrogate_loss_given_opt(x, Some(ctx), params, rng)
    }

    /// Per-sample `log N(z) + Σ log-det terms` of the surrogate pass (tracked), with the CG
    /// report. The input is used as given (no validation: the trainer validates once).
    pub(crate) fn surrogate_terms<R: crate::probe_source::ProbeSource + ?Sized>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        params: &SurrogateParams,
        rng: &mut R,
        weights: &[Option<icnn::HostWeights>],
        preconditioners: &[Option<Tensor>],
    ) -> Result<(Tensor, CgReport)> {
        let mut h = x.clone();
        let mut scalar_ld: Option<Tensor> = None;
        let mut sample_ld: Option<Tensor> = None;
        let mut cg = CgReport::default();
        for (i, l) in self.layers().iter().enumerate() {
            h = match l {
                Layer::ActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    scalar_ld = Some(match scalar_ld {
                        Some(s) => (s + l)?,
                        None => l,
                    });
                    y
                }
                Layer::Cpf(b) => {
                    let w = weights.get(i).and_then(Option::as_ref);
                    let m = preconditioners.get(i).and_then(Option::as_ref);
                    let (z, s, rep) =
                        b.forward_with_surrogate_sharing(&h, ctx, params, rng, w, m)?;
                    cg.extend(&rep);
                    sample_ld = Some(match sample_ld {
                        Some(t) => (t + s)?,
                        None => s,
                    });
                    z
                }
            };
        }
        let mut lp = self.prior().log_prob(&h)?;
        if let Some(s) = sample_ld {
            lp = (lp + s)?;
        }
        if let Some(s) = scalar_ld {
            lp = lp.broadcast_add(&s)?;
        }
        Ok((lp, cg))
    }

    pub(crate) fn surrogate_loss_given_opt<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<SurrogateLoss> {
        self.ensure_initialized()?;
        let (x, ctx) = self.check_input(x, ctx)?;
        let (lp, cg) = self.surrogate_terms(&x, ctx.as_ref(), params, rng, &[], &[])?;
        Ok(SurrogateLoss {
            loss: lp.mean_all()?.neg()?,
            cg,
        })
    }

    /// Per-sample exact `log p(x)` whose gradient is exact too (tracked): dense Hessians, log-det
    /// values from the host Cholesky, gradients through `tr(H⁻¹ ∂H)` with `H⁻¹` computed on the
    /// host. Cost per block: `O(B d³)` on the host plus `d` Hessian-vector products per sample.
    pub(crate) fn exact_log_prob_tracked(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        let mut ld: Option<Tensor> = None;
        for l in self.layers() {
            let (y, term) = match l {
                Layer::ActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    (y, l.broadcast_as(x.dim(0)?)?)
                }
                Layer::Cpf(b) => {
                    let (z, hess) = b.forward_and_hessian(&h, ctx)?;
                    (z, differentiable_logdet(&hess)?)
                }
            };
            ld = Some(match ld {
                Some(s) => (s + term)?,
                None => term,
            });
            h = y;
        }
        let lp = self.prior().log_prob(&h)?;
        Ok(match ld {
            Some(l) => (lp + l)?,
            None => lp,
        })
    }

    /// The exact mean NLL `−mean log p(x)` as a scalar whose value **and** gradient are exact
    /// (dense log-det; the reference OT experiment trains with it). For small `d`.
    pub fn exact_nll_loss(&self, x: &Tensor) -> Result<Tensor> {
        self.ensure_initialized()?;
        let (x, _) = self.check_input(x, None)?;
        Ok(self.exact_log_prob_tracked(&x, None)?.mean_all()?.neg()?)
    }

    /// [`Flow::exact_nll_loss`] for a conditional flow.
    pub fn exact_nll_loss_given(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.ensure_initialized()?;
        let (x, ctx) = self.check_input(x, Some(ctx))?;
        Ok(self
            .exact_log_prob_tracked(&x, ctx.as_ref())?
            .mean_all()?
            .neg()?)
    }
}
