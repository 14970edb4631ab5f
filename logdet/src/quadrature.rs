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
/// ```
/// // T = diag(2, 8) with e_1 weight on the first node only: log 2.
/// let v = logdet::slq_quadrature_logdet(&[2.0, 8.0], &[0.0], 1.0, 1e-8).unwrap();
/// assert!((v - 2f64.ln()).abs() < 1e-14);
/// ```
pub fn slq_quadrature_logdet(
    alphas: &[f64],
    betas: &[f64],
    norm_sq: f64,
    ritz_floor: f64,
) -> Result<f64, LogdetError> {
    let (nodes, weights) =
        gauss_quadrature_nodes(alphas, betas).ok_or(LogdetError::QuadratureFailed { system: 0 })?;
    Ok(norm_sq
        * nodes
            .iter()
            .zip(&weights)
            .map(|(l, w)| w * l.max(ritz_floor).ln())
            .sum::<f64>())
}

/// Applies [`slq_quadrature_logdet`] to every system of a Lanczos result, with
/// `norm_sq = ‖v0_i‖²` taken from [`LanczosResult::initial_norms`]. A system with an empty
/// tridiagonal (zero start vector) contributes 0.
pub fn slq_logdet_from_lanczos<V>(
    result: &LanczosResult<V>,
    ritz_floor: f64,
) -> Result<Vec<f64>, LogdetError> {
    (0..result.sizes.len())
        .map(|i| {
            let k = result.sizes[i];
            if k == 0 {
                return Ok(0.0);
            }
            let norm_sq = result.initial_norms[i].powi(2);
            slq_quadrature_logdet(
                &result.alphas[i][..k],
                &result.betas[i],
                norm_sq,
                ritz_floor,
            )
            .map_err(|_| LogdetError::QuadratureFailed { system: i })
        })
        .collect()
}
