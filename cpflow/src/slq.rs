//! Stochastic Lanczos quadrature of `log det H` for a block's detached Jacobian
//! (`docs/reference/cpflow-reference.md` §2.4), through `logdet::slq_logdet`: Rademacher probes,
//! `m = min(steps, d)` Lanczos steps with full re-orthogonalisation (krylov), Gauss quadrature
//! `‖v‖² · e₁ᵀ log(T) e₁`, averaged over the probes.

use candle_core::{DType, Tensor};
use krylov::{FnOperator, KrylovError};
use rand::Rng;

use crate::block::HessianOperator;
use crate::config::SlqConfig;
use crate::error::{CpflowError, Result};

/// `log p(x)` per sample with SLQ log-determinants ([`crate::Flow::log_prob_slq`],
/// [`crate::image::ImageFlow::log_prob_slq`]), with the standard error of the stochastic part.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig, SlqConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let mut rng = FlowRng::seed_from_u64(0);
/// let one = flow.log_prob_slq(&x, &SlqConfig { probes: 1, steps: 2 }, &mut rng)?;
/// assert_eq!(one.log_prob.dims(), &[3]);
/// assert!(one.std_err.iter().all(|s| s.is_nan())); // one probe: no spread to measure
/// let many = flow.log_prob_slq(&x, &SlqConfig { probes: 16, steps: 2 }, &mut rng)?;
/// assert!(many.std_err.iter().all(|s| s.is_finite()));
/// // The mean over the samples and its standard error.
/// let (mean, se) = many.mean_and_std_err()?;
/// assert!((mean - many.log_prob.mean_all()?.to_scalar::<f64>()?).abs() < 1e-12);
/// assert!(se > 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SlqLogProb {
    /// `log p(x)` per sample, nats, `(B,)` in the flow's dtype, detached.
    pub log_prob: Tensor,
    /// Per sample, the standard error of the SLQ log-det estimate (all blocks together,
    /// `√Σ_blocks se²`, from the spread over the probes); `NaN` with a single probe, where it
    /// cannot be estimated. It covers the probe randomness, not the bias of stopping Lanczos
    /// at `steps < d` (compare with the exact `log_prob_exact` on a subset for that).
    pub std_err: Vec<f64>,
}

impl SlqLogProb {
    /// Mean `log p` over the samples and the standard error of that mean (from the spread
    /// over the samples, which holds both the data and the probe randomness; `NaN` for one
    /// sample).
    pub fn mean_and_std_err(&self) -> Result<(f64, f64)> {
        let v = self.log_prob.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(crate::image::mean_and_std_err(&v))
    }
}

/// SLQ estimate of `log det H_b` per sample `b` with its standard error (NaN with one probe):
/// `(estimates, std_errs)`, host values; `like` is the `(B, d)` point batch (gives shape,
/// dtype, device).
pub(crate) fn slq_logdet_block<R: Rng + ?Sized>(
    op: &HessianOperator,
    like: &Tensor,
    params: &SlqConfig,
    rng: &mut R,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if params.steps == 0 || params.probes == 0 {
        return Err(CpflowError::InvalidConfig(
            "SLQ needs at least one probe and one Lanczos step".into(),
        ));
    }
    let kop = FnOperator::new(
        |w: &Tensor, _active: &[bool]| -> std::result::Result<Tensor, KrylovError> {
            op.apply(w).map_err(KrylovError::operator)
        },
    );
    let lp = params.to_logdet_params();
    let mut r = rng;
    let est = logdet::slq_logdet(&kop, &like.detach(), &mut r, &lp)?;
    Ok((est.estimate, est.std_err))
}
