//! Input validation: NaN in targets and initial points, dtype mismatches, unsupported dtypes.

use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, FnPotential,
    InversionOptions, InversionResult, NewtonCgParams, QuadraticPotential, invert_lbfgs_batched,
    invert_lbfgs_flat, invert_newton_cg,
};
use nalgebra::DMatrix;

type Solve<'a> =
    Box<dyn Fn(&Tensor, &InversionOptions) -> Result<InversionResult, ConvexOptError> + 'a>;

/// The three solvers on one potential.
fn solvers<P: BatchedPotential>(pot: &P) -> Vec<(&'static str, Solve<'_>)> {
    vec![
        (
            "newton",
            Box::new(move |y, o| invert_newton_cg(pot, y, o, &NewtonCgParams::default())),
        ),
        (
            "batched",
            Box::new(move |y, o| invert_lbfgs_batched(pot, y, o, &BatchedLbfgsParams::default())),
        ),
        (
            "flat",
            Box::new(move |y, o| invert_lbfgs_flat(pot, y, o, &FlatLbfgsParams::default())),
        ),
    ]
}

fn quadratic(dtype: DType) -> QuadraticPotential {
    QuadraticPotential::new(
        &(DMatrix::<f64>::identity(3, 3) * 2.0),
        None,
        dtype,
        &Device::Cpu,
    )
    .unwrap()
}

fn tensor(rows: &[[f64; 3]], dtype: DType) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

#[test]
fn nan_in_targets_or_initial_point_is_named() {
    for dtype in [DType::F64, DType::F32] {
        let pot = quadratic(dtype);
        // candle's max skips NaN: ‖[1, NaN, 0]‖∞ came out as 1 and the solvers blamed the
        // potential "at the initial point".
        let y_nan = tensor(&[[1.0, f64::NAN, 0.0], [0.0, 1.0, 2.0]], dtype);
        let y_inf = tensor(&[[1.0, 0.0, 0.0], [0.0, f64::INFINITY, 2.0]], dtype);
        let good = tensor(&[[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]], dtype);
        let x0_part_nan = tensor(&[[1.0, 0.0, 0.0], [0.0, f64::NAN, 2.0]], dtype);
        let finite_x0 = InversionOptions::default().with_x0(good.clone());
        for (name, solve) in solvers(&pot) {
            // The error names the first offending row (before: `NonFinite("targets y")`
            // without the row, so a large batch had to be searched by hand).
            for (y, opts, bad_row) in [
                (&y_nan, InversionOptions::default(), 0),
                (&y_nan, finite_x0.clone(), 0),
                (&y_inf, finite_x0.clone(), 1),
            ] {
                let err = solve(y, &opts).unwrap_err();
                assert!(
                    matches!(err, ConvexOptError::NonFiniteRow { context: "targets y", row }
                        if row == bad_row),
                    "{name} {dtype:?}: {err}"
                );
            }
            let opts = InversionOptions::default().with_x0(x0_part_nan.clone());
            let err = solve(&good, &opts).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConvexOptError::NonFiniteRow {
                        context: "initial point x0",
                        row: 1
                    }
                ),
                "{name} {dtype:?}: {err}"
            );
            assert_eq!(
                err.to_string(),
                "non-finite values in initial point x0 of row 1 (the first such row)"
            );
        }
    }
}

#[test]
fn nan_in_one_gradient_entry_at_the_start_is_caught() {
    // ∇Φ(x) = x except a NaN in the last column: candle's row max, which starts from the first
    // entry and skips NaN after it, saw a finite gradient (with y = x₀ = [0, 1, 1], even a
    // converged row: ‖[0, 0, NaN]‖∞ came out as 0). The per-row solvers stop that row as
    // `NonFinite` (not converged); the flat solver refuses the batch, naming the row.
    let pot = FnPotential::new(|x: &Tensor| {
        let d = x.dim(1)?;
        let mask: Vec<u8> = (0..d).map(|j| u8::from(j + 1 == d)).collect();
        let mask = Tensor::from_vec(mask, (1, d), x.device())?.broadcast_as(x.shape())?;
        let g = mask.where_cond(&(x * f64::NAN)?, x)?;
        Ok(((x.sqr()?.sum(1)? * 0.5)?, g))
    })
    .with_hvp(|_x: &Tensor, v: &Tensor| Ok(v.clone()));
    let y = tensor(&[[0.0, 1.0, 1.0]], DType::F64);
    for (name, solve) in solvers(&pot) {
        match solve(&y, &InversionOptions::default()) {
            Ok(res) => {
                assert_ne!(name, "flat");
                assert_eq!(
                    res.termination,
                    [convex_opt::Termination::NonFinite],
                    "{name}"
                );
                assert!(!res.converged[0], "{name}");
            }
            Err(err) => {
                assert_eq!(name, "flat", "{err}");
                assert!(
                    matches!(err, ConvexOptError::NonFiniteRow { row: 0, .. }),
                    "{name}: {err}"
                );
            }
        }
    }
}

#[test]
fn dtype_mismatch_is_reported_before_evaluating() {
    for (pot_dtype, y_dtype) in [(DType::F32, DType::F64), (DType::F64, DType::F32)] {
        let pot = quadratic(pot_dtype);
        let y = Tensor::ones((2, 3), y_dtype, &Device::Cpu).unwrap();
        for (name, solve) in solvers(&pot) {
            let err = solve(&y, &InversionOptions::default()).unwrap_err();
            match &err {
                ConvexOptError::DTypeMismatch {
                    context: "targets y",
                    expected,
                    found,
                } => assert_eq!((*expected, *found), (pot_dtype, y_dtype), "{name}"),
                other => panic!("{name}: expected a dtype mismatch, got {other}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{pot_dtype:?}")) && msg.contains(&format!("{y_dtype:?}")),
                "{msg}"
            );
        }
        // The potential itself names the mismatch too (no candle matmul error).
        let err = pot.value_and_gradient(&y).unwrap_err();
        assert!(
            matches!(err, ConvexOptError::DTypeMismatch { expected, found, .. }
                if expected == pot_dtype && found == y_dtype),
            "{err}"
        );
        assert_eq!(pot.expected_dtype(), Some(pot_dtype));
    }
}

/// An initial point of another dtype than the targets is an error naming `x0` (it was cast
/// silently), for potentials with and without an expected dtype.
#[test]
fn initial_point_of_another_dtype_is_a_mismatch() {
    let any_dtype = FnPotential::new(|x: &Tensor| Ok(((x.sqr()?.sum(1)? * 0.5)?, x.clone())))
        .with_hvp(|_x: &Tensor, v: &Tensor| Ok(v.clone()));
    for (y_dtype, x0_dtype) in [(DType::F64, DType::F32), (DType::F32, DType::F64)] {
        let y = Tensor::ones((2, 3), y_dtype, &Device::Cpu).unwrap();
        let x0 = Tensor::zeros((2, 3), x0_dtype, &Device::Cpu).unwrap();
        let opts = InversionOptions::default().with_x0(x0);
        let fixed = quadratic(y_dtype);
        for (name, solve) in solvers(&any_dtype).into_iter().chain(solvers(&fixed)) {
            let err = solve(&y, &opts).unwrap_err();
            match &err {
                ConvexOptError::DTypeMismatch {
                    context: "initial point x0",
                    expected,
                    found,
                } => assert_eq!((*expected, *found), (y_dtype, x0_dtype), "{name}"),
                other => panic!("{name}: expected a dtype mismatch, got {other}"),
            }
        }
        // The same x0 in the targets' dtype is accepted.
        let opts = InversionOptions::default()
            .with_x0(Tensor::zeros((2, 3), y_dtype, &Device::Cpu).unwrap());
        for (name, solve) in solvers(&any_dtype) {
            assert!(solve(&y, &opts).unwrap().all_converged(), "{name}");
        }
    }
}

#[test]
fn quadratic_potential_rejects_unsupported_dtypes() {
    for dtype in [DType::F16, DType::BF16, DType::U32] {
        let err =
            QuadraticPotential::new(&DMatrix::<f64>::identity(2, 2), None, dtype, &Device::Cpu)
                .unwrap_err();
        assert!(
            matches!(err, ConvexOptError::UnsupportedDType(d) if d == dtype),
            "{dtype:?}: {err}"
        );
    }
}

/// `QuadraticPotential::solve` refuses integer targets: it used to solve in f64 and cast the
/// solution to the targets' dtype, truncating it (`U32` y = (1, 2, 3) with A = 2·I gave
/// x = (0, 0, 1) instead of (0.5, 1, 1.5)).
#[test]
fn quadratic_solve_refuses_integer_targets() {
    let pot = quadratic(DType::F64);
    let y = tensor(&[[1.0, 2.0, 3.0]], DType::F64);
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let err = pot.solve(&y.to_dtype(dtype).unwrap()).unwrap_err();
        assert!(
            matches!(err, ConvexOptError::UnsupportedDType(d) if d == dtype),
            "{dtype:?}: {err}"
        );
    }
    // Cholesky of 2·I: x = y/√2/√2, a few ulps from y/2.
    let x: Vec<Vec<f64>> = pot.solve(&y).unwrap().to_vec2().unwrap();
    for (got, want) in x[0].iter().zip([0.5, 1.0, 1.5]) {
        assert!((got - want).abs() <= 1e-15, "{x:?}");
    }
}

/// `InversionResult::concat` refuses no parts and parts that cannot be one batch (dtype,
/// columns), and sums the work counters of the parts it joins (outer iterations: the largest).
#[test]
fn concat_checks_its_parts_and_merges_counters() {
    assert!(matches!(
        InversionResult::concat(Vec::new()),
        Err(ConvexOptError::InvalidParameter(_))
    ));
    let solve = |dtype: DType, y: &[[f64; 3]]| {
        let flat: Vec<f64> = y.iter().flatten().copied().collect();
        let y = Tensor::from_vec(flat, (y.len(), 3), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let o = InversionOptions::default();
        invert_newton_cg(&quadratic(dtype), &y, &o, &NewtonCgParams::default()).unwrap()
    };
    let a = solve(DType::F64, &[[1.0, 2.0, 3.0]]);
    let b = solve(DType::F64, &[[0.5, 0.0, -1.0], [4.0, 4.0, 4.0]]);
    let joined = InversionResult::concat(vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(joined.x.dims(), &[3, 3]);
    assert_eq!(
        joined.converged,
        [&a.converged[..], &b.converged[..]].concat()
    );
    let s = &joined.stats;
    assert_eq!(
        s.gradient_calls,
        a.stats.gradient_calls + b.stats.gradient_calls
    );
    assert_eq!(s.hvp_rows, a.stats.hvp_rows + b.stats.hvp_rows);
    let outer = a.stats.outer_iterations.max(b.stats.outer_iterations);
    assert_eq!(s.outer_iterations, outer);

    let f32_part = solve(DType::F32, &[[1.0, 2.0, 3.0]]);
    assert!(matches!(
        InversionResult::concat(vec![a.clone(), f32_part]),
        Err(ConvexOptError::DTypeMismatch { .. })
    ));
    let mut narrow = b;
    narrow.x = narrow.x.narrow(1, 0, 2).unwrap();
    assert!(matches!(
        InversionResult::concat(vec![a, narrow]),
        Err(ConvexOptError::Shape { .. })
    ));
}

/// `abs_tolerance = 0` with a relative tolerance gave a row with `y_i = 0` the tolerance 0:
/// the batched solver ran all 1000 iterations on it (`MaxIterations`, residual 4.4e-16, in the
/// audit's 20-dimensional case). Every solver now refuses it up front, naming the reason; a
/// small positive absolute tolerance solves the same batch.
#[test]
fn zero_absolute_tolerance_is_refused_by_every_solver() {
    for dtype in [DType::F64, DType::F32] {
        // ∇Φ(x) = A x + b with b ≠ 0: at y = 0 the solution is not x₀ = 0, and the residual
        // there is rounding, never exactly 0.
        let a = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.0, 1.0, 3.0, 0.5, 0.0, 0.5, 2.0]);
        let b = nalgebra::dvector![0.3, -1.1, 0.7];
        let pot = QuadraticPotential::new(&a, Some(&b), dtype, &Device::Cpu).unwrap();
        let y = tensor(&[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype);
        let zero_abs = InversionOptions::default()
            .with_abs_tolerance(0.0)
            .with_rel_tolerance(1e-8);
        for (name, solve) in solvers(&pot) {
            match solve(&y, &zero_abs) {
                Err(ConvexOptError::InvalidParameter(m)) => {
                    assert!(
                        m.contains("abs_tolerance = 0") && m.contains("y_i = 0"),
                        "{m}"
                    )
                }
                Err(e) => panic!("{name} {dtype:?}: {e}"),
                Ok(r) => panic!("{name} {dtype:?}: not refused: {r}"),
            }
            // The f32 rounding level of a unit-scale residual is ~1e-7.
            let abs = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let ok = InversionOptions::default()
                .with_abs_tolerance(abs)
                .with_rel_tolerance(1e-8);
            let r = solve(&y, &ok).unwrap();
            assert!(r.all_converged(), "{name} {dtype:?}: {r}");
            assert!(r.iterations[1] < 100, "{name} {dtype:?}: {r}");
        }
    }
}
