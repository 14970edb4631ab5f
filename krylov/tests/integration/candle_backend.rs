//! The candle `Tensor` backend (feature `candle`): CG and Lanczos on `(B, d)` tensors in f32
//! and f64, closures over tensors as operators, and the dense `(B, d, d)` tensor operator.
#![cfg(feature = "candle")]
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use krylov::{
    BatchOperator, BatchVectors, CgParams, CgStopping, DenseFaerOperator, DenseTensorOperator,
    FnOperator, KrylovError, LanczosParams, Preconditioner, cg, cg_with_initial_guess, lanczos,
};
use std::cell::RefCell;

fn tensor_mats(mats: &[Mat<f64>], dtype: DType) -> Tensor {
    let d = mats[0].nrows();
    let data: Vec<f64> = mats
        .iter()
        .flat_map(|m| (0..d * d).map(move |k| m[(k / d, k % d)]))
        .collect();
    Tensor::from_vec(data, (mats.len(), d, d), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn tensor_batch(data: &[f64], bsz: usize, d: usize, dtype: DType) -> Tensor {
    Tensor::from_vec(data.to_vec(), (bsz, d), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// CG on tensors agrees with faer's dense solve: f64 to the bound implied by the residual
/// tolerance (‖x − x*‖₂ ≤ √d·tol/λ_min, with λ_min = 1 here), f32 with rtol 1e-4 at cond ≤ 1e3
/// (attainable: u₃₂·cond ≈ 1e-4), checked through the relative forward error ≤ cond·√d·2e-4.
#[test]
fn tensor_cg_matches_faer_f64_and_f32() {
    let mut r = rng(31);
    let (d, bsz) = (24, 16);
    let mats: Vec<Mat<f64>> = (0..bsz)
        .map(|i| random_spd(&mut r, d, 10f64.powf(3.0 * i as f64 / bsz as f64)).0)
        .collect();
    let b = gaussian(&mut r, d * bsz);
    for (dtype, rtol, slack) in [(DType::F64, 1e-10, 1e-8), (DType::F32, 1e-4, 2e-4)] {
        let op = DenseTensorOperator::new(tensor_mats(&mats, dtype)).unwrap();
        let res = cg(
            &op,
            &tensor_batch(&b, bsz, d, dtype),
            &CgParams::default().with_rtol(rtol),
        )
        .unwrap();
        assert!(res.all_converged(), "{dtype:?}: {:?}", res.residual_norms);
        assert_eq!(res.x.dtype(), dtype);
        let x = res.x.to_host().unwrap();
        for i in 0..bsz {
            let xe = faer_solve(&mats[i], &b[i * d..(i + 1) * d]);
            let err = norm2(
                &xe.iter()
                    .zip(&x[i * d..(i + 1) * d])
                    .map(|(a, c)| a - c)
                    .collect::<Vec<_>>(),
            );
            let cond = 10f64.powf(3.0 * i as f64 / bsz as f64);
            assert!(
                err <= slack * cond * (d as f64).sqrt() * norm2(&xe).max(1.0),
                "{dtype:?} system {i}: {err}"
            );
        }
    }
}

/// A closure over tensors is an operator (the use case of cpflow / convex-opt): it receives the
/// active mask, and converged rows get no further work. Batch-global stopping charges everyone.
#[test]
fn closure_operator_over_tensors_freezes_converged_rows() {
    let mut r = rng(32);
    let (d, bsz) = (16, 4);
    let mut mats: Vec<Mat<f64>> = (0..bsz).map(|_| random_spd(&mut r, d, 1e3).0).collect();
    mats[0] = Mat::identity(d, d);
    let h = tensor_mats(&mats, DType::F64);
    let seen = RefCell::new(vec![0usize; bsz]);
    let op = FnOperator::new(
        |x: &Tensor, active: &[bool]| -> Result<Tensor, KrylovError> {
            for (s, a) in seen.borrow_mut().iter_mut().zip(active) {
                *s += usize::from(*a);
            }
            Ok(h.matmul(&x.unsqueeze(2)?)?.squeeze(2)?)
        },
    );
    let b = tensor_batch(&gaussian(&mut r, d * bsz), bsz, d, DType::F64);
    let res = cg(&op, &b, &CgParams::default().with_rtol(1e-10)).unwrap();
    assert!(res.all_converged());
    assert_eq!(res.iterations[0], 1);
    assert_eq!(*seen.borrow(), res.applications);

    seen.borrow_mut().fill(0);
    let glob = cg(
        &op,
        &b,
        &CgParams::default()
            .with_rtol(1e-10)
            .with_stopping(CgStopping::BatchGlobal),
    )
    .unwrap();
    assert!(glob.all_converged());
    assert_eq!(*seen.borrow(), vec![glob.operator_calls; bsz]);
    assert!(glob.total_applications() > res.total_applications());
}

/// The dense tensor operator gathers only active rows when few are active (inactive output
/// rows are then zero) and computes everything otherwise; it provides its diagonal for Jacobi;
/// the warm start x0 = b works on tensors.
#[test]
fn dense_tensor_operator_masking_diagonal_and_warm_start() {
    let mut r = rng(33);
    let (d, bsz) = (10, 8);
    let mats: Vec<Mat<f64>> = (0..bsz).map(|_| random_spd(&mut r, d, 100.0).0).collect();
    let op = DenseTensorOperator::new(tensor_mats(&mats, DType::F32)).unwrap();
    let x = tensor_batch(&gaussian(&mut r, d * bsz), bsz, d, DType::F32);
    let xh = x.to_host().unwrap();
    let few: Vec<bool> = (0..bsz).map(|i| i == 2).collect();
    let many: Vec<bool> = (0..bsz).map(|i| i != 5).collect();
    for mask in [few, many] {
        let y = op.apply(&x, &mask).unwrap().to_host().unwrap();
        for i in 0..bsz {
            let yi = &y[i * d..(i + 1) * d];
            if mask[i] {
                let expected = matvec(&mats[i], &xh[i * d..(i + 1) * d]);
                for k in 0..d {
                    assert!((yi[k] - expected[k]).abs() < 1e-4 * (1.0 + expected[k].abs()));
                }
            } else if mask.iter().filter(|a| **a).count() * 4 <= bsz {
                assert!(yi.iter().all(|v| *v == 0.0));
            }
        }
    }
    let diag = op.diagonal().unwrap().unwrap().to_host().unwrap();
    for i in 0..bsz {
        for k in 0..d {
            assert!((diag[i * d + k] - mats[i][(k, k)]).abs() < 1e-5 * mats[i][(k, k)]);
        }
    }
    let op64 = DenseTensorOperator::new(tensor_mats(&mats, DType::F64)).unwrap();
    let b = tensor_batch(&gaussian(&mut r, d * bsz), bsz, d, DType::F64);
    let p = CgParams::default()
        .with_rtol(1e-10)
        .with_preconditioner(Preconditioner::Jacobi);
    let res = cg_with_initial_guess(&op64, &b, &b, &p).unwrap();
    assert!(res.all_converged());
    // The initial residual, the iterations, and the check of the true residual.
    assert!(
        res.applications
            .iter()
            .zip(&res.iterations)
            .all(|(a, i)| *a == i + 2)
    );
}

/// Lanczos on tensors gives the same tridiagonal coefficients as the faer backend (f64), and
/// runs in f32.
#[test]
fn tensor_lanczos_matches_faer() {
    let mut r = rng(34);
    let (d, bsz) = (20, 5);
    let mats: Vec<Mat<f64>> = (0..bsz).map(|_| random_spd(&mut r, d, 1e3).0).collect();
    let v = gaussian(&mut r, d * bsz);
    let p = LanczosParams::default()
        .with_steps(12)
        .with_store_basis(true);
    let reference = lanczos(
        &DenseFaerOperator::new(mats.clone()).unwrap(),
        &faer_batch(&v, d, bsz, |x| x),
        &p,
    )
    .unwrap();
    let ours = lanczos(
        &DenseTensorOperator::new(tensor_mats(&mats, DType::F64)).unwrap(),
        &tensor_batch(&v, bsz, d, DType::F64),
        &p,
    )
    .unwrap();
    for i in 0..bsz {
        assert_eq!(ours.sizes[i], 12);
        for k in 0..12 {
            assert!((ours.alphas[i][k] - reference.alphas[i][k]).abs() < 1e-9 * 1e3);
        }
        for k in 0..11 {
            assert!((ours.betas[i][k] - reference.betas[i][k]).abs() < 1e-9 * 1e3);
        }
    }
    assert_eq!(ours.basis.as_ref().unwrap().len(), 12);
    let f32_res = lanczos(
        &DenseTensorOperator::new(tensor_mats(&mats, DType::F32)).unwrap(),
        &tensor_batch(&v, bsz, d, DType::F32),
        &p,
    )
    .unwrap();
    assert_eq!(f32_res.sizes, vec![12; bsz]);
}

/// Shape errors are typed, not panics.
#[test]
fn tensor_shape_errors() {
    let op = DenseTensorOperator::new(Tensor::zeros((2, 3, 3), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let bad = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(cg(&op, &bad, &CgParams::default()).is_err());
    let rank3 = Tensor::ones((2, 3, 1), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        cg(&op, &rank3, &CgParams::default()),
        Err(KrylovError::WrongRank { .. })
    ));
    assert!(
        DenseTensorOperator::new(Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap()).is_err()
    );
    // Integer matrices are refused at construction (they used to fail only at `apply`).
    for dtype in [DType::U32, DType::U8, DType::I64] {
        assert!(matches!(
            DenseTensorOperator::new(Tensor::zeros((2, 3, 3), dtype, &Device::Cpu).unwrap()),
            Err(KrylovError::NotFloat { found, .. }) if found == dtype
        ));
    }
}

/// f32 tensor start vectors of entries 1e30 (squares overflow f32 in the tensor backend's
/// dot products) and 1e-30 (squares underflow to 0) give the run of the unit vector, and
/// their true norms; they used to give `sizes = 0` (norm inf / 0). A NaN row is refused.
/// f32 runs agree to a few u₃₂ per step (1e-4 relative at cond 10).
#[test]
fn tensor_lanczos_start_vector_of_any_scale() {
    let d = 6;
    let mut r = rng(35);
    let h = random_spd(&mut r, d, 10.0).0;
    let op = DenseTensorOperator::new(tensor_mats(&[h.clone(), h.clone(), h], DType::F32)).unwrap();
    let scale = [1e30, 1e-30, 1.0];
    let v: Vec<f64> = (0..3 * d).map(|k| scale[k / d]).collect();
    let res = lanczos(
        &op,
        &tensor_batch(&v, 3, d, DType::F32),
        &LanczosParams::default(),
    )
    .unwrap();
    assert_eq!(res.sizes, vec![d; 3]);
    for i in 0..2 {
        for k in 0..d {
            let (a, b) = (res.alphas[i][k], res.alphas[2][k]);
            assert!((a - b).abs() <= 1e-4 * b.abs(), "system {i}: α {a} vs {b}");
        }
        let expected = f64::from(scale[i] as f32) * (d as f64).sqrt();
        assert!(
            (res.initial_norms[i] / expected - 1.0).abs() < 1e-6,
            "{:?}",
            res.initial_norms
        );
    }
    let mut bad = v.clone();
    bad[d + 2] = f64::NAN;
    assert!(matches!(
        lanczos(
            &op,
            &tensor_batch(&bad, 3, d, DType::F32),
            &LanczosParams::default()
        ),
        Err(KrylovError::NonFiniteInput {
            system: 1,
            index: 2,
            ..
        })
    ));
}

/// f32 tensors with `‖b‖∞ ≈ 1e30`, whose squares (1e60) overflow f32 in the tensor backend's
/// dot products: solved through CG's internal power-of-two rescaling, to the accuracy f32
/// allows at cond 1e3 (rtol 1e-5: ≲1e-3 relative to the f64 dense solve).
#[test]
fn huge_f32_right_hand_side() {
    let d = 12;
    let mut r = rng(31);
    let h = random_spd(&mut r, d, 1e3).0;
    let b0 = gaussian(&mut r, d);
    let exact = faer_solve(&h, &b0);
    let op = DenseTensorOperator::new(tensor_mats(std::slice::from_ref(&h), DType::F32)).unwrap();
    let huge: Vec<f64> = b0.iter().map(|v| v * 1e30).collect();
    let b = tensor_batch(&huge, 1, d, DType::F32);
    let res = cg(&op, &b, &CgParams::default().with_rtol(1e-5)).unwrap();
    assert!(res.all_converged() && !res.breakdown[0], "{res:?}");
    let x = res.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = (0..d)
        .map(|i| (f64::from(x[i]) / 1e30 - exact[i]).abs())
        .fold(0.0, f64::max);
    assert!(err <= 1e-3 * norm_inf(&exact), "f32: {err:e}");
}

/// f32 tensors with an initial guess far from the solution, `‖b − H x0‖∞ ≈ 1e30` with
/// `‖b‖∞ ≈ 1` (d = 8, cond 10): `r0ᵀr0 ≈ 1e60` overflowed the tensors' f32 dot products
/// and the old code, which rescaled by `b` only, broke down at iteration 0 with
/// `non_finite`. Rescaled from `r0` too, the residuals run from ≈ 1e17 down to ≈ 1e-17
/// (squares within f32), and the true-residual restarts refine away the rounding of
/// `x0 + αp` (≈ `u·‖x0‖` ≈ 1e23 at first; measured 121 iterations in 7 passes, hence the
/// cap of 1000). The solution must match the f64 dense solve to 1e-4 relative (the true
/// residual meets rtol 1e-5, times cond 10; measured 1.9e-6).
#[test]
fn far_f32_initial_guess() {
    let d = 8;
    let mut r = rng(34);
    let h = random_spd(&mut r, d, 10.0).0;
    let b0 = gaussian(&mut r, d);
    let exact = faer_solve(&h, &b0);
    let far: Vec<f64> = gaussian(&mut r, d).iter().map(|v| v * 1e30).collect();
    let hx = matvec(&h, &far);
    let r0 = norm_inf(&b0.iter().zip(&hx).map(|(a, c)| a - c).collect::<Vec<_>>());
    assert!((1e29..1e32).contains(&r0), "{r0:e}");
    let op = DenseTensorOperator::new(tensor_mats(std::slice::from_ref(&h), DType::F32)).unwrap();
    let b = tensor_batch(&b0, 1, d, DType::F32);
    let x0 = tensor_batch(&far, 1, d, DType::F32);
    let params = CgParams::default().with_rtol(1e-5).with_max_iters(1000);
    let res = cg_with_initial_guess(&op, &b, &x0, &params).unwrap();
    assert!(res.all_converged() && !res.breakdown[0], "{res:?}");
    let x = res.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = (0..d)
        .map(|i| (f64::from(x[i]) - exact[i]).abs())
        .fold(0.0, f64::max);
    assert!(err <= 1e-4 * norm_inf(&exact), "f32: {err:e}");
}

/// f32 tensors reduce in f32: with `H` scaled by 1e-25 (β² ≈ 1e-50 underflows f32) or 1e25
/// (1e50 overflows) the run is that of `H` scaled (1e-4 relative: f32 round-off over d
/// steps at cond 10), not a one-step breakdown.
#[test]
fn tensor_lanczos_operator_of_any_scale() {
    let d = 6;
    let mut r = rng(36);
    let h = random_spd(&mut r, d, 10.0).0;
    let v: Vec<f64> = (0..d).map(|i| 1.0 + i as f64).collect();
    let p = LanczosParams::default().with_steps(d);
    let run = |s: f64| {
        let hs = Mat::<f64>::from_fn(d, d, |i, j| s * h[(i, j)]);
        let op = DenseTensorOperator::new(tensor_mats(&[hs], DType::F32)).unwrap();
        lanczos(&op, &tensor_batch(&v, 1, d, DType::F32), &p).unwrap()
    };
    let base = run(1.0);
    for s in [1e-25, 1e25] {
        let res = run(s);
        assert_eq!(res.sizes, vec![d], "s = {s}");
        for k in 0..d - 1 {
            let (a, b) = (res.betas[0][k] / s, base.betas[0][k]);
            assert!((a - b).abs() <= 1e-4 * b.abs(), "s = {s}: β {a} vs {b}");
        }
        for k in 0..d {
            let (a, b) = (res.alphas[0][k] / s, base.alphas[0][k]);
            assert!((a - b).abs() <= 1e-4 * b.abs(), "s = {s}: α {a} vs {b}");
        }
    }
}

/// Reorthogonalization: the host pass for contiguous CPU tensors and the tensor-op pass (run
/// here on a non-contiguous copy and on graph-tracking tensors, which the host pass declines)
/// give the same vectors; each active row loses its components along the given basis rows
/// (checked against the classical Gram–Schmidt formula in f64 on the host); inactive rows are
/// unchanged. f64 to 1e-12 (rounding of d = 37 sums); f32 to 1e-5 relative (u₃₂ · √d · k).
#[test]
fn reorthogonalization_host_and_tensor_paths_agree() {
    let mut r = rng(77);
    let (bsz, d, k) = (9, 37, 4);
    let w0 = gaussian(&mut r, bsz * d);
    let qs: Vec<Vec<f64>> = (0..k).map(|_| gaussian(&mut r, bsz * d)).collect();
    let active: Vec<bool> = (0..bsz).map(|i| i % 4 != 1).collect();
    // The formula: w − Σ_j (q_jᵀ w) q_j per active row, coefficients from the given w.
    let mut expected = w0.clone();
    for i in (0..bsz).filter(|&i| active[i]) {
        let row = i * d..(i + 1) * d;
        let coef: Vec<f64> = qs
            .iter()
            .map(|q| (0..d).map(|t| q[row.start + t] * w0[row.start + t]).sum())
            .collect();
        for t in row {
            expected[t] -= coef.iter().zip(&qs).map(|(c, q)| c * q[t]).sum::<f64>();
        }
    }
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let basis: Vec<Tensor> = qs.iter().map(|q| tensor_batch(q, bsz, d, dtype)).collect();
        let mut host = tensor_batch(&w0, bsz, d, dtype);
        assert!(host.is_contiguous());
        host.orthogonalize_against(&basis, &active).unwrap();
        // A (d, B) tensor transposed: the same values, not contiguous.
        let mut strided = tensor_batch(&w0, bsz, d, dtype)
            .t()
            .unwrap()
            .contiguous()
            .unwrap()
            .t()
            .unwrap();
        assert!(!strided.is_contiguous());
        strided.orthogonalize_against(&basis, &active).unwrap();
        let var = candle_core::Var::from_tensor(&tensor_batch(&w0, bsz, d, dtype)).unwrap();
        let mut tracked = var.as_tensor().clone();
        assert!(tracked.track_op());
        tracked.orthogonalize_against(&basis, &active).unwrap();
        for (name, got) in [
            ("host", &host),
            ("strided", &strided),
            ("tracked", &tracked),
        ] {
            let got = got.to_host().unwrap();
            for (t, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g - e).abs() <= tol * (1.0 + e.abs()),
                    "{dtype:?} {name}: value {t}: {g} vs {e}"
                );
            }
            for i in (0..bsz).filter(|&i| !active[i]) {
                let row = i * d..(i + 1) * d;
                assert_eq!(
                    &got[row.clone()],
                    &host_round(&w0[row], dtype)[..],
                    "{name}"
                );
            }
        }
    }
}

/// `v` rounded to `dtype` and back.
fn host_round(v: &[f64], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::F32 => v.iter().map(|&x| f64::from(x as f32)).collect(),
        _ => v.to_vec(),
    }
}

/// The tensor backend (Newton–CG's) reports the breakdown cause like the host one
/// (`cg_reporting::breakdown_cause_tells_non_finite_products_from_non_positive_curvature`), in
/// f32 and f64: its dot products are taken in the tensor's dtype, so `bᵀHb` overflows for
/// `big = 0.75·MAX` of that dtype while `Hb` stays finite (rescaled, no breakdown).
#[test]
fn tensor_breakdown_cause_in_f32_and_f64() {
    for (dtype, max) in [(DType::F64, f64::MAX), (DType::F32, f64::from(f32::MAX))] {
        let mats = breakdown_cause_matrices(0.75 * max);
        let data: Vec<f64> = mats.iter().flatten().flatten().copied().collect();
        let h = Tensor::from_vec(data, (mats.len(), 2, 2), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let op = DenseTensorOperator::new(h).unwrap();
        let b = Tensor::ones((mats.len(), 2), dtype, &Device::Cpu).unwrap();
        let res = cg(&op, &b, &CgParams::default()).unwrap();
        let (breakdown, non_finite, iterations) = breakdown_cause_expected();
        assert_eq!(res.breakdown, breakdown, "{dtype:?}: {res:?}");
        assert_eq!(res.non_finite, non_finite, "{dtype:?}: {res:?}");
        assert_eq!(res.iterations, iterations, "{dtype:?}");
        assert!(res.converged[6], "{dtype:?}");
    }
}
