//! CG's rescalings on the overflow side, for f32 tensors (which reduce in f32, whose range
//! ends at ≈ 3e38): a system whose starting `rᵀM⁻¹r` or a `pᵀHp` overflows, although
//! its `b`, `H` and `M⁻¹r` are finite, is rescaled by a power of two (exact), so that the
//! results of `(2^c·H, 2^s·b)` are those of `(H, b)` times powers of two, bit for bit, as for
//! the underflow side (`cg_scale_invariance.rs`). Both used to end as non-finite breakdowns.
#![cfg(feature = "candle")]
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::cg_scale_invariance::{
    assert_scaled as assert_scaled_same, parameter_grid, solve_f32_tensors as solve,
};
use krylov::{CgTermination, Preconditioner};

/// Asserts that the solve of `(2^log_c·H, 2^log_s·b)` is the unit one with `x` times
/// `2^(log_s − log_c)` and the residual norms times `2^log_s`, everything else equal, and
/// that the unit solve is an ordinary one (most systems converge, none breaks down).
fn assert_scaled(log_c: i32, log_s: i32, preconditioner: Preconditioner) {
    for params in parameter_grid(preconditioner) {
        let label = format!("2^{log_c}·H, 2^{log_s}·b, {params:?}");
        let (unit, scaled) = (solve(0, 0, &params), solve(log_c, log_s, &params));
        assert!(
            !unit.termination.contains(&CgTermination::Breakdown),
            "{label}"
        );
        assert_scaled_same(&label, &unit, &scaled, (log_c, log_s));
    }
}

/// Jacobi on `H` times 2⁻⁷⁰ ≈ 8e-22 with `b` times 2³⁰ ≈ 1e9 (neither rescaled for itself):
/// `M⁻¹r ≈ 1e30` is finite but the starting `rᵀM⁻¹r ≈ 2¹³⁰·rᵀM⁻¹r₁` overflows f32, so
/// `reduction_scale` could not size the system. It used to break down (non-finite).
#[test]
fn an_overflowing_starting_r_m_r_is_rescaled_to_the_unit_results() {
    assert_scaled(-70, 30, Preconditioner::Jacobi);
}

/// No preconditioner, `H` times 2⁵⁶ … 2⁶⁸ (≈ 7e16 … 3e20) with `b` times 2²⁹ ≈ 5e8: `rᵀr`
/// is in range but `pᵀHp ≈ 2^(c+58)·pᵀHp₁` overflows f32, on the first iteration for the
/// larger `H` and on later ones for the smaller (`pᵀHp/pᵀp` grows towards `H`'s largest
/// eigenvalue as CG proceeds). Such systems used to break down (non-finite).
#[test]
fn an_overflowing_p_h_p_is_rescaled_to_the_unit_results() {
    for log_c in (56..=68).step_by(2) {
        assert_scaled(log_c, 29, Preconditioner::None);
    }
}
