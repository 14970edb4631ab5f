//! Re-orthogonalised CG whose updated residual collapses until its squares underflow.
//!
//! With a tolerance of 0 (`atol = rtol = 0`, met only by an exactly zero true residual), or a
//! converged system that batch-global stopping keeps stepping, the updated residual shrinks on
//! once the stored residuals span the space, by up to `u` per iteration: in f64 it reaches
//! ~1e-160 within the default cap of `2d + 10` iterations, where its squares underflow in the
//! reductions (`‖S r‖₂`, `rᵀM⁻¹r`, then `pᵀHp`), in f32 tensors (reduced in f32) already
//! ~1e-20. CG took the resulting 0 for a breakdown and reported the internal residual,
//! although `x` was fine, or kept applying the operator to a converged system without
//! stepping. Such a system now stops there and ends on its true residual.
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchOperator, BatchVectors, CgParams, CgResult, CgStopping, CgTermination, DenseFaerOperator,
    DenseNalgebraOperator, Preconditioner, cg,
};
use nalgebra::DMatrix;

/// `bsz` random SPD systems of size `d` (condition numbers 2 to 100) and right-hand sides.
fn systems(seed: u64, d: usize, bsz: usize) -> (Vec<Mat<f64>>, Vec<f64>, Vec<f64>) {
    let mut r = rng(seed);
    let conds: Vec<f64> = (0..bsz)
        .map(|i| 2.0 * 50f64.powf(i as f64 / (bsz - 1) as f64))
        .collect();
    let mats = conds.iter().map(|c| random_spd(&mut r, d, *c).0).collect();
    (mats, gaussian(&mut r, d * bsz), conds)
}

/// Checks a tolerance-0 solve: no system broke down, each reports its true residual (as the
/// operator computes `b − Hx`, `hx` system-major), and `x` is as accurate as the precision
/// allows. Returns how many systems stopped before the cap (converged or stagnated).
fn check_zero_tolerance<V: BatchVectors>(
    label: &str,
    res: &CgResult<V>,
    hx: &[f64],
    (mats, b, conds): &(Vec<Mat<f64>>, Vec<f64>, Vec<f64>),
    u: f64,
) -> usize {
    let d = mats[0].nrows();
    let cap = 2 * d + 10;
    let x = res.x.to_host().unwrap();
    let b_used: Vec<f64> = if u < 1e-10 {
        b.clone()
    } else {
        b.iter().map(|v| f64::from(*v as f32)).collect()
    };
    let mut early = 0;
    for i in 0..mats.len() {
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
        assert!(!res.non_finite[i], "{label}: system {i}");
        early += usize::from(res.iterations[i] < cap);
        let sys = i * d..(i + 1) * d;
        // `b − Hx` in the element type, as CG forms it.
        let r_true = sys.clone().fold(0.0f64, |m, k| {
            let r = if u < 1e-10 {
                b_used[k] - hx[k]
            } else {
                f64::from(b_used[k] as f32 - hx[k] as f32)
            };
            m.max(r.abs())
        });
        assert_eq!(res.residual_norms[i], r_true, "{label}: system {i}");
        // Forward error within 2·cond·√d·u (u the type's epsilon: rounding of H, b, x and the
        // iteration; measured at most 0.22 of it in f64, 0.1 in f32).
        let xe = faer_solve(&mats[i], &b[sys.clone()]);
        let err: Vec<f64> = (0..d).map(|k| x[i * d + k] - xe[k]).collect();
        let bound = 2.0 * conds[i] * (d as f64).sqrt() * u;
        assert!(
            norm2(&err) <= bound * norm2(&xe),
            "{label}: system {i}: {:e}",
            norm2(&err) / norm2(&xe)
        );
    }
    early
}

/// f64, nalgebra and faer, with and without Jacobi: small well-conditioned systems whose
/// updated residual underflows within the default cap. They used to end as curvature
/// breakdowns (finite `rᵀM⁻¹r = 0` or `pᵀHp = 0`) reporting the updated residual (~1e-163),
/// although their true residual was ~1e-16 (here 2 of 24 with nalgebra, 3 with faer), or
/// to iterate on with subnormal reductions up to the cap; they now stop at the underflow and
/// end `Stagnated` (or `Converged`, on an exactly zero true residual) on their true residual.
/// Systems whose residual does not get that far in `2d + 10` iterations end at the cap, as
/// before.
#[test]
fn a_zero_tolerance_f64_residual_whose_squares_underflow_stops_on_its_true_residual() {
    let (d, bsz) = (3, 12);
    let data = systems(4, d, bsz);
    // The stop at the underflow is exercised (measured: 8 of 12 without Jacobi, 6 with;
    // faer 6 and 1).
    assert_zero_tolerance_stops_early_on_both_backends(&data, d, bsz);
}

/// Batch-global stopping with re-orthogonalisation in f64: a system with a two-point
/// spectrum (`1` and `1 + 1e-9`) meets the tolerance in a few iterations, then keeps stepping
/// while a cond-1e3 system converges; its residual, shrinking by ~`u` per step, underflows
/// after about a dozen. It used to stay in the batch without stepping (`pᵀHp` came out 0),
/// one operator application per pass until the end (25 applications for 14 steps); it now
/// stops there, costing one application per step plus the final check, still converged on
/// its true residual, with the same accuracy.
#[test]
fn batch_global_stops_applying_a_converged_system_whose_residual_underflowed() {
    let d = 24;
    let mut r = rng(0);
    let eigs: Vec<f64> = (0..d)
        .map(|k| if k % 2 == 0 { 1.0 } else { 1.0 + 1e-9 })
        .collect();
    let fast = spd_with_eigs(&mut r, &eigs);
    let slow = random_spd(&mut r, d, 1e3).0;
    let mats = [fast, slow];
    let b = gaussian(&mut r, 2 * d);
    let op = DenseNalgebraOperator::new(
        mats.iter()
            .map(|m| DMatrix::from_fn(d, d, |i, j| m[(i, j)]))
            .collect(),
    )
    .unwrap();
    let bv = DMatrix::from_fn(d, 2, |i, j| b[j * d + i]);
    let rtol = 1e-12;
    for pre in [Preconditioner::None, Preconditioner::Jacobi] {
        let params = CgParams::default()
            .with_rtol(rtol)
            .with_reorthogonalize(true)
            .with_stopping(CgStopping::BatchGlobal)
            .with_preconditioner(pre);
        let res = cg(&op, &bv, &params).unwrap();
        assert!(res.all_converged(), "{pre:?}: {:?}", res.termination);
        // The fast system stopped well before the slow one (the condition for the fix) …
        assert!(
            res.iterations[0] + 4 < res.iterations[1],
            "{pre:?}: {:?}",
            res.iterations
        );
        // … and was applied only for its steps and the true-residual check.
        assert_eq!(
            res.applications,
            vec![res.iterations[0] + 1, res.iterations[1] + 1],
            "{pre:?}"
        );
        let hx = op.apply(&res.x, &[true, true]).unwrap();
        for i in 0..2 {
            let bi = &b[i * d..(i + 1) * d];
            let r_true = (0..d).fold(0.0f64, |m, k| m.max((bv[(k, i)] - hx[(k, i)]).abs()));
            assert_eq!(res.residual_norms[i], r_true, "{pre:?}");
            assert!(r_true <= rtol * norm_inf(bi));
        }
    }
}

/// The floor each backend reports: the nalgebra and faer backends accumulate dot products
/// in f64 whatever the element type; candle tensors reduce in f64 for f64, in f32 otherwise.
#[test]
fn reduction_floors_follow_the_accumulation_type() {
    assert_eq!(
        DMatrix::<f32>::zeros(2, 1).reduction_min_positive(),
        f64::MIN_POSITIVE
    );
    assert_eq!(
        DMatrix::<f64>::zeros(2, 1).reduction_min_positive(),
        f64::MIN_POSITIVE
    );
    assert_eq!(
        Mat::<f32>::zeros(2, 1).reduction_min_positive(),
        f64::MIN_POSITIVE
    );
    #[cfg(feature = "candle")]
    {
        use candle_core::{DType, Device, Tensor};
        let t = Tensor::zeros((1, 2), DType::F64, &Device::Cpu).unwrap();
        assert_eq!(t.reduction_min_positive(), f64::MIN_POSITIVE);
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let t = t.to_dtype(dtype).unwrap();
            let floor = f64::from(f32::MIN_POSITIVE);
            assert_eq!(t.reduction_min_positive(), floor, "{dtype:?}");
        }
    }
}

/// The candle backend takes the same path, in f64 and in f32 (whose reductions run in f32,
/// so the squares underflow once the residual is ~1e-20: every system of this batch used to
/// end as a breakdown right after `d` iterations).
#[cfg(feature = "candle")]
#[test]
fn tensor_cg_at_zero_tolerance_stops_on_its_true_residual() {
    use candle_core::{DType, Device, Tensor};
    use krylov::DenseTensorOperator;
    let (d, bsz) = (6, 12);
    let data = systems(2, d, bsz);
    let (mats, b, _) = &data;
    let all = vec![true; bsz];
    for (dtype, u) in [
        (DType::F64, f64::EPSILON),
        (DType::F32, f64::from(f32::EPSILON)),
    ] {
        let flat: Vec<f64> = mats
            .iter()
            .flat_map(|m| (0..d * d).map(move |k| m[(k / d, k % d)]))
            .collect();
        let h = Tensor::from_vec(flat, (bsz, d, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let op = DenseTensorOperator::new(h).unwrap();
        let bt = Tensor::from_vec(b.clone(), (bsz, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for pre in [Preconditioner::None, Preconditioner::Jacobi] {
            let params = CgParams::default()
                .with_rtol(0.0)
                .with_reorthogonalize(true)
                .with_preconditioner(pre);
            let res = cg(&op, &bt, &params).unwrap();
            let hx = op.apply(&res.x, &all).unwrap().to_host().unwrap();
            let label = format!("{dtype:?} {pre:?}");
            let early = check_zero_tolerance(&label, &res, &hx, &data, u);
            // f32: every system stops at the underflow; f64: measured 4 of 12 without
            // Jacobi, 6 with.
            let expected = if dtype == DType::F32 { bsz } else { 1 };
            assert!(early >= expected, "{label}: {:?}", res.iterations);
        }
    }
}

/// f64 at tolerance 0 with `d ≥ ~50`: once the `d` stored residuals span the space the
/// updated residual is rounding noise, which shrinks by ≈ `u` per iteration but here bottoms
/// out above the underflow (≈ 1e-151) and then, orthogonalised against an over-complete
/// basis, grows by 10–1000 per iteration until `p` overflows: such systems (here 2 to 5 of 6
/// per backend and preconditioner) used to end as NaN breakdowns (`non_finite`) after ≈ 117
/// iterations, reporting an updated residual of 3e1–9e8, although `x` was accurate (true
/// residual ≈ 1e-13). A residual that grows past twice its least after more than `d`
/// iterations now stops the system there (after 64–68 iterations, like those whose residual
/// underflows), `Stagnated` on its true residual.
#[test]
fn a_zero_tolerance_residual_growing_out_of_an_overcomplete_basis_stops_on_its_true_residual() {
    let (d, bsz) = (56, 6);
    let mut r = rng(12);
    let conds: Vec<f64> = (0..bsz)
        .map(|i| 100.0 * 100f64.powf(i as f64 / (bsz - 1) as f64))
        .collect();
    let mats: Vec<Mat<f64>> = conds.iter().map(|c| random_spd(&mut r, d, *c).0).collect();
    let data = (mats, gaussian(&mut r, d * bsz), conds);
    assert_zero_tolerance_stops_early_on_both_backends(&data, d, bsz);
}

/// Re-orthogonalised CG at tolerance 0 on the f64 systems `data` (`bsz` systems of size
/// `d`), without and with Jacobi, on the nalgebra and faer backends: every system passes
/// [`check_zero_tolerance`], and at least one of each solve stops early (at the floor).
fn assert_zero_tolerance_stops_early_on_both_backends(
    data: &(Vec<Mat<f64>>, Vec<f64>, Vec<f64>),
    d: usize,
    bsz: usize,
) {
    let (mats, b, _) = data;
    let nal = DenseNalgebraOperator::new(
        mats.iter()
            .map(|m| DMatrix::from_fn(d, d, |i, j| m[(i, j)]))
            .collect(),
    )
    .unwrap();
    let fa = DenseFaerOperator::new(mats.clone()).unwrap();
    let all = vec![true; bsz];
    for pre in [Preconditioner::None, Preconditioner::Jacobi] {
        let params = CgParams::default()
            .with_rtol(0.0)
            .with_reorthogonalize(true)
            .with_preconditioner(pre);
        let bv = DMatrix::from_fn(d, bsz, |i, j| b[j * d + i]);
        let res = cg(&nal, &bv, &params).unwrap();
        let hx = nal.apply(&res.x, &all).unwrap().to_host().unwrap();
        let early =
            check_zero_tolerance(&format!("nalgebra {pre:?}"), &res, &hx, data, f64::EPSILON);
        assert!(early >= 1, "nalgebra {pre:?}: {:?}", res.iterations);

        let bv = faer_batch(b, d, bsz, |v| v);
        let res = cg(&fa, &bv, &params).unwrap();
        let hx = fa.apply(&res.x, &all).unwrap().to_host().unwrap();
        let early = check_zero_tolerance(&format!("faer {pre:?}"), &res, &hx, data, f64::EPSILON);
        assert!(early >= 1, "faer {pre:?}: {:?}", res.iterations);
    }
}
