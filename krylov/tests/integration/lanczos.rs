//! Lanczos: spectrum reproduction with m = d, orthonormality of the basis with
//! re-orthogonalisation, breakdown handling, non-finite operator outputs, and backend
//! agreement.
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::{Mat, Side};
use krylov::{
    BatchVectors, DenseFaerOperator, DenseNalgebraOperator, FnOperator, KrylovError, LanczosParams,
    lanczos,
};
use nalgebra::DMatrix;
use std::cell::Cell;

fn tridiag_eigs(alphas: &[f64], betas: &[f64]) -> Vec<f64> {
    let k = alphas.len();
    let t = Mat::<f64>::from_fn(k, k, |i, j| {
        if i == j {
            alphas[i]
        } else if i + 1 == j {
            betas[i]
        } else if j + 1 == i {
            betas[j]
        } else {
            0.0
        }
    });
    t.self_adjoint_eigenvalues(Side::Lower).unwrap()
}

/// With m = d and full re-orthogonalisation, T is orthogonally similar to H (in exact
/// arithmetic), so its eigenvalues are those of H. With re-orthogonalisation the Lanczos basis
/// is orthonormal to working precision, so the eigenvalue error is a backward-stable
/// O(u·d·‖H‖); 1e-10·‖H‖ leaves a margin of ~10³ over the measured error (~1e-13·‖H‖).
#[test]
fn lanczos_full_size_reproduces_spectrum_and_orthonormal_basis() {
    let mut r = rng(11);
    for &(d, cond) in &[(5usize, 10.0), (43, 1e3), (80, 1e6)] {
        let bsz = 3;
        let mats: Vec<Mat<f64>> = (0..bsz).map(|_| random_spd(&mut r, d, cond).0).collect();
        let op = DenseFaerOperator::new(mats.clone()).unwrap();
        let v0 = faer_batch(&gaussian(&mut r, d * bsz), d, bsz, |v| v);
        let res = lanczos(
            &op,
            &v0,
            &LanczosParams::default()
                .with_steps(d)
                .with_reorthogonalize(true)
                .with_store_basis(true),
        )
        .unwrap();
        let basis = res.basis.as_ref().unwrap();
        for (i, h) in mats.iter().enumerate() {
            assert_eq!(
                res.sizes[i], d,
                "no breakdown expected for distinct eigenvalues"
            );
            assert_eq!(res.applications[i], d);
            let mut ours = tridiag_eigs(&res.alphas[i], &res.betas[i]);
            ours.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let exact = h.self_adjoint_eigenvalues(Side::Lower).unwrap();
            let hnorm = exact.last().copied().unwrap();
            for (a, b) in ours.iter().zip(&exact) {
                assert!(
                    (a - b).abs() <= 1e-10 * hnorm,
                    "d={d} cond={cond}: eig {a} vs {b}"
                );
            }
            // Q_i (d × d): column k = basis[k] column i.
            let q = Mat::<f64>::from_fn(d, d, |row, k| basis[k][(row, i)]);
            let qtq = q.transpose() * &q;
            for a in 0..d {
                for b in 0..d {
                    let target = if a == b { 1.0 } else { 0.0 };
                    assert!(
                        (qtq[(a, b)] - target).abs() <= 1e-10,
                        "QᵀQ[{a},{b}] = {}",
                        qtq[(a, b)]
                    );
                }
            }
            // Qᵀ H Q = T (same margin argument as the eigenvalues).
            let t = q.transpose() * h * &q;
            for k in 0..d {
                assert!((t[(k, k)] - res.alphas[i][k]).abs() <= 1e-10 * hnorm);
                if k + 1 < d {
                    assert!((t[(k, k + 1)] - res.betas[i][k]).abs() <= 1e-10 * hnorm);
                }
            }
        }
    }
}

/// An operator with only 3 distinct eigenvalues has a 3-dimensional Krylov space: Lanczos must
/// stop that system after 3 steps (breakdown), report the exact eigenvalues, and spend no more
/// applications on it, while the other system of the batch runs all m steps.
#[test]
fn lanczos_breakdown_stops_early_with_exact_ritz_values() {
    let mut r = rng(5);
    let d = 12;
    let eigs: Vec<f64> = (0..d).map(|k| [1.0, 4.0, 9.0][k % 3]).collect();
    let h0 = spd_with_eigs(&mut r, &eigs);
    let h1 = random_spd(&mut r, d, 100.0).0;
    let to_na = |m: &Mat<f64>| DMatrix::from_fn(d, d, |i, j| m[(i, j)]);
    let op = DenseNalgebraOperator::new(vec![to_na(&h0), to_na(&h1)]).unwrap();
    let v0 = DMatrix::from_column_slice(d, 2, &gaussian(&mut r, 2 * d));
    let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(8)).unwrap();
    assert_eq!(res.sizes, vec![3, 8]);
    assert_eq!(res.breakdown, vec![true, false]);
    assert_eq!(res.applications, vec![3, 8]);
    assert_eq!(res.betas[0].len(), 2);
    let mut ritz = tridiag_eigs(&res.alphas[0], &res.betas[0]);
    ritz.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for (a, b) in ritz.iter().zip([1.0, 4.0, 9.0]) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
}

/// A zero start vector gives an empty tridiagonal and no operator work; m > d is capped at d.
#[test]
fn lanczos_zero_start_and_step_cap() {
    let d = 4;
    let op = DenseNalgebraOperator::new(vec![DMatrix::<f64>::identity(d, d) * 2.0; 2]).unwrap();
    let mut v0 = DMatrix::<f64>::zeros(d, 2);
    v0[(0, 1)] = 3.0;
    let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(50)).unwrap();
    assert_eq!(res.sizes, vec![0, 1]);
    assert_eq!(res.applications, vec![0, 1]);
    assert_eq!(res.alphas[1], vec![2.0]);
    assert_eq!(res.initial_norms, vec![0.0, 3.0]);
}

/// nalgebra, faer, f64 and f32 give the same coefficients (f32 to single precision: the α are
/// Rayleigh quotients of unit vectors, so they agree to a few u₃₂·‖H‖ per step; 1e-4·‖H‖ is
/// loose enough for 10 steps with cond 100).
#[test]
fn lanczos_backends_agree() {
    let mut r = rng(3);
    let (d, bsz) = (20, 5);
    let mats: Vec<Mat<f64>> = (0..bsz).map(|_| random_spd(&mut r, d, 100.0).0).collect();
    let v = gaussian(&mut r, d * bsz);
    let p = LanczosParams::default().with_steps(10);
    let faer64 = lanczos(
        &DenseFaerOperator::new(mats.clone()).unwrap(),
        &faer_batch(&v, d, bsz, |x| x),
        &p,
    )
    .unwrap();
    let faer32 = lanczos(
        &DenseFaerOperator::new(
            mats.iter()
                .map(|m| Mat::<f32>::from_fn(d, d, |i, j| m[(i, j)] as f32))
                .collect(),
        )
        .unwrap(),
        &faer_batch(&v, d, bsz, |x| x as f32),
        &p,
    )
    .unwrap();
    let na = DenseNalgebraOperator::new(
        mats.iter()
            .map(|m| DMatrix::from_fn(d, d, |i, j| m[(i, j)]))
            .collect(),
    )
    .unwrap();
    let na64 = lanczos(&na, &DMatrix::from_column_slice(d, bsz, &v), &p).unwrap();
    for i in 0..bsz {
        for k in 0..10 {
            assert!((faer64.alphas[i][k] - na64.alphas[i][k]).abs() < 1e-10 * 100.0);
            assert!((faer64.alphas[i][k] - faer32.alphas[i][k]).abs() < 1e-4 * 100.0);
        }
    }
    let _ = faer64.basis.map(|b| b[0].to_host());
}

/// The start vector's scale does not matter: columns `[1e160; 3]`, `[1e-320; 3]` (subnormal),
/// `[1e308; 4]` (2-norm beyond f64) and `[1; 3]` give the same run. They used to give an
/// empty tridiagonal (`‖v‖² = 3e320` overflowed, `1e-640` underflowed) with
/// `initial_norms = inf` / `0`. The direction is rescaled by a power of two (exact), so the
/// coefficients agree to round-off of the normalisation (a few u: 1e-13 relative); the
/// reported norms are the true ones (relative 1e-15, or 1e-3 for the subnormal entries, whose
/// result is itself subnormal with spacing 5e-324 ≈ 3e-4 of 1.7e-320).
#[test]
fn lanczos_start_vector_scale_does_not_matter() {
    let mut r = rng(21);
    let d = 4;
    let h = random_spd(&mut r, d, 10.0).0;
    let op = DenseFaerOperator::new(vec![h.clone(); 5]).unwrap();
    let entries = [1e160, 1e-320, 1e308, 1.0, 0.0];
    let v0 = Mat::<f64>::from_fn(d, 5, |_, j| entries[j]);
    let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(d)).unwrap();
    assert_eq!(res.sizes, vec![d, d, d, d, 0]);
    assert_eq!(res.breakdown, vec![false, false, false, false, true]);
    for j in 0..3 {
        for k in 0..d {
            let (a, b) = (res.alphas[j][k], res.alphas[3][k]);
            assert!((a - b).abs() <= 1e-13 * b.abs(), "system {j}: α {a} vs {b}");
        }
        for k in 0..d - 1 {
            let (a, b) = (res.betas[j][k], res.betas[3][k]);
            assert!((a - b).abs() <= 1e-13 * b.abs(), "system {j}: β {a} vs {b}");
        }
    }
    let n = res.initial_norms.clone();
    assert!((n[0] / (1e160 * 2.0) - 1.0).abs() < 1e-15, "{n:?}");
    assert!((n[1] / (1e-320 * 2.0) - 1.0).abs() < 1e-3, "{n:?}");
    assert_eq!(n[2], f64::INFINITY);
    assert_eq!(n[3], 2.0);
    assert_eq!(n[4], 0.0);
    // f32 vectors (nalgebra backend): the same for entries 1e30 and 1e-40 (subnormal); the
    // f32 runs agree to a few u₃₂ (1e-5 relative).
    let h32 = DMatrix::<f32>::from_fn(d, d, |i, j| h[(i, j)] as f32);
    let op32 = DenseNalgebraOperator::new(vec![h32; 3]).unwrap();
    let v32 = DMatrix::<f32>::from_fn(d, 3, |_, j| [1e30f32, 1e-40, 1.0][j]);
    let res32 = lanczos(&op32, &v32, &LanczosParams::default()).unwrap();
    assert_eq!(res32.sizes, vec![d; 3]);
    for j in 0..2 {
        for k in 0..d {
            let (a, b) = (res32.alphas[j][k], res32.alphas[2][k]);
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "f32 system {j}: α {a} vs {b}"
            );
        }
    }
    assert!((res32.initial_norms[0] / 2e30 - 1.0).abs() < 1e-6);
    assert!((res32.initial_norms[1] / (f64::from(1e-40f32) * 2.0) - 1.0).abs() < 1e-3);
}

/// The operator's scale does not matter either: for `s·H` with s = 1e-200 or 1e200 the
/// coefficients are `s` times those of `H` (to round-off: 1e-13 relative). The squares of
/// `β ≈ s` under- or overflow f64 (1e-400, 1e400); `β` used to come out 0 or ∞, so every
/// system stopped after one step with a spurious breakdown (size 1 instead of d).
#[test]
fn lanczos_operator_scale_does_not_matter() {
    let mut r = rng(22);
    let d = 6;
    let h = random_spd(&mut r, d, 10.0).0;
    let v0 = Mat::<f64>::from_fn(d, 1, |i, _| 1.0 + i as f64);
    let p = LanczosParams::default().with_steps(d);
    let run = |s: f64| {
        let hs = Mat::<f64>::from_fn(d, d, |i, j| s * h[(i, j)]);
        lanczos(&DenseFaerOperator::new(vec![hs]).unwrap(), &v0, &p).unwrap()
    };
    let base = run(1.0);
    for s in [1e-200, 1e200] {
        let res = run(s);
        assert_eq!(res.sizes, vec![d], "s = {s}");
        assert_eq!(res.breakdown, vec![false]);
        for k in 0..d {
            let (a, b) = (res.alphas[0][k] / s, base.alphas[0][k]);
            assert!((a - b).abs() <= 1e-13 * b.abs(), "s = {s}: α {a} vs {b}");
        }
        for k in 0..d - 1 {
            let (a, b) = (res.betas[0][k] / s, base.betas[0][k]);
            assert!((a - b).abs() <= 1e-13 * b.abs(), "s = {s}: β {a} vs {b}");
        }
    }
}

/// An operator output holding NaN or ±Inf (for system 0, on call `bad` of 0, 1, 2) is flagged
/// in `non_finite`, not as a breakdown (documented as an invariant subspace with exact Ritz
/// values), and the non-finite coefficient is not stored: system 0 keeps the `bad` finite
/// coefficients of the steps before. It used to return NaN coefficients, flagged as a
/// breakdown with more steps and not at all with `steps = 1`. System 1 runs all its steps.
#[test]
fn non_finite_operator_output_is_flagged_apart_from_breakdown() {
    let h = DMatrix::from_diagonal(&nalgebra::dvector![1.0, 2.0, 3.0, 4.0]);
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for steps in [1usize, 3] {
            for bad in 0..steps {
                let calls = Cell::new(0usize);
                let op = FnOperator::new(
                    |x: &DMatrix<f64>, _: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
                        let mut y = &h * x;
                        if calls.get() == bad {
                            y[(1, 0)] = value;
                        }
                        calls.set(calls.get() + 1);
                        Ok(y)
                    },
                );
                let v0 = DMatrix::<f64>::from_element(4, 2, 1.0);
                let params = LanczosParams::default()
                    .with_steps(steps)
                    .with_store_basis(true);
                let res = lanczos(&op, &v0, &params).unwrap();
                let at = format!("{value} on call {bad} of {steps}");
                assert_eq!(res.non_finite, vec![true, false], "{at}");
                assert_eq!(res.breakdown, vec![false, false], "{at}");
                assert_eq!(res.sizes, vec![bad, steps], "{at}");
                assert_eq!(res.alphas[0].len(), bad, "{at}");
                assert_eq!(res.betas[0].len(), bad.saturating_sub(1), "{at}");
                for i in 0..2 {
                    let coefficients = res.alphas[i].iter().chain(&res.betas[i]);
                    assert!(coefficients.clone().all(|c| c.is_finite()), "{at}: {res:?}");
                }
                assert!((res.alphas[1][0] - 2.5).abs() < 1e-12, "{at}");
                assert_eq!(res.applications, vec![bad + 1, steps], "{at}");
            }
        }
    }
}
