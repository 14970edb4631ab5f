//! The resolution of a computed true residual: the level below which `b − H x`, formed in the
//! element type, cannot tell a residual from rounding, so that a tolerance below it cannot be
//! certified however small the computed residual comes out.
//!
//! CG's confirmation ([`crate::CgParams::confirm_with_true_residual`]) computes
//! `r = b − H x` with the operator's product and the element type's subtraction. Even an
//! operator that returned `H x` correctly rounded errs by up to `u/2·|(H x)_j|` per entry
//! (`u` the unit roundoff, [`crate::BatchVectors::unit_roundoff`], the machine epsilon
//! `2⁻²³` in f32), and a computed product carries the roundings of its sums on top. So a
//! computed residual at or below about `u·(‖b‖∞ + ‖H x‖∞)` says nothing about the true one:
//! in the f32 precision audit (d = 6, 16 systems of condition 1.8–3.7, Rademacher `b`,
//! `atol = 1e-8`, `rtol = 0`) 5 systems reported a residual of exactly 0 and `Converged`,
//! while `b − H x` in f64 against the same f32 `H` was 5e-8 to 1.1e-7, 5–11× the tolerance
//! (0.4–0.92·u·‖b‖∞; up to 1.28·u·‖b‖∞ over 26 seeds of random SPD systems of that kind,
//! `tests/integration/cg_resolution.rs`). A system whose computed true residual meets a
//! tolerance below this level ends [`crate::CgTermination::Stagnated`], never `Converged`.
//!
//! The level is `u·(‖b‖∞ + ‖H x‖∞)` with the constant 1, bounded through `‖H x‖∞ ≤ ‖b‖∞ +
//! ‖r‖∞` so that no extra reduction is needed: near convergence (`H x ≈ b`) it is `≈ 2u·‖b‖∞`,
//! four half-ulp roundings of the output, above the measured 1.28·u·‖b‖∞. It is a
//! lower bound on what can be resolved, not an error bound: an operator whose own rounding is
//! larger (long sums, cancellation in an ill-conditioned `H`, whose `|H|·|x|` exceeds
//! `|H x|`) can still leave the true residual above a tolerance just above the level (by that
//! operator's error; the default `rtol = 1e-6` is 4.2× the level in f32). A larger constant
//! would refuse tolerances that f32 resolves: the default relative tolerance sits at
//! `8.4·u·‖b‖∞` in f32. Tolerances of `rtol ≥ 2u` (f32 `2.4e-7`, f64 `4.4e-16`) are never
//! affected, nor is `b_i = 0` (level 0: `x_i = 0` exactly).

/// The resolution `u·(2‖b‖∞ + ‖r‖∞) ≥ u·(‖b‖∞ + ‖H x‖∞)` of a computed residual of max-norm
/// `r_norm` for a right-hand side of max-norm `b_norm` (both in the same units, e.g. after the
/// solve's internal power-of-two scaling), with `unit_roundoff` the element type's `u`.
pub(crate) fn residual_resolution(b_norm: f64, r_norm: f64, unit_roundoff: f64) -> f64 {
    unit_roundoff * (2.0 * b_norm + r_norm)
}

/// Whether a computed true residual of max-norm `r_norm` certifies the tolerance `tol`: it
/// meets it (finite, `≤ tol`) and `tol` is not below [`residual_resolution`].
pub(crate) fn certifies(tol: f64, r_norm: f64, b_norm: f64, unit_roundoff: f64) -> bool {
    r_norm.is_finite() && r_norm <= tol && tol >= residual_resolution(b_norm, r_norm, unit_roundoff)
}

/// Whether a computed true residual of max-norm `r_norm` meets the tolerance `tol` that it
/// cannot certify (below [`residual_resolution`]): such a system stagnates instead of
/// converging.
pub(crate) fn meets_unresolvable(tol: f64, r_norm: f64, b_norm: f64, unit_roundoff: f64) -> bool {
    r_norm.is_finite() && r_norm <= tol && !certifies(tol, r_norm, b_norm, unit_roundoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_below_twice_the_roundoff_of_b_are_not_certified() {
        let u = f64::from(f32::EPSILON);
        // The audit's case: ‖b‖∞ = 1, tolerance 1e-8, computed residual 0.
        assert!(!certifies(1e-8, 0.0, 1.0, u));
        assert!(meets_unresolvable(1e-8, 0.0, 1.0, u));
        // The default rtol 1e-6 (8.4 u) and cpflow's training atol 1e-3 are resolvable.
        assert!(certifies(1e-6, 9e-7, 1.0, u));
        assert!(certifies(1e-3, 0.0, 5.0, u));
        // b = 0: x = 0 exactly, a zero tolerance is met.
        assert!(certifies(0.0, 0.0, 0.0, u));
        // A residual above the tolerance is neither.
        assert!(!certifies(1e-8, 2e-8, 1.0, u) && !meets_unresolvable(1e-8, 2e-8, 1.0, u));
        assert!(!meets_unresolvable(1e-8, f64::NAN, 1.0, u));
    }
}
