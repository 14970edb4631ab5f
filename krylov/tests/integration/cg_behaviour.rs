//! CG behaviour: freezing of converged systems (application counts), batch-global stopping,
//! initial guesses, Jacobi preconditioning, and the non-panicking failure modes.
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchOperator, BatchVectors, CgParams, CgStopping, CountingOperator, DenseFaerOperator,
    DenseNalgebraOperator, FnOperator, KrylovError, Preconditioner, cg, cg_with_initial_guess,
    cg_with_initial_guess_observed,
};
use nalgebra::DMatrix;
use std::cell::RefCell;

fn to_na(m: &Mat<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// A batch whose systems need very different iteration counts: `H = I` (1 iteration),
/// 4 distinct eigenvalues (4 iterations in exact arithmetic), and a random cond-1e4 matrix.
fn mixed_batch(d: usize) -> (Vec<Mat<f64>>, Vec<f64>) {
    let mut r = rng(21);
    let eye = Mat::<f64>::identity(d, d);
    let eigs: Vec<f64> = (0..d).map(|k| [1.0, 3.0, 10.0, 30.0][k % 4]).collect();
    let few = spd_with_eigs(&mut r, &eigs);
    let hard = random_spd(&mut r, d, 1e4).0;
    (vec![eye, few, hard], gaussian(&mut r, 3 * d))
}

/// A system that converges early receives no further operator work: the counting wrapper
/// sees exactly `iterations[i]` active applications per system (zero start) plus the one
/// check of its true residual when the batch stops, the identity system is done after one,
/// and the others are unaffected. The wrapped operator also writes
/// NaN into the output of inactive systems, which must not leak into any solution.
#[test]
fn converged_systems_are_frozen() {
    let d = 30;
    let (mats, b) = mixed_batch(d);
    let dense = DenseNalgebraOperator::new(mats.iter().map(to_na).collect()).unwrap();
    let poisoned = FnOperator::new(
        |x: &DMatrix<f64>, active: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
            let mut y = dense.apply(x, active)?;
            for (j, a) in active.iter().enumerate() {
                if !a {
                    y.column_mut(j).fill(f64::NAN);
                }
            }
            Ok(y)
        },
    );
    let op = CountingOperator::new(poisoned, 3);
    let bv = DMatrix::from_column_slice(d, 3, &b);
    // Plain CG on the cond-1e4 system needs more than the default 2d + 10 iterations
    // (finite-precision delay), hence the explicit cap.
    let res = cg(
        &op,
        &bv,
        &CgParams::default().with_rtol(1e-10).with_max_iters(300),
    )
    .unwrap();
    assert!(res.all_converged(), "{:?}", res.residual_norms);
    assert_eq!(op.counts(), res.applications);
    let checked: Vec<usize> = res.iterations.iter().map(|it| it + 1).collect();
    assert_eq!(res.applications, checked);
    assert_eq!(res.iterations[0], 1);
    // 4 distinct eigenvalues: 4 iterations in exact arithmetic, rounding may add one.
    assert!((4..=5).contains(&res.iterations[1]), "{:?}", res.iterations);
    assert!(res.iterations[2] > 10);
    assert_eq!(op.calls(), res.operator_calls);
    // One call per iteration, and one checking all three true residuals at the end.
    assert_eq!(
        res.operator_calls,
        *res.iterations.iter().max().unwrap() + 1
    );
    let x = res.x.to_host().unwrap();
    assert!(x.iter().all(|v| v.is_finite()));
    // H = I: one step gives x = b exactly, and the frozen column is never touched again.
    assert_eq!(&x[..d], &b[..d]);
    for i in 0..3 {
        let xs = faer_solve(&mats[i], &b[i * d..(i + 1) * d]);
        let err = norm2(
            &xs.iter()
                .zip(&x[i * d..(i + 1) * d])
                .map(|(a, c)| a - c)
                .collect::<Vec<_>>(),
        );
        // ‖x − x*‖ ≤ ‖H⁻¹‖·√d·tol with ‖H⁻¹‖ ≤ 1 here and tol = 1e-10‖b‖∞ (~3e-10); 1e-7 is loose.
        assert!(err < 1e-7, "system {i}: {err}");
    }
}

/// The reference's batch-global stopping keeps every system iterating until the slowest has
/// converged: every system is charged the same number of applications, which is at least the
/// per-system total. Both rules reach the tolerance.
#[test]
fn batch_global_charges_every_system_until_the_last_converges() {
    let d = 30;
    let (mats, b) = mixed_batch(d);
    let op = DenseFaerOperator::new(mats.clone()).unwrap();
    let bv = faer_batch(&b, d, 3, |v| v);
    let p = CgParams::default().with_rtol(1e-10).with_max_iters(300);
    let per = cg(&op, &bv, &p).unwrap();
    let glob = cg(&op, &bv, &p.clone().with_stopping(CgStopping::BatchGlobal)).unwrap();
    assert!(per.all_converged() && glob.all_converged());
    let n = glob.operator_calls;
    assert_eq!(glob.applications, vec![n; 3]);
    assert_eq!(n, per.operator_calls);
    assert!(glob.total_applications() > per.total_applications());
    // Per system: its iterations and one check of its true residual.
    assert_eq!(
        per.total_applications(),
        per.iterations.iter().sum::<usize>() + 3
    );
    let xs = glob.x.to_host().unwrap();
    for i in 0..3 {
        let xe = faer_solve(&mats[i], &b[i * d..(i + 1) * d]);
        for k in 0..d {
            assert!((xs[i * d + k] - xe[k]).abs() < 1e-7);
        }
    }
}

/// Starting at `x0 = b` (reference): the initial residual costs one application per system
/// (and the check of the true residual one more); an exact initial guess costs nothing more. A
/// zero right-hand side converges with zero iterations and zero applications, with or without
/// an initial guess.
#[test]
fn initial_guess_and_zero_rhs() {
    let d = 8;
    let mut r = rng(2);
    let h = random_spd(&mut r, d, 50.0).0;
    let op = DenseFaerOperator::new(vec![h.clone(), h.clone()]).unwrap();
    let mut b = gaussian(&mut r, 2 * d);
    b[d..].fill(0.0);
    let bv = faer_batch(&b, d, 2, |v| v);
    let zero = cg(&op, &bv, &CgParams::default()).unwrap();
    assert_eq!(zero.iterations[1], 0);
    assert_eq!(zero.applications[1], 0);
    assert!(zero.converged[1]);

    let warm = cg_with_initial_guess(&op, &bv, &bv, &CgParams::default().with_rtol(1e-12)).unwrap();
    assert_eq!(warm.applications[0], warm.iterations[0] + 2);
    assert!(warm.converged[0]);

    let exact = faer_batch(
        &[faer_solve(&h, &b[..d]), vec![0.0; d]].concat(),
        d,
        2,
        |v| v,
    );
    let done =
        cg_with_initial_guess(&op, &bv, &exact, &CgParams::default().with_rtol(1e-6)).unwrap();
    assert_eq!(done.iterations, vec![0, 0]);
    // b_1 = 0: x_1 = 0 without forming its residual.
    assert_eq!(done.applications, vec![1, 0]);
}

/// Jacobi preconditioning on a badly row/column-scaled SPD matrix `D A D` removes the scaling:
/// far fewer iterations, same solution. Without a diagonal the request is a typed error.
#[test]
fn jacobi_preconditioner() {
    let d = 40;
    let mut r = rng(8);
    let a = random_spd(&mut r, d, 10.0).0;
    let scale: Vec<f64> = (0..d)
        .map(|k| 10f64.powf(3.0 * k as f64 / d as f64))
        .collect();
    let h = Mat::<f64>::from_fn(d, d, |i, j| scale[i] * a[(i, j)] * scale[j]);
    let b = gaussian(&mut r, d);
    let op = DenseNalgebraOperator::new(vec![to_na(&h)]).unwrap();
    let bv = DMatrix::from_column_slice(d, 1, &b);
    let p = CgParams::default().with_rtol(1e-10).with_max_iters(2000);
    let plain = cg(&op, &bv, &p).unwrap();
    let jac = cg(
        &op,
        &bv,
        &p.clone().with_preconditioner(Preconditioner::Jacobi),
    )
    .unwrap();
    assert!(jac.all_converged());
    assert!(
        jac.iterations[0] * 2 < plain.iterations[0],
        "{:?} vs {:?}",
        jac.iterations,
        plain.iterations
    );
    let xe = faer_solve(&h, &b);
    let x = jac.x.to_host().unwrap();
    let xnorm = norm2(&xe);
    let err = norm2(&xe.iter().zip(&x).map(|(a, c)| a - c).collect::<Vec<_>>());
    // cond(H) ≈ 10·10⁶; residual tol 1e-10‖b‖∞ ⇒ relative error ≲ 1e-3 in the worst case.
    assert!(err <= 1e-3 * xnorm, "{err} vs {xnorm}");

    let closure = FnOperator::new(|x: &DMatrix<f64>, act: &[bool]| op.apply(x, act));
    let err = cg(
        &closure,
        &bv,
        &p.clone().with_preconditioner(Preconditioner::Jacobi),
    )
    .unwrap_err();
    assert!(matches!(err, KrylovError::MissingDiagonal));
    let with_diag = closure.with_diagonal(op.diagonal().unwrap().unwrap());
    let again = cg(
        &with_diag,
        &bv,
        &p.with_preconditioner(Preconditioner::Jacobi),
    )
    .unwrap();
    assert_eq!(again.iterations, jac.iterations);
}

/// Non-convergence and indefiniteness are reported in the result, never as panics or errors.
#[test]
fn failures_are_reported_not_raised() {
    let d = 20;
    let mut r = rng(4);
    let h = random_spd(&mut r, d, 1e5).0;
    let mut indefinite = Mat::<f64>::identity(d, d);
    indefinite[(0, 0)] = -1.0;
    let op = DenseFaerOperator::new(vec![h, indefinite]).unwrap();
    let mut b = gaussian(&mut r, 2 * d);
    b[d..].fill(0.0);
    b[d] = 1.0; // e_1: pᵀHp = −1 at the first step
    let bv = faer_batch(&b, d, 2, |v| v);
    let res = cg(
        &op,
        &bv,
        &CgParams::default().with_rtol(1e-12).with_max_iters(3),
    )
    .unwrap();
    assert_eq!(res.converged, vec![false, false]);
    assert_eq!(res.breakdown, vec![false, true]);
    assert_eq!(res.iterations, vec![3, 0]);
    // System 0 used its iterations; its true residual is then computed (and reported).
    assert_eq!(res.applications, vec![3 + 1, 1]);

    let wrong = faer_batch(&b[..d], d, 1, |v| v);
    assert!(matches!(
        cg(&op, &wrong, &CgParams::default()),
        Err(KrylovError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        cg(&op, &bv, &CgParams::default().with_rtol(-1.0)),
        Err(KrylovError::InvalidParameter(_))
    ));
}

/// The observed step sizes reconstruct the solution from the operator's own arguments:
/// `x = x0 + Σ_k α_k ⊙ p_k` with `p_k` the argument of call `k + 1` (`CgStep::operator_call`;
/// the last call checks the true residuals), on a batch whose systems freeze at different
/// iterations (identity: 1; 4 eigenvalues: 4; cond 1e4: many), with and without Jacobi
/// preconditioning. Frozen systems report `α = 0`. A wrong pairing of steps with calls (off by
/// one) misses by O(1).
#[test]
fn observed_step_sizes_rebuild_the_solution_from_the_operator_arguments() {
    let d = 30;
    let (mats, b) = mixed_batch(d);
    let dense = DenseNalgebraOperator::new(mats.iter().map(to_na).collect()).unwrap();
    let mut diag = DMatrix::<f64>::zeros(d, 3);
    for (j, m) in mats.iter().enumerate() {
        for i in 0..d {
            diag[(i, j)] = m[(i, i)];
        }
    }
    let bv = DMatrix::from_column_slice(d, 3, &b);
    let x0 = DMatrix::from_fn(d, 3, |i, j| ((i + 2 * j) % 5) as f64 * 0.1);
    for precondition in [Preconditioner::None, Preconditioner::Jacobi] {
        let args = RefCell::new(Vec::<DMatrix<f64>>::new());
        let op = FnOperator::new(
            |x: &DMatrix<f64>, active: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
                args.borrow_mut().push(x.clone());
                dense.apply(x, active)
            },
        )
        .with_diagonal(diag.clone());
        let mut steps = Vec::<Vec<f64>>::new();
        let params = CgParams::default()
            .with_rtol(1e-10)
            .with_max_iters(300)
            .with_preconditioner(precondition);
        let res = cg_with_initial_guess_observed(&op, &bv, &x0, &params, |step| {
            assert_eq!(step.iteration, steps.len());
            assert_eq!(step.operator_call, step.iteration + 1);
            steps.push(step.step_sizes.to_vec());
            Ok(())
        })
        .unwrap();
        assert!(res.all_converged());
        let args = args.into_inner();
        assert_eq!(
            args.len(),
            steps.len() + 2,
            "one call per step after the first, and one checking the true residuals"
        );
        let mut rebuilt = x0.clone();
        for (alpha, p) in steps.iter().zip(&args[1..]) {
            for j in 0..3 {
                for i in 0..d {
                    rebuilt[(i, j)] += alpha[j] * p[(i, j)];
                }
            }
        }
        let scale = res.x.amax();
        assert!((&rebuilt - &res.x).amax() <= 1e-13 * scale);
        // The identity system steps once, then reports zeros.
        assert_eq!(res.iterations[0], 1);
        assert!(steps.iter().skip(1).all(|a| a[0] == 0.0));
        let stepped: Vec<usize> = (0..3)
            .map(|j| steps.iter().filter(|a| a[j] != 0.0).count())
            .collect();
        assert_eq!(stepped, res.iterations);
    }
}

/// An observer's error stops the solve and is returned.
#[test]
fn observer_errors_stop_the_solve() {
    let d = 4;
    let op = DenseNalgebraOperator::new(vec![DMatrix::<f64>::identity(d, d) * 2.0]).unwrap();
    let b = DMatrix::<f64>::from_element(d, 1, 1.0);
    let err = cg_with_initial_guess_observed(&op, &b, &b, &CgParams::default(), |_| {
        Err(KrylovError::operator(std::io::Error::other(
            "observer refused",
        )))
    })
    .unwrap_err();
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    assert_eq!(source.as_deref(), Some("observer refused"), "{err}");
}

/// Right-hand sides far from unit norm are solved as well as `b` itself. The same SPD matrix
/// (cond 1e3, d = 12) gets `b`, `1e200·b`, `1e-200·b` and `2⁻⁹⁰⁰·b`: without the internal
/// power-of-two rescaling, `rᵀr ≈ 1e400` overflowed to Inf (breakdown at the first step) and
/// `1e-400` underflowed to 0 (a zero step). Each solution must match `scale·H⁻¹b` to 1e-9
/// relative (the dense solve's own error is ~1e-13 at cond 1e3; rtol 1e-12 leaves ≲1e-9), in
/// the same number of iterations, and the reported residual must be in the caller's units.
/// Also with an initial guess (f32 tensors: `candle_backend::huge_f32_right_hand_side`).
#[test]
fn huge_and_tiny_right_hand_sides_are_rescaled() {
    let d = 12;
    let mut r = rng(31);
    let h = random_spd(&mut r, d, 1e3).0;
    let b0 = gaussian(&mut r, d);
    let exact = faer_solve(&h, &b0);
    let scales = [1.0, 1e200, 1e-200, 2f64.powi(-900)];
    let op = DenseFaerOperator::new(vec![h.clone(); scales.len()]).unwrap();
    let data: Vec<f64> = scales
        .iter()
        .flat_map(|s| b0.iter().map(move |v| v * s))
        .collect();
    let b = faer_batch(&data, d, scales.len(), |v| v);
    let params = CgParams::default().with_rtol(1e-12).with_atol(0.0);
    for with_guess in [false, true] {
        let res = if with_guess {
            cg_with_initial_guess(&op, &b, &b, &params).unwrap()
        } else {
            cg(&op, &b, &params).unwrap()
        };
        assert!(res.all_converged(), "guess {with_guess}: {res:?}");
        assert!(res.breakdown.iter().all(|bd| !bd));
        for (j, s) in scales.iter().enumerate() {
            let err = (0..d)
                .map(|i| (res.x[(i, j)] / s - exact[i]).abs())
                .fold(0.0, f64::max);
            assert!(
                err <= 1e-9 * norm_inf(&exact),
                "system {j} (×{s:e}): {err:e}"
            );
            let rel_residual = res.residual_norms[j] / (s * norm_inf(&b0));
            assert!(rel_residual <= 1e-12, "system {j}: {rel_residual:e}");
            assert_eq!(res.iterations[j], res.iterations[0], "system {j}");
        }
    }
}

/// Re-orthogonalised CG on an ill-conditioned system: after `d` steps the updated residual is
/// orthogonal to a full basis, hence ~0 (measured 1e-39 at cond 1e10), while the true residual
/// stays at the rounding floor `≈ u·‖H‖·‖x‖` (≈ 1e-6 here, 50× the tolerance). CG must report
/// the true residual and not claim convergence; on a well-conditioned system of the same size
/// it converges with the true residual within the tolerance. Without the confirmation step the
/// first system reported `converged` with a residual of 1e-39.
#[test]
fn reorthogonalised_cg_confirms_convergence_on_the_true_residual() {
    let d = 40;
    let mut r = rng(7);
    let b = gaussian(&mut r, d);
    let params = CgParams::default()
        .with_rtol(1e-8)
        .with_reorthogonalize(true);
    for (cond, converges) in [(1e10, false), (1e3, true)] {
        let (h, _) = random_spd(&mut r, d, cond);
        let op = DenseFaerOperator::new(vec![h.clone()]).unwrap();
        let res = cg(&op, &faer_batch(&b, d, 1, |v| v), &params).unwrap();
        let x = res.x.to_host().unwrap();
        let hx = matvec(&h, &x);
        let r_true = norm_inf(&b.iter().zip(&hx).map(|(a, c)| a - c).collect::<Vec<_>>());
        let tol = 1e-8 * norm_inf(&b);
        assert_eq!(
            res.converged[0], converges,
            "cond {cond:e}: true residual {r_true:e}"
        );
        assert_eq!(res.converged[0], r_true <= tol, "cond {cond:e}");
        // The reported norm is the true one. Both computations of `b − Hx` round differently
        // (faer's product vs ours), and at the floor that rounding is a visible fraction of
        // the residual itself (measured 0.2% at cond 1e10, 30% at cond 1e3 where both are
        // ~5e-14): 10% of the larger of the residual and the tolerance separates it from the
        // collapsed recursive residual (1e-39) with a wide margin.
        let reported = res.residual_norms[0];
        assert!(
            (reported - r_true).abs() <= 0.1 * r_true.max(tol),
            "cond {cond:e}: reported {reported:e}, true {r_true:e}"
        );
        assert!(!res.breakdown[0]);
        assert_eq!(res.applications[0], res.iterations[0] + 1);
    }
}

/// An initial guess far from the solution: `‖b − H x0‖∞ ≈ 1e160` with `‖b‖∞ ≈ 1` (f64,
/// d = 8, cond 10). CG's iterates depend on `r0 = b − H x0`, and the old rescaling looked at
/// `b` only: `r0ᵀr0 ≈ 1e320` overflowed and the system broke down at iteration 0 with
/// `non_finite`. Now it is rescaled from `r0` too and converges to `H⁻¹b`. Rounding `x0 + αp`
/// leaves an error ≈ `u·‖x0‖` ≈ 1e144, which the true-residual restarts remove a factor
/// ≈ 1e-15 at a time (iterative refinement; measured 533 iterations in 13 passes, hence the
/// cap of 1000). The solution must match the dense solve to 1e-9 relative (rtol 1e-12 at
/// cond 10); a second system with an ordinary guess in the same batch is solved bit for bit
/// as alone.
#[test]
fn a_far_initial_guess_is_rescaled_from_its_residual() {
    let d = 8;
    let mut r = rng(33);
    let h = random_spd(&mut r, d, 10.0).0;
    let b0 = gaussian(&mut r, d);
    let exact = faer_solve(&h, &b0);
    let far: Vec<f64> = gaussian(&mut r, d).iter().map(|v| v * 1e160).collect();
    let near: Vec<f64> = gaussian(&mut r, d);
    let hx = matvec(&h, &far);
    let r0 = norm_inf(&b0.iter().zip(&hx).map(|(a, c)| a - c).collect::<Vec<_>>());
    assert!((1e159..1e162).contains(&r0), "{r0:e}");
    let op = DenseFaerOperator::new(vec![h.clone(); 2]).unwrap();
    let b = faer_batch(&[b0.clone(), b0.clone()].concat(), d, 2, |v| v);
    let x0 = faer_batch(&[far, near.clone()].concat(), d, 2, |v| v);
    let params = CgParams::default().with_rtol(1e-12).with_max_iters(1000);
    let res = cg_with_initial_guess(&op, &b, &x0, &params).unwrap();
    assert!(res.all_converged(), "{res:?}");
    for j in 0..2 {
        let err = (0..d)
            .map(|i| (res.x[(i, j)] - exact[i]).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-9 * norm_inf(&exact), "system {j}: {err:e}");
        assert!(res.residual_norms[j] <= 1e-12 * norm_inf(&b0));
    }
    // The ordinary system is untouched by its neighbour's rescaling.
    let alone = cg_with_initial_guess(
        &DenseFaerOperator::new(vec![h.clone()]).unwrap(),
        &faer_batch(&b0, d, 1, |v| v),
        &faer_batch(&near, d, 1, |v| v),
        &params,
    )
    .unwrap();
    assert_eq!(alone.iterations[0], res.iterations[1]);
    for i in 0..d {
        assert_eq!(alone.x[(i, 0)].to_bits(), res.x[(i, 1)].to_bits());
    }
    assert!(res.breakdown.iter().all(|b| !b));
}

/// An initial guess so far outside the range of a tiny `b` that it overflows once rescaled
/// with it (`‖x0‖∞ = 1e150`, `‖b‖∞ = 1e-200` in f64: `b` is scaled up by ≈ 2⁶⁶⁴) cannot be
/// iterated from: a non-finite breakdown after 0 iterations, whose `x` is the guess as given
/// (documented: a system that never stepped holds its start). It came back as +Inf. Its
/// neighbour, with a moderate guess, is solved as usual.
#[test]
fn a_guess_that_overflows_with_a_tiny_b_is_returned_unchanged() {
    let d = 3;
    let op = DenseNalgebraOperator::new(vec![DMatrix::<f64>::from_diagonal_element(d, d, 2.0); 2])
        .unwrap();
    let b = DMatrix::from_fn(d, 2, |i, j| if j == 0 { -1e-200 } else { i as f64 + 1.0 });
    let x0 = DMatrix::from_fn(d, 2, |i, j| {
        if j == 0 {
            1e150 * (i as f64 + 1.0)
        } else {
            1.0
        }
    });
    let res = cg_with_initial_guess(&op, &b, &x0, &CgParams::default()).unwrap();
    use krylov::CgTermination::*;
    assert_eq!(res.termination, vec![Breakdown, Converged]);
    assert_eq!(res.non_finite, vec![true, false]);
    assert_eq!(res.iterations[0], 0);
    assert!(!res.residual_norms[0].is_finite());
    for i in 0..d {
        assert_eq!(res.x[(i, 0)].to_bits(), x0[(i, 0)].to_bits());
        // H = 2I: exact to rtol = 1e-6 (one iteration, rounding only).
        assert!((res.x[(i, 1)] - 0.5 * b[(i, 1)]).abs() <= 1e-12);
    }
}

/// Batch-global stopping with re-orthogonalisation in f32: a system with a tightly clustered
/// spectrum (cond 1.01) meets the tolerance in a couple of iterations, then keeps stepping
/// while a cond-1e3 system converges, its residual shrinking by ~1e-3 per step into f32's
/// subnormals, where re-orthogonalisation's `1/‖r‖` overflows f32 and its residual turns
/// NaN. It must stay reported as converged, on its true residual, with a good `x` (it used
/// to end as a non-finite breakdown with a NaN residual norm).
#[test]
fn batch_global_keeps_an_early_converged_f32_system_converged() {
    let d = 24;
    let mut r = rng(77);
    let clustered = random_spd(&mut r, d, 1.01).0;
    let slow = random_spd(&mut r, d, 1e3).0;
    let mats = [clustered, slow];
    let b = gaussian(&mut r, 2 * d);
    let na: Vec<DMatrix<f32>> = mats
        .iter()
        .map(|m| DMatrix::from_fn(d, d, |i, j| m[(i, j)] as f32))
        .collect();
    let op = DenseNalgebraOperator::new(na).unwrap();
    let bv = DMatrix::from_fn(d, 2, |i, j| b[j * d + i] as f32);
    let rtol = 1e-3;
    let params = CgParams::default()
        .with_rtol(rtol)
        .with_reorthogonalize(true)
        .with_stopping(CgStopping::BatchGlobal);
    let res = cg(&op, &bv, &params).unwrap();
    assert!(res.all_converged(), "{:?}", res.termination);
    assert_eq!(res.non_finite, vec![false, false]);
    // The fast system kept stepping far past its convergence (the condition for the bug).
    assert!(res.iterations[0] > 12, "{:?}", res.iterations);
    let x = res.x.to_host().unwrap();
    for i in 0..2 {
        let bi = &b[i * d..(i + 1) * d];
        let tol = rtol * norm_inf(bi);
        assert!(
            res.residual_norms[i].is_finite() && res.residual_norms[i] <= tol,
            "{:?}",
            res.residual_norms
        );
        // ‖x − x*‖₂ ≤ ‖H⁻¹‖·√d·‖r‖∞ with ‖H⁻¹‖ = 1 (smallest eigenvalue 1), plus f32 rounding
        // of H and b (≈ cond·u₃₂·‖x*‖ ≤ 1e3·6e-8·‖x*‖); 2× margin.
        let xe = faer_solve(&mats[i], bi);
        let err = norm2(
            &xe.iter()
                .zip(&x[i * d..(i + 1) * d])
                .map(|(a, c)| a - c)
                .collect::<Vec<_>>(),
        );
        let bound = (d as f64).sqrt() * tol + 1e3 * 6e-8 * norm2(&xe);
        assert!(err <= 2.0 * bound, "system {i}: {err} vs {bound}");
    }
}
