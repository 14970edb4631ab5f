//! Full re-orthogonalisation of CG residuals (optional, [`crate::CgParams::reorthogonalize`]).
//!
//! In exact arithmetic the CG residuals are mutually orthogonal in the `M⁻¹` inner product
//! (`M` the preconditioner) and CG terminates in at most `d` iterations. In floating point this
//! orthogonality is lost once Ritz values converge, which delays convergence far beyond `d` on
//! ill-conditioned matrices with spread spectra (measured: a log-uniform spectrum with
//! condition number 1e6 and d = 200 needs ≈ 1,700 plain-CG iterations in f64 for rtol 1e-4).
//! Re-orthogonalising each new residual against all previous ones (two classical Gram–Schmidt
//! passes) restores the finite-termination behaviour at `O(k·d)` extra work per iteration and
//! `O(k·B·d)` memory.

use crate::{BatchOperator, BatchVectors, KrylovError};

/// The stored, normalised scaled residuals `q_j = S r_j / ‖S r_j‖` with `S = M^{-1/2}`.
pub(crate) struct ResidualBasis<V> {
    basis: Vec<V>,
    /// `S = M^{-1/2}` and `S⁻¹` (Jacobi), or `None` (no preconditioner).
    scaling: Option<(V, V)>,
}

impl<V: BatchVectors> ResidualBasis<V> {
    /// `inv_diag`: the Jacobi `M⁻¹` (entry-wise), if any.
    pub fn new(inv_diag: Option<&V>) -> Result<Self, KrylovError> {
        let scaling = match inv_diag {
            None => None,
            Some(m) => {
                let host = m.to_host()?;
                let s: Vec<f64> = host.iter().map(|v| v.sqrt()).collect();
                let s_inv: Vec<f64> = host.iter().map(|v| 1.0 / v.sqrt()).collect();
                Some((V::from_host_like(m, &s)?, V::from_host_like(m, &s_inv)?))
            }
        };
        Ok(Self {
            basis: Vec::new(),
            scaling,
        })
    }

    fn scaled(&self, r: &V) -> Result<V, KrylovError> {
        match &self.scaling {
            Some((s, _)) => r.mul_elementwise(s),
            None => Ok(r.clone()),
        }
    }

    fn unscaled(&self, r: V) -> Result<V, KrylovError> {
        match &self.scaling {
            Some((_, s_inv)) => r.mul_elementwise(s_inv),
            None => Ok(r),
        }
    }

    /// Orthogonalises `r` (for the systems in `active`) against the stored residuals, then
    /// stores its normalised scaled version.
    pub fn orthogonalize_and_push(
        &mut self,
        r: &mut V,
        active: &[bool],
    ) -> Result<(), KrylovError> {
        let mut rt = self.scaled(r)?;
        if !self.basis.is_empty() {
            rt.orthogonalize_against(&self.basis, active)?;
            rt.orthogonalize_against(&self.basis, active)?;
            let new_r = self.unscaled(rt.clone())?;
            let n = r.n_systems();
            r.axpby_masked(&vec![0.0; n], &vec![1.0; n], &new_r, active)?;
        }
        let norms = rt.norms2()?;
        let inv: Vec<f64> = norms
            .iter()
            .zip(active)
            .map(|(nrm, a)| {
                if *a && *nrm > 0.0 && nrm.is_finite() {
                    1.0 / nrm
                } else {
                    1.0
                }
            })
            .collect();
        rt.scale_per_system(&inv)?;
        self.basis.push(rt);
        Ok(())
    }
}

/// Re-orthogonalisation makes the updated residual collapse once the stored residuals span the
/// space (after ≈ `d` steps it is orthogonal to a full basis, hence zero), whether or not `x`
/// solves the system: on an ill-conditioned matrix the true residual can then be orders of
/// magnitude above the tolerance. Every system that claims convergence after stepping is
/// checked against `b − H x` (one extra masked application); that norm replaces its residual
/// norm and decides `converged`. Returns the number of operator calls made (0 or 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn confirm_on_true_residual<V, Op>(
    op: &Op,
    b: &V,
    x: &V,
    tol: &[f64],
    iterations: &[usize],
    converged: &mut [bool],
    residual_norms: &mut [f64],
    applications: &mut [usize],
) -> Result<usize, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    let n = b.n_systems();
    let check: Vec<bool> = (0..n).map(|i| converged[i] && iterations[i] > 0).collect();
    if !check.iter().any(|c| *c) {
        return Ok(0);
    }
    let hx = op.apply(x, &check)?;
    b.check_compatible("operator output", &hx)?;
    for (a, c) in applications.iter_mut().zip(&check) {
        *a += usize::from(*c);
    }
    let mut true_r = b.clone();
    true_r.axpby_masked(&vec![1.0; n], &vec![-1.0; n], &hx, &check)?;
    let true_norm = true_r.norms_inf()?;
    for i in (0..n).filter(|&i| check[i]) {
        residual_norms[i] = true_norm[i];
        converged[i] = true_norm[i].is_finite() && true_norm[i] <= tol[i];
    }
    Ok(1)
}
