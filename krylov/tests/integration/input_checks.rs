//! Invalid inputs give typed errors before any operator work, never a silent result: non-finite
//! right-hand sides and initial guesses, batches that do not match the operator (empty ones
//! included), dtype mixing on the tensor backend; reported residuals propagate NaN; empty
//! batches give empty results with every option.

use krylov::{
    BatchOperator, BatchVectors, CgParams, CountingOperator, DenseFaerOperator,
    DenseNalgebraOperator, FnOperator, KrylovError, LanczosParams, Preconditioner, cg,
    cg_with_initial_guess, lanczos,
};
use nalgebra::DMatrix;

fn two_systems() -> DenseNalgebraOperator<f64> {
    DenseNalgebraOperator::new(vec![DMatrix::identity(3, 3) * 2.0, DMatrix::identity(3, 3)])
        .unwrap()
}

/// `b` with an Inf (the old behaviour: tolerance Inf, `inf ≤ inf`, converged = true with
/// x = 0) or a NaN (old: silent breakdown) is refused, naming the system and the entry, and
/// the operator is never called.
#[test]
fn non_finite_rhs_is_an_error_naming_system_and_entry() {
    for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
        let op = CountingOperator::new(two_systems(), 2);
        let mut b = DMatrix::<f64>::from_element(3, 2, 1.0);
        b[(2, 1)] = bad;
        match cg(&op, &b, &CgParams::default()) {
            Err(KrylovError::NonFiniteInput {
                system: 1,
                index: 2,
                value,
                ..
            }) => assert!(value.to_bits() == bad.to_bits(), "{value}"),
            other => panic!("{bad}: {other:?}"),
        }
        assert_eq!(op.calls(), 0);
        // The same with only an absolute tolerance, and for faer.
        let params = CgParams::default().with_rtol(0.0).with_atol(1e-8);
        assert!(matches!(
            cg(&op, &b, &params),
            Err(KrylovError::NonFiniteInput { system: 1, .. })
        ));
        let fop = DenseFaerOperator::new(vec![faer::Mat::<f64>::identity(3, 3); 2]).unwrap();
        let fb = faer::Mat::<f64>::from_fn(3, 2, |i, j| b[(i, j)]);
        assert!(matches!(
            cg(&fop, &fb, &CgParams::default()),
            Err(KrylovError::NonFiniteInput {
                system: 1,
                index: 2,
                ..
            })
        ));
    }
    // f32 as well.
    let op32 = DenseNalgebraOperator::new(vec![DMatrix::<f32>::identity(2, 2)]).unwrap();
    let b32 = DMatrix::<f32>::from_column_slice(2, 1, &[f32::INFINITY, 1.0]);
    assert!(matches!(
        cg(&op32, &b32, &CgParams::default()),
        Err(KrylovError::NonFiniteInput {
            system: 0,
            index: 0,
            ..
        })
    ));
}

/// A non-finite initial guess is refused like a non-finite `b` (x0 = b with an Inf used to
/// report convergence too).
#[test]
fn non_finite_initial_guess_is_an_error() {
    let op = two_systems();
    let b = DMatrix::<f64>::from_element(3, 2, 1.0);
    let mut x0 = b.clone();
    x0[(0, 0)] = f64::NAN;
    assert!(matches!(
        cg_with_initial_guess(&op, &b, &x0, &CgParams::default()),
        Err(KrylovError::NonFiniteInput {
            context: "cg initial guess",
            system: 0,
            index: 0,
            ..
        })
    ));
}

/// A batch that does not match the operator's `(B, d)` is a ShapeMismatch before any work,
/// even when it is empty (it used to return an empty "success" without calling the operator).
#[test]
fn batch_size_is_checked_against_the_operator_first() {
    let op = two_systems();
    for b in [DMatrix::<f64>::zeros(3, 0), DMatrix::<f64>::zeros(3, 5)] {
        match cg(&op, &b, &CgParams::default()) {
            Err(KrylovError::ShapeMismatch {
                expected: (2, 3),
                found,
                ..
            }) => assert_eq!(found, (b.ncols(), 3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lanczos(&op, &b, &LanczosParams::default()),
            Err(KrylovError::ShapeMismatch {
                expected: (2, 3),
                ..
            })
        ));
    }
    // An empty operator (which cannot know d) with an empty batch of any d is fine; a
    // non-empty batch is still an error, not a panic.
    let empty = DenseNalgebraOperator::<f64>::new(vec![]).unwrap();
    for d in [0, 3] {
        let res = cg(&empty, &DMatrix::<f64>::zeros(d, 0), &CgParams::default()).unwrap();
        assert!(res.converged.is_empty() && res.residual_norms.is_empty());
        assert_eq!(res.x.shape(), (d, 0));
    }
    assert!(cg(&empty, &DMatrix::<f64>::zeros(3, 2), &CgParams::default()).is_err());
    assert!(
        lanczos(
            &empty,
            &DMatrix::<f64>::zeros(3, 2),
            &LanczosParams::default()
        )
        .is_err()
    );
}

/// An empty batch is solved the same with every preconditioner and with
/// re-orthogonalisation: an empty result. Jacobi used to compare the batch `(3 × 0)` with the
/// diagonal of the empty operator (`0 × 0`, it cannot know `d`) and fail with `ShapeMismatch`;
/// the dense operators themselves refused an empty batch of `d > 0` in `apply`. A mismatched
/// non-empty batch is still an error, and so is a missing diagonal.
#[test]
fn empty_batches_give_empty_results_with_every_option() {
    let nalgebra_op = DenseNalgebraOperator::<f64>::new(vec![]).unwrap();
    let faer_op = DenseFaerOperator::<f64>::new(vec![]).unwrap();
    let jacobi = CgParams::default().with_preconditioner(Preconditioner::Jacobi);
    for d in [0, 3] {
        for params in [
            CgParams::default(),
            jacobi.clone(),
            jacobi.clone().with_reorthogonalize(true),
        ] {
            let b = DMatrix::<f64>::zeros(d, 0);
            let res = cg(&nalgebra_op, &b, &params).unwrap();
            assert!(res.converged.is_empty() && res.termination.is_empty());
            assert_eq!(res.x.shape(), (d, 0));
            let res = cg_with_initial_guess(&nalgebra_op, &b, &b, &params).unwrap();
            assert_eq!((res.x.shape(), res.operator_calls), ((d, 0), 0));
            let res = cg(&faer_op, &faer::Mat::<f64>::zeros(d, 0), &params).unwrap();
            assert_eq!(res.x.shape(), (d, 0));
        }
        let y = nalgebra_op.apply(&DMatrix::zeros(d, 0), &[]).unwrap();
        assert_eq!(y.shape(), (d, 0));
        let y = faer_op.apply(&faer::Mat::zeros(d, 0), &[]).unwrap();
        assert_eq!(y.shape(), (d, 0));
    }
    assert!(cg(&nalgebra_op, &DMatrix::<f64>::zeros(3, 2), &jacobi).is_err());
    assert!(
        nalgebra_op
            .apply(&DMatrix::zeros(3, 2), &[true, true])
            .is_err()
    );
    let closure =
        FnOperator::new(|x: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> { Ok(x.clone()) });
    assert!(matches!(
        cg(&closure, &DMatrix::<f64>::zeros(3, 0), &jacobi),
        Err(KrylovError::MissingDiagonal)
    ));
}

/// The default `norms2` propagates NaN (`f64::max(NaN, 0)` is 0).
#[test]
fn euclidean_norms_propagate_nan() {
    let v = DMatrix::<f64>::from_column_slice(2, 2, &[3.0, 4.0, f64::NAN, 1.0]);
    let n = v.norms2().unwrap();
    assert_eq!(n[0], 5.0);
    assert!(n[1].is_nan());
}

#[cfg(feature = "candle")]
mod candle {
    use candle_core::{DType, Device, Tensor};
    use krylov::{
        BatchOperator, BatchVectors, CgParams, DenseTensorOperator, FnOperator, KrylovError,
        LanczosParams, cg, cg_with_initial_guess, lanczos,
    };

    fn two_i(dtype: DType, b: usize) -> DenseTensorOperator {
        let h = (Tensor::eye(3, DType::F64, &Device::Cpu).unwrap() * 2.0)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .repeat((b, 1, 1))
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        DenseTensorOperator::new(h).unwrap()
    }

    fn rhs(values: &[f64], dtype: DType) -> Tensor {
        Tensor::from_vec(values.to_vec(), (values.len() / 3, 3), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Inf and NaN in `b` are typed errors in f32 and f64 (candle's max skips NaN, so a NaN
    /// used to go unnoticed in the tolerance: residual 1.0 reported for a NaN system).
    #[test]
    fn non_finite_rhs_is_an_error_f32_and_f64() {
        for dtype in [DType::F32, DType::F64] {
            for bad in [f64::INFINITY, f64::NAN] {
                let op = two_i(dtype, 2);
                let b = rhs(&[1.0, 1.0, 1.0, 1.0, bad, 0.0], dtype);
                match cg(&op, &b, &CgParams::default()) {
                    Err(KrylovError::NonFiniteInput {
                        system: 1,
                        index: 1,
                        value,
                        ..
                    }) => assert!(value.is_nan() == bad.is_nan() && !value.is_finite()),
                    other => panic!("{dtype:?} {bad}: {other:?}"),
                }
            }
        }
    }

    /// Max-norms propagate NaN wherever it sits in the row (candle's max alone returns 1 for
    /// [1, NaN, 0] and NaN for [NaN, 1, 0]); Euclidean norms too.
    #[test]
    fn tensor_norms_propagate_nan() {
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let t = rhs(
                &[1.0, f64::NAN, 0.0, f64::NAN, 1.0, 0.0, -3.0, 2.0, 1.0],
                dtype,
            );
            let n = t.norms_inf().unwrap();
            assert!(n[0].is_nan() && n[1].is_nan(), "{dtype:?}: {n:?}");
            assert_eq!(n[2], 3.0);
            let n2 = t.norms2().unwrap();
            assert!(n2[0].is_nan() && n2[1].is_nan(), "{dtype:?}: {n2:?}");
        }
    }

    /// An operator whose output turns the middle entry of the initial residual `b − H x0`
    /// into NaN: the reported residual is NaN (candle's max alone skipped it and reported 3),
    /// the system is not converged and is flagged as a breakdown. (A non-finite product of a
    /// direction is a breakdown before any update: `cg_reporting`.)
    #[test]
    fn nan_residual_is_reported_as_nan() {
        let dense = two_i(DType::F64, 1);
        let op = FnOperator::new(
            |x: &Tensor, active: &[bool]| -> Result<Tensor, KrylovError> {
                let y = dense.apply(x, active)?;
                let mask = Tensor::new(&[[0.0f64, f64::NAN, 0.0]], &Device::Cpu)?;
                Ok(y.broadcast_add(&mask)?)
            },
        );
        let b = rhs(&[1.0, 2.0, 3.0], DType::F64);
        let res = cg_with_initial_guess(&op, &b, &b, &CgParams::default()).unwrap();
        assert!(res.residual_norms[0].is_nan(), "{:?}", res.residual_norms);
        assert_eq!(res.converged, vec![false]);
        assert_eq!(res.breakdown, vec![true]);
    }

    /// An empty batch gives an empty result (it used to be candle's "empty tensor for
    /// reduce"); an empty `b` for a non-empty operator is a ShapeMismatch.
    #[test]
    fn empty_batch_and_batch_mismatch() {
        let empty = two_i(DType::F64, 0);
        let b0 = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
        let res = cg(&empty, &b0, &CgParams::default()).unwrap();
        assert!(res.converged.is_empty() && res.iterations.is_empty());
        assert_eq!(res.x.dims(), &[0, 3]);
        let res = cg_with_initial_guess(&empty, &b0, &b0, &CgParams::default()).unwrap();
        assert!(res.residual_norms.is_empty());

        let op = two_i(DType::F64, 2);
        for b in [
            b0.clone(),
            Tensor::zeros((5, 3), DType::F64, &Device::Cpu).unwrap(),
        ] {
            match cg(&op, &b, &CgParams::default()) {
                Err(KrylovError::ShapeMismatch {
                    expected: (2, 3),
                    found,
                    ..
                }) => assert_eq!(found, (b.dims()[0], 3)),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            lanczos(&op, &b0, &LanczosParams::default()),
            Err(KrylovError::ShapeMismatch { .. })
        ));
    }

    /// Mixing dtypes is a typed error naming both dtypes: a right-hand side of the other dtype
    /// for a dense tensor operator, an operator returning the wrong dtype, an initial guess of
    /// another dtype.
    #[test]
    fn dtype_mixing_is_a_typed_error() {
        let op32 = two_i(DType::F32, 1);
        let b64 = rhs(&[1.0, 2.0, 3.0], DType::F64);
        match cg(&op32, &b64, &CgParams::default()) {
            Err(KrylovError::DTypeMismatch {
                expected: DType::F32,
                found: DType::F64,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lanczos(&op32, &b64, &LanczosParams::default()),
            Err(KrylovError::DTypeMismatch { .. })
        ));

        let to32 = FnOperator::new(|x: &Tensor, _: &[bool]| -> Result<Tensor, KrylovError> {
            Ok(x.to_dtype(DType::F32)?)
        });
        for res in [
            cg(&to32, &b64, &CgParams::default()).map(|_| ()),
            cg_with_initial_guess(&to32, &b64, &b64, &CgParams::default()).map(|_| ()),
            lanczos(&to32, &b64, &LanczosParams::default()).map(|_| ()),
        ] {
            match res {
                Err(KrylovError::DTypeMismatch {
                    context: "operator output",
                    expected: DType::F64,
                    found: DType::F32,
                }) => {}
                other => panic!("{other:?}"),
            }
        }

        let op64 = two_i(DType::F64, 1);
        let x32 = b64.to_dtype(DType::F32).unwrap();
        assert!(matches!(
            cg_with_initial_guess(&op64, &b64, &x32, &CgParams::default()),
            Err(KrylovError::DTypeMismatch {
                context: "cg initial guess",
                ..
            })
        ));
        let e = cg(&op32, &b64, &CgParams::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("F32") && e.contains("F64"), "{e}");
    }

    /// An integer batch is refused as such by every entry point (`NotFloat`), before the
    /// operator runs. It used to be solved in integer arithmetic: with `H = 2·I` a `U32` or
    /// `I64` `b` gave truncated iterates (an `I64` identity system was even reported
    /// converged), and Lanczos failed inside candle ("unsupported dtype U32 for op matmul").
    #[test]
    fn integer_batches_are_refused() {
        let called = std::cell::Cell::new(false);
        let twice = FnOperator::new(|x: &Tensor, _: &[bool]| -> Result<Tensor, KrylovError> {
            called.set(true);
            Ok((x * 2.0)?)
        });
        for dtype in [DType::U8, DType::U32, DType::I64] {
            let b = rhs(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F64)
                .to_dtype(dtype)
                .unwrap();
            for res in [
                cg(&twice, &b, &CgParams::default()).map(|_| ()),
                cg_with_initial_guess(&twice, &b, &b, &CgParams::default()).map(|_| ()),
                lanczos(&twice, &b, &LanczosParams::default()).map(|_| ()),
                b.norms_inf().map(|_| ()),
            ] {
                match res {
                    Err(KrylovError::NotFloat {
                        context: "batch tensor (B, d)",
                        found,
                    }) => assert_eq!(found, dtype),
                    other => panic!("{dtype:?}: {other:?}"),
                }
            }
        }
        assert!(!called.get(), "the operator ran on an integer batch");
    }
}

/// A NaN or ±Inf in a Lanczos start vector is refused like a non-finite right-hand side of
/// `cg`, naming system and entry, before any operator work. It used to give `Ok` with
/// `sizes = [0]`, `initial_norms = [NaN]`, which SLQ turned into a log-det of 0.
#[test]
fn non_finite_lanczos_start_vector_is_an_error() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let op = CountingOperator::new(two_systems(), 2);
        let mut v0 = DMatrix::<f64>::from_element(3, 2, 1.0);
        v0[(1, 1)] = bad;
        match lanczos(&op, &v0, &LanczosParams::default()) {
            Err(KrylovError::NonFiniteInput {
                system: 1,
                index: 1,
                value,
                ..
            }) => assert_eq!(value.to_bits(), bad.to_bits()),
            other => panic!("{bad}: {other:?}"),
        }
        assert_eq!(op.counts(), vec![0, 0]);
    }
}

/// A Jacobi diagonal entry that is positive but so small that its inverse overflows the
/// element type (f64 below `1/f64::MAX ≈ 5.6e-309`, f32 below `1/f32::MAX ≈ 2.9e-39`) is
/// refused before any operator work, naming the system and the entry, like a non-positive one.
/// Before: `M⁻¹ = +Inf`, so `z = r·Inf` and the system broke down on a NaN/Inf curvature at its
/// first step (`CgTermination::Breakdown`, `non_finite`), with nothing to say why.
#[test]
fn jacobi_diagonal_too_small_to_invert_is_refused() {
    let params = CgParams::default().with_preconditioner(Preconditioner::Jacobi);
    // f64: system 1, entry 2 holds 1e-310 (subnormal: 1/1e-310 = +Inf).
    let mats: Vec<DMatrix<f64>> = vec![
        DMatrix::identity(3, 3),
        DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0, 2.0, 1e-310])),
    ];
    let diag = DMatrix::from_fn(3, 2, |i, j| mats[j][(i, i)]);
    let op = CountingOperator::new(
        krylov::WithDiagonal::new(DenseNalgebraOperator::new(mats).unwrap(), diag),
        2,
    );
    let b = DMatrix::<f64>::from_element(3, 2, 1.0);
    match cg(&op, &b, &params) {
        Err(KrylovError::NonPositiveDiagonal {
            system: 1,
            index: 2,
            value,
        }) => assert_eq!(value, 1e-310),
        other => panic!("expected NonPositiveDiagonal, got {other:?}"),
    }
    assert_eq!(op.counts(), vec![0, 0]);
    // f32: 1e-39 is positive and representable (subnormal) but 1/1e-39 > f32::MAX; 1e-38 is
    // fine (its inverse 1e38 < 3.4e38) and the diagonal system is then solved in one step.
    for (tiny, refused) in [(1e-39f32, true), (1e-38, false)] {
        let m = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0f32, tiny]));
        let diag = DMatrix::from_column_slice(2, 1, &[1.0, tiny]);
        let op = krylov::WithDiagonal::new(DenseNalgebraOperator::new(vec![m]).unwrap(), diag);
        let b = DMatrix::<f32>::from_column_slice(2, 1, &[1.0, tiny]);
        let res = cg(&op, &b, &params);
        if refused {
            assert!(
                matches!(
                    res,
                    Err(KrylovError::NonPositiveDiagonal {
                        system: 0,
                        index: 1,
                        ..
                    })
                ),
                "{res:?}"
            );
        } else {
            let res = res.unwrap();
            assert!(res.all_converged() && res.iterations == vec![1], "{res:?}");
        }
    }
}

/// A Lanczos breakdown threshold of 1 or more would stop every system after one step and
/// call it an invariant subspace (β ≤ tol·max(|α|, β) always holds): refused.
#[test]
fn lanczos_breakdown_tol_of_one_or_more_is_refused() {
    let op = two_systems();
    let v0 = DMatrix::<f64>::from_element(3, 2, 1.0);
    for tol in [1.0, 2.5] {
        let params = LanczosParams::default().with_breakdown_tol(tol);
        assert!(
            matches!(lanczos(&op, &v0, &params), Err(KrylovError::InvalidParameter(m)) if m.contains("breakdown_tol")),
            "tol {tol}"
        );
    }
    let ok = LanczosParams::default().with_breakdown_tol(0.5);
    assert!(lanczos(&op, &v0, &ok).is_ok());
}

/// Zero Lanczos steps are refused: they gave every system an empty tridiagonal (`sizes = 0`,
/// `breakdown` false), the result of a zero start vector, which `logdet` turned into
/// `vᵀ log(H) v = 0` for any start vector. One step is the least allowed.
#[test]
fn lanczos_zero_steps_are_refused() {
    let op = two_systems();
    let v0 = DMatrix::<f64>::from_element(3, 2, 1.0);
    let params = LanczosParams::default().with_steps(0);
    match lanczos(&op, &v0, &params) {
        Err(KrylovError::InvalidParameter(m)) => assert!(m.contains("steps ≥ 1"), "{m}"),
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
    let one = lanczos(&op, &v0, &LanczosParams::default().with_steps(1)).unwrap();
    assert_eq!(one.sizes, vec![1, 1]);
}

/// The default iteration cap saturates: `2d + 10` overflowed for `d` near `usize::MAX` (a
/// panic in debug builds, a cap of 8 after wrapping in release ones).
#[test]
fn default_max_iters_saturates() {
    assert_eq!(krylov::default_max_iters(3), 16);
    assert_eq!(krylov::default_max_iters(usize::MAX / 2), usize::MAX);
    assert_eq!(krylov::default_max_iters(usize::MAX), usize::MAX);
}

/// A tridiagonal near the top of the f64 range has the nodes and weights of the same one
/// scaled down by a power of two (scaled back). Its QL sweep used to overflow its splitting
/// test (`|α_m| + |α_{m+1}| = ∞`), so every coupling looked negligible: `[[1e308, 1e308],
/// [1e308, −1e308]]` came back as nodes `1e308`, `−1e308` with weights 1 and 0, instead of
/// `±√2·1e308` with weights `(2 ± √2)/4`.
#[test]
fn gauss_rule_near_the_top_of_the_f64_range() {
    let sorted = |(mut nodes, weights): (Vec<f64>, Vec<f64>)| {
        let mut pairs: Vec<(f64, f64)> = nodes.drain(..).zip(weights).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        pairs
    };
    let big = sorted(krylov::gauss_quadrature_nodes(&[1e308, -1e308], &[1e308]).unwrap());
    let root2 = 2f64.sqrt();
    let want = [
        (-root2 * 1e308, (2.0 - root2) / 4.0),
        (root2 * 1e308, (2.0 + root2) / 4.0),
    ];
    for ((node, weight), (want_node, want_weight)) in big.iter().zip(want) {
        // A 2 × 2 eigenproblem: a few ulps.
        assert!((node / want_node - 1.0).abs() < 1e-14, "{big:?}");
        assert!((weight - want_weight).abs() < 1e-14, "{big:?}");
    }
    // Scaling by a power of two is exact: a larger tridiagonal matches its scaled copy.
    let (alphas, betas) = ([1.5e307, 4e307, 9e307], [3e307, 7e307]);
    let s = 2f64.powi(-600);
    let small_a: Vec<f64> = alphas.iter().map(|v| v * s).collect();
    let small_b: Vec<f64> = betas.iter().map(|v| v * s).collect();
    let small = sorted(krylov::gauss_quadrature_nodes(&small_a, &small_b).unwrap());
    let large = sorted(krylov::gauss_quadrature_nodes(&alphas, &betas).unwrap());
    for ((n1, w1), (n2, w2)) in small.iter().zip(&large) {
        assert!((n1 / s / n2 - 1.0).abs() < 1e-14, "{small:?} vs {large:?}");
        assert!((w1 - w2).abs() < 1e-14, "{small:?} vs {large:?}");
    }
    // Nodes beyond the f64 range: no rule.
    assert!(krylov::gauss_quadrature_nodes(&[1.7e308, 1.7e308], &[1.7e308]).is_none());
}
