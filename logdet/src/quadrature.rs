//! Gauss quadrature from Lanczos coefficients: `vᵀ f(H) v ≈ ‖v‖² Σ_j τ_j² f(λ_j)`.

use krylov::LanczosResult;

use crate::LogdetError;

/// The factor `c` of the round-off level `c·u·max_j |θ_j|` within which a Ritz value `θ` is
/// indistinguishable from zero (`u` the unit roundoff of the Lanczos vectors): `100`. Ritz
/// values in `[−c·u·max|θ|, c·u·max|θ|]` are raised to that level; a more negative one is an
/// error (the operator is not positive definite).
///
/// Why 100: it is the round-off level at which [`krylov::lanczos`] itself declares an
/// invariant subspace (`β ≤ 100·u·‖H‖` is taken for an exact zero). With full
/// re-orthogonalisation the computed `T` is, up to a perturbation of norm `O(k·u·‖H‖)`
/// (`k ≤ m` steps, plus the error of the operator's own products), an orthogonal compression
/// of `H`, so its eigenvalues are at least `λ_min(H) − O(k·u·‖H‖)`, and `max |θ|` estimates
/// `‖H‖` from below. A Ritz value at or below `100·u·max|θ|` (2.2e-14 of the largest in
/// f64, 1.2e-5 in f32) is therefore indistinguishable from an eigenvalue `≤ 0`: its logarithm
/// would be round-off. Measured (rotated singular matrices, d = 4…120, m = d, 10 start
/// vectors each): the Ritz value of the zero eigenvalue is at most 7e-16 of the largest in
/// f64 (3u) and 4e-8 in f32 (0.35u), 30× and 300× below the level. Above it, valid
/// small eigenvalues are kept at any scale (`H = 1e-12·I` gives `d·log 1e-12`); for a matrix
/// with a condition number beyond `1/(100·u)` (4.5e13 in f64, 8.4e4 in f32 vectors) the
/// smallest eigenvalues count as the round-off level (an estimate biased upwards, as any
/// log-det at that conditioning in that precision); a singular matrix is refused only when
/// round-off makes a Ritz value clearly negative.
pub const RITZ_ROUNDOFF_FACTOR: f64 = 100.0;

/// The Gauss-quadrature nodes and weights of the tridiagonal `T = tridiag(β, α, β)`:
/// eigenvalues `λ_j` (Ritz values) and `τ_j² = (first component of the j-th unit
/// eigenvector)²`, which sum to 1. The small eigenproblem is solved on the host by the
/// implicit QL algorithm on the first eigenvector components only (Golub–Welsch), with faer's
/// tridiagonal eigensolver as the fallback should it not converge.
/// `betas` must hold at least `k − 1` values (`k = alphas.len()`; extra ones are ignored).
/// Returns `None` when there are fewer, or when the coefficients (or the computed nodes and
/// weights) are not finite.
///
/// The computation is [`krylov::gauss_quadrature_nodes`] (also behind
/// [`krylov::LanczosResult::ritz_values`]), so the Ritz values a caller reads from a Lanczos
/// result are the nodes of this crate's quadrature, bit for bit.
///
/// ```
/// use logdet::gauss_quadrature_nodes;
/// // T = [[2, 1], [1, 2]]: eigenvalues 1 and 3, eigenvectors (1, ∓1)/√2, weights 1/2.
/// let (mut nodes, weights) = gauss_quadrature_nodes(&[2.0, 2.0], &[1.0]).unwrap();
/// nodes.sort_by(f64::total_cmp);
/// assert!((nodes[0] - 1.0).abs() < 1e-14 && (nodes[1] - 3.0).abs() < 1e-14);
/// assert!(weights.iter().all(|w| (w - 0.5).abs() < 1e-14));
/// // Two diagonal values need one off-diagonal value.
/// assert!(gauss_quadrature_nodes(&[2.0, 2.0], &[]).is_none());
/// assert!(gauss_quadrature_nodes(&[f64::NAN], &[]).is_none());
/// ```
pub fn gauss_quadrature_nodes(alphas: &[f64], betas: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    krylov::gauss_quadrature_nodes(alphas, betas)
}

/// The round-off level `RITZ_ROUNDOFF_FACTOR·u·largest` of Ritz values whose largest
/// magnitude is `largest`, for Lanczos vectors of unit roundoff `u` (at least f64's: the
/// tridiagonal eigenproblem is solved in f64).
fn ritz_threshold(largest: f64, unit_roundoff: f64) -> f64 {
    RITZ_ROUNDOFF_FACTOR * unit_roundoff.max(f64::EPSILON) * largest
}

/// The Gauss sum of one system and what it had to assume (see [`gauss_log_sum`]).
#[derive(Clone, Copy, Debug)]
struct GaussLogSum {
    /// `Σ_j τ_j² log max(θ_j, level)`.
    sum: f64,
    /// Ritz values with a non-zero weight below the round-off level, raised to it.
    floored: usize,
    /// The smallest Ritz value (before the floor).
    smallest: f64,
}

/// The Gauss sum `Σ_j τ_j² log θ_j` of one system, after checking the coefficient counts and
/// that every Ritz value is above the round-off level of [`RITZ_ROUNDOFF_FACTOR`]. Callers
/// handle an empty tridiagonal first ([`check_empty_tridiagonal`]); here it would be a
/// `NonPositiveRitzValue` (threshold 0).
fn gauss_log_sum(
    system: usize,
    alphas: &[f64],
    betas: &[f64],
    unit_roundoff: f64,
) -> Result<GaussLogSum, LogdetError> {
    let k = alphas.len();
    if betas.len() + 1 < k {
        return Err(LogdetError::CoefficientCountMismatch {
            system,
            alphas: k,
            betas: betas.len(),
        });
    }
    let (nodes, weights) =
        gauss_quadrature_nodes(alphas, betas).ok_or(LogdetError::QuadratureFailed { system })?;
    // `nodes` are finite here.
    let largest = nodes.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    let threshold = ritz_threshold(largest, unit_roundoff);
    let smallest = nodes.iter().copied().fold(f64::INFINITY, f64::min);
    // A Ritz value below minus the round-off level cannot come from a positive definite
    // operator; an all-zero `T` (threshold 0) is refused too. Ritz values within round-off of
    // zero are raised to the round-off level: a strongly convex CP-Flow Hessian in f32 whose
    // condition number nears 1/(100·u) ≈ 1.7e5 must not stop a run (its Ritz values are
    // ≥ λ_min > 0 in exact arithmetic), and the level is relative, so small-scale matrices
    // keep their eigenvalues.
    if smallest < -threshold || threshold == 0.0 {
        return Err(LogdetError::NonPositiveRitzValue {
            system,
            ritz_value: smallest,
            threshold,
            largest,
        });
    }
    // Only a node the probe sees (a non-zero weight) moves the sum when it is raised.
    let floored = nodes
        .iter()
        .zip(&weights)
        .filter(|(l, w)| **l < threshold && **w > 0.0)
        .count();
    let sum = nodes
        .iter()
        .zip(&weights)
        .map(|(l, w)| w * l.max(threshold).ln())
        .sum::<f64>();
    Ok(GaussLogSum {
        sum,
        floored,
        smallest,
    })
}

/// `Some(0)` for an empty tridiagonal (`k = 0`) of a zero start vector (`v = 0`, so
/// `vᵀ f(H) v = 0` exactly), [`LogdetError::EmptyTridiagonal`] for an empty one of a non-zero
/// start vector (no Lanczos step: nothing was computed, and 0 would be a wrong value), `None`
/// when there are coefficients to sum.
/// `norm` is `‖v‖` (not its square, which underflows to 0 for a tiny non-zero `v`).
fn check_empty_tridiagonal(system: usize, k: usize, norm: f64) -> Result<Option<f64>, LogdetError> {
    match (k, norm == 0.0) {
        (0, true) => Ok(Some(0.0)),
        (0, false) => Err(LogdetError::EmptyTridiagonal { system, norm }),
        _ => Ok(None),
    }
}

/// The SLQ quadrature for one system: `norm_sq · Σ_j τ_j² log θ_j`, an estimate of
/// `vᵀ log(H) v` for the probe `v` (with `‖v‖² = norm_sq`) whose Lanczos coefficients are
/// `alphas` (length `k`) and `betas` (length `≥ k − 1`; extra values are ignored). An empty
/// tridiagonal (`k = 0`) is the run of a zero start vector: with `norm_sq = 0` it gives 0, with
/// `norm_sq > 0` it is [`LogdetError::EmptyTridiagonal`] (no step was taken, so nothing
/// estimates `vᵀ log(H) v`).
///
/// With a unit Rademacher probe scaled by `d` (`norm_sq = d`, the reference's formula
/// `d · Σ_j τ_j² log θ_j`) this is one Hutchinson sample of `tr log H = log det H`.
/// The Ritz values `θ_j` of an SPD operator are positive; the only floor is relative (the
/// reference's `log(max(θ, 0) + 1e-8)` biased small-scale matrices: `1e-12·I` gave `log 1e-8`
/// per dimension). Ritz values within the round-off level `RITZ_ROUNDOFF_FACTOR · u ·
/// max_j |θ_j|` of zero ([`RITZ_ROUNDOFF_FACTOR`], `u` the f64 unit roundoff) are raised to
/// it; one below minus that level means the operator is not positive definite on the Krylov
/// space, and is an error, as [`exact_logdet`](crate::exact_logdet) refuses such a matrix.
///
/// Errors (`system` is 0 in all of them):
/// [`LogdetError::InvalidParameter`] unless `norm_sq` is finite and `≥ 0`;
/// [`LogdetError::CoefficientCountMismatch`] when `betas` has fewer than `k − 1` values;
/// [`LogdetError::EmptyTridiagonal`] for `k = 0` with `norm_sq > 0`;
/// [`LogdetError::QuadratureFailed`] for non-finite coefficients;
/// [`LogdetError::NonPositiveRitzValue`] for a Ritz value below minus the round-off level (or
/// an all-zero `T`);
/// [`LogdetError::QuadratureOverflow`] when the product exceeds the f64 range.
/// The coefficients are taken to be f64 ones; for Lanczos run in lower precision use
/// [`slq_logdet_from_lanczos`], which judges round-off at the precision of the Lanczos vectors.
///
/// ```
/// // T = diag(2, 8) with e_1 weight on the first node only: log 2.
/// let v = logdet::slq_quadrature_logdet(&[2.0, 8.0], &[0.0], 1.0).unwrap();
/// assert!((v - 2f64.ln()).abs() < 1e-14);
/// // Small scales are kept: T = [1e-12] gives log 1e-12.
/// let v = logdet::slq_quadrature_logdet(&[1e-12], &[], 1.0).unwrap();
/// assert!((v - 1e-12f64.ln()).abs() < 1e-12);
/// // A negative Ritz value: not positive definite.
/// assert!(logdet::slq_quadrature_logdet(&[-2.0], &[], 1.0).is_err());
/// assert!(logdet::slq_quadrature_logdet(&[2.0, -0.5], &[0.0], 1.0).is_err());
/// // One at round-off level of zero counts as that level (100·u·2 here), with its weight 0.
/// assert!(logdet::slq_quadrature_logdet(&[2.0, 0.0], &[0.0], 1.0).is_ok());
/// // An empty tridiagonal of a zero start vector gives 0; of a non-zero one, an error.
/// assert_eq!(logdet::slq_quadrature_logdet(&[], &[], 0.0).unwrap(), 0.0);
/// assert!(matches!(
///     logdet::slq_quadrature_logdet(&[], &[], 1.0),
///     Err(logdet::LogdetError::EmptyTridiagonal { system: 0, .. })
/// ));
/// ```
pub fn slq_quadrature_logdet(
    alphas: &[f64],
    betas: &[f64],
    norm_sq: f64,
) -> Result<f64, LogdetError> {
    if !(norm_sq >= 0.0 && norm_sq.is_finite()) {
        return Err(LogdetError::InvalidParameter(format!(
            "norm_sq (‖v‖²) must be finite and ≥ 0, got {norm_sq}"
        )));
    }
    if let Some(zero) = check_empty_tridiagonal(0, alphas.len(), norm_sq.sqrt())? {
        return Ok(zero);
    }
    let gauss_sum = gauss_log_sum(0, alphas, betas, f64::EPSILON)?.sum;
    let value = norm_sq * gauss_sum;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(LogdetError::QuadratureOverflow {
            system: 0,
            norm_sq,
            gauss_sum,
        })
    }
}

/// Applies [`slq_quadrature_logdet`] to every system of a Lanczos result, with
/// `norm_sq = ‖v0_i‖²` from [`LanczosResult::initial_norms`] and round-off judged at
/// [`LanczosResult::unit_roundoff`] (the precision of the Lanczos vectors). A system with an
/// empty tridiagonal and a zero start vector contributes 0; an empty tridiagonal with a
/// non-zero start vector (`initial_norms[i] > 0`: no step was taken) is
/// [`LogdetError::EmptyTridiagonal`]. Errors name the system; besides those
/// of [`slq_quadrature_logdet`], a system flagged in [`LanczosResult::non_finite`] (the
/// operator produced NaN or ±Inf; its finite coefficients are a truncated run) is
/// [`LogdetError::QuadratureFailed`], and a start vector whose `‖v0_i‖² · Σ_j τ_j² log θ_j` is beyond
/// the f64 range (e.g. entries `1e160`: `‖v0‖² = 3e320`, with a non-zero Gauss sum) is
/// [`LogdetError::QuadratureOverflow`], never an infinite or NaN value. (SLQ's own probes are
/// Rademacher or Gaussian, of norm ≈ `√d`, far from that range.)
///
/// ```
/// use krylov::{lanczos, DenseNalgebraOperator, LanczosParams};
/// use nalgebra::DMatrix;
/// // H = diag(1, e, e²), v0 = (1, 1, 1): v0ᵀ log(H) v0 = 0 + 1 + 2.
/// let h = DMatrix::from_diagonal(&nalgebra::dvector![1.0, 1f64.exp(), 2f64.exp()]);
/// let op = DenseNalgebraOperator::new(vec![h]).unwrap();
/// let res = lanczos(&op, &DMatrix::from_element(3, 1, 1.0), &LanczosParams::default()).unwrap();
/// let q = logdet::slq_logdet_from_lanczos(&res).unwrap();
/// assert!((q[0] - 3.0).abs() < 1e-12);
/// ```
pub fn slq_logdet_from_lanczos<V>(result: &LanczosResult<V>) -> Result<Vec<f64>, LogdetError> {
    Ok(lanczos_quadrature(result, usize::MAX)?
        .into_iter()
        .map(|q| q.value)
        .collect())
}

/// One system's quadrature of one Lanczos run, with what it had to assume.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SystemQuadrature {
    /// `‖v0‖² Σ_j τ_j² log θ_j` (as [`slq_logdet_from_lanczos`] returns it).
    pub value: f64,
    /// Ritz values (of non-zero weight) raised to the round-off level.
    pub floored_ritz_values: usize,
    /// Whether the run stopped by breakdown before `requested_steps` with a dropped coupling
    /// `β` above [`PREMATURE_BREAKDOWN_RATIO`] of the smallest Ritz value.
    pub premature_breakdown: bool,
}

/// The ratio `β_{k+1}/θ_min` above which a breakdown before the requested steps counts as
/// premature: 1e-2.
///
/// Why: stopping drops a coupling `β` to the rest of `H` (`T` is exact for an operator within
/// `β` of `H`), so the smallest quadrature node `θ_min` may be off by about `β`, its log by
/// `β/θ_min`: above 1e-2 the stop can move the estimate by more than 0.01 per unit of weight
/// on that node. A stop caused by eigenvalues below krylov's breakdown floor `100·u·‖H‖` has
/// `β` of their size: f32 `diag(1 … 1e6)`, `d = 30`: `β = 6.0`, `θ_min = 1.56` (ratio 3.9).
/// At a true invariant subspace `β` is the rounding of `H q` or below krylov's threshold:
/// measured on 200 block-diagonal operators with a repeated block (the Krylov space is
/// invariant after at most one block's size; condition numbers 1 … 1e4, `m = n`), f64 runs
/// stop with ratios up to 5e-7 (krylov's `breakdown_tol` 1e-10 times `κ`), f32 runs up to
/// 0.09: 5 of 171 f32 stops (all at `κ = 1e4`, within a decade of f32's `1/(100·u)`) count.
const PREMATURE_BREAKDOWN_RATIO: f64 = 1e-2;

/// [`slq_logdet_from_lanczos`] with the counts [`crate::StochasticEstimate`] reports: Ritz
/// values raised to the floor, and whether a breakdown came before `requested_steps`
/// (`min(m, d)`; `usize::MAX` when unknown, then no breakdown counts) without resolving the
/// small end of the spectrum ([`PREMATURE_BREAKDOWN_RATIO`]).
pub(crate) fn lanczos_quadrature<V>(
    result: &LanczosResult<V>,
    requested_steps: usize,
) -> Result<Vec<SystemQuadrature>, LogdetError> {
    (0..result.sizes.len())
        .map(|i| {
            if result.non_finite[i] {
                // The operator produced NaN or ±Inf: the stored coefficients are a truncated
                // run (possibly empty), not a quadrature of anything.
                return Err(LogdetError::QuadratureFailed { system: i });
            }
            let k = result.sizes[i];
            let norm = result.initial_norms[i];
            let exact_zero = |value| SystemQuadrature {
                value,
                floored_ritz_values: 0,
                premature_breakdown: false,
            };
            if let Some(zero) = check_empty_tridiagonal(i, k, norm)? {
                return Ok(exact_zero(zero));
            }
            let gauss = gauss_log_sum(
                i,
                &result.alphas[i][..k],
                &result.betas[i],
                result.unit_roundoff,
            )?;
            let stopped_early = result.breakdown[i] && k < requested_steps;
            let dropped = result.breakdown_betas.get(i).copied().unwrap_or(0.0);
            let diagnostics = |value| SystemQuadrature {
                value,
                floored_ritz_values: gauss.floored,
                premature_breakdown: stopped_early
                    && dropped > PREMATURE_BREAKDOWN_RATIO * gauss.smallest,
            };
            if gauss.sum == 0.0 {
                // `vᵀ log(H) v = 0` whatever `‖v‖` (also when the norm itself overflowed).
                return Ok(diagnostics(0.0));
            }
            // `‖v‖·(‖v‖·s)` instead of `‖v‖²·s`: no spurious overflow of `‖v‖²` when the
            // product itself is representable.
            let value = norm * (norm * gauss.sum);
            if value.is_finite() {
                Ok(diagnostics(value))
            } else {
                Err(LogdetError::QuadratureOverflow {
                    system: i,
                    norm_sq: norm * norm,
                    gauss_sum: gauss.sum,
                })
            }
        })
        .collect()
}
