//! The CG gradient surrogate for `∂ log det H` (CP-Flow paper eq. 3–4, Alg. 2).

use krylov::{BatchOperator, BatchVectors, CgParams, CgResult, cg_with_initial_guess};

use crate::LogdetError;

/// Output of [`cg_surrogate`].
///
/// ```
/// use krylov::{CgParams, DenseNalgebraOperator};
/// use logdet::cg_surrogate;
/// use nalgebra::DMatrix;
/// // H = diag(2, 4), probe v = (1, 1): u = H⁻¹v = (1/2, 1/4), and uᵀ(Hv) = vᵀv = 2.
/// let h = DMatrix::from_diagonal(&nalgebra::dvector![2.0, 4.0]);
/// let op = DenseNalgebraOperator::new(vec![h.clone()])?;
/// let v = DMatrix::<f64>::from_element(2, 1, 1.0);
/// let s = cg_surrogate(&op, &v, &CgParams::default().with_rtol(1e-12))?;
/// assert!((s.u[(0, 0)] - 0.5).abs() < 1e-12 && (s.u[(1, 0)] - 0.25).abs() < 1e-12);
/// assert!((s.u.dot(&(&h * &v)) - 2.0).abs() < 1e-12);
/// assert!(s.report.converged[0]);
/// // CG starts at u₀ = v: one application for the initial residual, then the steps, then one
/// // to confirm convergence on the true residual (`CgParams::confirm_with_true_residual`).
/// assert_eq!(s.report.applications[0], 1 + s.report.iterations[0] + 1);
/// # Ok::<(), logdet::LogdetError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CgSurrogate<V> {
    /// `u ≈ H⁻¹ v`, detached (a constant for autodiff).
    pub u: V,
    /// The CG report (iterations, residuals, convergence, operator applications).
    pub report: CgResult<V>,
}

/// Solves `H_i u_i = v_i` by CG for the probes `v` and returns `u` (detached), so that the
/// caller's surrogate `S_i = u_iᵀ (H_i(θ) v_i)` — with `u` held constant and `H(θ) v`
/// differentiated — has gradient `∂θ S_i = u_iᵀ (∂θ H_i) v_i ≈ v_iᵀ H_i⁻¹ (∂θ H_i) v_i`.
///
/// **Estimator.** For probes with `E[v vᵀ] = I` (Rademacher, Gaussian),
/// `E[vᵀ H⁻¹ (∂θ H) v] = tr(H⁻¹ ∂θ H) = ∂θ log det H` (Jacobi's formula), so averaging
/// `∂θ S` over probes is an unbiased estimate of the log-det gradient *if* `u = H⁻¹ v` exactly.
/// The value of `S` itself is ≈ `vᵀ v` (= `d` for Rademacher), not `log det H`.
///
/// **Bias from the CG tolerance.** CG returns `u = H⁻¹(v − r)` with residual `r`, so
/// `∂θ S = vᵀ H⁻¹ (∂θH) v − rᵀ H⁻¹ (∂θH) v` and the bias is bounded by
/// `|rᵀ H⁻¹ (∂θH) v| ≤ ‖r‖₂ ‖H⁻¹‖₂ ‖∂θH‖₂ ‖v‖₂`. With the stopping test
/// `‖r‖∞ ≤ atol + rtol·‖v‖∞` (and `‖r‖₂ ≤ √d ‖r‖∞`) the bias per probe is at most
/// `√d (atol + rtol ‖v‖∞) ‖v‖₂ ‖∂θH‖₂ / λ_min(H)`: linear in the tolerance and amplified by
/// `1/λ_min`. The bound holds for the true residual when convergence is confirmed on it
/// ([`CgParams::confirm_with_true_residual`], the default); without the confirmation `r` is
/// the recursively updated residual, which on ill-conditioned `H` can be far below the true
/// one. The reference's `atol = 1e-3`, `rtol = 0` gives a bias of order
/// `1e-3 · d · ‖∂θH‖ / λ_min` for Rademacher probes; systems that hit `max_iters` without
/// converging (see `report.converged`) have a larger, unbounded-by-tolerance bias.
///
/// CG starts at `u₀ = v` like the reference (good when `H ≈ I`); use [`krylov::cg`] directly
/// to start at zero. The probes and the operator should be detached from any autodiff graph
/// (the solve is a constant); `u` is returned detached.
///
/// ```
/// use krylov::{CgParams, DenseNalgebraOperator};
/// use logdet::cg_surrogate;
/// use nalgebra::{DMatrix, dmatrix};
/// let h = dmatrix![4.0, 1.0; 1.0, 3.0];
/// let op = DenseNalgebraOperator::new(vec![h.clone()]).unwrap();
/// let v = DMatrix::from_column_slice(2, 1, &[1.0, -1.0]);
/// let s = cg_surrogate(&op, &v, &CgParams::default().with_rtol(1e-12)).unwrap();
/// let hu = &h * &s.u;
/// assert!((hu - &v).abs().max() < 1e-10);
/// assert!(s.report.all_converged());
/// ```
pub fn cg_surrogate<V, Op>(
    op: &Op,
    probes: &V,
    params: &CgParams,
) -> Result<CgSurrogate<V>, LogdetError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    let report = cg_with_initial_guess(op, probes, probes, params)?;
    Ok(CgSurrogate {
        u: report.x.detached(),
        report,
    })
}
