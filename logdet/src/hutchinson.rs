//! Hutchinson's stochastic trace estimator for a batch of operators.

use krylov::{BatchOperator, BatchVectors, check_operator_shape};
use rand::Rng;

use crate::LogdetError;
use crate::probes::{ProbeDistribution, draw_probes};
use crate::stats::PerSystemMean;

/// Parameters of [`hutchinson_trace`].
///
/// ```
/// use krylov::DenseNalgebraOperator;
/// use logdet::{hutchinson_trace, HutchinsonParams, LogdetError, ProbeDistribution};
/// use nalgebra::{DMatrix, dmatrix};
/// use rand::{SeedableRng, rngs::StdRng};
/// // tr = 5. Gaussian probes: vᵀHv = 2v₀² + 3v₁² + 2v₀v₁ has variance 2‖H‖_F² = 30, so the
/// // mean of 2000 probes has standard error ≈ 0.12; 0.75 is over 6 of them.
/// let op = DenseNalgebraOperator::new(vec![dmatrix![2.0, 1.0; 1.0, 3.0]])?;
/// let like = DMatrix::<f64>::zeros(2, 1);
/// let mut rng = StdRng::seed_from_u64(1);
/// let params = HutchinsonParams::default()
///     .with_probes(2000)
///     .with_distribution(ProbeDistribution::Gaussian);
/// let est = hutchinson_trace(&op, &like, &mut rng, &params)?;
/// assert!((est.estimate[0] - 5.0).abs() < 0.75);
/// let err = hutchinson_trace(&op, &like, &mut rng, &params.with_probes(0));
/// assert!(matches!(err, Err(LogdetError::InvalidParameter(_))));
/// # Ok::<(), LogdetError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HutchinsonParams {
    /// Probes per system (default 1).
    pub probes: usize,
    /// Probe distribution (default Rademacher).
    pub distribution: ProbeDistribution,
}

impl Default for HutchinsonParams {
    fn default() -> Self {
        Self {
            probes: 1,
            distribution: ProbeDistribution::Rademacher,
        }
    }
}

impl HutchinsonParams {
    /// Sets the number of probes per system.
    pub fn with_probes(mut self, probes: usize) -> Self {
        self.probes = probes;
        self
    }
    /// Sets the probe distribution.
    pub fn with_distribution(mut self, distribution: ProbeDistribution) -> Self {
        self.distribution = distribution;
        self
    }
}

/// A per-system stochastic estimate.
///
/// ```
/// use krylov::DenseNalgebraOperator;
/// use logdet::{hutchinson_trace, HutchinsonParams};
/// use nalgebra::{DMatrix, dmatrix};
/// use rand::{SeedableRng, rngs::StdRng};
/// // Two systems: diagonal (every Rademacher probe is exact) and with off-diagonal terms.
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![1.0, 0.0; 0.0, 2.0],
///     dmatrix![1.0, 5.0; 5.0, 2.0],
/// ])?;
/// let like = DMatrix::<f64>::zeros(2, 2);
/// let mut rng = StdRng::seed_from_u64(0);
/// let one = hutchinson_trace(&op, &like, &mut rng, &HutchinsonParams::default())?;
/// assert!(one.std_err[0].is_nan()); // no standard error from a single probe
/// let est = hutchinson_trace(&op, &like, &mut rng, &HutchinsonParams::default().with_probes(64))?;
/// assert_eq!((est.probes, est.applications.clone()), (64, vec![64, 64]));
/// assert_eq!((est.estimate[0], est.std_err[0]), (3.0, 0.0));
/// // Rademacher samples of system 1 are 3 ± 10: a positive standard error.
/// assert!(est.std_err[1] > 0.0);
/// # Ok::<(), logdet::LogdetError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StochasticEstimate {
    /// Probe average per system.
    pub estimate: Vec<f64>,
    /// Standard error of the average per system (sample standard deviation / √probes; `NaN`
    /// with a single probe).
    pub std_err: Vec<f64>,
    /// Probes used per system.
    pub probes: usize,
    /// Operator applications per system.
    pub applications: Vec<usize>,
    /// Per system, the number of probes whose Lanczos run ([`crate::slq_logdet`]) stopped by
    /// breakdown before the requested `min(m, d)` steps **without** an invariant subspace: the
    /// coupling it dropped, [`krylov::LanczosResult::breakdown_betas`], was above 1% of the
    /// smallest Ritz value (which may then be off by that much). Such a stop comes from
    /// eigenvalues below krylov's breakdown floor `100·u·‖H‖` (`u` the unit roundoff of the
    /// probes' element type; a condition number near `1/(100·u)`: 8.4e4 in f32, 4.5e13 in
    /// f64): the quadrature does not see them, so the probe's value is biased, and as every
    /// probe misses them alike, `std_err` does not show it (f32 `diag(1 … 1e6)`, `d = 30`,
    /// `m = d`: 214.996 for a true 207.233, standard error 0; those eigenvalues are below the
    /// Ritz floor too, so [`Self::floored_ritz_values`] counts as well). A breakdown at an
    /// invariant subspace (`H = c·I`, few distinct eigenvalues, dropped `β` at round-off) is
    /// exact and not counted, but in f32 within a decade of that condition number the two
    /// look alike and such a stop may count. Always 0 for [`crate::hutchinson_trace`].
    pub premature_breakdowns: Vec<usize>,
    /// Per system, the number of Ritz values (of non-zero quadrature weight), summed over the
    /// probes, that [`crate::slq_logdet`] raised to the round-off level
    /// `RITZ_ROUNDOFF_FACTOR·u·max|θ|` ([`crate::RITZ_ROUNDOFF_FACTOR`]): each one's `log θ` was
    /// replaced by the larger log of that level, so a positive count means the estimate is
    /// biased **upwards** (by up to `‖v‖²·τ²·log(level/λ)` per value), and for a singular
    /// operator is a finite number instead of `−∞` (`diag(1, 0)`: −31.4, standard error 0).
    /// Always 0 for [`crate::hutchinson_trace`].
    pub floored_ritz_values: Vec<usize>,
}

/// Hutchinson's estimator `tr H_i ≈ (1/P) Σ_p v_pᵀ H_i v_p` with `E[v vᵀ] = I`, for every
/// system of a batch operator. `like` gives the shape `(B, d)` (and dtype / device) of the
/// probe batches; its values are not used. Probes are drawn with `rng` on the host.
///
/// A non-finite probe product `vᵀ H_i v` (the operator produced NaN or ±Inf) is an error,
/// [`LogdetError::NonFiniteSample`] naming the system. A `like` whose shape differs from the
/// operator's [`BatchOperator::batch_shape`] is [`LogdetError::Krylov`] wrapping
/// [`krylov::KrylovError::ShapeMismatch`], before any work. An empty batch (`B = 0`) gives an empty
/// estimate without operator work, for an empty operator of any `d`.
///
/// ```
/// use krylov::DenseNalgebraOperator;
/// use logdet::{hutchinson_trace, HutchinsonParams};
/// use nalgebra::DMatrix;
/// use rand::{SeedableRng, rngs::StdRng};
/// // For a diagonal matrix every Rademacher probe gives the exact trace.
/// let h = DMatrix::from_diagonal(&nalgebra::dvector![1.0, 2.0, 3.0]);
/// let op = DenseNalgebraOperator::new(vec![h]).unwrap();
/// let like = DMatrix::<f64>::zeros(3, 1);
/// let est = hutchinson_trace(&op, &like, &mut StdRng::seed_from_u64(0),
///     &HutchinsonParams::default().with_probes(4)).unwrap();
/// assert!((est.estimate[0] - 6.0).abs() < 1e-12);
/// // An empty batch: an empty estimate.
/// let empty = DenseNalgebraOperator::<f64>::new(vec![]).unwrap();
/// let est = hutchinson_trace(&empty, &DMatrix::<f64>::zeros(3, 0), &mut StdRng::seed_from_u64(0),
///     &HutchinsonParams::default()).unwrap();
/// assert!(est.estimate.is_empty() && est.applications.is_empty());
/// ```
pub fn hutchinson_trace<V, Op>(
    op: &Op,
    like: &V,
    rng: &mut impl Rng,
    params: &HutchinsonParams,
) -> Result<StochasticEstimate, LogdetError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    if params.probes == 0 {
        return Err(LogdetError::InvalidParameter(
            "hutchinson_trace needs at least one probe".into(),
        ));
    }
    like.validate()?;
    let (b, d) = (like.n_systems(), like.system_dim());
    check_operator_shape("hutchinson_trace: probe batch (like) vs operator", op, like)?;
    // An empty batch: no probe, no operator work, an empty estimate (as `slq_logdet` and
    // `krylov::cg` give), for an operator of any `d` that is itself empty or does not know
    // its shape.
    if b == 0 {
        return Ok(StochasticEstimate {
            estimate: Vec::new(),
            std_err: Vec::new(),
            probes: params.probes,
            applications: Vec::new(),
            premature_breakdowns: Vec::new(),
            floored_ritz_values: Vec::new(),
        });
    }
    let all = vec![true; b];
    let mut acc = PerSystemMean::new(b);
    for _ in 0..params.probes {
        let v = V::from_host_like(like, &draw_probes(rng, params.distribution, b, d)?)?;
        let hv = op.apply(&v, &all)?;
        let samples = v.dots(&hv)?;
        // A non-finite product would silently poison the mean (as SLQ reports a failed
        // quadrature, this reports the system).
        if let Some((system, value)) = samples
            .iter()
            .enumerate()
            .find(|(_, s)| !s.is_finite())
            .map(|(i, s)| (i, *s))
        {
            return Err(LogdetError::NonFiniteSample { system, value });
        }
        acc.push(&samples);
    }
    let (estimate, std_err) = acc.finish();
    Ok(StochasticEstimate {
        estimate,
        std_err,
        probes: params.probes,
        applications: vec![params.probes; b],
        premature_breakdowns: vec![0; b],
        floored_ritz_values: vec![0; b],
    })
}
