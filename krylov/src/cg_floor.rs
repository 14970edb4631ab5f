//! The reduction floor: where a CG residual has shrunk so far below the working precision
//! that the reductions CG computes from it (`rᵀM⁻¹r`, `pᵀHp`) underflow.
//!
//! A tolerance at or near 0 (`atol = rtol = 0`, or one far below the attainable accuracy) lets
//! the updated residual shrink on past the accuracy of `x`: in f64 down to ≈ 1e-154, where
//! its squares leave the normal numbers of the reductions
//! ([`BatchVectors::reduction_min_positive`]), in f32 tensors (reduced in f32) ≈ 1e-19, with
//! f32 storage and f64 reductions into the subnormals of f32. There `rᵀM⁻¹r` and `pᵀHp` lose
//! their precision (step sizes from them are noise: the residual can grow without bound) and
//! then come out 0, which read as a breakdown (a non-SPD operator or preconditioner),
//! although `x` is a valid iterate. Plain CG stops such a system where its `rᵀM⁻¹r` is
//! computed ([`ReductionFloor::rz_at_floor`]), re-orthogonalised CG where it normalises the
//! residual (`cg_reorth.rs`, the same test [`ReductionFloor::holds_norm`]); either way it
//! ends on its true residual (`cg_solve.rs`). Decided from the values the iteration has
//! anyway: no extra reduction. The scalings of `cg_solve.rs` keep ordinary solves, whatever
//! the scale of `b` and of a Jacobi preconditioner, far from this floor. (f16 storage: the
//! floor is where `1/‖S r‖₂` overflows f16, `‖S r‖₂` below ≈ 1.5e-5, in its subnormals.)
//!
//! Also here, the iteration's two stopping tests that act at this floor:
//! [`stop_on_unusable_rz`] (an `rᵀM⁻¹r` that CG cannot step with: at the floor, or a
//! breakdown) and [`overcomplete_growth`] (a re-orthogonalised residual grown out of the
//! noise of an over-complete basis, stopped like one at the floor).

use crate::vectors::{reciprocal_overflows, square_underflows};
use crate::{BatchVectors, Preconditioner};

/// [`ReductionFloor::holds_norm`] for the reductions' `min_positive`
/// ([`BatchVectors::reduction_min_positive`]) and the element type's `unit_roundoff`.
pub(crate) fn norm_at_floor(norm: f64, min_positive: f64, unit_roundoff: f64) -> bool {
    square_underflows(norm, min_positive) || reciprocal_overflows(norm, unit_roundoff)
}

/// The floor of one solve's element and reduction types.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReductionFloor {
    /// [`BatchVectors::reduction_min_positive`].
    min_positive: f64,
    /// [`BatchVectors::unit_roundoff`].
    unit_roundoff: f64,
    /// `M⁻¹` is a positive diagonal (none, or Jacobi), so `rᵀM⁻¹r = Σ_k m_k r_k²` is a sum of
    /// non-negative terms: 0 for `r ≠ 0` only when every term underflowed. A supplied `M⁻¹`
    /// can give `rᵀM⁻¹r ≤ 0` on a residual of any size (`M` not SPD).
    diagonal: bool,
}

impl ReductionFloor {
    pub fn new<V: BatchVectors>(like: &V, preconditioner: Preconditioner) -> Self {
        Self {
            min_positive: like.reduction_min_positive(),
            unit_roundoff: like.unit_roundoff(),
            diagonal: preconditioner != Preconditioner::Supplied,
        }
    }

    /// Whether a vector of Euclidean norm `norm` (the square root of a reduction) is at the
    /// floor: its square, the reduction, is below the smallest normal number of the
    /// reductions' type (`square_underflows`), or `1/norm` overflows the element type
    /// (`reciprocal_overflows`: f32 storage, a vector in the subnormals). `true` for 0,
    /// `false` for NaN.
    pub fn holds_norm(&self, norm: f64) -> bool {
        norm_at_floor(norm, self.min_positive, self.unit_roundoff)
    }

    /// Whether a system whose `rᵀM⁻¹r` came out `rz`, with a residual `r ≠ 0` of max-norm
    /// `rnorm`, is at the floor: `rz > 0` whose square root is ([`ReductionFloor::holds_norm`]:
    /// `rz` subnormal in the reductions' type, or `‖M^{-1/2}r‖₂` in the element type's
    /// subnormals; CG's step sizes from such values are noise, which can make the residual
    /// grow without bound), or `rz = 0` that underflowed rather than met a preconditioner that
    /// is not SPD (a negative or NaN value never is at the floor). With a positive diagonal
    /// `M⁻¹` a 0 always underflowed (every term did, in the reductions or, with f32 storage,
    /// already in `M⁻¹r`). With a supplied `M⁻¹` a 0 is taken for an underflow when
    /// `previous`, the system's last positive `rᵀM⁻¹r` and its residual's max-norm, predicts a
    /// value `rz ≈ rz_prev·(rnorm/rnorm_prev)²` that is at the floor after a further factor
    /// `u`, the element type's unit roundoff (a margin for `M`'s conditioning and `d`): a
    /// preconditioner that is singular on a residual of ordinary size still breaks down.
    /// Without `previous` (the initial or a restarted residual) a supplied `M⁻¹`'s 0 is a
    /// breakdown.
    pub fn rz_at_floor(&self, rz: f64, rnorm: f64, previous: Option<(f64, f64)>) -> bool {
        // NaN fails both tests.
        let usable = rnorm > 0.0 && rz >= 0.0;
        if !usable {
            return false;
        }
        if rz > 0.0 {
            return rz.is_finite() && self.holds_norm(rz.sqrt());
        }
        if self.diagonal {
            return true;
        }
        match previous {
            Some((rz_prev, rnorm_prev)) if rz_prev > 0.0 && rnorm_prev > 0.0 => {
                let ratio = rnorm / rnorm_prev;
                let predicted = rz_prev * ratio * ratio;
                self.holds_norm((predicted * self.unit_roundoff).sqrt())
            }
            _ => false,
        }
    }
}

/// Stops every system in `mask` that has neither converged nor broken down and whose
/// `rᵀz = rᵀM⁻¹r` CG cannot step with. One that `at_floor(i)` finds at the floor
/// (`ReductionFloor::rz_at_floor`: `rᵀz` is subnormal, or came out 0 because its terms
/// underflowed) is returned as `true`, for the caller to stop it there and end it on its
/// true residual. Otherwise one whose `rᵀz` is not positive and finite is a breakdown: for
/// `r ≠ 0` an SPD `M` gives `rᵀM⁻¹r > 0`, so a value `≤ 0` means `M` is not SPD on the
/// Krylov space (CG would run on in an indefinite inner product, which nothing bounds: no
/// convergence theory, often the iteration cap); NaN/±Inf is flagged as
/// [`CgResult::non_finite`]. `rᵀz = 0` with `r = 0` is legitimate, but such a system has
/// converged (`‖r‖∞ = 0 ≤ tol`) and is skipped. Checked where `rᵀz` is computed, before the
/// next operator product, so a failing system costs no further application.
pub(crate) fn stop_on_unusable_rz(
    rz: &[f64],
    mask: &[bool],
    converged: &[bool],
    breakdown: &mut [bool],
    non_finite: &mut [bool],
    at_floor: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let mut stopped = vec![false; rz.len()];
    for i in 0..rz.len() {
        if !mask[i] || converged[i] || breakdown[i] {
            continue;
        }
        if at_floor(i) {
            stopped[i] = true;
        } else if !(rz[i] > 0.0 && rz[i].is_finite()) {
            breakdown[i] = true;
            non_finite[i] = !rz[i].is_finite();
        }
    }
    stopped
}

/// Whether a re-orthogonalised residual has grown out of the noise left once the stored
/// residuals span the space: its system has made more than `d` iterations (so `r` was
/// orthogonalised against more than `d` stored residuals, an over-complete set in `ℝ^d`) and
/// its norm is above twice its least so far. Once `d` residuals are stored the updated
/// residual collapses to rounding noise (by ≈ `u` per iteration); with a tolerance at or near
/// 0 it shrinks on until the reductions underflow (`ResidualBasis::orthogonalize_and_push`)
/// or, for larger `d` (f64, d ≳ 50, measured), bottoms out above that floor (≈ 1e-151) and
/// then grows by 10–1000 per iteration until `p` overflows. Any tolerance that the noise can
/// meet (`rtol ≳ 1e-140` in f64) has stopped the system before.
pub(crate) fn overcomplete_growth(iterations: usize, d: usize, norm: f64, least: f64) -> bool {
    iterations > d && norm > 2.0 * least
}
