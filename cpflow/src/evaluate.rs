//! Data sets and NLL evaluation over chunks.

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::config::NllEstimator;
use crate::error::{CpflowError, Result};
use crate::flow::Flow;

/// A data set (rows are samples) with an optional context (conditional flows).
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

    /// Conditional data.
    pub fn with_context(x: Tensor, context: Tensor) -> Self {
        Dataset {
            x,
            context: Some(context),
        }
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

/// Mean NLL of a data set (sample-weighted over chunks of `batch_size`), with the given
/// estimator; `rng` draws the SLQ probes.
pub fn mean_nll<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
) -> Result<f64> {
    mean_nll_with(flow, data, estimator, batch_size, rng, |_| Ok(()))
}

/// [`mean_nll`] that calls `before_chunk(rows_done)` before each chunk of `batch_size` rows:
/// an error it returns stops the scoring and is returned (e.g. on an interrupt); the result
/// is the same as [`mean_nll`]'s.
pub fn mean_nll_with<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
    mut before_chunk: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
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
    let mut total = 0.0;
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
            NllEstimator::Slq(p) => flow.log_prob_slq_given_opt(&x, c.as_ref(), p, rng)?,
        };
        total -= lp.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        start += len;
    }
    Ok(total / n as f64)
}
