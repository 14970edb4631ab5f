//! Solvers on quadratic potentials with closed-form solutions, input validation and the
//! honesty of the per-sample reports.

use crate::common::{max_abs_diff, normal_batch, residuals};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, FnPotential,
    InversionOptions, InversionResult, NewtonCgParams, QuadraticPotential, Termination,
    invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A = Q diag(λ) Qᵀ with log-uniform eigenvalues in [λ_min, λ_max] and a random orthogonal Q.
fn spd(d: usize, lambda_min: f64, lambda_max: f64, seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let m = DMatrix::<f64>::from_fn(d, d, |_, _| StandardNormal.sample(&mut rng));
    let q = m.qr().q();
    let lam = DVector::from_fn(d, |i, _| {
        let s = if d > 1 {
            i as f64 / (d - 1) as f64
        } else {
            0.0
        };
        lambda_min * (lambda_max / lambda_min).powf(s)
    });
    let a: DMatrix<f64> = &q * DMatrix::from_diagonal(&lam) * q.transpose();
    (&a + a.transpose()) * 0.5
}

fn linear_term(d: usize, seed: u64) -> DVector<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    DVector::<f64>::from_fn(d, |_, _| StandardNormal.sample(&mut rng))
}

type Solver =
    fn(&QuadraticPotential, &Tensor, &InversionOptions) -> Result<InversionResult, ConvexOptError>;

fn solvers() -> Vec<(&'static str, Solver)> {
    vec![
        ("flat", |p, y, o| {
            invert_lbfgs_flat(p, y, o, &FlatLbfgsParams::default())
        }),
        ("batched", |p, y, o| {
            invert_lbfgs_batched(p, y, o, &BatchedLbfgsParams::default())
        }),
        ("newton", |p, y, o| {
            invert_newton_cg(p, y, o, &NewtonCgParams::default())
        }),
    ]
}

/// Checks the report against an independent recomputation at the returned `x`.
fn assert_honest<P: BatchedPotential>(name: &str, pot: &P, y: &Tensor, res: &InversionResult) {
    let r = residuals(pot, &res.x, y);
    for (i, &ri) in r.iter().enumerate() {
        // Same arithmetic as the solver's last evaluation, so the values agree to rounding.
        let slack = 1e-12 + 1e-6 * ri;
        assert!(
            (ri - res.residual_inf[i]).abs() <= slack,
            "{name}: sample {i} reports {} but has {}",
            res.residual_inf[i],
            ri
        );
        assert_eq!(
            res.converged[i],
            ri <= res.tolerance[i] + slack,
            "{name}: sample {i} flag disagrees with its residual"
        );
        assert_eq!(
            res.converged[i],
            res.termination[i] == Termination::Converged,
            "{name}: sample {i} flag disagrees with its termination reason"
        );
    }
}

#[test]
fn well_conditioned_quadratic_matches_closed_form() {
    let (d, n) = (8, 32);
    let a = spd(d, 0.5, 20.0, 1);
    let b = linear_term(d, 2);
    let pot = QuadraticPotential::new(&a, Some(&b), DType::F64, &Device::Cpu).unwrap();
    let y = (normal_batch(n, d, DType::F64, 3) * 2.0).unwrap();
    let exact = pot.solve(&y).unwrap();
    // The default f64 tolerance, 1e-9.
    let opts = InversionOptions::default();
    for (name, solve) in solvers() {
        let res = solve(&pot, &y, &opts).unwrap();
        assert!(res.all_converged(), "{name}: {:?}", res.residual_inf);
        assert!(res.max_residual() <= 1e-9, "{name}");
        assert_honest(name, &pot, &y, &res);
        // ‖x − x*‖₂ ≤ ‖r‖₂ / λ_min ≤ √d·1e-9 / 0.5 ≈ 5.7e-9.
        let err = max_abs_diff(&res.x, &exact);
        assert!(err <= 5.7e-9, "{name}: error {err}");
    }
}

#[test]
fn newton_on_a_quadratic_accepts_unit_steps() {
    // On a quadratic the (inexact) Newton step always satisfies Armijo at t = 1, so each
    // iteration costs exactly one trial evaluation (no backtracking), and the residual contracts
    // by the forcing factor: η ≤ 0.5 per step at worst (∞-norm tests add at most a factor √d
    // early on), so 40 iterations is a loose cap.
    let (d, n) = (6, 8);
    let a = spd(d, 1.0, 10.0, 4);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = normal_batch(n, d, DType::F64, 5);
    let params = NewtonCgParams::default().with_compaction_threshold(0.0);
    let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &params).unwrap();
    assert!(res.all_converged());
    assert!(
        res.iterations.iter().all(|&k| k <= 40),
        "{:?}",
        res.iterations
    );
    // One evaluation at x0, then one per iteration of the slowest sample, unless a backtrack or a
    // partial acceptance forced a re-evaluation: the first case must hold here.
    assert_eq!(
        res.stats.gradient_calls,
        1 + res.stats.outer_iterations,
        "{:?}",
        res.stats
    );
}

#[test]
fn ill_conditioned_quadratic_converges_or_reports() {
    // Condition number 1e6: every solver must converge, or flag the samples it did not solve.
    let (d, n) = (10, 16);
    let a = spd(d, 1e-4, 1e2, 6);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = normal_batch(n, d, DType::F64, 7);
    let exact = pot.solve(&y).unwrap();
    let opts = InversionOptions::default()
        .with_abs_tolerance(1e-8)
        .with_max_iterations(2000);
    for (name, solve) in solvers() {
        let res = solve(&pot, &y, &opts).unwrap();
        assert_honest(name, &pot, &y, &res);
        if res.all_converged() {
            // ‖x − x*‖₂ ≤ √d·1e-8 / 1e-4 ≈ 3.2e-4.
            assert!(max_abs_diff(&res.x, &exact) <= 3.2e-4, "{name}");
        }
        // Newton–CG solves a quadratic exactly up to CG accuracy: it must converge here.
        if name == "newton" {
            assert!(res.all_converged(), "newton: {:?}", res.residual_inf);
        }
    }
}

#[test]
fn f32_quadratic_reaches_the_f32_default_tolerance() {
    let (d, n) = (8, 32);
    let a = spd(d, 0.5, 5.0, 8);
    let pot = QuadraticPotential::new(&a, None, DType::F32, &Device::Cpu).unwrap();
    let y = normal_batch(n, d, DType::F32, 9);
    let exact = pot.solve(&y).unwrap();
    for (name, solve) in solvers() {
        let res = solve(&pot, &y, &InversionOptions::default()).unwrap();
        assert_eq!(res.x.dtype(), DType::F32);
        assert!(res.all_converged(), "{name}: {:?}", res.residual_inf);
        assert_honest(name, &pot, &y, &res);
        // tol ≤ 2e-5 + 2e-5·‖y‖∞ ≤ 1.2e-4 (‖y‖∞ < 5); ‖x − x*‖₂ ≤ √8·1.2e-4/0.5 ≈ 7e-4.
        assert!(max_abs_diff(&res.x, &exact) <= 7e-4, "{name}");
    }
}

#[test]
fn iteration_limit_is_reported_not_hidden() {
    let (d, n) = (10, 8);
    let a = spd(d, 1e-3, 1e2, 10);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = normal_batch(n, d, DType::F64, 11);
    let opts = InversionOptions::default()
        .with_abs_tolerance(1e-12)
        .with_max_iterations(2);
    for (name, solve) in solvers() {
        let res = solve(&pot, &y, &opts).unwrap();
        assert!(!res.all_converged(), "{name}");
        assert!(
            res.iterations.iter().all(|&k| k <= 2),
            "{name}: {:?}",
            res.iterations
        );
        assert_honest(name, &pot, &y, &res);
        // The flat solver's argmin budget of 1.25·max_iterations = 2 gradient evaluations is
        // spent in its first iteration (Hager–Zhang evaluates 3 points per line search).
        let expected = if name == "flat" {
            Termination::EvaluationBudget
        } else {
            Termination::MaxIterations
        };
        assert_eq!(res.termination, vec![expected; n], "{name}");
        assert_eq!(res.count(expected), n, "{name}");
        assert!(matches!(
            res.clone().into_converged(),
            Err(ConvexOptError::NotConverged { .. })
        ));
    }
}

#[test]
fn initial_point_is_used() {
    let d = 4;
    let a = spd(d, 1.0, 3.0, 12);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = normal_batch(5, d, DType::F64, 13);
    let exact = pot.solve(&y).unwrap();
    // Starting at the solution: converged with zero iterations.
    let opts = InversionOptions::default().with_x0(exact.clone());
    let res = invert_lbfgs_batched(&pot, &y, &opts, &BatchedLbfgsParams::default()).unwrap();
    assert!(res.all_converged());
    assert_eq!(res.iterations, vec![0; 5]);
    let res = invert_newton_cg(&pot, &y, &opts, &NewtonCgParams::default()).unwrap();
    assert_eq!(res.iterations, vec![0; 5]);
}

#[test]
fn non_finite_input_is_an_error() {
    let d = 3;
    let a = spd(d, 1.0, 3.0, 14);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1.0f64, f64::NAN, 0.0], [0.0, 1.0, 2.0]], &Device::Cpu).unwrap();
    let good = Tensor::new(&[[1.0f64, 0.0, 0.0], [0.0, 1.0, 2.0]], &Device::Cpu).unwrap();
    let inf_x0 = Tensor::new(
        &[[1.0f64, 0.0, f64::INFINITY], [0.0, 1.0, 2.0]],
        &Device::Cpu,
    )
    .unwrap();
    for (name, solve) in solvers() {
        assert!(
            matches!(
                solve(&pot, &y, &InversionOptions::default()),
                Err(ConvexOptError::NonFiniteRow { row: 0, .. })
            ),
            "{name}"
        );
        let opts = InversionOptions::default().with_x0(inf_x0.clone());
        assert!(
            matches!(
                solve(&pot, &good, &opts),
                Err(ConvexOptError::NonFiniteRow { row: 0, .. })
            ),
            "{name}"
        );
    }
    // A potential that is NaN at the start: every row stops there in the per-row solver; the
    // flat one refuses the batch, naming the first row.
    let nan_pot = FnPotential::new(|x: &Tensor| {
        let v = (x.sum(1)? * f64::NAN)?;
        Ok((v, x.clone()))
    });
    let o = InversionOptions::default();
    let res = invert_lbfgs_batched(&nan_pot, &good, &o, &BatchedLbfgsParams::default()).unwrap();
    assert_eq!(res.count(convex_opt::Termination::NonFinite), 2);
    assert_eq!(res.num_failed(), 2);
    assert!(matches!(
        invert_lbfgs_flat(&nan_pot, &good, &o, &FlatLbfgsParams::default()),
        Err(ConvexOptError::NonFiniteRow { row: 0, .. })
    ));
}

#[test]
fn shape_and_dtype_errors() {
    let a = spd(3, 1.0, 2.0, 15);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y1 = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu).unwrap();
    let yi = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let wrong_x0 = InversionOptions::default()
        .with_x0(Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap());
    let y = Tensor::zeros((1, 3), DType::F64, &Device::Cpu).unwrap();
    for (name, solve) in solvers() {
        assert!(
            matches!(
                solve(&pot, &y1, &InversionOptions::default()),
                Err(ConvexOptError::Shape { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                solve(&pot, &yi, &InversionOptions::default()),
                Err(ConvexOptError::UnsupportedDType(_))
            ),
            "{name}"
        );
        assert!(
            matches!(
                solve(&pot, &y, &wrong_x0),
                Err(ConvexOptError::Shape { .. })
            ),
            "{name}"
        );
        // Potential of dimension 3, targets of dimension 2.
        let y2 = Tensor::zeros((4, 2), DType::F64, &Device::Cpu).unwrap();
        assert!(
            solve(&pot, &y2, &InversionOptions::default()).is_err(),
            "{name}"
        );
    }
    // Values of shape (B, 1) instead of (B,) (they were accepted: same element count).
    let column = FnPotential::new(|x: &Tensor| {
        let v = (x.sqr()?.sum_keepdim(1)? * 0.5)?;
        Ok((v, x.clone()))
    });
    let yb = Tensor::ones((4, 3), DType::F64, &Device::Cpu).unwrap();
    let o = InversionOptions::default();
    for (name, r) in [
        (
            "flat",
            invert_lbfgs_flat(&column, &yb, &o, &FlatLbfgsParams::default()),
        ),
        (
            "batched",
            invert_lbfgs_batched(&column, &yb, &o, &BatchedLbfgsParams::default()),
        ),
        (
            "newton",
            invert_newton_cg(&column, &yb, &o, &NewtonCgParams::default()),
        ),
    ] {
        match r {
            Err(ConvexOptError::Shape { message, .. }) => {
                assert!(message.contains("[4, 1]"), "{name}: {message}")
            }
            other => panic!("{name}: {:?}", other.map(|r| r.converged)),
        }
    }
    assert!(
        QuadraticPotential::new(
            &DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 0.0, 1.0]),
            None,
            DType::F64,
            &Device::Cpu
        )
        .is_err()
    );
    assert!(
        QuadraticPotential::new(
            &DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]),
            None,
            DType::F64,
            &Device::Cpu
        )
        .is_err()
    );
}

#[test]
fn newton_needs_hessian_vector_products() {
    // Φ(x) = ‖x‖², ∇Φ(x) = 2x: the solution is y/2.
    let pot = FnPotential::new(|x: &Tensor| Ok((x.sqr()?.sum(1)?, (x * 2.0)?)));
    let y = Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap();
    let err = invert_newton_cg(
        &pot,
        &y,
        &InversionOptions::default(),
        &NewtonCgParams::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ConvexOptError::Unsupported("hvp")), "{err}");
    // The same potential with an HVP works.
    let pot = pot.with_hvp(|_x: &Tensor, v: &Tensor| v * 2.0);
    let res = invert_newton_cg(
        &pot,
        &y,
        &InversionOptions::default(),
        &NewtonCgParams::default(),
    )
    .unwrap();
    assert!(res.all_converged());
    assert!(max_abs_diff(&res.x, &(y * 0.5).unwrap()) <= 1e-12);
}

#[test]
fn empty_batch() {
    let a = spd(3, 1.0, 2.0, 16);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
    for (name, solve) in solvers() {
        let res = solve(&pot, &y, &InversionOptions::default()).unwrap();
        assert_eq!(res.x.dims(), &[0, 3], "{name}");
        assert!(res.all_converged());
    }
}

#[test]
fn compaction_does_not_change_the_answer() {
    // Samples with very different difficulty (scaled targets) finish at different iterations,
    // so the working set is compacted several times.
    let (d, n) = (6, 40);
    let a = spd(d, 0.2, 30.0, 17);
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let scales: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-3.0 + 6.0 * i as f64 / n as f64))
        .collect();
    let s = Tensor::from_vec(scales, (n, 1), &Device::Cpu).unwrap();
    let y = normal_batch(n, d, DType::F64, 18)
        .broadcast_mul(&s)
        .unwrap();
    let opts = InversionOptions::default().with_abs_tolerance(1e-10);
    let with = invert_lbfgs_batched(
        &pot,
        &y,
        &opts,
        &BatchedLbfgsParams::default().with_compaction_threshold(0.9),
    )
    .unwrap();
    let without = invert_lbfgs_batched(
        &pot,
        &y,
        &opts,
        &BatchedLbfgsParams::default().with_compaction_threshold(0.0),
    )
    .unwrap();
    assert!(with.stats.compactions > 0);
    assert_eq!(without.stats.compactions, 0);
    assert!(with.all_converged() && without.all_converged());
    // Identical per-row arithmetic: same iterations and the same iterates.
    assert_eq!(with.iterations, without.iterations);
    assert!(max_abs_diff(&with.x, &without.x) <= 1e-12);
    let nw = invert_newton_cg(
        &pot,
        &y,
        &opts,
        &NewtonCgParams::default().with_compaction_threshold(0.9),
    )
    .unwrap();
    let nwo = invert_newton_cg(
        &pot,
        &y,
        &opts,
        &NewtonCgParams::default().with_compaction_threshold(0.0),
    )
    .unwrap();
    assert!(nw.all_converged() && nwo.all_converged());
    assert!(max_abs_diff(&nw.x, &nwo.x) <= 1e-9);
}

/// Φ(x) = −‖x‖²/2: concave, against the solvers' precondition.
struct Concave;

impl BatchedPotential for Concave {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        Ok(((x.sqr()?.sum(1)? * -0.5)?, x.neg()?))
    }
    fn hvp(&self, _x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        Ok(v.neg()?)
    }
}

/// Newton–CG on a concave potential stops every row at once with `NotConvex` (its first CG
/// step meets pᵀHp < 0; it used to wander 525 iterations to a residual of 1e154 and report a
/// failed line search). Strongly convex problems never report it (the other tests).
#[test]
fn newton_cg_reports_a_concave_potential() {
    let y = Tensor::ones((4, 3), DType::F64, &Device::Cpu).unwrap();
    let res = invert_newton_cg(
        &Concave,
        &y,
        &InversionOptions::default(),
        &NewtonCgParams::default(),
    )
    .unwrap();
    assert!(
        res.termination.iter().all(|t| *t == Termination::NotConvex),
        "{:?}",
        res.termination
    );
    assert!(
        res.iterations.iter().all(|i| *i == 0),
        "{:?}",
        res.iterations
    );
    assert!(!res.converged.iter().any(|c| *c));
}
