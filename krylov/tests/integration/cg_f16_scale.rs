//! CG on f16 tensors, whose range is narrow (normal numbers from 6.1e-5 to 65504): every
//! right-hand side is normalised by a power of two (exact) before the operator sees it, so
//! that a power-of-two scale of `b` gives the results of the unit scale bit for bit, and
//! moderately scaled systems (`H·p` beyond 65504 at the given scale, or residuals in f16's
//! subnormals) solve as well as unit-scale ones. They used to break down (non-finite).
#![cfg(feature = "candle")]
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use krylov::{
    BatchVectors, CgParams, CgResult, CgTermination, DenseTensorOperator, Preconditioner, cg,
};

/// 16 random SPD systems of size `d`, condition numbers from 2 to 32 (eigenvalues in
/// `[1, 32]`), and a Gaussian right-hand side (‖b_i‖∞ ≈ 1.5 to 4).
fn batch(d: usize) -> (Vec<Mat<f64>>, Vec<f64>) {
    let bsz = 16;
    let mut r = rng(7 + d as u64);
    let mats = (0..bsz)
        .map(|i| random_spd(&mut r, d, 2.0 + 30.0 * i as f64 / bsz as f64).0)
        .collect();
    (mats, gaussian(&mut r, d * bsz))
}

/// `values` as a `shape` f16 tensor (each value rounded to nearest f16).
fn f16_tensor(values: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
}

/// `c·H_i` as one `(B, d, d)` f16 operator.
fn f16_operator(mats: &[Mat<f64>], c: f64) -> DenseTensorOperator {
    let d = mats[0].nrows();
    let flat: Vec<f64> = mats
        .iter()
        .flat_map(|m| (0..d * d).map(move |k| c * m[(k / d, k % d)]))
        .collect();
    DenseTensorOperator::new(f16_tensor(flat, &[mats.len(), d, d])).unwrap()
}

/// Plain and re-orthogonalised CG, without and with Jacobi, at the tolerances f16 can
/// (1e-2) and can only sometimes (1e-3) meet.
fn parameter_grid() -> Vec<CgParams> {
    let mut grid = Vec::new();
    for rtol in [1e-2, 1e-3] {
        for pre in [Preconditioner::None, Preconditioner::Jacobi] {
            for reorth in [false, true] {
                grid.push(
                    CgParams::default()
                        .with_rtol(rtol)
                        .with_preconditioner(pre)
                        .with_reorthogonalize(reorth),
                );
            }
        }
    }
    grid
}

/// Asserts that `scaled`, the solve for `2^log_s·b`, is `unit` with `x` times `2^log_s` and
/// the residual norms times `2^log_s`, everything else equal. Both `x` are the solver's one
/// internal iterate unscaled by a power of two, rounded to f16 (entries that land in f16's
/// subnormals lose bits there): the one at the smaller scale is the one at the larger scale
/// times the power of two between them, rounded to f16.
fn assert_scaled(label: &str, unit: &CgResult<Tensor>, scaled: &CgResult<Tensor>, log_s: i32) {
    assert_eq!(scaled.termination, unit.termination, "{label}");
    assert_eq!(scaled.iterations, unit.iterations, "{label}");
    assert_eq!(scaled.applications, unit.applications, "{label}");
    let (large, small) = if log_s > 0 {
        (&scaled.x, &unit.x)
    } else {
        (&unit.x, &scaled.x)
    };
    let factor = 2f64.powi(-log_s.abs());
    let down: Vec<f64> = large
        .to_host()
        .unwrap()
        .iter()
        .map(|v| v * factor)
        .collect();
    let n = down.len();
    let expected = f16_tensor(down, &[n]).to_host().unwrap();
    let found = small.to_host().unwrap();
    for k in 0..n {
        assert_eq!(found[k], expected[k], "{label}: entry {k}");
    }
    let factor = 2f64.powi(log_s);
    for i in 0..unit.residual_norms.len() {
        let expected = unit.residual_norms[i] * factor;
        assert_eq!(scaled.residual_norms[i], expected, "{label}: system {i}");
    }
}

/// `H` times `2^log_c`, `b` times `2^log_s` (both rounded to f16 at that scale): the result
/// is that of `b` brought back to unit scale (`2^-log_s` times the f16 values, exact even
/// for entries that were rounded into f16's subnormals), times `2^log_s`, bit for bit.
/// `(10, 7)`: `H·b` reaches ≈ 2¹⁰·32·2⁷·4 = 2²⁴, far beyond 65504, and every system used to
/// break down at once without a preconditioner; `(0, -13)`: `b ≈ 1e-4`, residuals in f16's
/// subnormals, re-orthogonalised CG used to break down (non-finite) on most systems;
/// `(0, 11)`: `H·b ≈ 2¹⁸`.
#[test]
fn a_power_of_two_scale_of_b_gives_the_unit_results_in_f16() {
    for d in [6, 16] {
        let (mats, b) = batch(d);
        let bsz = mats.len();
        for (log_c, log_s) in [(10, 7), (0, -13), (0, 11)] {
            let op = f16_operator(&mats, 2f64.powi(log_c));
            let s = 2f64.powi(log_s);
            let scaled_b = f16_tensor(b.iter().map(|v| s * v).collect(), &[bsz, d]);
            let unit_b: Vec<f64> = scaled_b.to_host().unwrap().iter().map(|v| v / s).collect();
            let unit_b = f16_tensor(unit_b, &[bsz, d]);
            for params in parameter_grid() {
                let label = format!("d = {d}, 2^{log_c}·H, 2^{log_s}·b, {params:?}");
                let unit = cg(&op, &unit_b, &params).unwrap();
                // The unit solve is an ordinary one: no breakdown.
                assert!(
                    !unit.termination.contains(&CgTermination::Breakdown),
                    "{label}: {:?}",
                    unit.termination
                );
                let scaled = cg(&op, &scaled_b, &params).unwrap();
                assert_scaled(&label, &unit, &scaled, log_s);
            }
        }
    }
}

/// The relative 2-norm errors `‖x_i − x*_i‖₂ / ‖x*_i‖₂`, `x*` the dense f64 solve of the
/// f16-rounded `H` and `b` the solver saw.
fn errors(op: &DenseTensorOperator, b: &Tensor, res: &CgResult<Tensor>) -> Vec<f64> {
    let (bsz, d) = (b.n_systems(), b.system_dim());
    let h = op.matrices().to_dtype(DType::F64).unwrap();
    let h = h.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (bh, x) = (b.to_host().unwrap(), res.x.to_host().unwrap());
    (0..bsz)
        .map(|i| {
            let m = Mat::from_fn(d, d, |r, c| h[i * d * d + r * d + c]);
            let exact = faer_solve(&m, &bh[i * d..(i + 1) * d]);
            let err: Vec<f64> = (0..d).map(|k| x[i * d + k] - exact[k]).collect();
            norm2(&err) / norm2(&exact)
        })
        .collect()
}

/// The largest of [`errors`] over the systems that converged, and how many did.
fn converged_error(op: &DenseTensorOperator, b: &Tensor, res: &CgResult<Tensor>) -> (f64, usize) {
    let worst = errors(op, b, res)
        .into_iter()
        .zip(&res.converged)
        .filter(|(_, c)| **c)
        .fold(0.0, |w: f64, (e, _)| w.max(e));
    (worst, res.converged.iter().filter(|c| **c).count())
}

/// Scales that are not powers of two (`H` times 1e3 with `b` times 1e2: `H·b ≈ 1e6`, beyond
/// 65504; `b` times 1e-4, in f16's subnormals near the tolerance) at rtol 1e-2: no
/// breakdown, as many systems converge as at unit scale (give or take one in 16: the f16
/// rounding of the scaled data differs), and the converged ones are as accurate. Bound:
/// the unit-scale solves measure a relative error of 1.1e-2 to 1.3e-2 (rtol 1e-2 in `‖r‖∞`
/// with κ ≤ 32, plus the f16 rounding, u = 4.9e-4, of every product; checked ≤ 1.5e-2), the
/// scaled ones 1.15e-2 to 1.3e-2; 5e-2 leaves a factor > 3. The old code broke down on
/// every system at `(1e3, 1e2)` without a preconditioner and on most re-orthogonalised ones
/// at `b·1e-4` (non-finite).
#[test]
fn moderately_scaled_f16_systems_solve_like_unit_ones() {
    let d = 16;
    let (mats, b) = batch(d);
    let bsz = mats.len();
    for params in parameter_grid().into_iter().filter(|p| p.rtol == 1e-2) {
        let unit_op = f16_operator(&mats, 1.0);
        let unit_b = f16_tensor(b.clone(), &[bsz, d]);
        let unit = cg(&unit_op, &unit_b, &params).unwrap();
        let (unit_err, unit_conv) = converged_error(&unit_op, &unit_b, &unit);
        assert!(
            unit_err <= 1.5e-2 && unit_conv >= bsz - 1,
            "{params:?}: {unit_err:e}"
        );
        for (c, s) in [(1e3, 1e2), (1.0, 1e-4)] {
            let label = format!("{c:e}·H, {s:e}·b, {params:?}");
            let op = f16_operator(&mats, c);
            let bt = f16_tensor(b.iter().map(|v| s * v).collect(), &[bsz, d]);
            let res = cg(&op, &bt, &params).unwrap();
            assert!(
                !res.termination.contains(&CgTermination::Breakdown),
                "{label}: {:?}",
                res.termination
            );
            let (err, conv) = converged_error(&op, &bt, &res);
            assert!(conv + 1 >= unit_conv, "{label}: {conv} against {unit_conv}");
            assert!(err <= 5e-2, "{label}: {err:e}");
        }
    }
}

/// At tolerance 0, re-orthogonalised f16 CG stops each system where `1/‖r‖` would overflow
/// f16 (‖r‖ below ≈ 1.5e-5, in its subnormals) and ends it on its true residual, converged
/// or stagnated, instead of normalising the residual to ±Inf and breaking down (non-finite).
/// Its `x` is then as accurate as f16 allows: relative error ≲ κ·u = 32·4.9e-4 ≈ 1.6e-2
/// (measured ≤ 1.9e-3; bound 1.5e-2). The old code broke down (non-finite) on these.
#[test]
fn f16_cg_at_zero_tolerance_stops_at_the_floor() {
    let d = 6;
    let (mats, b) = batch(d);
    let bsz = mats.len();
    let op = f16_operator(&mats, 1.0);
    let bt = f16_tensor(b, &[bsz, d]);
    for pre in [Preconditioner::None, Preconditioner::Jacobi] {
        let params = CgParams::default()
            .with_rtol(0.0)
            .with_reorthogonalize(true)
            .with_preconditioner(pre);
        let res = cg(&op, &bt, &params).unwrap();
        assert!(
            !res.termination.contains(&CgTermination::Breakdown),
            "{pre:?}: {:?}",
            res.termination
        );
        let worst = errors(&op, &bt, &res).into_iter().fold(0.0, f64::max);
        assert!(worst <= 1.5e-2, "{pre:?}: {worst:e}");
    }
}
