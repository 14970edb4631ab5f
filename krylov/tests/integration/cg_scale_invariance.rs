//! CG is invariant under power-of-two scalings of `H` and `b`: every quantity it computes
//! scales exactly, so the results of `(c·H, s·b)` are those of `(H, b)` times powers of two,
//! bit for bit, as long as nothing under- or overflows. CG's own rescalings keep it so for
//! scales that would (here: f32, `H` times 2⁸⁰ ≈ 1e24 under a Jacobi preconditioner, `b`
//! times 2⁻³⁰ ≈ 1e-9, neither rescaled for itself: `M⁻¹r` and `rᵀM⁻¹r` start near 1e-42, in
//! f32's subnormals).
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use krylov::{BatchVectors, CgParams, CgResult, DenseNalgebraOperator, Preconditioner, cg};
use nalgebra::DMatrix;

/// `H` times `2^LOG_C`, `b` times `2^LOG_S`: `x` times `2^(LOG_S − LOG_C)`.
const LOG_C: i32 = 80;
const LOG_S: i32 = -30;

/// 16 random SPD systems of size 8 (condition numbers from 2 to 1e3), their diagonal spread
/// over [0.1, 10]² so that Jacobi matters.
pub(crate) fn batch() -> (Vec<Mat<f64>>, Vec<f64>) {
    let (d, bsz) = (8, 16);
    let mut r = rng(31);
    let mats = (0..bsz)
        .map(|i| {
            let cond = 2.0 * 500f64.powf(i as f64 / (bsz - 1) as f64);
            let m = random_spd(&mut r, d, cond).0;
            let sc: Vec<f64> = (0..d)
                .map(|k| 10f64.powf((k as f64 / (d - 1) as f64) * 2.0 - 1.0))
                .collect();
            Mat::from_fn(d, d, |a, b| sc[a] * m[(a, b)] * sc[b])
        })
        .collect();
    (mats, gaussian(&mut r, d * bsz))
}

/// The parameters compared: plain and re-orthogonalised CG, with and without the
/// true-residual check, at tolerances f32 can and cannot meet, under `preconditioner`.
pub(crate) fn parameter_grid(preconditioner: Preconditioner) -> Vec<CgParams> {
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

/// Asserts that `scaled`, the solve of `(2^log_c·H, 2^log_s·b)`, is `unit` with `x` times
/// `2^(log_s − log_c)` and the residual norms times `2^log_s`, everything else equal.
pub(crate) fn assert_scaled<V: BatchVectors>(
    label: &str,
    unit: &CgResult<V>,
    scaled: &CgResult<V>,
    (log_c, log_s): (i32, i32),
) {
    assert_eq!(scaled.termination, unit.termination, "{label}");
    assert_eq!(scaled.iterations, unit.iterations, "{label}");
    assert_eq!(scaled.applications, unit.applications, "{label}");
    let factor = 2f64.powi(log_s - log_c);
    let (xu, xs) = (unit.x.to_host().unwrap(), scaled.x.to_host().unwrap());
    for k in 0..xu.len() {
        assert_eq!(xs[k], xu[k] * factor, "{label}: entry {k}");
    }
    for i in 0..unit.residual_norms.len() {
        let expected = unit.residual_norms[i] * 2f64.powi(log_s);
        assert_eq!(scaled.residual_norms[i], expected, "{label}: system {i}");
    }
}

/// f32 storage with f64 reductions (nalgebra): `M⁻¹r` is formed in f32, in its subnormals
/// here; the scaled solves used to lose digits there (the same terminations, but `x` and the
/// residuals differed from the unit ones in the last digits).
#[test]
fn an_extreme_power_of_two_scale_gives_the_unit_results_in_f32_storage() {
    let (mats, b) = batch();
    let (d, bsz) = (mats[0].nrows(), mats.len());
    let solve = |log_c: i32, log_s: i32, params: &CgParams| {
        let (c, s) = (2f64.powi(log_c), 2f64.powi(log_s));
        let op = DenseNalgebraOperator::new(
            mats.iter()
                .map(|m| DMatrix::from_fn(d, d, |i, j| (c * m[(i, j)]) as f32))
                .collect(),
        )
        .unwrap();
        let bv = DMatrix::from_fn(d, bsz, |i, j| (s * b[j * d + i]) as f32);
        cg(&op, &bv, params).unwrap()
    };
    for params in parameter_grid(Preconditioner::Jacobi) {
        let label = format!("{params:?}");
        assert_scaled(
            &label,
            &solve(0, 0, &params),
            &solve(LOG_C, LOG_S, &params),
            (LOG_C, LOG_S),
        );
    }
}

/// f32 tensors reduce in f32: `rᵀM⁻¹r` itself is subnormal or 0. The scaled systems used to
/// end as breakdowns (plain CG at `rtol = 1e-4`: all 16, against 15 converged at unit
/// scale).
#[cfg(feature = "candle")]
#[test]
fn an_extreme_power_of_two_scale_gives_the_unit_results_for_f32_tensors() {
    let solve = solve_f32_tensors;
    for params in parameter_grid(Preconditioner::Jacobi) {
        let label = format!("{params:?}");
        assert_scaled(
            &label,
            &solve(0, 0, &params),
            &solve(LOG_C, LOG_S, &params),
            (LOG_C, LOG_S),
        );
    }
}

/// [`batch`] as f32 tensors, `H` times `2^log_c`, `b` times `2^log_s` (exact in f64; the f32
/// rounding commutes with powers of two in range), solved by CG with `params`.
#[cfg(feature = "candle")]
pub(crate) fn solve_f32_tensors(
    log_c: i32,
    log_s: i32,
    params: &CgParams,
) -> CgResult<candle_core::Tensor> {
    use candle_core::{DType, Device, Tensor};
    use krylov::DenseTensorOperator;
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
