//! CG's rescalings on the overflow side, for f32 tensors (which reduce in f32, whose range
//! ends at ≈ 3e38): a system whose starting `rᵀM⁻¹r` or a `pᵀHp` overflows, although
//! its `b`, `H` and `M⁻¹r` are finite, is rescaled by a power of two (exact), so that the
//! results of `(2^c·H, 2^s·b)` are those of `(H, b)` times powers of two, bit for bit, as for
//! the underflow side (`cg_scale_invariance.rs`). Both used to end as non-finite breakdowns.
#![cfg(feature = "candle")]
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::cg_scale_invariance::{assert_scaled as assert_scaled_same, batch};
use candle_core::{DType, Device, Tensor};
use krylov::{CgParams, CgResult, CgTermination, DenseTensorOperator, Preconditioner, cg};

/// Plain and re-orthogonalised CG, with and without the true-residual check, at tolerances
/// f32 can and cannot meet, under `preconditioner`.
fn parameter_grid(preconditioner: Preconditioner) -> Vec<CgParams> {
    let mut grid = Vec::new();
    for rtol in [1e-4, 1e-6] {
        for (reorthogonalize, confirm) in [(false, true), (false, false), (true, true)] {
            grid.push(
                CgParams::default()
                    .with_rtol(rtol)
                    .with_preconditioner(preconditioner)
                    .with_reorthogonalize(reorthogonalize)
                    .with_confirm_with_true_residual(confirm),
            );
        }
    }
    grid
}

/// The batch of `cg_scale_invariance.rs` as f32 tensors, `H` times `2^log_c`, `b` times
/// `2^log_s` (exact in f64; the f32 rounding commutes with powers of two in range).
fn solve(log_c: i32, log_s: i32, params: &CgParams) -> CgResult<Tensor> {
    let (mats, b) = batch();
    let (d, bsz) = (mats[0].nrows(), mats.len());
    let (c, s) = (2f64.powi(log_c), 2f64.powi(log_s));
    let flat: Vec<f64> = mats
        .iter()
        .flat_map(|m| (0..d * d).map(move |k| c * m[(k / d, k % d)]))
        .collect();
    let h = Tensor::from_vec(flat, (bsz, d, d), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let op = DenseTensorOperator::new(h).unwrap();
    let bv: Vec<f64> = b.iter().map(|v| s * v).collect();
    let bt = Tensor::from_vec(bv, (bsz, d), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    cg(&op, &bt, params).unwrap()
}

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
