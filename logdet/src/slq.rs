//! Stochastic Lanczos quadrature (SLQ) for `log det H_i` of a batch of SPD operators.

use krylov::{BatchOperator, BatchVectors, LanczosParams, check_operator_shape, lanczos};
use rand::Rng;

use crate::LogdetError;
use crate::hutchinson::StochasticEstimate;
use crate::probes::{ProbeDistribution, draw_probes};
use crate::quadrature::lanczos_quadrature;
use crate::stats::PerSystemMean;

/// Parameters of [`slq_logdet`].
///
/// ```
/// use krylov::DenseNalgebraOperator;
/// use logdet::{slq_logdet, LogdetError, ProbeDistribution, SlqParams};
/// use nalgebra::{DMatrix, dmatrix};
/// use rand::{SeedableRng, rngs::StdRng};
/// // H = diag(2, 3): for a diagonal H every Rademacher probe with m = d gives log 6 exactly
/// // (up to round-off), so the probes agree and the standard error vanishes.
/// let op = DenseNalgebraOperator::new(vec![dmatrix![2.0, 0.0; 0.0, 3.0]])?;
/// let like = DMatrix::<f64>::zeros(2, 1);
/// let mut rng = StdRng::seed_from_u64(0);
/// let params = SlqParams::default()
///     .with_probes(3)
///     .with_lanczos_steps(2)
///     .with_distribution(ProbeDistribution::Rademacher);
/// let est = slq_logdet(&op, &like, &mut rng, &params)?;
/// assert!((est.estimate[0] - 6f64.ln()).abs() < 1e-10);
/// assert!(est.std_err[0] < 1e-10 && est.probes == 3);
/// // Zero probes is an invalid parameter.
/// let err = slq_logdet(&op, &like, &mut rng, &params.with_probes(0));
/// assert!(matches!(err, Err(LogdetError::InvalidParameter(_))));
/// # Ok::<(), LogdetError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SlqParams {
    /// Probes per system (default 1, as in the reference).
    pub probes: usize,
    /// Lanczos steps `m` per probe (default 10 = the reference's `m1`; capped at `d`).
    pub lanczos_steps: usize,
    /// Full re-orthogonalisation in Lanczos (default `true`, as in the reference).
    pub reorthogonalize: bool,
    /// Probe distribution (default Rademacher).
    pub distribution: ProbeDistribution,
}

impl Default for SlqParams {
    fn default() -> Self {
        Self {
            probes: 1,
            lanczos_steps: 10,
            reorthogonalize: true,
            distribution: ProbeDistribution::Rademacher,
        }
    }
}

impl SlqParams {
    /// Sets the number of probes per system.
    pub fn with_probes(mut self, probes: usize) -> Self {
        self.probes = probes;
        self
    }
    /// Sets the number of Lanczos steps.
    pub fn with_lanczos_steps(mut self, steps: usize) -> Self {
        self.lanczos_steps = steps;
        self
    }
    /// Enables or disables re-orthogonalisation.
    pub fn with_reorthogonalize(mut self, reorthogonalize: bool) -> Self {
        self.reorthogonalize = reorthogonalize;
        self
    }
    /// Sets the probe distribution.
    pub fn with_distribution(mut self, distribution: ProbeDistribution) -> Self {
        self.distribution = distribution;
        self
    }

    fn validate(&self) -> Result<(), LogdetError> {
        if self.probes == 0 || self.lanczos_steps == 0 {
            return Err(LogdetError::InvalidParameter(
                "slq_logdet needs at least one probe and one Lanczos step".into(),
            ));
        }
        Ok(())
    }
}

/// Stochastic Lanczos quadrature: `log det H_i ≈ (1/P) Σ_p ‖v_p‖² Σ_j τ_{pj}² log λ_{pj}`,
/// where `(λ_{pj}, τ_{pj})` are the Gauss nodes and weights of the Lanczos tridiagonal built
/// from probe `v_p` (for Rademacher probes `‖v‖² = d`, the reference's `d · Σ_j τ_j² log λ_j`
/// on unit probes).
///
/// Each of the `P` probe rounds runs one batched [`lanczos`] over all systems. The estimator
/// is Hutchinson's estimator of `tr log H` with a Gauss-quadrature bias that vanishes as `m`
/// grows (exact for `m = d` in exact arithmetic); its variance per probe is
/// `2(‖log H‖_F² − Σ_k (log H)_kk²)` for Rademacher probes. `like` gives the probe shape, dtype
/// and device; its values are not used.
///
/// No absolute floor is applied to the Ritz values (the reference adds `1e-8`), so the
/// estimate follows the scale of `H`: with the same probes, the estimate for `s·H` is that for
/// `H` plus `d·log s` up to round-off (the Lanczos run of `s·H` is that of `H` scaled;
/// `H = 1e-12·I` gives `d·log 1e-12`).
///
/// Ritz values within round-off of zero (`|θ| ≤ c·u·max|θ|`, `c` =
/// [`RITZ_ROUNDOFF_FACTOR`](crate::RITZ_ROUNDOFF_FACTOR), `u` the unit roundoff of the probes'
/// element type) are raised to that level: an SPD operator whose condition number exceeds
/// `1/(100·u)` (4.5e13 in f64, 8.4e4 in f32) gets an estimate biased upwards, and a singular
/// one gets a finite value (its zero eigenvalues count as the round-off level) instead of
/// `−∞`. SLQ cannot tell these apart from rounding; to test definiteness use [`exact_logdet`](crate::exact_logdet), which
/// refuses a singular matrix. The result counts, per system, the Ritz values so raised
/// ([`StochasticEstimate::floored_ritz_values`]) and the probes whose Lanczos run stopped
/// early without an invariant subspace ([`StochasticEstimate::premature_breakdowns`]: krylov's
/// breakdown floor is the same `100·u` relative level): either count being positive means
/// the estimate is biased (by a floored value, upwards) by more than its `std_err` shows.
///
/// `std_err` is the sample standard deviation over the probes divided by `√P`: with few probes
/// (`P` = 2–4) it is itself noisy, and an interval of ±2 standard errors covers the truth
/// less often than 95% (Student's t with `P − 1` degrees of freedom); use 16 or more probes
/// for an error bar to rely on.
///
/// Errors: invalid parameters ([`LogdetError::InvalidParameter`]); a Ritz value below minus
/// the round-off level, i.e. an operator that is not positive definite on the Krylov space
/// ([`LogdetError::NonPositiveRitzValue`], naming the system); an operator that produced NaN
/// or ±Inf ([`krylov::LanczosResult::non_finite`]) or non-finite Lanczos coefficients
/// ([`LogdetError::QuadratureFailed`], naming the system). A `like` whose shape differs from
/// the operator's [`BatchOperator::batch_shape`] is [`LogdetError::Krylov`] wrapping
/// [`krylov::KrylovError::ShapeMismatch`] (context `slq_logdet: probe batch (like) vs
/// operator`), before any work. An empty batch (`B = 0`) gives an empty estimate.
///
/// ```
/// use krylov::DenseNalgebraOperator;
/// use logdet::{slq_logdet, SlqParams};
/// use nalgebra::DMatrix;
/// use rand::{SeedableRng, rngs::StdRng};
/// // H = diag(1, e, e²): log det = 3, and every Rademacher probe gives it exactly with m = d.
/// let h = DMatrix::from_diagonal(&nalgebra::dvector![1.0, 1f64.exp(), 2f64.exp()]);
/// let op = DenseNalgebraOperator::new(vec![h]).unwrap();
/// let est = slq_logdet(&op, &DMatrix::<f64>::zeros(3, 1), &mut StdRng::seed_from_u64(0),
///     &SlqParams::default().with_lanczos_steps(3)).unwrap();
/// assert!((est.estimate[0] - 3.0).abs() < 1e-10);
/// ```
pub fn slq_logdet<V, Op>(
    op: &Op,
    like: &V,
    rng: &mut impl Rng,
    params: &SlqParams,
) -> Result<StochasticEstimate, LogdetError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    params.validate()?;
    like.validate()?;
    // Named for this function and its argument (lanczos would name its start vectors).
    check_operator_shape("slq_logdet: probe batch (like) vs operator", op, like)?;
    let (b, d) = (like.n_systems(), like.system_dim());
    let lp = LanczosParams::default()
        .with_steps(params.lanczos_steps)
        .with_reorthogonalize(params.reorthogonalize);
    let requested_steps = params.lanczos_steps.min(d);
    let mut acc = PerSystemMean::new(b);
    let mut applications = vec![0usize; b];
    let mut premature_breakdowns = vec![0usize; b];
    let mut floored_ritz_values = vec![0usize; b];
    for _ in 0..params.probes {
        let v = V::from_host_like(like, &draw_probes(rng, params.distribution, b, d)?)?;
        let res = lanczos(op, &v, &lp)?;
        for (a, r) in applications.iter_mut().zip(&res.applications) {
            *a += r;
        }
        let quad = lanczos_quadrature(&res, requested_steps)?;
        for (i, q) in quad.iter().enumerate() {
            premature_breakdowns[i] += usize::from(q.premature_breakdown);
            floored_ritz_values[i] += q.floored_ritz_values;
        }
        let values: Vec<f64> = quad.iter().map(|q| q.value).collect();
        acc.push(&values);
    }
    let (estimate, std_err) = acc.finish();
    Ok(StochasticEstimate {
        estimate,
        std_err,
        probes: params.probes,
        applications,
        premature_breakdowns,
        floored_ritz_values,
    })
}
