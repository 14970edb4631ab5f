//! Stochastic Lanczos quadrature of `log det H` for a block's detached Jacobian
//! (`docs/reference/cpflow-reference.md` §2.4), through `logdet::slq_logdet`: Rademacher probes,
//! `m = min(steps, d)` Lanczos steps with full re-orthogonalisation (krylov), Gauss quadrature
//! `‖v‖² · e₁ᵀ log(T) e₁`, averaged over the probes.

use std::cell::RefCell;

use candle_core::{DType, Tensor};
use krylov::{FnOperator, KrylovError};
use logdet::LogdetError;
use rand::Rng;

use crate::block::HessianOperator;
use crate::config::SlqConfig;
use crate::error::{CpflowError, Result};
use crate::non_finite_rows::non_finite_rows;

/// `log p(x)` per sample with SLQ log-determinants ([`crate::Flow::log_prob_slq`],
/// [`crate::image::ImageFlow::log_prob_slq`]), with the standard error of the stochastic part.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig, SlqConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
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
/// // A well-conditioned flow: no estimate is biased beyond its standard error.
/// assert_eq!(many.floored_ritz_values, [0, 0, 0]);
/// assert!(many.bias_counts().is_zero());
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
    /// Per sample, the Ritz values the quadrature raised to the round-off floor, summed over
    /// the blocks and probes (`logdet::StochasticEstimate::floored_ritz_values`). Non-zero:
    /// the sample's `log_prob` is biased **upwards** by more than `std_err` shows (a block
    /// Jacobian with a condition number near `1/(100·u)` of the dtype, or a singular one,
    /// which then scores finite). Score such samples with the exact log-det
    /// (`log_prob_exact`), or in f64. 0 for a sample whose `log_prob` is NaN.
    pub floored_ritz_values: Vec<usize>,
    /// Per sample, the probes whose Lanczos run stopped early without an invariant subspace,
    /// summed over the blocks (`logdet::StochasticEstimate::premature_breakdowns`): the
    /// smallest eigenvalues were not resolved and the value is biased beyond `std_err`, as
    /// above. 0 for a sample whose `log_prob` is NaN.
    pub premature_breakdowns: Vec<usize>,
}

/// The hidden-bias counts of SLQ estimates, totalled over samples
/// ([`SlqLogProb::bias_counts`]); zero for exact log-dets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlqBiasCounts {
    /// Samples with a non-zero count of either kind.
    pub samples: usize,
    /// [`SlqLogProb::floored_ritz_values`], summed.
    pub floored_ritz_values: usize,
    /// [`SlqLogProb::premature_breakdowns`], summed.
    pub premature_breakdowns: usize,
}

impl SlqBiasCounts {
    /// Whether no sample's estimate is biased beyond its standard error.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::AddAssign for SlqBiasCounts {
    fn add_assign(&mut self, other: Self) {
        self.samples += other.samples;
        self.floored_ritz_values += other.floored_ritz_values;
        self.premature_breakdowns += other.premature_breakdowns;
    }
}

impl SlqLogProb {
    /// An empty result (0 samples) of dtype and device of `like`.
    pub(crate) fn empty(like: &Tensor) -> Result<Self> {
        Ok(Self {
            log_prob: Tensor::zeros(0, like.dtype(), like.device())?,
            std_err: Vec::new(),
            floored_ritz_values: Vec::new(),
            premature_breakdowns: Vec::new(),
        })
    }

    /// [`Self::floored_ritz_values`] and [`Self::premature_breakdowns`] totalled over the
    /// samples.
    pub fn bias_counts(&self) -> SlqBiasCounts {
        let mut counts = SlqBiasCounts::default();
        for (f, p) in self
            .floored_ritz_values
            .iter()
            .zip(&self.premature_breakdowns)
        {
            counts.samples += usize::from(f + p > 0);
            counts.floored_ritz_values += f;
            counts.premature_breakdowns += p;
        }
        counts
    }

    /// Mean `log p` over the samples and the standard error of that mean (from the spread
    /// over the samples, which holds both the data and the probe randomness; `NaN` for one
    /// sample).
    pub fn mean_and_std_err(&self) -> Result<(f64, f64)> {
        let v = self.log_prob.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(crate::image::mean_and_std_err(&v))
    }
}

/// One block's SLQ estimate, per row (host values).
pub(crate) struct BlockSlq {
    /// `log det H_b`.
    pub estimate: Vec<f64>,
    /// Its standard error (NaN with one probe).
    pub std_err: Vec<f64>,
    /// `logdet::StochasticEstimate::floored_ritz_values` (0 for a NaN row).
    pub floored_ritz_values: Vec<usize>,
    /// `logdet::StochasticEstimate::premature_breakdowns` (0 for a NaN row).
    pub premature_breakdowns: Vec<usize>,
}

/// SLQ estimate of `log det H_b` per sample `b` with its standard error (NaN with one probe)
/// and its hidden-bias counts; `like` is the `(B, d)` point batch (gives shape, dtype,
/// device).
///
/// A row whose Hessian-vector products are not finite (a point that overflows the block,
/// `non_finite_rows.rs`) gets NaN for both: from the product where that is seen, its operator
/// is the identity, so its Lanczos run stops and the other rows' runs are those they have
/// without it. Should the quadrature still fail for a row seen late, or for a row in
/// `tolerate` (one with no finite forward pass), the estimate is drawn again (new probes from
/// `rng`) with those rows masked from the start; any other failure is an error.
pub(crate) fn slq_logdet_block<R: Rng + ?Sized>(
    op: &HessianOperator,
    like: &Tensor,
    params: &SlqConfig,
    rng: &mut R,
    tolerate: &[bool],
) -> Result<BlockSlq> {
    if params.steps == 0 || params.probes == 0 {
        return Err(CpflowError::InvalidConfig(
            "SLQ needs at least one probe and one Lanczos step".into(),
        ));
    }
    let lp = params.to_logdet_params();
    let like = like.detach();
    let mut masked = vec![false; like.dim(0)?];
    loop {
        let seen = RefCell::new(masked.clone());
        let kop = FnOperator::new(
            |w: &Tensor, _active: &[bool]| -> std::result::Result<Tensor, KrylovError> {
                let hw = op.apply(w).map_err(KrylovError::operator)?;
                identity_on_non_finite_rows(w, hw, &seen).map_err(KrylovError::operator)
            },
        );
        let mut r = &mut *rng;
        let outcome = logdet::slq_logdet(&kop, &like, &mut r, &lp);
        let seen = seen.into_inner();
        match outcome {
            Ok(est) => {
                let nan_where_seen = |v: Vec<f64>| -> Vec<f64> {
                    v.into_iter()
                        .zip(&seen)
                        .map(|(x, s)| if *s { f64::NAN } else { x })
                        .collect()
                };
                let zero_where_seen = |v: Vec<usize>| -> Vec<usize> {
                    v.into_iter()
                        .zip(&seen)
                        .map(|(c, s)| if *s { 0 } else { c })
                        .collect()
                };
                warn_of_hidden_bias(&est, &seen, like.dtype());
                return Ok(BlockSlq {
                    estimate: nan_where_seen(est.estimate),
                    std_err: nan_where_seen(est.std_err),
                    floored_ritz_values: zero_where_seen(est.floored_ritz_values),
                    premature_breakdowns: zero_where_seen(est.premature_breakdowns),
                });
            }
            Err(e) => {
                let mut retry = seen;
                if let Some(k) = failed_system(&e)
                    && tolerate.get(k) == Some(&true)
                {
                    retry[k] = true;
                }
                if retry == masked {
                    return Err(e.into());
                }
                masked = retry;
            }
        }
    }
}

/// Whether [`warn_of_hidden_bias`] has warned in this process (once is enough to say that a
/// model's SLQ numbers are not to be trusted; an evaluation calls it per block and chunk).
static WARNED_OF_HIDDEN_BIAS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// What to say of the rows (not masked by `seen`) whose SLQ value is biased by more than its
/// standard error shows: per row, `floored` Ritz values raised to the round-off floor and
/// `early` Lanczos runs stopped early without an invariant subspace
/// (`logdet::StochasticEstimate`'s `floored_ritz_values` and `premature_breakdowns`; a
/// Jacobian whose condition number nears `1/(100·u)` of `dtype`, or a singular one). `None`
/// when there are none.
fn hidden_bias_message(
    floored: &[usize],
    early: &[usize],
    seen: &[bool],
    dtype: DType,
) -> Option<String> {
    let unmasked = |counts: &[usize]| -> (usize, usize) {
        counts
            .iter()
            .zip(seen)
            .filter(|(c, s)| **c > 0 && !**s)
            .fold((0, 0), |(rows, total), (c, _)| (rows + 1, total + c))
    };
    let (floored_rows, floored) = unmasked(floored);
    let (early_rows, early) = unmasked(early);
    if floored_rows == 0 && early_rows == 0 {
        return None;
    }
    Some(format!(
        "SLQ log-det biased beyond its standard error: in {floored_rows} of {rows} rows {floored} \
         Ritz values were raised to the {dtype:?} round-off floor (biased upwards; a singular \
         Jacobian scores finite) and in {early_rows} rows {early} probes' Lanczos runs stopped \
         early without resolving the smallest eigenvalues (a block Jacobian with a condition \
         number near 1/(100·u) of {dtype:?}); score with the exact log-det (`--estimator \
         exact`, `log_prob`){f64_hint}. Later such estimates of this process are not logged \
         (each result counts them: `SlqLogProb`'s `floored_ritz_values`, \
         `premature_breakdowns`)",
        rows = seen.len(),
        f64_hint = if dtype == DType::F64 {
            ""
        } else {
            " or in f64"
        },
    ))
}

/// Logs [`hidden_bias_message`] once per process.
fn warn_of_hidden_bias(est: &logdet::StochasticEstimate, seen: &[bool], dtype: DType) {
    use std::sync::atomic::Ordering;
    let (floored, early) = (&est.floored_ritz_values, &est.premature_breakdowns);
    if let Some(message) = hidden_bias_message(floored, early, seen, dtype)
        && !WARNED_OF_HIDDEN_BIAS.swap(true, Ordering::Relaxed)
    {
        tracing::warn!("{message}");
    }
}

/// `H w` with each row that is, or was at an earlier product, not finite replaced by the
/// row of `w` (the identity there); `seen` holds those rows and gains the new ones.
fn identity_on_non_finite_rows(
    w: &Tensor,
    hw: Tensor,
    seen: &RefCell<Vec<bool>>,
) -> Result<Tensor> {
    let mut seen = seen.borrow_mut();
    for (s, bad) in seen.iter_mut().zip(non_finite_rows(&hw)?) {
        *s |= bad;
    }
    if !seen.iter().any(|s| *s) {
        return Ok(hw);
    }
    let mask: Vec<u8> = seen.iter().map(|s| u8::from(*s)).collect();
    let mask = Tensor::from_vec(mask, (seen.len(), 1), w.device())?.broadcast_as(w.shape())?;
    Ok(mask.where_cond(w, &hw)?)
}

/// The system a quadrature error names, if it names one.
fn failed_system(e: &LogdetError) -> Option<usize> {
    match e {
        LogdetError::NotPositiveDefinite { system }
        | LogdetError::QuadratureFailed { system }
        | LogdetError::NonPositiveRitzValue { system, .. }
        | LogdetError::QuadratureOverflow { system, .. }
        | LogdetError::CoefficientCountMismatch { system, .. }
        | LogdetError::NonFiniteSample { system, .. } => Some(*system),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows with floored Ritz values or premature breakdowns are counted (masked rows left
    /// out) and the remedy named; clean rows, or counts only in masked rows, say nothing.
    #[test]
    fn hidden_bias_is_counted_over_unmasked_rows() {
        let seen = [false, false, true, false];
        let m = hidden_bias_message(&[2, 0, 7, 1], &[0, 0, 5, 3], &seen, DType::F32).unwrap();
        assert!(
            m.contains("in 2 of 4 rows 3 Ritz values")
                && m.contains("in 1 rows 3 probes")
                && m.contains("--estimator exact")
                && m.contains("or in f64"),
            "{m}"
        );
        let f64_message = hidden_bias_message(&[1, 0], &[0, 0], &[false; 2], DType::F64).unwrap();
        assert!(!f64_message.contains("or in f64"), "{f64_message}");
        assert_eq!(
            hidden_bias_message(&[0, 0], &[0, 0], &[false; 2], DType::F32),
            None
        );
        assert_eq!(hidden_bias_message(&[4], &[1], &[true], DType::F32), None);
    }
}
