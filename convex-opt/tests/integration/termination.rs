//! Non-finite trial points (overflowing potentials) and the reported reasons for stopping.

use argmin::core::{CostFunction, Error, Gradient};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, FlatLbfgsParams, FnPotential, InversionOptions,
    LbfgsParams, LineSearch, NewtonCgParams, Termination, invert_lbfgs_batched, invert_lbfgs_flat,
    invert_newton_cg, minimize_lbfgs,
};
use nalgebra::DVector;

fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// `Φ(x) = Σ_j ½x_j² + log(exp(2x_j) + 1)`, the softplus written naively: it overflows to `+∞`
/// for `x_j > 355`. `∇Φ = x + 2σ(2x)`, `∇²Φ = diag(1 + 4σ(1 − σ)) ⪰ I`.
fn naive_softplus_potential() -> impl BatchedPotential {
    FnPotential::new(|x: &Tensor| {
        let z = (x * 2.0)?;
        let sp = (z.exp()? + 1.0)?.log()?;
        let v = ((x.sqr()? * 0.5)? + sp)?.sum(1)?;
        Ok((v, (x + (sigmoid(&z)? * 2.0)?)?))
    })
    .with_hvp(|x: &Tensor, v: &Tensor| {
        let s = sigmoid(&(x * 2.0)?)?;
        (((&s * (1.0 - &s)?)? * 4.0)? + 1.0)? * v
    })
}

/// `x*` with rows `sin(0), sin(1), …` (the acceptance probe's points).
fn sine_points(b: usize, d: usize) -> Tensor {
    Tensor::arange(0u32, (b * d) as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .reshape((b, d))
        .unwrap()
        .sin()
        .unwrap()
}

#[test]
fn flat_lbfgs_backtracks_from_overflowing_trial_points() {
    let pot = naive_softplus_potential();
    for b in [1usize, 4, 64] {
        let x_true = sine_points(b, 3);
        let y = pot.value_and_gradient(&x_true).unwrap().1;
        // The point argmin's Hager–Zhang search tries first (step 1e5) is past the overflow.
        let far = (&x_true + 1e5).unwrap();
        let v = pot.value_and_gradient(&far).unwrap().0;
        assert!(v.to_vec1::<f64>().unwrap().iter().all(|v| v.is_infinite()));

        let res = invert_lbfgs_flat(
            &pot,
            &y,
            &InversionOptions::default(),
            &FlatLbfgsParams::default(),
        )
        .unwrap();
        // Before the fix: 2 iterations, residual 1.4, for every B.
        assert!(res.all_converged(), "B={b}: {res}");
        assert_eq!(res.termination, vec![Termination::Converged; b]);
        assert!(res.max_residual() <= 1e-9, "B={b}: {res}");
        // ∇²Φ ⪰ I and Φ is separable: |x_j − x*_j| ≤ |r_j| ≤ 1e-9 (+ rounding of x*).
        let err = crate::common::max_abs_diff(&res.x, &x_true);
        assert!(err <= 1e-9 + 1e-12, "B={b}: |x − x*| = {err:e}");
        // A handful of iterations, as for Moré–Thuente and the batched solvers (8–11 measured).
        assert!(res.iterations[0] <= 30, "B={b}: {:?}", res.iterations);
    }
}

#[test]
fn flat_lbfgs_solves_softplus_sum_at_its_inflection_point() {
    // Φ(x) = Σ log(1 + eᕽ) (naive), ∇Φ = σ(x): y = ½ gives x = 0, where ∇²Φ = ¼ I. The
    // Hager–Zhang trial step 1e5 overflows; before the fix the run stopped after 3 iterations
    // with residual 3.5e-3.
    let pot = FnPotential::new(|x: &Tensor| {
        let sp = (x.exp()? + 1.0)?.log()?;
        Ok((sp.sum(1)?, sigmoid(x)?))
    });
    let y = Tensor::full(0.5f64, (2, 3), &Device::Cpu).unwrap();
    let opts = InversionOptions::default().with_max_iterations(200);
    let res = invert_lbfgs_flat(&pot, &y, &opts, &FlatLbfgsParams::default()).unwrap();
    assert!(res.all_converged(), "{res}");
    assert!(res.max_residual() <= 1e-9);
    // σ'(x) ≥ 0.2 for |x| ≤ 1, so |x| ≤ r/0.2 ≤ 5e-9.
    let xmax = crate::common::max_abs_diff(&res.x, &res.x.zeros_like().unwrap());
    assert!(xmax <= 5e-9, "|x| = {xmax:e}");
}

/// `f(x) = Σ_j x_j² + ¼·log(1 + exp(4x_j)) − 300·x_j` with the softplus written naively
/// (`+∞` for `x_j > 177`); `f'(x) = 2x + σ(4x) − 300`, minimised at `x_j = 149.5` (`σ = 1` in
/// f64), where everything is finite. From `x₀ = 0` the first L-BFGS trial step (`−∇f ≈ 299.5`)
/// overflows, and so does argmin's Hager–Zhang bound `1e5`.
struct SteepSoftplus;

impl CostFunction for SteepSoftplus {
    type Param = DVector<f64>;
    type Output = f64;
    fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
        Ok(x.iter()
            .map(|v| v * v + 0.25 * (4.0 * v).exp().ln_1p() - 300.0 * v)
            .sum())
    }
}

impl Gradient for SteepSoftplus {
    type Param = DVector<f64>;
    type Gradient = DVector<f64>;
    fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
        Ok(x.map(|v| 2.0 * v + 1.0 / (1.0 + (-4.0 * v).exp()) - 300.0))
    }
}

/// Both line searches converge: Hager–Zhang backtracks from its far trial points, and
/// Moré–Thuente's first trial point is PyTorch's, `x₀ − g₀/‖g₀‖₁` (ℓ₁ distance 1). Before the
/// first step was scaled, Moré–Thuente tried `x₀ − g₀` = 299.5 per coordinate, where the cost
/// is +∞, and stopped `NonFinite` at `x₀`.
#[test]
fn minimize_lbfgs_converges_with_both_line_searches_from_a_steep_start() {
    let x0 = DVector::zeros(2);
    assert!(
        SteepSoftplus
            .cost(&DVector::from_element(2, 299.5))
            .unwrap()
            .is_infinite()
    );
    let params = LbfgsParams::default().with_gradient_tolerance(1e-8);
    let res = minimize_lbfgs(&SteepSoftplus, x0.clone(), &params).unwrap();
    assert_eq!(res.reason, Termination::Converged, "{}", res.termination);
    // f'' ≥ 2: |x − 149.5| ≤ |g|/2 ≤ 5e-9 (σ(598) = 1 exactly in f64).
    assert!(
        res.x.iter().all(|v| (v - 149.5).abs() <= 5e-9),
        "{:?}",
        res.x
    );

    let mt = params.with_line_search(LineSearch::MoreThuente);
    let res = minimize_lbfgs(&SteepSoftplus, x0.clone(), &mt).unwrap();
    assert_eq!(res.reason, Termination::Converged, "{}", res.termination);
    assert!(
        res.x.iter().all(|v| (v - 149.5).abs() <= 5e-9),
        "{:?}",
        res.x
    );
}

#[test]
fn minimize_lbfgs_says_which_limit_stopped_it() {
    let x0 = DVector::from_vec(vec![3.0, -2.0]);
    let tight = LbfgsParams::default().with_gradient_tolerance(1e-300);
    let cases = [
        (
            tight.with_max_iterations(2).with_max_evaluations(1000),
            Termination::MaxIterations,
        ),
        (tight.with_max_evaluations(5), Termination::EvaluationBudget),
        // Any first step changes the cost by less than 1e12.
        (tight.with_cost_tolerance(1e12), Termination::CostTolerance),
    ];
    for (params, expected) in cases {
        let res = minimize_lbfgs(&SteepSoftplus, x0.clone(), &params).unwrap();
        assert_eq!(res.reason, expected, "{params:?}: {}", res.termination);
        assert!(!res.converged);
    }
}

/// PyTorch's `LBFGS.step` tests its evaluation budget after an iteration, so `max_iter = 1`
/// (default budget `⌊1.25⌋ = 1`, spent at the starting point) still takes one step. The step
/// must move `x` and lower the cost; before the fix the run stopped with zero iterations.
#[test]
fn a_budget_spent_at_the_start_still_allows_one_iteration() {
    let x0 = DVector::from_vec(vec![3.0, -2.0]);
    let tight = LbfgsParams::default().with_gradient_tolerance(1e-300);
    let f0 = SteepSoftplus.cost(&x0).unwrap();
    for (params, expected) in [
        (tight.with_max_iterations(1), Termination::MaxIterations),
        (tight.with_max_evaluations(1), Termination::EvaluationBudget),
    ] {
        let res = minimize_lbfgs(&SteepSoftplus, x0.clone(), &params).unwrap();
        assert_eq!(res.iterations, 1, "{params:?}: {}", res.termination);
        assert_eq!(res.reason, expected, "{params:?}: {}", res.termination);
        assert!(res.cost < f0, "{} ≥ {f0}", res.cost);
    }
}

/// `Φ = ½‖x‖²` whose gradient is NaN where `|x_j| ≥ 1.5`: targets `y = 2` (solution `x = 2`)
/// cannot be reached; every solver must stop at the edge `x ≈ 1.5` on a failed line search,
/// treating the NaN trial points as steps that are too long.
#[test]
fn unreachable_targets_end_in_a_failed_line_search_not_the_iteration_limit() {
    let pot = FnPotential::new(|x: &Tensor| {
        let g = x.abs()?.ge(1.5)?.where_cond(&(x * f64::NAN)?, x)?;
        Ok(((x.sqr()?.sum(1)? * 0.5)?, g))
    })
    .with_hvp(|_x: &Tensor, v: &Tensor| Ok(v.clone()));
    let y = Tensor::full(2.0f64, (2, 3), &Device::Cpu).unwrap();
    let opts = InversionOptions::default()
        .with_x0(Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap());
    let results = [
        (
            "newton",
            invert_newton_cg(&pot, &y, &opts, &NewtonCgParams::default()),
        ),
        (
            "batched",
            invert_lbfgs_batched(&pot, &y, &opts, &BatchedLbfgsParams::default()),
        ),
        (
            "flat",
            invert_lbfgs_flat(&pot, &y, &opts, &FlatLbfgsParams::default()),
        ),
    ];
    for (name, res) in results {
        let res = res.unwrap();
        assert_eq!(
            res.termination,
            vec![Termination::LineSearchFailed; 2],
            "{name}: {res}"
        );
        assert!(!res.converged.iter().any(|&c| c), "{name}");
        // Stopped just below the edge: residual 2 − x ∈ [0.5, 0.6].
        for r in &res.residual_inf {
            assert!((0.5..=0.6).contains(r), "{name}: residual {r}");
        }
        assert!(res.iterations.iter().all(|&k| k < 1000), "{name}");
        let text = res.to_string();
        assert!(
            text.starts_with("0 of 2 samples converged") && text.ends_with("2: line search failed"),
            "{name}: {text}"
        );
    }
    // Moré–Thuente cannot backtrack from a NaN trial point: the run ends there, and says so.
    let res = invert_lbfgs_flat(
        &pot,
        &y,
        &opts,
        &FlatLbfgsParams::default().with_line_search(LineSearch::MoreThuente),
    )
    .unwrap();
    assert_eq!(res.termination, vec![Termination::NonFinite; 2], "{res}");
}

/// `Φ(x) = ‖x‖²` (`∇Φ = 2x`) with a Hessian-vector product that is `2v` on rows whose first
/// coordinate is below 3 and `bad·v` on the others.
fn squared_norm_with_hvp(bad: f64) -> impl BatchedPotential {
    FnPotential::new(|x: &Tensor| Ok((x.sqr()?.sum(1)?, (x * 2.0)?))).with_hvp(
        move |x: &Tensor, v: &Tensor| {
            let scale = x.narrow(1, 0, 1)?.lt(3.0)?.where_cond(
                &x.narrow(1, 0, 1)?.ones_like()?.affine(2.0, 0.0)?,
                &x.narrow(1, 0, 1)?.ones_like()?.affine(bad, 0.0)?,
            )?;
            v.broadcast_mul(&scale)
        },
    )
}

#[test]
fn newton_names_a_non_finite_hessian_product_and_keeps_not_convex_for_finite_curvature() {
    // Row 0 starts at x₀ = y = (5, 5), where the product is `bad·v`; row 1 at (1, −1) solves
    // to (0.5, −0.5) with the true product 2v.
    for dtype in [DType::F64, DType::F32] {
        let y = Tensor::new(&[[5.0f64, 5.0], [1.0, -1.0]], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for (bad, expected) in [
            // Before the fix: NotConvex, as if the curvature were ≤ 0.
            (f64::NAN, Termination::NonFinite),
            (f64::INFINITY, Termination::NonFinite),
            (f64::NEG_INFINITY, Termination::NonFinite),
            (0.0, Termination::NotConvex),
            (-2.0, Termination::NotConvex),
        ] {
            let pot = squared_norm_with_hvp(bad);
            let res = invert_newton_cg(
                &pot,
                &y,
                &InversionOptions::default(),
                &NewtonCgParams::default(),
            )
            .unwrap();
            assert_eq!(
                res.termination,
                vec![expected, Termination::Converged],
                "{dtype:?}, product {bad}·v: {res}"
            );
            assert_eq!(res.converged, vec![false, true]);
            // The stopped row keeps its last iterate (here x₀) and residual.
            let x = res
                .x
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            assert_eq!(x[0], vec![5.0, 5.0], "{dtype:?}, {bad}");
            assert_eq!(res.residual_inf[0], 5.0);
        }
    }
}

/// A finite Hessian-vector product whose curvature `bᵀHb` overflows (`b = (−2, −2)` at row 0's
/// start, so `Hb = −2·bad·(1, 1)` is finite and `bᵀHb = 8·bad` is not) is no breakdown: krylov
/// rescales a system whose `pᵀHp` overflows with finite factors by a power of two
/// (`krylov/src/cg_overflow.rs`), so the Newton step is the (tiny) solution of `H p = −g` and
/// the row goes on to the true root `x = y/2`, where the product is the true `2v`. It is neither
/// `NotConvex` (only for finite `bᵀHb ≤ 0`; before krylov reported the breakdown cause, Newton–CG
/// probed only the product's entries and called this row `NotConvex`) nor, any longer,
/// `NonFinite` (the overflow was a breakdown before krylov rescaled it). A product that is itself
/// non-finite is still `NonFinite`
/// (`newton_names_a_non_finite_hessian_product_and_keeps_not_convex_for_finite_curvature`).
#[test]
fn newton_solves_through_an_overflowing_but_finite_curvature() {
    for (dtype, bad) in [
        (DType::F64, 0.25 * f64::MAX),
        (DType::F32, 0.25 * f64::from(f32::MAX)),
    ] {
        let y = Tensor::new(&[[5.0f64, 5.0], [1.0, -1.0]], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let pot = squared_norm_with_hvp(bad);
        let res = invert_newton_cg(
            &pot,
            &y,
            &InversionOptions::default(),
            &NewtonCgParams::default(),
        )
        .unwrap();
        assert_eq!(
            res.termination,
            vec![Termination::Converged, Termination::Converged],
            "{dtype:?}: {res}"
        );
        let x = res
            .x
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        // ∇Φ(x) = 2x = y: the converged row 0 is (2.5, 2.5) within the solver's tolerance
        // (f64 1e-9 absolute; f32 2e-5 + 2e-5·‖y‖∞ on the gradient, half that on x).
        let tol = if dtype == DType::F64 { 1e-9 } else { 6e-5 };
        for v in &x[0] {
            assert!((v - 2.5).abs() <= tol, "{dtype:?}: row 0 = {:?}", x[0]);
        }
    }
}

/// `Φ(x) = ½·s‖x‖²` that refuses non-finite input with an error (as a potential that calls
/// `icnn::check_finite` on its input does).
fn strict_quadratic(s: f64) -> impl BatchedPotential {
    FnPotential::new(move |x: &Tensor| {
        let finite = x
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(candle_core::Error::Msg("non-finite input".into()));
        }
        Ok(((x.sqr()?.sum(1)? * (0.5 * s))?, (x * s)?))
    })
}

#[test]
fn overflowing_trial_points_are_not_passed_to_the_potential() {
    // Newton–CG on Φ = ‖x‖² (∇Φ = 2x) refusing non-finite input: row 0's Hessian-vector
    // product claims curvature 1e-300, so its Newton step overflows to ±∞ and every trial
    // point of that row is infinite; row 1 is well posed. Before the fix the infinite trial
    // row was passed to the potential, whose error ended the whole batch.
    let pot = FnPotential::new(|x: &Tensor| {
        let finite = x.to_vec2::<f64>()?.iter().flatten().all(|v| v.is_finite());
        if !finite {
            return Err(candle_core::Error::Msg("non-finite input".into()));
        }
        Ok((x.sqr()?.sum(1)?, (x * 2.0)?))
    })
    .with_hvp(|x: &Tensor, v: &Tensor| {
        let first = x.narrow(1, 0, 1)?;
        let scale = first.abs()?.gt(1e5)?.where_cond(
            &first.ones_like()?.affine(1e-300, 0.0)?,
            &first.ones_like()?.affine(2.0, 0.0)?,
        )?;
        v.broadcast_mul(&scale)
    });
    let y = Tensor::new(&[[1e10f64, 1e10], [1.0, -1.0]], &Device::Cpu).unwrap();
    let res = invert_newton_cg(
        &pot,
        &y,
        &InversionOptions::default(),
        &NewtonCgParams::default(),
    )
    .unwrap();
    assert_eq!(res.converged, vec![false, true], "{res}");
    assert_eq!(res.termination[0], Termination::LineSearchFailed, "{res}");
    let x = res.x.to_vec2::<f64>().unwrap();
    assert!(x[0].iter().all(|v| v.is_finite()), "{x:?}");

    // Flat L-BFGS: Φ = ½·1e305‖x‖² from x₀ = y = 1: the cost overflows at trial points of
    // Hager–Zhang's bracket (its end α = 1e5 along the first direction, scaled to ℓ₁ norm 1)
    // and the line search fails. A potential that refuses non-finite input ends the same way
    // as one that returns ∞ (before the fix: the refusal's error). One of the trial points
    // is the solution `1e-305·y` to the bit (residual 0): trial points are candidates for
    // the returned point (`flat_lbfgs_trial_points.rs`), so both runs return it, converged
    // (before that change: `LineSearchFailed` at the last accepted iterate).
    let strict = strict_quadratic(1e305);
    let lenient = FnPotential::new(|x: &Tensor| Ok(((x.sqr()?.sum(1)? * 0.5e305)?, (x * 1e305)?)));
    let y = Tensor::new(&[[1.0f64, -1.0]], &Device::Cpu).unwrap();
    let opts = InversionOptions::default();
    let flat = FlatLbfgsParams::default();
    let strict = invert_lbfgs_flat(&strict, &y, &opts, &flat).unwrap();
    let lenient = invert_lbfgs_flat(&lenient, &y, &opts, &flat).unwrap();
    assert_eq!(strict.termination, vec![Termination::Converged], "{strict}");
    assert_eq!(strict.residual_inf, vec![0.0], "{strict}");
    assert_eq!(strict.termination, lenient.termination);
    assert_eq!(strict.iterations, lenient.iterations);
    assert_eq!(
        strict.x.to_vec2::<f64>().unwrap(),
        lenient.x.to_vec2::<f64>().unwrap()
    );
}

/// The targets of `non_finite_start_row_*`: three ordinary rows and, at row 1, a huge but
/// finite one where the naive softplus potential overflows at the initial point (`x0 = y`).
fn batch_with_an_overflowing_row() -> (Tensor, Tensor) {
    let good = sine_points(3, 2);
    let rows = good.to_vec2::<f64>().unwrap();
    let with_bad = Tensor::new(
        &[
            [rows[0][0], rows[0][1]],
            [1000.0, -0.5],
            [rows[1][0], rows[1][1]],
            [rows[2][0], rows[2][1]],
        ],
        &Device::Cpu,
    )
    .unwrap();
    (with_bad, good)
}

/// A row whose objective is not finite at the initial point stops there as
/// `Termination::NonFinite` (not converged, solution left at the initial point); the other rows
/// get bit-identically the iterates of a solve without it. Before the fix both per-row solvers
/// refused the whole batch (`NonFinite("… at the initial point")`).
#[test]
fn non_finite_start_row_stops_alone_in_the_per_row_solvers() {
    let pot = naive_softplus_potential();
    let (with_bad, good) = batch_with_an_overflowing_row();
    let opts = InversionOptions::default();
    type Solve<'a> = Box<
        dyn Fn(&Tensor) -> Result<convex_opt::InversionResult, convex_opt::ConvexOptError> + 'a,
    >;
    let solvers: [(&str, Solve<'_>); 2] = [
        (
            "newton_cg",
            Box::new(|y: &Tensor| invert_newton_cg(&pot, y, &opts, &NewtonCgParams::default())),
        ),
        (
            "lbfgs_batched",
            Box::new(|y: &Tensor| {
                invert_lbfgs_batched(&pot, y, &opts, &BatchedLbfgsParams::default())
            }),
        ),
    ];
    for (name, solve) in solvers {
        let res = solve(&with_bad).unwrap_or_else(|e| panic!("{name}: {e}"));
        let alone = solve(&good).unwrap();
        assert!(alone.all_converged(), "{name}");
        assert_eq!(res.termination[1], Termination::NonFinite, "{name}");
        assert!(!res.converged[1] && !res.all_converged(), "{name}");
        assert_eq!(res.num_failed(), 1, "{name}");
        assert_eq!(res.count(Termination::NonFinite), 1, "{name}");
        assert_eq!(res.iterations[1], 0, "{name}");
        let x = res.x.to_vec2::<f64>().unwrap();
        assert_eq!(
            x[1],
            vec![1000.0, -0.5],
            "{name}: left at the initial point"
        );
        let xa = alone.x.to_vec2::<f64>().unwrap();
        for (k, r) in [0, 2, 3].into_iter().enumerate() {
            let (a, b) = (&x[r], &xa[k]);
            assert!(
                a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits()),
                "{name}: row {r}: {a:?} vs {b:?}"
            );
            assert!(res.converged[r], "{name}");
            assert_eq!(res.iterations[r], alone.iterations[k], "{name}");
            assert_eq!(
                res.residual_inf[r].to_bits(),
                alone.residual_inf[k].to_bits(),
                "{name}"
            );
        }
    }
}

/// The flattened L-BFGS solves one problem for the whole batch and still refuses it, but names
/// the first offending row (before: no row named).
#[test]
fn non_finite_start_row_is_named_by_the_flat_solver() {
    let pot = naive_softplus_potential();
    let (with_bad, _) = batch_with_an_overflowing_row();
    let err = invert_lbfgs_flat(
        &pot,
        &with_bad,
        &InversionOptions::default(),
        &FlatLbfgsParams::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, convex_opt::ConvexOptError::NonFiniteRow { row: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("row 1"), "{err}");
}
