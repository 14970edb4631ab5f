//! The parameters of [`crate::cg()`]: tolerances, iteration cap, stopping rule,
//! preconditioner, re-orthogonalisation and the true-residual confirmation.

use crate::{KrylovError, Preconditioner};

/// When the batch stops iterating.
///
/// With [`CgStopping::PerSystem`] an easy system stops early and costs no further operator
/// work; [`CgStopping::BatchGlobal`] keeps it iterating until the whole batch has converged.
///
/// ```
/// use krylov::{cg, CgParams, CgStopping, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0 is 2·I (one step); system 1 has two distinct eigenvalues (two steps).
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![2.0, 0.0; 0.0, 2.0],
///     dmatrix![1.0, 0.0; 0.0, 5.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// // Without the true-residual confirmation (one more application per converged system),
/// // the applications are those of the iterations.
/// let params = CgParams::default()
///     .with_rtol(1e-12)
///     .with_confirm_with_true_residual(false);
/// let per = cg(&op, &b, &params)?;
/// let global = cg(&op, &b, &params.clone().with_stopping(CgStopping::BatchGlobal))?;
/// assert_eq!(per.applications, vec![1, 2]);
/// assert_eq!(global.applications, vec![2, 2]);
/// // With it (the default), each converged system pays one more.
/// let confirmed = cg(&op, &b, &CgParams::default().with_rtol(1e-12))?;
/// assert_eq!(confirmed.applications, vec![2, 3]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgStopping {
    /// Each system stops as soon as it satisfies its own test and is then frozen: it receives no
    /// further operator applications and no vector updates. The default.
    #[default]
    PerSystem,
    /// **Reference behaviour** (CP-Flow's `conjugate_gradient`): every system keeps iterating
    /// (and costs an operator application per iteration) until *all* systems satisfy the test
    /// or `max_iters` is reached. Kept for comparison and benchmarks. Systems whose iteration
    /// cannot continue (zero or non-finite curvature `pᵀHp`, e.g. an exactly zero residual) are
    /// still frozen.
    BatchGlobal,
}

/// Parameters of [`crate::cg()`]. Build with `CgParams::default()` and the `with_*` setters.
///
/// System `i` meets the tolerance when `‖r_i‖∞ ≤ atol + rtol·‖b_i‖∞`. During the iteration
/// `r_i` is the recursively updated residual (in exact arithmetic `b_i − H_i x_i`); in floating
/// point it drifts away from the true residual on ill-conditioned systems. With
/// [`CgParams::confirm_with_true_residual`] (the default) a system that meets the tolerance is
/// then checked once on its true residual, so that [`crate::CgResult::converged`] means
/// `‖b_i − H_i x_i‖∞ ≤ atol + rtol·‖b_i‖∞`. That residual is computed in the element type, so
/// it resolves nothing below about `u·(‖b_i‖∞ + ‖H_i x_i‖∞) ≈ 2u·‖b_i‖∞` (`u` the unit
/// roundoff: f32 `1.2e-7`, f64 `2.2e-16`): a system whose tolerance is below that ends
/// [`crate::CgTermination::Stagnated`], never converged (f32 with `atol = 1e-8`, `rtol = 0`
/// and `‖b‖∞ = 1` used to report some systems converged with a computed residual of 0 and a
/// true one 5–10× the tolerance). The default `rtol = 1e-6` is 4.2× that level in f32.
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator, KrylovError};
/// use nalgebra::{DMatrix, dmatrix};
/// let params = CgParams::default().with_rtol(1e-10).with_max_iters(1);
/// assert_eq!(params.max_iters, Some(1));
/// assert!(params.confirm_with_true_residual);
/// // Two distinct eigenvalues need two iterations: one is not enough.
/// let op = DenseNalgebraOperator::new(vec![dmatrix![1.0, 0.0; 0.0, 3.0]])?;
/// let b = DMatrix::<f64>::from_element(2, 1, 1.0);
/// let res = cg(&op, &b, &params)?;
/// assert!(!res.converged[0] && res.iterations[0] == 1);
/// // Invalid tolerances are rejected before any work.
/// let bad = CgParams::default().with_atol(-1.0);
/// assert!(matches!(cg(&op, &b, &bad), Err(KrylovError::InvalidParameter(_))));
/// # Ok::<(), KrylovError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CgParams {
    /// Absolute tolerance on `‖r_i‖∞`. Default `0`.
    pub atol: f64,
    /// Relative tolerance (times `‖b_i‖∞`). Default `1e-6`.
    pub rtol: f64,
    /// Maximum number of iterations per system. `None` (default) means
    /// [`default_max_iters`]`(d) = 2d + 10`: in exact arithmetic CG needs at most `d`
    /// iterations, and the slack absorbs the delay caused by rounding on ill-conditioned
    /// systems (the CP-Flow reference uses exactly `d`).
    pub max_iters: Option<usize>,
    /// Per-system (default) or batch-global (reference) stopping.
    pub stopping: CgStopping,
    /// Preconditioner (default none).
    pub preconditioner: Preconditioner,
    /// Re-orthogonalise every new residual against all previous ones (two Gram–Schmidt passes
    /// in the `M⁻¹` inner product). Restores CG's finite termination in floating point, so
    /// every system converges in about `d` iterations whatever the spectrum, at `O(k·B·d)`
    /// extra memory and work per iteration `k`. Default `false` (the reference does not).
    /// Once the stored residuals span the space the updated residual is zero whatever `x` is,
    /// so convergence is **always** confirmed on the true residual `b − H x` on this path
    /// (one extra operator application for the systems that met the tolerance, whatever
    /// [`CgParams::confirm_with_true_residual`] says); a system that fails the check stops
    /// with [`crate::CgTermination::Stagnated`] (the basis leaves no direction to continue in).
    /// So does one whose tolerance lets its updated residual shrink on until its squares
    /// underflow in the reductions (`atol = rtol = 0`: below ≈ 1e-154 in f64, ≈ 1e-19 for
    /// f32 tensors, see [`crate::BatchVectors::reduction_min_positive`]) or it can no longer
    /// be normalised (f32 with f64 reductions: the subnormals), or whose updated residual,
    /// orthogonalised against more than `d` stored residuals (an over-complete basis: f64,
    /// `d ≳ 50`, where the noise left once the basis spans the space bottoms out above that
    /// floor), grows past twice its least, unless its true residual meets the tolerance;
    /// either way its true residual is reported. A converged system that
    /// [`crate::CgStopping::BatchGlobal`] keeps stepping stops there too (still converged).
    pub reorthogonalize: bool,
    /// Confirm convergence on the true residual. Default `true`.
    ///
    /// When the iteration stops, every system that stepped since its residual was last
    /// computed as `b_i − H_i x_i` (and did not break down) has `b_i − H_i x_i` computed (by
    /// the operator): **one** operator call for all of them, one application each. That norm
    /// is reported in [`crate::CgResult::residual_norms`] and decides
    /// [`crate::CgResult::converged`].
    /// * Within the tolerance: the system is converged, `x_i` untouched.
    /// * Above it, for a system that had met the tolerance on its updated residual: CG
    ///   restarts from the true residual (`p_i = M⁻¹ r_i`), within the same per-system
    ///   `max_iters`, and is checked again when it stops next. It is not restarted when its
    ///   iterations are spent ([`crate::CgTermination::MaxIterations`]) or when its true
    ///   residual did not at least halve since its previous failed check (the attainable
    ///   accuracy is reached: [`crate::CgTermination::Stagnated`]); a failed restart costs the
    ///   iterations up to that second check.
    /// * Above it, for a system whose iterations ran out: it stays
    ///   [`crate::CgTermination::MaxIterations`], now reporting its true residual.
    ///
    /// A system whose convergence holds costs exactly one more application and its solution is
    /// bit-identical to the unconfirmed one. With `false` (the CP-Flow reference's behaviour,
    /// and what CP-Flow's training solves use to keep their cost), `converged` only says that
    /// the *updated* residual met the tolerance; on ill-conditioned systems the true residual
    /// can then be far above it (measured, f64, d = 30: 1.2e3× the tolerance at condition
    /// number 1e10 and rtol 1e-10, 4.6e7× at 1e12 and 1e-12).
    ///
    /// Either way, a system whose `rᵀM⁻¹r` falls to the floor of the reductions (subnormal,
    /// or 0 because its terms underflowed: only with a tolerance at or near 0, see
    /// [`crate::CgTermination::Stagnated`]) stops there and has its true residual computed
    /// and reported: it ends converged or [`crate::CgTermination::Stagnated`], not restarted.
    pub confirm_with_true_residual: bool,
}

impl Default for CgParams {
    fn default() -> Self {
        Self {
            atol: 0.0,
            rtol: 1e-6,
            max_iters: None,
            stopping: CgStopping::PerSystem,
            preconditioner: Preconditioner::None,
            reorthogonalize: false,
            confirm_with_true_residual: true,
        }
    }
}

impl CgParams {
    /// Sets the absolute tolerance.
    pub fn with_atol(mut self, atol: f64) -> Self {
        self.atol = atol;
        self
    }
    /// Sets the relative tolerance.
    pub fn with_rtol(mut self, rtol: f64) -> Self {
        self.rtol = rtol;
        self
    }
    /// Sets the maximum number of iterations.
    pub fn with_max_iters(mut self, max_iters: usize) -> Self {
        self.max_iters = Some(max_iters);
        self
    }
    /// Sets the stopping rule.
    pub fn with_stopping(mut self, stopping: CgStopping) -> Self {
        self.stopping = stopping;
        self
    }
    /// Sets the preconditioner.
    pub fn with_preconditioner(mut self, preconditioner: Preconditioner) -> Self {
        self.preconditioner = preconditioner;
        self
    }

    /// Enables or disables residual re-orthogonalisation.
    pub fn with_reorthogonalize(mut self, reorthogonalize: bool) -> Self {
        self.reorthogonalize = reorthogonalize;
        self
    }

    /// Enables (the default) or disables the confirmation of convergence on the true
    /// residual ([`CgParams::confirm_with_true_residual`]).
    ///
    /// ```
    /// use krylov::CgParams;
    /// // The CP-Flow reference's behaviour: convergence judged on the updated residual.
    /// let reference = CgParams::default().with_confirm_with_true_residual(false);
    /// assert!(!reference.confirm_with_true_residual);
    /// ```
    pub fn with_confirm_with_true_residual(mut self, confirm: bool) -> Self {
        self.confirm_with_true_residual = confirm;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), KrylovError> {
        if !(self.atol >= 0.0 && self.atol.is_finite()) {
            return Err(KrylovError::InvalidParameter(format!(
                "atol must be finite and ≥ 0, got {}",
                self.atol
            )));
        }
        if !(self.rtol >= 0.0 && self.rtol.is_finite()) {
            return Err(KrylovError::InvalidParameter(format!(
                "rtol must be finite and ≥ 0, got {}",
                self.rtol
            )));
        }
        if self.reorthogonalize && self.preconditioner == Preconditioner::Supplied {
            return Err(KrylovError::InvalidParameter(
                "re-orthogonalisation needs M^(-1/2), which a supplied preconditioner does not \
                 give: use Preconditioner::None or Jacobi with it"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The iteration cap used when [`CgParams::max_iters`] is `None`: `2d + 10` (saturating at
/// `usize::MAX`).
///
/// ```
/// use krylov::{cg, default_max_iters, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// assert_eq!(default_max_iters(3), 16);
/// // A zero tolerance is (in floating point) never met, so CG runs to the cap.
/// let h = DMatrix::<f64>::from_diagonal(&nalgebra::DVector::from_fn(20, |i, _| (i + 1) as f64));
/// let op = DenseNalgebraOperator::new(vec![h])?;
/// let b = DMatrix::<f64>::from_element(20, 1, 1.0);
/// let res = cg(&op, &b, &CgParams::default().with_rtol(0.0))?;
/// assert!(!res.converged[0]);
/// assert_eq!(res.iterations, vec![default_max_iters(20)]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
pub fn default_max_iters(dim: usize) -> usize {
    // Saturating: `2d + 10` overflowed (a panic in debug builds) for `d` near `usize::MAX`.
    dim.saturating_mul(2).saturating_add(10)
}
