//! Gauss quadrature from Lanczos coefficients: `vᵀ f(H) v ≈ ‖v‖² Σ_j τ_j² f(λ_j)`.

use krylov::LanczosResult;
use nalgebra::{DMatrix, SymmetricEigen};

use crate::LogdetError;

/// Default floor applied to Ritz values before the logarithm (see [`slq_quadrature_logdet`]).
pub const DEFAULT_RITZ_FLOOR: f64 = 1e-8;

/// The Gauss-quadrature nodes and weights of the tridiagonal `T = tridiag(β, α, β)`:
/// eigenvalues `λ_j` (Ritz values) and `τ_j² = (first component of the j-th unit
/// eigenvector)²`, which sum to 1. The small eigenproblem is solved on the host (nalgebra).
/// Returns `None` when the coefficients are not finite.
pub fn gauss_quadrature_nodes(alphas: &[f64], betas: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    let k = alphas.len();
    if k == 0 {
        return Some((Vec::new(), Vec::new()));
    }
    if betas.len() + 1 < k || alphas.iter().chain(&betas[..k - 1]).any(|v| !v.is_finite()) {
        return None;
    }
    let mut t = DMatrix::<f64>::zeros(k, k);
    for i in 0..k {
        t[(i, i)] = alphas[i];
        if i + 1 < k {
            t[(i, i + 1)] = betas[i];
            t[(i + 1, i)] = betas[i];
        }
    }
    let eig = SymmetricEigen::try_new(t, f64::EPSILON, 0)?;
    let weights: Vec<f64> = (0..k).map(|j| eig.eigenvectors[(0, j)].powi(2)).collect();
    let nodes: Vec<f64> = eig.eigenvalues.iter().copied().collect();
    if nodes.iter().chain(&weights).any(|v| !v.is_finite()) {
        return None;
    }
    Some((nodes, weights))
}

/// Checks a Ritz-value floor: finite and `> 0` (a floor `≤ 0` would let `log` return
/// `−∞` or NaN).
pub(crate) fn validate_ritz_floor(ritz_floor: f64) -> Result<(), LogdetError> {
    if ritz_floor > 0.0 && ritz_floor.is_finite() {
        Ok(())
    } else {
        Err(LogdetError::InvalidParameter(format!(
            "ritz_floor must be finite and > 0, got {ritz_floor}"
        )))
    }
}

/// Relative threshold below which a negative Ritz value is "clearly negative" for Lanczos
/// vectors of unit roundoff `u`: `√u` (1.5e-8 in f64, 3.5e-4 in f32).
///
/// Why: the Ritz values of an SPD `H` lie in `[λ_min, λ_max] ⊂ (0, ‖H‖]` in exact
/// arithmetic, and in floating point (with or without re-orthogonalisation, Paige 1980) they
/// stay in that interval up to `O(u·‖H‖)` with a modest factor. The largest `|θ|` estimates
/// `‖H‖`, so round-off can only produce negatives of order `u·max|θ|`, far above `−√u·max|θ|`
/// (a margin of `1/√u` ≈ 7e7 in f64, 3e3 in f32): those are floored. A Ritz value below
/// `−√u·max|θ|` can only come from a negative eigenvalue of `H`.
fn negative_ritz_tolerance(unit_roundoff: f64) -> f64 {
    unit_roundoff.max(f64::EPSILON).sqrt()
}

/// The quadrature of one system, with round-off judged at `unit_roundoff` (`ritz_floor`
/// validated by the caller).
fn quadrature_logdet(
    system: usize,
    alphas: &[f64],
    betas: &[f64],
    norm_sq: f64,
    ritz_floor: f64,
    unit_roundoff: f64,
) -> Result<f64, LogdetError> {
    let (nodes, weights) =
        gauss_quadrature_nodes(alphas, betas).ok_or(LogdetError::QuadratureFailed { system })?;
    // `nodes` are finite here.
    let largest = nodes.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    let most_negative = nodes.iter().copied().fold(f64::INFINITY, f64::min);
    if most_negative < -negative_ritz_tolerance(unit_roundoff) * largest {
        return Err(LogdetError::NegativeRitzValue {
            system,
            ritz_value: most_negative,
            largest,
        });
    }
    Ok(norm_sq
        * nodes
            .iter()
            .zip(&weights)
            .map(|(l, w)| w * l.max(ritz_floor).ln())
            .sum::<f64>())
}

/// The SLQ quadrature for one system: `norm_sq · Σ_j τ_j² log(max(λ_j, ritz_floor))`, an
/// estimate of `vᵀ log(H) v` for the probe `v` (with `‖v‖² = norm_sq`) whose Lanczos
/// coefficients are `alphas` (length `k`) and `betas` (length `≥ k − 1`).
///
/// With a unit Rademacher probe scaled by `d` (`norm_sq = d`, the reference's formula
/// `d · Σ_j τ_j² log λ_j`) this is one Hutchinson sample of `tr log H = log det H`.
/// Ritz values of an SPD operator are positive in exact arithmetic; the floor only guards
/// against round-off (the reference uses `log(max(λ, 0) + 1e-8)`; `max(λ, floor)` leaves
/// every `λ ≥ floor` untouched).
///
/// Errors: [`LogdetError::InvalidParameter`] unless `ritz_floor` is finite and `> 0`;
/// [`LogdetError::QuadratureFailed`] for non-finite coefficients;
/// [`LogdetError::NegativeRitzValue`] when a Ritz value is clearly negative, below
/// `−√u · max_j |λ_j|` with `u` the f64 unit roundoff (the operator is not positive definite;
/// smaller negatives are round-off and are floored). The coefficients are taken to be f64
/// ones; for Lanczos run in lower precision use [`slq_logdet_from_lanczos`], which judges
/// round-off at the precision of the Lanczos vectors. `system` in the errors is 0.
///
/// ```
/// // T = diag(2, 8) with e_1 weight on the first node only: log 2.
/// let v = logdet::slq_quadrature_logdet(&[2.0, 8.0], &[0.0], 1.0, 1e-8).unwrap();
/// assert!((v - 2f64.ln()).abs() < 1e-14);
/// // A negative Ritz value: not positive definite.
/// assert!(logdet::slq_quadrature_logdet(&[-2.0], &[], 1.0, 1e-8).is_err());
/// ```
pub fn slq_quadrature_logdet(
    alphas: &[f64],
    betas: &[f64],
    norm_sq: f64,
    ritz_floor: f64,
) -> Result<f64, LogdetError> {
    validate_ritz_floor(ritz_floor)?;
    quadrature_logdet(0, alphas, betas, norm_sq, ritz_floor, f64::EPSILON)
}

/// Applies [`slq_quadrature_logdet`] to every system of a Lanczos result, with
/// `norm_sq = ‖v0_i‖²` taken from [`LanczosResult::initial_norms`] and round-off judged at
/// [`LanczosResult::unit_roundoff`] (the precision of the Lanczos vectors). A system with an
/// empty tridiagonal (zero start vector) contributes 0. Errors name the system.
pub fn slq_logdet_from_lanczos<V>(
    result: &LanczosResult<V>,
    ritz_floor: f64,
) -> Result<Vec<f64>, LogdetError> {
    validate_ritz_floor(ritz_floor)?;
    (0..result.sizes.len())
        .map(|i| {
            let k = result.sizes[i];
            if k == 0 {
                return Ok(0.0);
            }
            let norm_sq = result.initial_norms[i].powi(2);
            quadrature_logdet(
                i,
                &result.alphas[i][..k],
                &result.betas[i],
                norm_sq,
                ritz_floor,
                result.unit_roundoff,
            )
        })
        .collect()
}
