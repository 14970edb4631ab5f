//! Data sets and NLL evaluation over chunks.

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::config::NllEstimator;
use crate::error::{CpflowError, Result};
use crate::flow::Flow;
use crate::slq::SlqBiasCounts;

/// A data set (rows are samples) with an optional context (conditional flows).
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::Dataset;
/// # fn main() -> cpflow::Result<()> {
/// let x = Tensor::zeros((10, 3), cpflow::candle::DType::F64, &Device::Cpu)?;
/// let data = Dataset::new(x.clone());
/// assert_eq!((data.len(), data.is_empty()), (10, false));
/// assert!(data.context.is_none());
/// // A conditional data set: one context row per sample.
/// let ctx = Tensor::ones((10, 2), cpflow::candle::DType::F64, &Device::Cpu)?;
/// let cond = Dataset::with_context(x, ctx);
/// assert_eq!(cond.context.as_ref().map(|c| c.dims().to_vec()), Some(vec![10, 2]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `(N, d)` samples.
    pub x: Tensor,
    /// `(N, d_c)` contexts.
    pub context: Option<Tensor>,
}

impl Dataset {
    /// Unconditional data.
    pub fn new(x: Tensor) -> Self {
        Dataset { x, context: None }
    }

    /// Conditional data: `context` holds one row per row of `x`.
    ///
    /// Nothing is checked here (and the fields are public): every consumer checks the data
    /// set it is given. [`nll_estimate`] and [`mean_nll`] (with their `_with` forms, and so
    /// [`crate::NllCurve`]) call [`Dataset::check`] before scoring anything, and the
    /// [`crate::Trainer`]'s `fit*` methods check the training and validation sets against the
    /// flow before the first step ([`Flow::check_input`]): a context with another number of
    /// rows than the data, a tensor that is not a matrix, or a context given to an
    /// unconditional flow (or missing for a conditional one) is a
    /// [`CpflowError::InvalidInput`] that names it, never a truncated or misaligned pass.
    /// Call [`Dataset::check`] to find out when the set is built.
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::{CpflowError, Dataset};
    /// # fn main() -> cpflow::Result<()> {
    /// let x = Tensor::zeros((10, 3), DType::F64, &Device::Cpu)?;
    /// let set = Dataset::with_context(x, Tensor::ones((8, 2), DType::F64, &Device::Cpu)?);
    /// let err = set.check().unwrap_err();
    /// assert!(matches!(&err, CpflowError::InvalidInput(m) if m.contains("the context has 8 rows but the data has 10")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_context(x: Tensor, context: Tensor) -> Self {
        Dataset {
            x,
            context: Some(context),
        }
    }

    /// Checks the data set's shapes: `x` is an `(N, d)` matrix and the context, if any, an
    /// `(N, d_c)` matrix (one row per sample). A violation is [`CpflowError::InvalidInput`]
    /// naming the shapes. The columns, values and the flow's conditionality are checked
    /// where the data set meets a flow.
    pub fn check(&self) -> Result<()> {
        if self.x.rank() != 2 {
            return Err(CpflowError::InvalidInput(format!(
                "the data must be a (samples, features) matrix, got shape {:?}",
                self.x.dims()
            )));
        }
        if let Some(c) = &self.context {
            if c.rank() != 2 {
                return Err(CpflowError::InvalidInput(format!(
                    "the context must be a (samples, context features) matrix with one row \
                     per sample, got shape {:?} (the data: {:?})",
                    c.dims(),
                    self.x.dims()
                )));
            }
            let (rows, n) = (c.dim(0)?, self.x.dim(0)?);
            if rows != n {
                return Err(CpflowError::InvalidInput(format!(
                    "the context has {rows} rows but the data has {n}"
                )));
            }
        }
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The mean negative log-likelihood of a data set with its uncertainty, as
/// [`nll_estimate`] returns it.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, FlowRng, NllEstimator, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5], [-0.7, 0.0], [0.2, 0.9]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let data = Dataset::new(x.clone());
/// let mut rng = FlowRng::seed_from_u64(0);
/// let est = cpflow::nll_estimate(&flow, &data, &NllEstimator::Exact, 2, &mut rng)?;
/// assert_eq!((est.n, est.non_finite), (5, 0));
/// // The mean and its standard error (sample std over √n) from the per-row NLLs.
/// let nll: Vec<f64> = flow.log_prob_exact(&x)?.to_vec1::<f64>()?.iter().map(|v| -v).collect();
/// let mean = nll.iter().sum::<f64>() / 5.0;
/// let var = nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
/// assert!((est.mean - mean).abs() < 1e-12);
/// assert!((est.std_err.expect("n > 1") - (var / 5.0).sqrt()).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct NllEstimate {
    /// Mean NLL per sample (nats).
    pub mean: f64,
    /// Standard error of [`NllEstimate::mean`] as an estimate of the population mean:
    /// the samples' standard deviation (`n − 1` denominator) over `√n`. With the SLQ
    /// estimator it includes the probes' noise, since each row's value is one random draw.
    /// `None` for a single sample. Finite for finite values whenever it is representable:
    /// NLLs as large as `1e200` (points far outside the data) do not overflow it.
    pub std_err: Option<f64>,
    /// Samples scored.
    pub n: usize,
    /// Samples whose log-density is NaN or ±∞ (then `mean` is not finite either): points
    /// the model gives no density, e.g. far outside the data it was trained on.
    pub non_finite: usize,
    /// The first of those samples (its row in the data set scored), `None` when all are
    /// finite.
    pub first_non_finite: Option<usize>,
}

/// Running mean and sum of squared deviations of per-row NLLs, merged chunk by chunk (Chan et
/// al.'s pairwise update), which stays accurate when the mean is large against the spread.
///
/// The moments are kept divided by `scale`, a power of two at or below the largest finite
/// magnitude seen (1 until one is above 1), so they cannot overflow: finite values up to
/// `f64::MAX` (e.g. NLLs of `1e200` from points far outside the data) give a finite standard
/// error whenever it is representable. Dividing by a power of two is exact, so for values
/// below 1 in magnitude nothing changes, and otherwise only where the unscaled sums would
/// have overflowed or underflowed.
struct RunningMoments {
    n: usize,
    /// The power of two the moments below are divided by.
    scale: f64,
    /// The mean over `scale`.
    scaled_mean: f64,
    /// The sum of squared deviations from the mean over `scale²`.
    scaled_m2: f64,
    non_finite: usize,
    first_non_finite: Option<usize>,
}

impl Default for RunningMoments {
    fn default() -> Self {
        RunningMoments {
            n: 0,
            scale: 1.0,
            scaled_mean: 0.0,
            scaled_m2: 0.0,
            non_finite: 0,
            first_non_finite: None,
        }
    }
}

/// The largest power of two at or below `magnitude` (finite, `≥ 1`): `2^⌊log₂ magnitude⌋`.
fn power_of_two_below(magnitude: f64) -> f64 {
    // The biased exponent of a normal f64: its value is 2^(exponent − 1023) times [1, 2).
    let exponent = ((magnitude.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(exponent)
}

impl RunningMoments {
    fn push_chunk(&mut self, values: &[f64]) {
        let nb = values.len();
        if nb == 0 {
            return;
        }
        self.non_finite += values.iter().filter(|v| !v.is_finite()).count();
        if self.first_non_finite.is_none() {
            self.first_non_finite = values
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| self.n + i);
        }
        let largest = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if largest > self.scale {
            let new_scale = power_of_two_below(largest).max(self.scale);
            let ratio = self.scale / new_scale;
            self.scaled_mean *= ratio;
            self.scaled_m2 *= ratio * ratio;
            self.scale = new_scale;
        }
        // |v / scale| < 2 for every finite value: no sum below can overflow.
        let scaled = values.iter().map(|v| v / self.scale);
        let mean_b = scaled.clone().sum::<f64>() / nb as f64;
        let m2_b: f64 = scaled.map(|v| (v - mean_b).powi(2)).sum();
        let n = self.n + nb;
        let delta = mean_b - self.scaled_mean;
        self.scaled_mean = if delta.is_finite() {
            self.scaled_mean + delta * nb as f64 / n as f64
        } else {
            // An infinite mean on one side (NLLs of +∞): the weighted mean keeps it +∞ where
            // `∞ − ∞` in the update above would make it NaN.
            self.scaled_mean * (self.n as f64 / n as f64) + mean_b * (nb as f64 / n as f64)
        };
        self.scaled_m2 += m2_b + delta * delta * (self.n as f64) * (nb as f64) / n as f64;
        self.n = n;
    }

    fn finish(&self) -> NllEstimate {
        let std_err = (self.n > 1)
            .then(|| self.scale * (self.scaled_m2 / (self.n - 1) as f64 / self.n as f64).sqrt());
        NllEstimate {
            mean: self.scaled_mean * self.scale,
            std_err,
            n: self.n,
            non_finite: self.non_finite,
            first_non_finite: self.first_non_finite,
        }
    }
}

/// Mean NLL of a data set (over chunks of `batch_size` rows), with the given estimator;
/// `rng` draws the SLQ probes. [`nll_estimate`] also gives its standard error.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, FlowRng, NllEstimator, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5], [-0.7, 0.0], [0.2, 0.9]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let data = Dataset::new(x.clone());
/// let mut rng = FlowRng::seed_from_u64(0);
/// let nll = cpflow::mean_nll(&flow, &data, &NllEstimator::Exact, 2, &mut rng)?;
/// let exact = flow.log_prob_exact(&x)?.mean_all()?.to_scalar::<f64>()?;
/// assert!((nll + exact).abs() < 1e-12); // chunks of 2 rows: same mean
/// // An empty data set is refused.
/// let empty = Dataset::new(x.narrow(0, 0, 0)?);
/// assert!(cpflow::mean_nll(&flow, &empty, &NllEstimator::Exact, 2, &mut rng).is_err());
/// # Ok(())
/// # }
/// ```
pub fn mean_nll<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
) -> Result<f64> {
    Ok(nll_estimate_with(flow, data, estimator, batch_size, rng, |_| Ok(()))?.mean)
}

/// [`mean_nll`] that calls `before_chunk(rows_done)` before each chunk of `batch_size` rows:
/// an error it returns stops the scoring and is returned (e.g. on an interrupt); the result
/// is the same as [`mean_nll`]'s.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, FlowRng, NllEstimator, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5], [-0.7, 0.0], [0.2, 0.9]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let data = Dataset::new(x.clone());
/// let mut rng = FlowRng::seed_from_u64(0);
/// let mut starts = Vec::new();
/// let nll = cpflow::mean_nll_with(&flow, &data, &NllEstimator::Exact, 2, &mut rng, |done| {
///     starts.push(done);
///     Ok(())
/// })?;
/// assert_eq!(starts, [0, 2, 4]); // 5 rows in chunks of 2
/// assert!((nll - cpflow::mean_nll(&flow, &data, &NllEstimator::Exact, 2, &mut rng)?).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn mean_nll_with<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
    before_chunk: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    Ok(nll_estimate_with(flow, data, estimator, batch_size, rng, before_chunk)?.mean)
}

/// Mean NLL of a data set and its standard error (over chunks of `batch_size` rows; the
/// result does not depend on the chunking beyond rounding, except through the SLQ probes,
/// which `rng` draws chunk by chunk).
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Dataset, Flow, FlowConfig, FlowRng, NllEstimator, PotentialConfig, nll_estimate};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let mut rng = FlowRng::seed_from_u64(0);
/// let est = nll_estimate(&flow, &Dataset::new(x), &NllEstimator::Exact, 2, &mut rng)?;
/// assert_eq!(est.n, 3);
/// assert!(est.mean.is_finite() && est.std_err.is_some_and(|s| s > 0.0));
/// # Ok(())
/// # }
/// ```
pub fn nll_estimate<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
) -> Result<NllEstimate> {
    nll_estimate_with(flow, data, estimator, batch_size, rng, |_| Ok(()))
}

/// [`nll_estimate`] that calls `before_chunk(rows_done)` before each chunk, like
/// [`mean_nll_with`].
///
/// ```
/// use cpflow::CpflowError;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, FlowRng, NllEstimator, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5], [-0.7, 0.0], [0.2, 0.9]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let data = Dataset::new(x.clone());
/// let mut rng = FlowRng::seed_from_u64(0);
/// // Stop before the second chunk, as an interrupt handler would.
/// let stop = |done: usize| {
///     if done > 0 {
///         return Err(CpflowError::EvaluationInterrupted { skipped: "the score".into(), saved: vec![] });
///     }
///     Ok(())
/// };
/// let res = cpflow::nll_estimate_with(&flow, &data, &NllEstimator::Exact, 2, &mut rng, stop);
/// assert!(matches!(res, Err(CpflowError::EvaluationInterrupted { .. })));
/// # Ok(())
/// # }
/// ```
pub fn nll_estimate_with<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
    before_chunk: impl FnMut(usize) -> Result<()>,
) -> Result<NllEstimate> {
    Ok(nll_estimate_and_slq_bias_with(flow, data, estimator, batch_size, rng, before_chunk)?.0)
}

/// [`nll_estimate_with`] and the SLQ estimates' hidden-bias counts totalled over the data set
/// ([`SlqLogProb::bias_counts`](crate::SlqLogProb::bias_counts): samples whose value is
/// biased beyond its standard error; zero with the exact estimator).
pub fn nll_estimate_and_slq_bias_with<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
    mut before_chunk: impl FnMut(usize) -> Result<()>,
) -> Result<(NllEstimate, SlqBiasCounts)> {
    data.check().map_err(|e| e.about("evaluation data set"))?;
    let n = data.len();
    if n == 0 {
        return Err(CpflowError::InvalidInput(
            "evaluation data set is empty".into(),
        ));
    }
    if batch_size == 0 {
        return Err(CpflowError::InvalidConfig(
            "evaluation batch size must be at least 1".into(),
        ));
    }
    let mut moments = RunningMoments::default();
    let mut bias = SlqBiasCounts::default();
    let mut start = 0;
    while start < n {
        before_chunk(start)?;
        let len = batch_size.min(n - start);
        let x = data.x.narrow(0, start, len)?;
        let c = match &data.context {
            Some(c) => Some(c.narrow(0, start, len)?),
            None => None,
        };
        let lp = match estimator {
            NllEstimator::Exact => flow.log_prob_exact_given_opt(&x, c.as_ref())?,
            NllEstimator::Slq(p) => {
                let slq = flow.log_prob_slq_given_opt(&x, c.as_ref(), p, rng)?;
                bias += slq.bias_counts();
                slq.log_prob
            }
        };
        let nll: Vec<f64> = lp
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|v| -v)
            .collect();
        moments.push_chunk(&nll);
        start += len;
    }
    Ok((moments.finish(), bias))
}

#[cfg(test)]
mod tests;
