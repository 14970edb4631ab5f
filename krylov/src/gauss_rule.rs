//! The Gauss rule of a Lanczos tridiagonal: its eigenvalues (Ritz values) and the squared
//! first components of its unit eigenvectors (the quadrature weights). One computation,
//! shared by [`LanczosResult::ritz_values`](crate::LanczosResult::ritz_values) and
//! `logdet`'s stochastic Lanczos quadrature (`logdet::gauss_quadrature_nodes` calls it).

use faer::diag::{DiagMut, DiagRef};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::{Mat, Par};

use crate::gauss_ql::eigenvalues_and_first_components;

/// The Gauss-quadrature nodes and weights of the tridiagonal `T = tridiag(β, α, β)`:
/// eigenvalues `λ_j` (Ritz values, in no particular order) and `τ_j² = (first component of
/// the j-th unit eigenvector)²`, which sum to 1, so that `e₁ᵀ f(T) e₁ = Σ_j τ_j² f(λ_j)`. The
/// small eigenproblem is solved on the host by the implicit QL algorithm on the first
/// eigenvector components only (Golub–Welsch), with faer's tridiagonal eigensolver as the
/// fallback should it not converge. `betas` must hold at least `k − 1` values
/// (`k = alphas.len()`; extra ones are ignored). Returns `None` when there are fewer, or when
/// the coefficients (or the computed nodes and weights) are not finite.
///
/// ```
/// use krylov::gauss_quadrature_nodes;
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
    let k = alphas.len();
    if k == 0 {
        return Some((Vec::new(), Vec::new()));
    }
    if betas.len() + 1 < k || alphas.iter().chain(&betas[..k - 1]).any(|v| !v.is_finite()) {
        return None;
    }
    // Near the top of the f64 range the QL sweep's sums overflow (`|α_m| + |α_{m+1}| = ∞`
    // made every coupling look negligible, so `T = [[1e308, 1e308], [1e308, −1e308]]` came
    // back as the nodes 1e308 and −1e308 with weights 1 and 0): such a `T` is scaled down by
    // an exact power of two, and its nodes back up (weights do not depend on the scale).
    let largest = alphas
        .iter()
        .chain(&betas[..k - 1])
        .fold(0.0f64, |m, v| m.max(v.abs()));
    if largest > 2f64.powi(1000) {
        let scale = 2f64.powi(512);
        let a: Vec<f64> = alphas.iter().map(|v| v / scale).collect();
        let b: Vec<f64> = betas[..k - 1].iter().map(|v| v / scale).collect();
        let (nodes, weights) = gauss_quadrature_nodes(&a, &b)?;
        let nodes: Vec<f64> = nodes.iter().map(|v| v * scale).collect();
        // A node beyond the f64 range is not a result.
        return nodes
            .iter()
            .all(|v| v.is_finite())
            .then_some((nodes, weights));
    }
    // The implicit QL algorithm carrying only the first row of the eigenvector matrix
    // (`gauss_ql.rs`); faer's tridiagonal solver (the whole eigenvector matrix) if it does not
    // converge.
    let (nodes, weights) = match eigenvalues_and_first_components(alphas, betas) {
        Some((nodes, first)) => (nodes, first.iter().map(|z| z * z).collect()),
        None => faer_nodes(alphas, betas)?,
    };
    if nodes.iter().chain(&weights).any(|v| !v.is_finite()) {
        return None;
    }
    Some((nodes, weights))
}

/// [`gauss_quadrature_nodes`] by faer's tridiagonal eigensolver with eigenvectors (checked
/// input, `k ≥ 1`).
pub(crate) fn faer_nodes(alphas: &[f64], betas: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    let k = alphas.len();
    let mut nodes = vec![0.0; k];
    let mut u = Mat::<f64>::zeros(k, k);
    let params = Default::default();
    let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        k,
        ComputeEigenvectors::Yes,
        Par::Seq,
        params,
    ));
    evd::tridiagonal_self_adjoint_evd(
        DiagRef::from_slice(alphas),
        DiagRef::from_slice(&betas[..k - 1]),
        DiagMut::from_slice_mut(&mut nodes),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut mem),
        params,
    )
    .ok()?;
    let weights: Vec<f64> = (0..k).map(|j| u[(0, j)].powi(2)).collect();
    Some((nodes, weights))
}
