//! Plain CG (no re-orthogonalisation) whose updated residual shrinks until the reductions
//! underflow, and the genuine breakdowns that must stay breakdowns.
//!
//! With a tolerance of 0 plain CG's updated residual shrinks on past the accuracy of `x`,
//! until `rᵀM⁻¹r` or `pᵀHp` come out 0 (f64: `‖r‖ ≈ 1e-162`; f32 tensors, reduced in f32:
//! ≈ 1e-23; f32 storage: `M⁻¹r` or `Hp` flush to 0 in the subnormals). That used to end the
//! system as a curvature breakdown reporting the updated residual, although `x` was fine. It
//! now stops once `rᵀM⁻¹r` is subnormal (or 0 by underflow), like re-orthogonalised CG, and
//! ends `Stagnated` (or `Converged`) on its true residual, computed for it even without
//! `confirm_with_true_residual`.
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchOperator, BatchVectors, CgParams, CgResult, CgTermination, DenseFaerOperator,
    DenseNalgebraOperator, KrylovError, Preconditioner, Real, WithPreconditioner, cg,
    cg_with_initial_guess,
};
use nalgebra::DMatrix;

/// `bsz` random SPD systems of size `d` (condition numbers log-spaced from 2 to 100) and
/// right-hand sides.
struct Batch {
    d: usize,
    mats: Vec<Mat<f64>>,
    conds: Vec<f64>,
    b: Vec<f64>,
}

fn batch(seed: u64, d: usize, bsz: usize) -> Batch {
    let mut r = rng(seed);
    let conds: Vec<f64> = (0..bsz)
        .map(|i| 2.0 * 50f64.powf(i as f64 / (bsz - 1) as f64))
        .collect();
    let mats = conds.iter().map(|c| random_spd(&mut r, d, *c).0).collect();
    let b = gaussian(&mut r, d * bsz);
    Batch { d, mats, conds, b }
}

/// The iteration cap of these solves: plain CG needs `d + 10` to `12 d` iterations to take
/// its updated residual down to the underflow (the default `2 d + 10` reaches it only for
/// the better conditioned systems).
fn cap(d: usize) -> usize {
    12 * d + 10
}

/// Checks a tolerance-0 solve: no system broke down; each one that ended `Stagnated`, and
/// with `confirm` every one, reports its true residual (as the operator computes `b − Hx`,
/// `hx` system-major, in the element type: `u` tells f64 from f32); `x` is as accurate as the
/// precision allows. Returns how many systems stopped at the floor (`Stagnated`).
fn check_floor<V: BatchVectors>(
    label: &str,
    res: &CgResult<V>,
    hx: &[f64],
    data: &Batch,
    u: f64,
    confirm: bool,
) -> usize {
    let d = data.d;
    let x = res.x.to_host().unwrap();
    let single = u > 1e-10;
    let mut stagnated = 0;
    for i in 0..data.mats.len() {
        let t = res.termination[i];
        assert!(
            matches!(
                t,
                CgTermination::Converged | CgTermination::Stagnated | CgTermination::MaxIterations
            ),
            "{label}: system {i} ended {t:?} after {} iterations (residual {:e})",
            res.iterations[i],
            res.residual_norms[i]
        );
        if t == CgTermination::Stagnated {
            stagnated += 1;
            assert!(res.iterations[i] < cap(d), "{label}: system {i}");
        }
        if t == CgTermination::Stagnated || confirm {
            let r_true = (i * d..(i + 1) * d).fold(0.0f64, |m, k| {
                let r = if single {
                    f64::from(data.b[k] as f32 - hx[k] as f32)
                } else {
                    data.b[k] - hx[k]
                };
                m.max(r.abs())
            });
            assert_eq!(res.residual_norms[i], r_true, "{label}: system {i}");
        }
        // Forward error within 2·cond·√d·u (rounding of H, b, x and the iteration; measured
        // at most 0.54 of cond·√d·u over these batches, the same as before the fix: only the
        // ending and the reported residual changed).
        let xe = faer_solve(&data.mats[i], &data.b[i * d..(i + 1) * d]);
        let err: Vec<f64> = (0..d).map(|k| x[i * d + k] - xe[k]).collect();
        let bound = 2.0 * data.conds[i] * (d as f64).sqrt() * u;
        assert!(
            norm2(&err) <= bound * norm2(&xe),
            "{label}: system {i}: {:e}",
            norm2(&err) / norm2(&xe)
        );
    }
    stagnated
}

/// Tolerance 0 with `preconditioner`, with and without the true-residual check.
fn zero_tolerance(preconditioner: Preconditioner, confirm: bool, d: usize) -> CgParams {
    CgParams::default()
        .with_rtol(0.0)
        .with_max_iters(cap(d))
        .with_preconditioner(preconditioner)
        .with_confirm_with_true_residual(confirm)
}

/// Solves `data` at tolerance 0 with nalgebra in `T`; a supplied preconditioner is the
/// inverse diagonal (Jacobi by hand). Returns the result and `H x` (system-major).
fn solve_nalgebra<T>(data: &Batch, params: &CgParams) -> (CgResult<DMatrix<T>>, Vec<f64>)
where
    T: Real + nalgebra::Scalar + nalgebra::RealField,
{
    let (d, bsz) = (data.d, data.mats.len());
    let mats: Vec<DMatrix<T>> = data
        .mats
        .iter()
        .map(|m| DMatrix::from_fn(d, d, |i, j| T::lossy_from_f64(m[(i, j)])))
        .collect();
    let inverse_diagonal = DMatrix::from_fn(d, bsz, |i, j| {
        T::lossy_from_f64(1.0 / T::lossy_from_f64(data.mats[j][(i, i)]).into_f64())
    });
    let op = WithPreconditioner::new(
        DenseNalgebraOperator::new(mats).unwrap(),
        move |r: &DMatrix<T>, _: &[bool]| -> Result<DMatrix<T>, KrylovError> {
            r.mul_elementwise(&inverse_diagonal)
        },
    );
    let b = DMatrix::from_fn(d, bsz, |i, j| T::lossy_from_f64(data.b[j * d + i]));
    let res = cg(&op, &b, params).unwrap();
    let hx = op.apply(&res.x, &vec![true; bsz]).unwrap();
    (res, hx.to_host().unwrap())
}

/// f64 and f32, nalgebra and faer, no preconditioner, Jacobi and a supplied (diagonal)
/// `M⁻¹`, with and without the true-residual check: the systems whose updated residual
/// underflows within the cap used to end as curvature breakdowns reporting the updated
/// residual (here every f64 system; in f32 storage 5 to 7 of 8 with Jacobi or the supplied
/// `M⁻¹`, whose `M⁻¹r` flushes to 0, and 1 without, where the residual itself mostly flushed
/// to exactly 0 and read as converged). Every system now ends `Stagnated` on its true
/// residual, a few iterations earlier, as accurate as before (forward error at most 0.54 of
/// `cond·√d·u` before and after).
#[test]
fn plain_cg_whose_reductions_underflow_stops_on_its_true_residual() {
    let (d, bsz) = (4, 8);
    let data = batch(5, d, bsz);
    let all = vec![true; bsz];
    for confirm in [true, false] {
        for pre in [
            Preconditioner::None,
            Preconditioner::Jacobi,
            Preconditioner::Supplied,
        ] {
            let params = zero_tolerance(pre, confirm, d);
            let label = format!("{pre:?} confirm {confirm}");
            let (res, hx) = solve_nalgebra::<f64>(&data, &params);
            let early = check_floor(
                &format!("nalgebra f64 {label}"),
                &res,
                &hx,
                &data,
                f64::EPSILON,
                confirm,
            );
            assert!(early >= 1, "nalgebra f64 {label}: {:?}", res.iterations);
            let (res, hx) = solve_nalgebra::<f32>(&data, &params);
            let u32 = f64::from(f32::EPSILON);
            // f32 storage stops at the floor too (`‖M^{-1/2} r‖₂` in f32's subnormals).
            let early = check_floor(
                &format!("nalgebra f32 {label}"),
                &res,
                &hx,
                &data,
                u32,
                confirm,
            );
            assert!(early >= 1, "nalgebra f32 {label}: {:?}", res.iterations);
            if pre == Preconditioner::Supplied {
                continue;
            }
            let fa = DenseFaerOperator::new(data.mats.clone()).unwrap();
            let bv = faer_batch(&data.b, d, bsz, |v| v);
            let res = cg(&fa, &bv, &params).unwrap();
            let hx = fa.apply(&res.x, &all).unwrap().to_host().unwrap();
            let early = check_floor(
                &format!("faer f64 {label}"),
                &res,
                &hx,
                &data,
                f64::EPSILON,
                confirm,
            );
            assert!(early >= 1, "faer f64 {label}: {:?}", res.iterations);
            let fa = DenseFaerOperator::new(
                data.mats
                    .iter()
                    .map(|m| Mat::from_fn(d, d, |i, j| m[(i, j)] as f32))
                    .collect(),
            )
            .unwrap();
            let bv = faer_batch(&data.b, d, bsz, |v| v as f32);
            let res = cg(&fa, &bv, &params).unwrap();
            let hx = fa.apply(&res.x, &all).unwrap().to_host().unwrap();
            let early = check_floor(&format!("faer f32 {label}"), &res, &hx, &data, u32, confirm);
            assert!(early >= 1, "faer f32 {label}: {:?}", res.iterations);
        }
    }
}

/// The smallest case, exactly: `H = diag(1, 2)`, `b = (1, 1e-170)`, tolerance 0. One step
/// gives `x = b` and the updated residual `(0, −1e-170)`, whose `rᵀr = 1e-340` underflows to
/// 0: it used to end as a curvature breakdown after one iteration. It is the true residual
/// too, so it now ends `Stagnated` with it, also without the true-residual check (which
/// costs its one product). From the initial guess `(1, 0)` the initial residual
/// `(0, 1e-170)` has `rᵀr = 0` before any step: `Stagnated` after 0 iterations (it was a
/// breakdown). A tolerance far below reach but not 0 (`atol = 1e-300`) centres the range the
/// residual crosses, 1 to 1e-300, on 1 (`rᵀr` from 1e150 down to 1e-150), so this system is
/// solved exactly instead, in its two iterations; its computed true residual, 0, meets that
/// tolerance, but one below `u·(‖b‖∞ + ‖Hx‖∞)` cannot be certified by a computed residual
/// (`cg_resolution.rs`), so with the check it ends `Stagnated` (it was `Converged`); without
/// it the updated residual decides, as documented, and it is `Converged`.
#[test]
fn a_residual_whose_square_underflows_is_stagnated_not_a_breakdown() {
    let op = DenseNalgebraOperator::new(vec![nalgebra::dmatrix![1.0, 0.0; 0.0, 2.0]]).unwrap();
    let b = DMatrix::from_column_slice(2, 1, &[1.0, 1e-170]);
    for confirm in [true, false] {
        let params = CgParams::default()
            .with_rtol(0.0)
            .with_confirm_with_true_residual(confirm);
        let res = cg(&op, &b, &params).unwrap();
        assert_eq!(res.termination, vec![CgTermination::Stagnated], "{confirm}");
        assert_eq!(res.iterations, vec![1], "{confirm}");
        assert_eq!(res.residual_norms, vec![1e-170], "{confirm}");
        assert_eq!(res.x.as_slice(), &[1.0, 1e-170], "{confirm}");
        // The step and the true residual.
        assert_eq!(res.operator_calls, 2, "{confirm}");
        let x0 = DMatrix::from_column_slice(2, 1, &[1.0, 0.0]);
        let res = cg_with_initial_guess(&op, &b, &x0, &params).unwrap();
        assert_eq!(res.termination, vec![CgTermination::Stagnated], "{confirm}");
        assert_eq!(res.iterations, vec![0], "{confirm}");
        assert_eq!(res.residual_norms, vec![1e-170], "{confirm}");
        assert_eq!(res.operator_calls, 1, "{confirm}");

        let res = cg(&op, &b, &params.with_atol(1e-300)).unwrap();
        let ends = if confirm {
            CgTermination::Stagnated
        } else {
            CgTermination::Converged
        };
        assert_eq!(res.termination, vec![ends], "{confirm}");
        assert_eq!(res.residual_norms, vec![0.0], "{confirm}");
        assert_eq!(res.iterations, vec![2], "{confirm}");
        assert_eq!(res.x.as_slice(), &[1.0, 5e-171], "{confirm}");
    }
}

/// Candle tensors take the same path: f32 reduces in f32, so the squares underflow once the
/// residual is ≈ 1e-19 (`rᵀM⁻¹r`, or `pᵀHp` on a subnormal `rᵀM⁻¹r`, came out 0). Every
/// system of this batch, f64 and f32, used to end as a breakdown; all now end `Stagnated`.
#[cfg(feature = "candle")]
#[test]
fn tensor_plain_cg_whose_reductions_underflow_stops_on_its_true_residual() {
    use candle_core::{DType, Device, Tensor};
    use krylov::DenseTensorOperator;
    let (d, bsz) = (4, 8);
    let data = batch(5, d, bsz);
    let all = vec![true; bsz];
    let flat: Vec<f64> = data
        .mats
        .iter()
        .flat_map(|m| (0..d * d).map(move |k| m[(k / d, k % d)]))
        .collect();
    for (dtype, u) in [
        (DType::F64, f64::EPSILON),
        (DType::F32, f64::from(f32::EPSILON)),
    ] {
        let h = Tensor::from_vec(flat.clone(), (bsz, d, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let op = DenseTensorOperator::new(h).unwrap();
        let bt = Tensor::from_vec(data.b.clone(), (bsz, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for pre in [Preconditioner::None, Preconditioner::Jacobi] {
            for confirm in [true, false] {
                let params = zero_tolerance(pre, confirm, d);
                let res = cg(&op, &bt, &params).unwrap();
                let hx = op.apply(&res.x, &all).unwrap().to_host().unwrap();
                let label = format!("{dtype:?} {pre:?} confirm {confirm}");
                let early = check_floor(&label, &res, &hx, &data, u, confirm);
                assert!(early >= 1, "{label}: {:?}", res.iterations);
            }
        }
    }
}

/// The floor does not excuse a genuine breakdown at tolerance 0: an operator that is not
/// positive definite meets `pᵀHp ≤ 0` on a residual far above the floor (the breakdown-cause
/// systems: negative and zero curvature at once, negative curvature after one step; and an
/// indefinite `d = 12` matrix, eigenvalues ±[1, 10], after a few steps), and a supplied
/// preconditioner that is not SPD gives `rᵀM⁻¹r < 0`, or `= 0` where it is singular on a
/// residual of ordinary size (`M⁻¹ = diag(1, 0)`: after one step `r = (0, 1)`, `M⁻¹r = 0`).
/// All stay breakdowns (not `non_finite`), with and without re-orthogonalisation and the
/// true-residual check.
#[test]
fn a_genuine_breakdown_at_zero_tolerance_is_still_a_breakdown() {
    let causes = breakdown_cause_matrices(1e200);
    let curvature = [1usize, 2, 5];
    let d = 12;
    let mut r = rng(7);
    let eigs: Vec<f64> = (0..d)
        .map(|k| (1.0 + k as f64 * 9.0 / (d - 1) as f64) * if k % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let indefinite = spd_with_eigs(&mut r, &eigs);
    let indefinite = DMatrix::from_fn(d, d, |i, j| indefinite[(i, j)]);
    let b_indefinite = DMatrix::from_column_slice(d, 1, &gaussian(&mut r, d));
    for confirm in [true, false] {
        for reorthogonalize in [false, true] {
            let params = CgParams::default()
                .with_rtol(0.0)
                .with_confirm_with_true_residual(confirm)
                .with_reorthogonalize(reorthogonalize);
            let label = format!("confirm {confirm} reorthogonalize {reorthogonalize}");
            let mats = curvature
                .iter()
                .map(|&k| DMatrix::from_fn(2, 2, |i, j| causes[k][i][j]))
                .collect();
            let op = DenseNalgebraOperator::new(mats).unwrap();
            let b = DMatrix::from_element(2, curvature.len(), 1.0);
            let res = cg(&op, &b, &params).unwrap();
            assert_eq!(
                res.termination,
                vec![CgTermination::Breakdown; 3],
                "{label}"
            );
            assert_eq!(res.non_finite, vec![false; 3], "{label}");
            assert_eq!(res.iterations, vec![0, 0, 1], "{label}");

            let op = DenseNalgebraOperator::new(vec![indefinite.clone()]).unwrap();
            let res = cg(&op, &b_indefinite, &params).unwrap();
            assert_eq!(res.termination, vec![CgTermination::Breakdown], "{label}");
            assert!(!res.non_finite[0], "{label}");
            assert!(res.residual_norms[0] > 1e-3, "{label}: {res:?}");
        }
    }
    let h = nalgebra::dmatrix![1.0, 0.0; 0.0, 2.0];
    let minv = [
        nalgebra::dmatrix![1.0, 0.0; 0.0, -1.0],
        nalgebra::dmatrix![1.0, 0.0; 0.0, 0.0],
    ];
    let op = WithPreconditioner::new(
        DenseNalgebraOperator::new(vec![h.clone(), h]).unwrap(),
        move |r: &DMatrix<f64>, _: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
            Ok(DMatrix::from_fn(2, 2, |i, j| {
                (minv[j].row(i) * r.column(j))[0]
            }))
        },
    );
    // System 0 starts from r = (1, 2): rᵀM⁻¹r = 1 − 4 < 0 at once.
    let b = DMatrix::from_column_slice(2, 2, &[1.0, 2.0, 1.0, 1.0]);
    for confirm in [true, false] {
        let params = CgParams::default()
            .with_rtol(0.0)
            .with_confirm_with_true_residual(confirm)
            .with_preconditioner(Preconditioner::Supplied);
        let res = cg(&op, &b, &params).unwrap();
        assert_eq!(
            res.termination,
            vec![CgTermination::Breakdown; 2],
            "{res:?}"
        );
        assert_eq!(res.non_finite, vec![false; 2]);
        assert_eq!(res.iterations, vec![0, 1]);
        assert_eq!(res.residual_norms[1], 1.0);
    }
}
