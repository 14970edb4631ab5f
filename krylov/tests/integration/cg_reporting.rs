//! What CG reports, per system and in every entry point: a breakdown for non-finite
//! curvature, convergence judged on the true residual (and its cost), the reason a system
//! stopped, `b = 0` with an initial guess, and the observer's identity at any scale of `b`.
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchOperator, CgParams, CgResult, CgTermination, DenseFaerOperator, DenseNalgebraOperator,
    FnOperator, KrylovError, Preconditioner, cg, cg_with_initial_guess,
    cg_with_initial_guess_observed,
};
use nalgebra::DMatrix;
use std::cell::{Cell, RefCell};

/// `H = diag(2, 4, 6, 8)` for two systems, but entry 0 of system 0's output is `value` on
/// the calls `bad(call)` selects (counted from 0).
fn poisoned(value: f64, bad: impl Fn(usize) -> bool) -> impl BatchOperator<DMatrix<f64>> {
    let calls = Cell::new(0usize);
    FnOperator::new(
        move |x: &DMatrix<f64>, active: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
            let call = calls.get();
            calls.set(call + 1);
            let mut y = DMatrix::from_fn(4, 2, |i, j| 2.0 * (i + 1) as f64 * x[(i, j)]);
            if active[0] && bad(call) {
                y[(0, 0)] = value;
            }
            Ok(y)
        },
    )
}

/// The four entry points, each on a fresh operator from `op`: zero start, `x0 = 0`,
/// `x0 = b`, observed from `x0 = 0`.
fn all_entry_points<Op: BatchOperator<DMatrix<f64>>>(
    op: impl Fn() -> Op,
    params: &CgParams,
) -> Vec<(&'static str, CgResult<DMatrix<f64>>)> {
    let b = DMatrix::<f64>::from_fn(4, 2, |i, _| (i + 1) as f64);
    let zero = DMatrix::<f64>::zeros(4, 2);
    vec![
        ("cg", cg(&op(), &b, params).unwrap()),
        (
            "x0 = 0",
            cg_with_initial_guess(&op(), &b, &zero, params).unwrap(),
        ),
        (
            "x0 = b",
            cg_with_initial_guess(&op(), &b, &b, params).unwrap(),
        ),
        (
            "observed",
            cg_with_initial_guess_observed(&op(), &b, &zero, params, |_| Ok(())).unwrap(),
        ),
    ]
}

/// An operator output holding `+Inf` makes `pᵀHp = +Inf` and `α = rᵀz/pᵀHp = 0`, which used
/// to pass as a finite step of size 0: the system ran all `max_iters` without moving and
/// without a breakdown, while `cg_with_initial_guess_observed` from `x0 = 0` (whose initial
/// residual is Inf) flagged one. Every entry point now flags a breakdown for `±Inf` and NaN,
/// whether the output is poisoned on every call or on one only; system 1 is unaffected.
#[test]
fn non_finite_curvature_is_a_breakdown_in_every_entry_point() {
    let params = CgParams::default().with_rtol(1e-12);
    for value in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
        for (which, bad) in [("every call", None), ("call 2", Some(2usize))] {
            let op = || poisoned(value, move |call| bad.is_none_or(|k| k == call));
            for (entry, res) in all_entry_points(op, &params) {
                let at = format!("{value} on {which}, {entry}");
                assert!(res.breakdown[0], "{at}: {res:?}");
                assert!(!res.converged[0], "{at}");
                assert_eq!(res.termination[0], CgTermination::Breakdown, "{at}");
                // Caused by the NaN/±Inf (in `pᵀHp`, or in `b − H x0` for `x0 = b`), not by
                // curvature.
                assert_eq!(res.non_finite, vec![true, false], "{at}");
                assert!(res.iterations[0] < 4, "{at}: {:?}", res.iterations);
                assert!(res.x.column(0).iter().all(|v| v.is_finite()), "{at}");
                assert!(res.converged[1] && !res.breakdown[1], "{at}");
                assert!((res.x[(3, 1)] - 0.5).abs() < 1e-12, "{at}");
            }
        }
    }
}

/// `CgResult::non_finite` tells a breakdown on a NaN/±Inf (from the operator) from one on
/// finite curvature `pᵀHp ≤ 0` (at once or after a step), in one batch; a converged system
/// has neither flag, and every flag is consistent with `termination`. A `pᵀHp` that
/// overflows while `Hp` is finite is no breakdown: the system is rescaled (host backend: the
/// dot products are accumulated in f64, so `big` must overflow f64). The field did not exist
/// before: callers had to probe the operator's output.
#[test]
fn breakdown_cause_tells_non_finite_products_from_non_positive_curvature() {
    let mats = breakdown_cause_matrices(0.75 * f64::MAX);
    let op = DenseFaerOperator::new(
        mats.iter()
            .map(|m| Mat::from_fn(2, 2, |i, j| m[i][j]))
            .collect(),
    )
    .unwrap();
    let b = Mat::<f64>::from_fn(2, mats.len(), |_, _| 1.0);
    let zero = Mat::<f64>::zeros(2, mats.len());
    let (breakdown, non_finite, iterations) = breakdown_cause_expected();
    for (entry, res) in [
        ("cg", cg(&op, &b, &CgParams::default()).unwrap()),
        (
            "x0 = 0",
            cg_with_initial_guess(&op, &b, &zero, &CgParams::default()).unwrap(),
        ),
    ] {
        assert_eq!(res.breakdown, breakdown, "{entry}: {res:?}");
        assert_eq!(res.non_finite, non_finite, "{entry}: {res:?}");
        assert_eq!(res.iterations, iterations, "{entry}");
        assert!(res.converged[6], "{entry}");
        for i in 0..mats.len() {
            let t = res.termination[i];
            assert_eq!(
                res.converged[i],
                t == CgTermination::Converged,
                "{entry} {i}"
            );
            assert_eq!(
                res.breakdown[i],
                t == CgTermination::Breakdown,
                "{entry} {i}"
            );
        }
    }
}

/// One ill-conditioned SPD system (`d`, condition number `cond`, Gaussian `b`) and a
/// function giving `‖b − Hx‖∞` as CG's own check computes it (the operator's product).
fn ill_conditioned(
    seed: u64,
    d: usize,
    cond: f64,
) -> (DenseFaerOperator<f64>, Mat<f64>, impl Fn(&Mat<f64>) -> f64) {
    let mut r = rng(seed);
    let h = random_spd(&mut r, d, cond).0;
    let b = faer_batch(&gaussian(&mut r, d), d, 1, |v| v);
    let op = DenseFaerOperator::new(vec![h]).unwrap();
    let (op2, b2) = (op.clone(), b.clone());
    let true_residual = move |x: &Mat<f64>| {
        let hx = op2.apply(x, &[true]).unwrap();
        (0..d).fold(0.0f64, |m, i| m.max((b2[(i, 0)] - hx[(i, 0)]).abs()))
    };
    (op, b, true_residual)
}

/// An ill-conditioned SPD system (d = 30, condition number 1e6, rtol 1e-11): the updated
/// residual meets the tolerance while the true one is above it (measured 7× with this seed),
/// so without the confirmation `converged` is untrue. With it (the default) `converged` holds
/// for `b − Hx`: CG restarts from the true residual and converges, and the reported residual
/// is the true one.
#[test]
fn converged_means_the_true_residual_meets_the_tolerance() {
    let (op, b, true_residual) = ill_conditioned(7, 30, 1e6);
    let tol = 1e-11 * (0..30).fold(0.0f64, |m, i| m.max(b[(i, 0)].abs()));
    let params = CgParams::default().with_rtol(1e-11).with_max_iters(5000);

    let unconfirmed = cg(
        &op,
        &b,
        &params.clone().with_confirm_with_true_residual(false),
    )
    .unwrap();
    assert!(unconfirmed.converged[0]);
    let drift = true_residual(&unconfirmed.x) / tol;
    assert!(drift > 3.0, "the case no longer shows the drift: {drift:e}");

    let res = cg(&op, &b, &params).unwrap();
    assert!(res.converged[0], "{res:?}");
    assert_eq!(res.termination[0], CgTermination::Converged);
    let r_true = true_residual(&res.x);
    assert!(r_true <= tol, "true residual {r_true:e} > {tol:e}");
    assert_eq!(res.residual_norms[0], r_true);
    // A restart: the first claim was refuted (one check), then confirmed (another).
    assert!(res.iterations[0] > unconfirmed.iterations[0]);
    assert_eq!(res.applications[0], res.iterations[0] + 2);
}

/// Where the tolerance is below what the working precision can deliver (condition number
/// 1e10, rtol 1e-10: the true residual's floor is `≈ u·‖H‖·‖x‖`, measured 7e3× the tolerance
/// here), plain CG used to report `converged`. The restart from the true residual cannot halve
/// it: the system stops with `Stagnated`, far below its 5000 iterations, reports the true
/// residual, and claims neither convergence nor a breakdown.
#[test]
fn an_unattainable_tolerance_stagnates() {
    let (op, b, true_residual) = ill_conditioned(9, 30, 1e10);
    let tol = 1e-10 * (0..30).fold(0.0f64, |m, i| m.max(b[(i, 0)].abs()));
    let params = CgParams::default().with_rtol(1e-10).with_max_iters(5000);
    let unconfirmed = cg(
        &op,
        &b,
        &params.clone().with_confirm_with_true_residual(false),
    )
    .unwrap();
    assert!(unconfirmed.converged[0] && true_residual(&unconfirmed.x) > 100.0 * tol);

    let res = cg(&op, &b, &params).unwrap();
    assert_eq!(res.termination[0], CgTermination::Stagnated, "{res:?}");
    assert!(!res.converged[0] && !res.breakdown[0]);
    assert!(res.iterations[0] < 5000);
    let r_true = true_residual(&res.x);
    assert!(r_true > tol);
    assert_eq!(res.residual_norms[0], r_true);
}

/// Where the check passes, it costs exactly one application per system that stepped, one
/// operator call in all, and changes nothing else: the solutions are bit-identical to those
/// of the unconfirmed solve, with the same iterations (what CP-Flow's solves would see).
#[test]
fn a_passing_check_costs_one_application_and_changes_nothing() {
    let d = 20;
    let mut r = rng(11);
    let mats: Vec<Mat<f64>> = [1.0, 10.0, 1e3]
        .iter()
        .map(|c| random_spd(&mut r, d, *c).0)
        .collect();
    let mut b = gaussian(&mut r, 4 * d);
    b[3 * d..].fill(0.0); // b = 0: never stepped, never checked
    let op = DenseFaerOperator::new([mats.clone(), vec![mats[0].clone()]].concat()).unwrap();
    let bv = faer_batch(&b, d, 4, |v| v);
    let x0 = faer_batch(&gaussian(&mut r, 4 * d), d, 4, |v| v);
    let params = CgParams::default().with_rtol(1e-8);
    for with_guess in [false, true] {
        let solve = |p: &CgParams| {
            if with_guess {
                cg_with_initial_guess(&op, &bv, &x0, p).unwrap()
            } else {
                cg(&op, &bv, p).unwrap()
            }
        };
        let off = solve(&params.clone().with_confirm_with_true_residual(false));
        let on = solve(&params);
        assert!(on.all_converged() && off.all_converged());
        assert_eq!(on.iterations, off.iterations);
        for i in 0..d {
            for j in 0..4 {
                assert_eq!(on.x[(i, j)].to_bits(), off.x[(i, j)].to_bits());
            }
        }
        let stepped: Vec<usize> = on
            .iterations
            .iter()
            .map(|it| usize::from(*it > 0))
            .collect();
        let expected: Vec<usize> = off
            .applications
            .iter()
            .zip(&stepped)
            .map(|(a, s)| a + s)
            .collect();
        assert_eq!(on.applications, expected, "guess {with_guess}");
        assert_eq!(on.operator_calls, off.operator_calls + 1);
        assert_eq!(stepped, vec![1, 1, 1, 0]);
    }
}

/// Re-orthogonalised CG on an ill-conditioned system (d = 40, condition number 1e8, rtol
/// 1e-10) stops after about `d` iterations, far below its cap, because its updated residual
/// collapsed while the true one is above the tolerance: it used to end with neither
/// `converged` nor `breakdown` and no reason. It now says `Stagnated`.
#[test]
fn reorthogonalised_cg_says_why_it_stopped_early() {
    let d = 40;
    let mut r = rng(12);
    let h = random_spd(&mut r, d, 1e8).0;
    let b = gaussian(&mut r, d);
    let op = DenseFaerOperator::new(vec![h]).unwrap();
    let params = CgParams::default()
        .with_rtol(1e-10)
        .with_max_iters(90)
        .with_reorthogonalize(true);
    let res = cg(&op, &faer_batch(&b, d, 1, |v| v), &params).unwrap();
    assert!(res.iterations[0] < 90, "{res:?}");
    assert!(!res.converged[0] && !res.breakdown[0]);
    assert_eq!(res.termination[0], CgTermination::Stagnated);
    // With the cap reached instead, the reason is the cap; the reported residual is then
    // the true one too (one more application), with or without re-orthogonalisation.
    for reorthogonalize in [true, false] {
        let bv = faer_batch(&b, d, 1, |v| v);
        let p = params
            .clone()
            .with_max_iters(5)
            .with_reorthogonalize(reorthogonalize);
        let capped = cg(&op, &bv, &p).unwrap();
        assert_eq!(capped.termination[0], CgTermination::MaxIterations);
        assert_eq!(capped.applications[0], 5 + 1);
        let hx = op.apply(&capped.x, &[true]).unwrap();
        let r_true = (0..d).fold(0.0f64, |m, i| m.max((bv[(i, 0)] - hx[(i, 0)]).abs()));
        assert_eq!(capped.residual_norms[0], r_true);
    }
}

/// Re-orthogonalised f32 CG with a tolerance of 0 (`atol = rtol = 0`, never met): once the
/// stored residuals span the space, the updated residual shrinks by orders of magnitude per
/// iteration into f32's subnormals, where the normalisation factor `1/‖r‖` of the stored
/// residual overflows f32. The system used to go on with a NaN basis vector and end as a
/// non-finite breakdown with a NaN residual norm, although its `x` was fine. It now stops
/// there as `Stagnated` (iterations left), reporting its true residual, with and without
/// Jacobi, and `x` is as accurate as f32 allows.
#[test]
fn a_zero_tolerance_f32_residual_collapsing_into_the_subnormals_stagnates() {
    let d = 24;
    let mut r = rng(5);
    let conds = [1e2, 1e3];
    let mats: Vec<Mat<f64>> = conds.iter().map(|c| random_spd(&mut r, d, *c).0).collect();
    let b = gaussian(&mut r, 2 * d);
    let op = DenseNalgebraOperator::new(
        mats.iter()
            .map(|m| DMatrix::from_fn(d, d, |i, j| m[(i, j)] as f32))
            .collect(),
    )
    .unwrap();
    let bv = DMatrix::from_fn(d, 2, |i, j| b[j * d + i] as f32);
    for pre in [Preconditioner::None, Preconditioner::Jacobi] {
        let params = CgParams::default()
            .with_rtol(0.0)
            .with_reorthogonalize(true)
            .with_preconditioner(pre);
        let res = cg(&op, &bv, &params).unwrap();
        assert_eq!(
            res.termination,
            vec![CgTermination::Stagnated; 2],
            "{pre:?}"
        );
        assert_eq!(res.non_finite, vec![false, false]);
        let hx = op.apply(&res.x, &[true, true]).unwrap();
        for i in 0..2 {
            // Past the `d` iterations that span the space, short of the cap (2d + 10).
            let it = res.iterations[i];
            assert!((d..2 * d + 10).contains(&it), "{pre:?} {it}");
            // The reported residual is the true one, `b − H x` as the operator computes it.
            let r_true = (0..d).fold(0.0f64, |m, k| {
                m.max(f64::from((bv[(k, i)] - hx[(k, i)]).abs()))
            });
            assert_eq!(res.residual_norms[i], r_true, "{pre:?}");
            assert!(r_true > 0.0);
            // Forward error within cond·√d·u₃₂ (f32 rounding of H, b and the iteration;
            // measured 2e-7 to 3e-6, 10–100× below).
            let xe = faer_solve(&mats[i], &b[i * d..(i + 1) * d]);
            let err: Vec<f64> = (0..d).map(|k| f64::from(res.x[(k, i)]) - xe[k]).collect();
            let bound = conds[i] * (d as f64).sqrt() * f64::from(f32::EPSILON);
            assert!(norm2(&err) <= bound * norm2(&xe), "{pre:?} system {i}");
        }
    }
}

/// `b_i = 0` with a non-zero initial guess: the solution is `x_i = 0` at once (converged, 0
/// iterations, 0 applications, no breakdown), as SciPy returns. With the default `atol = 0`
/// the tolerance is 0, and CG iterated from `x0` until `pᵀHp` underflowed, then flagged a
/// breakdown. The other system is solved as usual, and an all-zero `b` makes no call at all.
#[test]
fn zero_right_hand_side_with_an_initial_guess_is_solved_by_zero() {
    let op = DenseNalgebraOperator::new(vec![
        DMatrix::from_diagonal(&nalgebra::dvector![1.0, 3.0]),
        DMatrix::from_diagonal(&nalgebra::dvector![2.0, 4.0]),
    ])
    .unwrap();
    let b = DMatrix::<f64>::from_column_slice(2, 2, &[0.0, 0.0, 2.0, 4.0]);
    let x0 = DMatrix::from_element(2, 2, 1.0);
    let res = cg_with_initial_guess(&op, &b, &x0, &CgParams::default()).unwrap();
    assert_eq!(res.converged, vec![true, true]);
    assert_eq!(res.breakdown, vec![false, false]);
    assert_eq!((res.iterations[0], res.applications[0]), (0, 0));
    assert_eq!((res.x[(0, 0)], res.x[(1, 0)]), (0.0, 0.0));
    assert_eq!(res.residual_norms[0], 0.0);
    assert!((res.x[(0, 1)] - 1.0).abs() < 1e-12 && (res.x[(1, 1)] - 1.0).abs() < 1e-12);

    let zero = DMatrix::<f64>::zeros(2, 2);
    let res = cg_with_initial_guess(&op, &zero, &x0, &CgParams::default()).unwrap();
    assert!(res.all_converged() && res.operator_calls == 0);
    assert_eq!(res.x, zero);
}

/// The observer's identity `x = x0 + Σ_k α_k p_k`, with `p_k` the operator's argument in
/// call `CgStep::operator_call`, for right-hand sides that CG rescales internally (`‖b‖∞`
/// outside `[2⁻³², 2³²]`): the operator sees `s·p`, and the observer used to get the α of the
/// scaled system (off by the factor `s`: a relative error of 1.75 at `1e12`).
#[test]
fn observer_identity_holds_at_any_scale_of_b() {
    let h = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 2.0]);
    let dense = DenseNalgebraOperator::new(vec![h]).unwrap();
    for scale in [1.0, 1e12, 1e-12, 1e200] {
        let args = RefCell::new(Vec::<DMatrix<f64>>::new());
        let op = FnOperator::new(
            |x: &DMatrix<f64>, active: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
                args.borrow_mut().push(x.clone());
                dense.apply(x, active)
            },
        );
        let b = DMatrix::from_column_slice(3, 1, &[1.0, 2.0, 3.0]) * scale;
        let x0 = DMatrix::from_column_slice(3, 1, &[0.5, 0.0, -0.5]) * scale;
        let mut steps = Vec::<(usize, f64)>::new();
        let params = CgParams::default().with_rtol(1e-12);
        let res = cg_with_initial_guess_observed(&op, &b, &x0, &params, |step| {
            steps.push((step.operator_call, step.step_sizes[0]));
            Ok(())
        })
        .unwrap();
        assert!(res.converged[0] && !steps.is_empty());
        let args = args.into_inner();
        let mut rebuilt = x0.clone();
        for (call, alpha) in &steps {
            rebuilt += &args[*call] * *alpha;
        }
        let err = (&rebuilt - &res.x).amax() / res.x.amax();
        assert!(err < 1e-12, "scale {scale:e}: relative error {err:e}");
    }
}
