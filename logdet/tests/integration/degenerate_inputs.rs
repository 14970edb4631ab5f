//! Degenerate inputs: matrices with NaN or ±Inf entries (exact log-det), operators whose
//! output is not finite (SLQ), and empty batches (Hutchinson), each with a typed answer.

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchVectors, DenseFaerOperator, DenseNalgebraOperator, FnOperator, KrylovError, LanczosParams,
    lanczos,
};
use logdet::{
    HutchinsonParams, LogdetError, SlqParams, exact_logdet, exact_logdet_flat, hutchinson_trace,
    slq_logdet, slq_logdet_from_lanczos,
};
use nalgebra::DMatrix;
use std::cell::Cell;

/// A NaN or ±Inf entry in the lower triangle (the one read) is `NonFiniteInput` naming the
/// system and the entry, in f64 and f32 and on flat data; it used to be reported as
/// `NotPositiveDefinite`, a spectral property the matrix does not have. An entry in the
/// upper triangle (not factorised) is refused too, and finite indefinite matrices are still
/// `NotPositiveDefinite`.
#[test]
fn exact_logdet_names_a_non_finite_entry() {
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for (row, col) in [(1, 0), (0, 0), (2, 2)] {
            let bad = Mat::<f64>::from_fn(3, 3, |i, j| {
                if (i, j) == (row, col) {
                    value
                } else if i == j {
                    2.0
                } else {
                    0.0
                }
            });
            let batch = [Mat::<f64>::identity(3, 3), bad.clone()];
            let check = |err: LogdetError, what: &str| match err {
                LogdetError::NonFiniteInput {
                    system: 1,
                    row: r,
                    col: c,
                    value: v,
                } => {
                    assert_eq!((r, c), (row, col), "{what}");
                    assert_eq!(v.is_nan(), value.is_nan(), "{what}");
                }
                other => panic!("{what}, {value} at ({row}, {col}): {other:?}"),
            };
            check(exact_logdet(&batch).unwrap_err(), "f64");
            let batch32: Vec<Mat<f32>> = batch
                .iter()
                .map(|m| Mat::from_fn(3, 3, |i, j| m[(i, j)] as f32))
                .collect();
            check(exact_logdet(&batch32).unwrap_err(), "f32");
            // Row-major flat data: entry (row, col) of matrix 1.
            let mut flat = vec![0.0; 18];
            for k in 0..3 {
                flat[k * 4] = 1.0;
                flat[9 + k * 4] = 2.0;
            }
            flat[9 + row * 3 + col] = value;
            check(exact_logdet_flat(&flat, 2, 3).unwrap_err(), "flat");
        }
        // The strict upper triangle is not factorised, but a non-finite entry there is
        // refused too (it used to be ignored: log det 0 for a matrix holding NaN).
        let upper = Mat::<f64>::from_fn(2, 2, |i, j| if i < j { value } else { f64::from(i == j) });
        assert!(matches!(
            exact_logdet(&[upper]),
            Err(LogdetError::NonFiniteInput {
                system: 0,
                row: 0,
                col: 1,
                ..
            })
        ));
    }
    let indefinite = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 });
    assert!(matches!(
        exact_logdet(&[indefinite]),
        Err(LogdetError::NotPositiveDefinite { system: 0 })
    ));
}

/// An operator whose output turns NaN or ±Inf on call `bad` (for system 0) stops Lanczos with
/// `non_finite` and only finite coefficients kept (possibly none); SLQ refuses that truncated
/// run with `QuadratureFailed` naming the system, rather than computing a quadrature from it
/// (an empty one would have counted as a zero start vector, contributing 0).
#[test]
fn slq_refuses_a_lanczos_run_stopped_by_a_non_finite_output() {
    let h = DMatrix::from_diagonal(&nalgebra::dvector![1.0, 2.0, 3.0, 4.0]);
    for value in [f64::NAN, f64::INFINITY] {
        for steps in [1usize, 2, 3] {
            for bad in 0..steps {
                let calls = Cell::new(0usize);
                let op = FnOperator::new(
                    |x: &DMatrix<f64>, _: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
                        let mut y = &h * x;
                        if calls.get() == bad {
                            y[(2, 0)] = value;
                        }
                        calls.set(calls.get() + 1);
                        Ok(y)
                    },
                );
                let v0 = DMatrix::<f64>::from_element(4, 2, 1.0);
                let lp = LanczosParams::default().with_steps(steps);
                let res = lanczos(&op, &v0, &lp).unwrap();
                assert!(res.non_finite[0] && res.alphas[0].iter().all(|a| a.is_finite()));
                let at = format!("{value} on call {bad} of {steps}");
                assert!(
                    matches!(
                        slq_logdet_from_lanczos(&res),
                        Err(LogdetError::QuadratureFailed { system: 0 })
                    ),
                    "{at}"
                );
                calls.set(0);
                let sp = SlqParams::default().with_lanczos_steps(steps);
                let like = DMatrix::<f64>::zeros(4, 2);
                assert!(
                    matches!(
                        slq_logdet(&op, &like, &mut rng(1), &sp),
                        Err(LogdetError::QuadratureFailed { system: 0 })
                    ),
                    "{at}"
                );
            }
        }
    }
}

/// An empty batch (`B = 0`, `d > 0`) gives an empty Hutchinson estimate, as `slq_logdet` and
/// `krylov::cg` give, for the empty dense operators (which cannot know `d`: their `apply`
/// used to refuse the `d × 0` probes) and for a closure, which is not called. A `like` that
/// does not match the operator's shape is still a shape error, before any operator work.
#[test]
fn hutchinson_empty_batch_gives_an_empty_estimate() {
    let params = HutchinsonParams::default().with_probes(3);
    let nalgebra_op = DenseNalgebraOperator::<f64>::new(vec![]).unwrap();
    let faer_op = DenseFaerOperator::<f64>::new(vec![]).unwrap();
    let calls = Cell::new(0usize);
    let closure = FnOperator::new(|x: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> {
        calls.set(calls.get() + 1);
        Ok(x.clone())
    });
    for d in [0, 3] {
        let like = DMatrix::<f64>::zeros(d, 0);
        for est in [
            hutchinson_trace(&nalgebra_op, &like, &mut rng(2), &params).unwrap(),
            hutchinson_trace(&closure, &like, &mut rng(2), &params).unwrap(),
            hutchinson_trace(&faer_op, &Mat::<f64>::zeros(d, 0), &mut rng(2), &params).unwrap(),
        ] {
            assert!(est.estimate.is_empty() && est.std_err.is_empty());
            assert!(est.applications.is_empty() && est.probes == 3);
        }
        let slq = slq_logdet(&nalgebra_op, &like, &mut rng(2), &SlqParams::default()).unwrap();
        assert!(slq.estimate.is_empty());
    }
    assert_eq!(calls.get(), 0);

    let two = DenseNalgebraOperator::new(vec![DMatrix::<f64>::identity(3, 3); 2]).unwrap();
    for like in [DMatrix::<f64>::zeros(3, 0), DMatrix::<f64>::zeros(4, 2)] {
        match hutchinson_trace(&two, &like, &mut rng(3), &params) {
            Err(LogdetError::Krylov(KrylovError::ShapeMismatch {
                expected: (2, 3),
                found,
                ..
            })) => assert_eq!(found, (like.n_systems(), like.system_dim())),
            other => panic!("{other:?}"),
        }
    }
}

/// An empty tridiagonal is a quadrature of 0 only for a zero start vector. For
/// `H = diag(1, e, e²)` and `v = (1, 1, 1)` (`vᵀ log(H) v = 3`) a run emptied of its
/// coefficients (what `lanczos` with zero steps returned before it refused them) gave
/// `Ok([0.0])`; it is now `EmptyTridiagonal` naming the system, as `slq_quadrature_logdet`
/// with `norm_sq > 0` is, while the zero start vector (system 1) still gives 0. A tiny
/// non-zero start vector (`‖v‖² = 3e-340` underflows to 0) is not taken for a zero one.
#[test]
fn empty_tridiagonal_of_a_non_zero_start_vector_is_an_error() {
    let e = 1f64.exp();
    let h = DMatrix::from_diagonal(&nalgebra::dvector![1.0, e, e * e]);
    let op = DenseNalgebraOperator::new(vec![h; 3]).unwrap();
    let mut v0 = DMatrix::<f64>::from_element(3, 3, 1.0);
    v0.column_mut(1).fill(0.0);
    v0.column_mut(2).fill(1e-170);
    let mut res = lanczos(&op, &v0, &LanczosParams::default()).unwrap();
    assert_eq!(res.sizes, vec![3, 0, 3]);
    let q = slq_logdet_from_lanczos(&res).unwrap();
    // m = d: exact up to round-off.
    assert!((q[0] - 3.0).abs() < 1e-12 && q[1] == 0.0, "{q:?}");
    for system in [0, 2] {
        let mut emptied = res.clone();
        emptied.sizes[system] = 0;
        emptied.alphas[system].clear();
        emptied.betas[system].clear();
        match slq_logdet_from_lanczos(&emptied) {
            Err(LogdetError::EmptyTridiagonal { system: s, norm }) => {
                assert_eq!(s, system);
                assert!(norm > 0.0, "{norm}");
            }
            other => panic!("system {system}: {other:?}"),
        }
    }
    res.sizes[1] = 0;
    assert_eq!(slq_logdet_from_lanczos(&res).unwrap()[1], 0.0);
    let err = logdet::slq_quadrature_logdet(&[], &[], 3.0).unwrap_err();
    assert!(
        matches!(err, LogdetError::EmptyTridiagonal { system: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not zero"), "{err}");
    assert_eq!(logdet::slq_quadrature_logdet(&[], &[], 0.0).unwrap(), 0.0);
}
