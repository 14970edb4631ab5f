//! `Preconditioner::Supplied`: `M⁻¹` given by the operator (`WithPreconditioner`). A batch of
//! systems that share an ill-conditioned structure (the Hessians of one network at many
//! points are such a batch) is solved in fewer iterations with their mean as `M`, to the same
//! tolerance; the failure modes are typed errors.

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchOperator, CgParams, CgStopping, DenseNalgebraOperator, FnOperator, KrylovError,
    Preconditioner, WithPreconditioner, cg,
};
use nalgebra::DMatrix;
use std::cell::RefCell;

fn to_na(m: &Mat<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// `n` systems `H_i = S + E_i`: a shared `S` with condition number 1e4 and a per-system SPD
/// part `E_i` with eigenvalues in `[0.5, 2]` (so the `H_i` differ, all SPD), and `b`.
fn alike_batch(d: usize, n: usize) -> (Vec<Mat<f64>>, Vec<f64>) {
    let mut r = rng(31);
    let shared = random_spd(&mut r, d, 1e4).0;
    let mats = (0..n)
        .map(|_| {
            let eigs: Vec<f64> = (0..d).map(|k| 0.5 + 1.5 * k as f64 / d as f64).collect();
            let e = spd_with_eigs(&mut r, &eigs);
            Mat::from_fn(d, d, |i, j| shared[(i, j)] + e[(i, j)])
        })
        .collect();
    (mats, gaussian(&mut r, n * d))
}

/// The mean of the batch as `M` (inverted once): every system meets the tolerance on its
/// true residual and equals faer's solve, in under half the plain iterations.
#[test]
fn the_batch_mean_cuts_iterations_at_the_same_tolerance() {
    let (d, n) = (40, 6);
    let (mats, b) = alike_batch(d, n);
    let na: Vec<DMatrix<f64>> = mats.iter().map(to_na).collect();
    let mean = na.iter().fold(DMatrix::zeros(d, d), |s, m| s + m) / n as f64;
    let m_inv = mean.clone().cholesky().unwrap().inverse();
    let op = WithPreconditioner::new(
        DenseNalgebraOperator::new(na).unwrap(),
        |r: &DMatrix<f64>, _: &[bool]| -> Result<DMatrix<f64>, KrylovError> { Ok(&m_inv * r) },
    );
    let bv = DMatrix::from_column_slice(d, n, &b);
    let p = CgParams::default().with_rtol(1e-10).with_max_iters(2000);
    let plain = cg(&op, &bv, &p).unwrap();
    let pcg = cg(&op, &bv, &p.with_preconditioner(Preconditioner::Supplied)).unwrap();
    assert!(plain.all_converged() && pcg.all_converged());
    let (its_plain, its_pcg): (usize, usize) =
        (plain.iterations.iter().sum(), pcg.iterations.iter().sum());
    // Measured: 7–8 iterations per system against 78.
    assert!(
        2 * its_pcg < its_plain,
        "{:?} vs {:?}",
        pcg.iterations,
        plain.iterations
    );
    for (i, h) in mats.iter().enumerate() {
        let bi = &b[i * d..(i + 1) * d];
        let x: Vec<f64> = pcg.x.column(i).iter().copied().collect();
        let hx = matvec(h, &x);
        let res = norm_inf(&bi.iter().zip(&hx).map(|(a, c)| a - c).collect::<Vec<_>>());
        // The recursive residual met 1e-10‖b‖∞; the true one may drift from it by rounding
        // (cond 1e4 · ε · ‖b‖ ≈ 1e-12‖b‖).
        assert!(res <= 2e-10 * norm_inf(bi), "system {i}: {res}");
        let xe = faer_solve(h, bi);
        let err = norm2(&xe.iter().zip(&x).map(|(a, c)| a - c).collect::<Vec<_>>());
        // Relative error ≤ cond(H) · relative residual ≈ 1e4 · 1e-10 · √d.
        assert!(err <= 1e-5 * norm2(&xe), "system {i}: {err}");
    }
}

/// `M = H_i` for each system: one step, exactly (in rounding) the solution.
#[test]
fn the_exact_inverse_converges_in_one_step() {
    let (d, n) = (12, 3);
    let (mats, b) = alike_batch(d, n);
    let na: Vec<DMatrix<f64>> = mats.iter().map(to_na).collect();
    let inv: Vec<DMatrix<f64>> = na
        .iter()
        .map(|m| m.clone().try_inverse().unwrap())
        .collect();
    let op = DenseNalgebraOperator::new(na).unwrap();
    let op = FnOperator::new(|x: &DMatrix<f64>, a: &[bool]| op.apply(x, a)).with_preconditioner(
        |r: &DMatrix<f64>, _: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
            let mut z = r.clone();
            for (j, mut c) in z.column_iter_mut().enumerate() {
                c.copy_from(&(&inv[j] * r.column(j)));
            }
            Ok(z)
        },
    );
    let bv = DMatrix::from_column_slice(d, n, &b);
    let p = CgParams::default()
        .with_rtol(1e-8)
        .with_preconditioner(Preconditioner::Supplied);
    let res = cg(&op, &bv, &p).unwrap();
    assert_eq!(res.iterations, vec![1; n]);
}

/// The preconditioner is asked only for the systems still iterating (after the first call,
/// which covers the whole batch); what it leaves in the others (NaN here) reaches no solution.
#[test]
fn converged_systems_are_not_preconditioned() {
    let (d, n) = (20, 4);
    let (mut mats, b) = alike_batch(d, n);
    mats[0] = Mat::identity(d, d); // done after one step
    let na: Vec<DMatrix<f64>> = mats.iter().map(to_na).collect();
    let mean = na.iter().fold(DMatrix::zeros(d, d), |s, m| s + m) / n as f64;
    let m_inv = mean.try_inverse().unwrap();
    let masks = RefCell::new(Vec::new());
    let op = WithPreconditioner::new(
        DenseNalgebraOperator::new(na).unwrap(),
        |r: &DMatrix<f64>, active: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
            masks.borrow_mut().push(active.to_vec());
            let mut z = &m_inv * r;
            for (j, mut c) in z.column_iter_mut().enumerate() {
                if !active[j] {
                    c.fill(f64::NAN);
                }
            }
            Ok(z)
        },
    );
    let bv = DMatrix::from_column_slice(d, n, &b);
    let p = CgParams::default()
        .with_rtol(1e-9)
        .with_preconditioner(Preconditioner::Supplied);
    let res = cg(&op, &bv, &p).unwrap();
    assert!(res.all_converged() && res.x.iter().all(|v| v.is_finite()));
    let masks = masks.into_inner();
    assert_eq!(masks[0], vec![true; n]);
    // System 0 (H = I, but M ≠ I) still converges; once it has, it is never asked again.
    let done = res.iterations[0];
    assert!(
        masks[done + 1..].iter().all(|m| !m[0]),
        "{:?}",
        res.iterations
    );
    assert_eq!(masks.len(), 1 + res.iterations.iter().max().unwrap());
}

/// Typed errors: no preconditioner on the operator, re-orthogonalisation with a supplied
/// one, an output of the wrong shape, and the closure's own error.
#[test]
fn supplied_preconditioner_failures_are_errors() {
    let (mats, b) = alike_batch(6, 2);
    let na: Vec<DMatrix<f64>> = mats.iter().map(to_na).collect();
    let bv = DMatrix::from_column_slice(6, 2, &b);
    let p = CgParams::default().with_preconditioner(Preconditioner::Supplied);
    let bare = DenseNalgebraOperator::new(na.clone()).unwrap();
    assert!(matches!(
        cg(&bare, &bv, &p),
        Err(KrylovError::MissingPreconditioner)
    ));

    let identity = WithPreconditioner::new(
        bare.clone(),
        |r: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> { Ok(r.clone()) },
    );
    let err = cg(&identity, &bv, &p.clone().with_reorthogonalize(true)).unwrap_err();
    assert!(
        matches!(&err, KrylovError::InvalidParameter(m) if m.contains("re-orthogonalisation")),
        "{err}"
    );
    // The identity as M is plain CG, iteration for iteration.
    let plain = cg(&bare, &bv, &CgParams::default()).unwrap();
    assert_eq!(cg(&identity, &bv, &p).unwrap().iterations, plain.iterations);

    let short = WithPreconditioner::new(
        bare.clone(),
        |_: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> { Ok(DMatrix::zeros(5, 2)) },
    );
    assert!(matches!(
        cg(&short, &bv, &p),
        Err(KrylovError::ShapeMismatch { .. })
    ));

    let failing = WithPreconditioner::new(bare, |_: &DMatrix<f64>, _: &[bool]| {
        Err(KrylovError::InvalidParameter("factorisation failed".into()))
    });
    let err = cg(&failing, &bv, &p).unwrap_err();
    assert!(err.to_string().contains("factorisation failed"), "{err}");
}

/// `M⁻¹ r` per system from a dense matrix per system (`None`: NaN output).
fn per_system_inverse(
    minv: Vec<Option<DMatrix<f64>>>,
) -> impl Fn(&DMatrix<f64>, &[bool]) -> Result<DMatrix<f64>, KrylovError> {
    move |r: &DMatrix<f64>, _: &[bool]| {
        let mut z = r.clone();
        for (j, mut c) in z.column_iter_mut().enumerate() {
            match &minv[j] {
                Some(m) => c.copy_from(&(m * r.column(j))),
                None => c.fill(f64::NAN),
            }
        }
        Ok(z)
    }
}

/// Preconditioned CG needs an SPD `M` as much as an SPD `H`: one SPD `H` (d = 40, cond 1e3)
/// with four `M⁻¹`, default iteration cap (2d + 10 = 90). An SPD `M⁻¹` (eigenvalues in
/// [1, 10]) converges; an indefinite one (the same with 4 of them negated) stops as a
/// breakdown on curvature (not `non_finite`) at the first `rᵀz ≤ 0`, well before the cap; a
/// negative definite one (`−I`) at iteration 0, before any product; a NaN output at
/// iteration 0 with `non_finite`, before any product. Also from an initial guess (one
/// product each for `b − H x0`). The old code did not check `rᵀz` and ran on: the
/// indefinite `M` as an iteration in an indefinite inner product, which nothing bounds (here
/// it happened to converge, in 85 iterations; with `H` at cond 1e4 such `M` took 115–369,
/// past the default cap), `−I` as plain CG with
/// the signs of `p` flipped (converged in 68, as CG does on `−H` for an SPD `H`, which is a
/// breakdown too), and the NaN cost one product before `pᵀHp` broke down.
#[test]
fn a_preconditioner_that_is_not_spd_stops_as_a_breakdown() {
    let d = 40;
    let mut r = rng(41);
    let h = to_na(&random_spd(&mut r, d, 1e3).0);
    let eigs: Vec<f64> = (0..d).map(|k| 1.0 + 9.0 * k as f64 / d as f64).collect();
    let spd = to_na(&spd_with_eigs(&mut r, &eigs));
    let negated: Vec<f64> = eigs
        .iter()
        .enumerate()
        .map(|(k, e)| if k % 10 == 0 { -e } else { *e })
        .collect();
    let indefinite = to_na(&spd_with_eigs(&mut r, &negated));
    let negative = -DMatrix::<f64>::identity(d, d);
    let minv = vec![Some(spd), Some(indefinite), Some(negative), None];
    let n = minv.len();
    let op = WithPreconditioner::new(
        DenseNalgebraOperator::new(vec![h.clone(); n]).unwrap(),
        per_system_inverse(minv),
    );
    let b = DMatrix::from_fn(d, n, |i, _| (i as f64 + 1.0).sin());
    let p = CgParams::default()
        .with_rtol(1e-8)
        .with_preconditioner(Preconditioner::Supplied);
    use krylov::CgTermination::*;
    for x0 in [None, Some(DMatrix::from_element(d, n, 0.5))] {
        let res = match &x0 {
            None => cg(&op, &b, &p).unwrap(),
            Some(x0) => krylov::cg_with_initial_guess(&op, &b, x0, &p).unwrap(),
        };
        let guess = usize::from(x0.is_some()); // the product that formed b − H x0
        assert_eq!(
            res.termination,
            vec![Converged, Breakdown, Breakdown, Breakdown],
            "{res:?}"
        );
        assert_eq!(res.non_finite, vec![false, false, false, true]);
        // The indefinite M stops within a few iterations (measured: 2, and 3 from the guess), far from
        // the cap.
        assert!(res.iterations[1] < 10, "{:?}", res.iterations);
        assert_eq!(&res.iterations[2..], &[0, 0]);
        assert_eq!(&res.applications[2..], &[guess, guess]);
        // The SPD system is unaffected: a true solution.
        let x = res.x.column(0);
        let residual = (&h * x - b.column(0)).amax();
        assert!(residual <= 1e-8 * b.column(0).amax(), "{residual:e}");
        // The systems stopped at iteration 0 keep their start.
        let start = x0.as_ref().map_or(0.0, |x| x[(0, 2)]);
        assert_eq!(res.x[(0, 2)], start);
    }
}

/// `rᵀz = 0` with `r = 0` is not a breakdown: with `M = I` (supplied) and `H = I`, the first
/// step leaves `r = 0` exactly; `b = 0` has `r = 0` from the start; an exact initial guess
/// too. All converge, per system and batch-global (where the converged systems keep
/// stepping while a slower one, cond 1e3, iterates), with and without the true-residual check.
#[test]
fn a_zero_residual_is_converged_not_a_breakdown() {
    let d = 8;
    let mut r = rng(43);
    let slow = to_na(&random_spd(&mut r, d, 1e3).0);
    let eye = DMatrix::<f64>::identity(d, d);
    let op = WithPreconditioner::new(
        DenseNalgebraOperator::new(vec![eye.clone(), eye, slow]).unwrap(),
        |r: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> { Ok(r.clone()) },
    );
    let mut b = DMatrix::from_fn(d, 3, |i, j| (i + j) as f64 - 3.5);
    b.column_mut(1).fill(0.0);
    let mut exact_guess = DMatrix::zeros(d, 3);
    exact_guess.column_mut(0).copy_from(&b.column(0)); // H = I: x = b
    for stopping in [CgStopping::PerSystem, CgStopping::BatchGlobal] {
        for confirm in [true, false] {
            let p = CgParams::default()
                .with_rtol(1e-10)
                .with_stopping(stopping)
                .with_confirm_with_true_residual(confirm)
                .with_preconditioner(Preconditioner::Supplied);
            let zero_start = cg(&op, &b, &p).unwrap();
            let exact = krylov::cg_with_initial_guess(&op, &b, &exact_guess, &p).unwrap();
            for res in [&zero_start, &exact] {
                assert!(res.all_converged(), "{stopping:?} {confirm}: {res:?}");
                assert!(res.breakdown.iter().all(|b| !b));
                assert_eq!(res.x.column(0), b.column(0));
                assert!(res.x.column(1).iter().all(|v| *v == 0.0));
            }
            assert_eq!(zero_start.iterations[..2], [1, 0]);
            assert_eq!(exact.iterations[..2], [0, 0]);
        }
    }
}
