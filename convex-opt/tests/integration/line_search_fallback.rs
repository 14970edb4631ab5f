//! `minimize_lbfgs` when argmin's Hager–Zhang search fails: the search is redone by
//! Moré–Thuente from the same point (accepted at a strong Wolfe point, whatever the length of
//! the search direction; within the run's evaluation budget; a failure of both names both
//! errors), and a search that found no finite point is reported the same way by both line
//! searches.

use argmin::core::{CostFunction, Error, Gradient};
use convex_opt::{
    LINE_SEARCH_MAX_EVALUATIONS, LbfgsParams, LineSearch, Termination, minimize_lbfgs,
};
use nalgebra::DVector;

/// `f(x) = s·‖x‖²/2`, evaluated without overflow for `|x| ≤ 1e300` and `s ≥ 1e-300`.
struct ScaledBowl(f64);

impl CostFunction for ScaledBowl {
    type Param = DVector<f64>;
    type Output = f64;
    fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
        Ok((x * self.0.sqrt()).norm_squared() / 2.0)
    }
}

impl Gradient for ScaledBowl {
    type Param = DVector<f64>;
    type Gradient = DVector<f64>;
    fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
        Ok(x * self.0)
    }
}

fn params(search: LineSearch) -> LbfgsParams {
    LbfgsParams::default().with_line_search(search)
}

/// `‖x‖²/2` from `x₀ = 1e30`: the first direction is `−1` (scaled to unit `ℓ₁` norm), and every
/// point of Hager–Zhang's bracket, `x₀ − α` for `α ∈ {ε, 1, 1e5}`, rounds to `x₀` (ulp(1e30)
/// = 1.4e14). Its secant through them is `0/0`, the next trial point NaN
/// (argmin-rs/argmin#541). Before the fallback the run stopped after that search and, having
/// met no finite trial point other than `x₀`, reported `NonFinite` for a problem that is finite
/// everywhere. Moré–Thuente extrapolates its step by 4× until it moves: both searches now
/// converge to `x = 0`, the Hager–Zhang run after one fallback.
#[test]
fn a_bracket_that_rounds_to_the_iterate_is_redone_by_more_thuente() {
    for search in [LineSearch::HagerZhang, LineSearch::MoreThuente] {
        let res = minimize_lbfgs(
            &ScaledBowl(1.0),
            DVector::from_element(1, 1e30),
            &params(search),
        )
        .unwrap();
        assert_eq!(
            res.reason,
            Termination::Converged,
            "{search:?}: {}",
            res.termination
        );
        assert!(res.x[0].abs() <= 1e-9, "{search:?}: {}", res.x);
        let fallbacks = u64::from(search == LineSearch::HagerZhang);
        assert_eq!(res.line_search_fallbacks, fallbacks, "{search:?}");
    }
}

/// `1e-300·‖x‖²/2` from `x₀ = 1e300` (gradient 1, direction `−1`): no step either search
/// tries within its evaluation cap moves `x` (Moré–Thuente's grows at most 5× per trial, to
/// `5¹⁰⁰ ≈ 8e69`, far below ulp(1e300) ≈ 1.5e284), so both fail, at `x₀`. The failure is
/// `LineSearchFailed` for both: Hager–Zhang's only trial points besides `x₀` were NaN points
/// (its secant's `0/0`), which say nothing about the problem; before, Hager–Zhang reported
/// `NonFinite` here and Moré–Thuente `LineSearchFailed`.
#[test]
fn a_search_that_never_moves_is_a_failed_line_search_with_both_searches() {
    let x0 = DVector::from_element(1, 1e300);
    for search in [LineSearch::HagerZhang, LineSearch::MoreThuente] {
        let res = minimize_lbfgs(&ScaledBowl(1e-300), x0.clone(), &params(search)).unwrap();
        assert_eq!(
            res.reason,
            Termination::LineSearchFailed,
            "{search:?}: {}",
            res.termination
        );
        assert_eq!(res.x, x0, "{search:?}");
        assert_eq!(res.iterations, 1, "{search:?}");
    }
    // Both errors are shown, as argmin's detail after the summary: the fallback's, then the
    // one that started it (before, only Moré–Thuente's).
    let res = minimize_lbfgs(&ScaledBowl(1e-300), x0, &params(LineSearch::HagerZhang)).unwrap();
    let cap = format!("more than {LINE_SEARCH_MAX_EVALUATIONS} evaluations in one line search");
    let text = &res.termination;
    assert!(
        text.starts_with("line search failed: no further decrease") && text.contains("= 1e0"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "; argmin: Line search terminated with: 'Moré–Thuente: {cap} (after Hager–Zhang: \
             {cap})'"
        )),
        "{text}"
    );
}

/// `x ↦ K(x − 1)²/2 + k(x − 1) + k/2` for `x ≥ 1` (steep, `K = 1e15`) and `kx²/2` below
/// (flat, `k = 1e-8`; minimum at 0), in `f32`. The first search (unit step from `x₀ = 1 + δ`)
/// ends near `x₁ = δ`, on the flat side (`g₁ = kδ`), with the curvature pair `y/s ≈ Kδ/1`: the
/// second direction is `p ≈ −g₁/(Kδ) = −k/K = −1e-23` and its line minimum at `α ≈ δ/1e-23 ≥
/// 1e19`, far beyond Hager–Zhang's bracket, so that search fails and Moré–Thuente finds the
/// minimum (measured: `p = −1e-23` for each `δ`). Its strong Wolfe test along `p`
/// itself computed `p·p`, which is 0 in `f32` (`|p| < 2.6e-23`), so the step came out `∞`, the
/// point was rejected and the run stopped as `LineSearchFailed` at `x ≈ δ`; along `p/‖p‖∞` it
/// is accepted and the run converges.
#[test]
fn a_fallback_along_a_tiny_f32_direction_is_accepted() {
    struct Kink;
    const STEEP: f32 = 1e15;
    const FLAT: f32 = 1e-8;
    impl CostFunction for Kink {
        type Param = DVector<f32>;
        type Output = f32;
        fn cost(&self, x: &DVector<f32>) -> Result<f32, Error> {
            let (x, d) = (x[0], x[0] - 1.0);
            Ok(if x >= 1.0 {
                FLAT / 2.0 + FLAT * d + STEEP * d * d / 2.0
            } else {
                FLAT * x * x / 2.0
            })
        }
    }
    impl Gradient for Kink {
        type Param = DVector<f32>;
        type Gradient = DVector<f32>;
        fn gradient(&self, x: &DVector<f32>) -> Result<DVector<f32>, Error> {
            let x = x[0];
            let g = if x >= 1.0 {
                STEEP * (x - 1.0) + FLAT
            } else {
                FLAT * x
            };
            Ok(DVector::from_element(1, g))
        }
    }
    // `|x| ≤ 1e-5` (the f32 rounding of `x₀` alone is 1e-7; the iterates reach 1e-10).
    let tolerance = f64::from(FLAT) * 1e-5;
    for delta in [1e-4f32, 1e-3, 1e-2] {
        let res = minimize_lbfgs(
            &Kink,
            DVector::from_element(1, 1.0 + delta),
            &LbfgsParams::default().with_gradient_tolerance(tolerance),
        )
        .unwrap();
        assert_eq!(
            res.reason,
            Termination::Converged,
            "δ = {delta:e}: {}",
            res.termination
        );
        assert_eq!(res.line_search_fallbacks, 1, "δ = {delta:e}");
        assert!(res.x[0].abs() <= 1e-5, "δ = {delta:e}: {}", res.x);
    }
}

/// The fallback spends only what is left of the run's evaluation budget. From `x₀ = 1e30` on
/// `‖x‖²/2` the first Hager–Zhang search fails at its cap after 98 evaluations, and the
/// Moré–Thuente redo needs 30 more to converge (see above). With a budget of 120 the redo stops
/// at the budget, and with 50 it is not started: both stop as `EvaluationBudget` (before, the
/// redo ran on to 125 evaluations whatever the budget, and the run stopped after it). A run may
/// still end up to `LINE_SEARCH_MAX_EVALUATIONS − 1` evaluations past its budget, in the line
/// search of its last iteration (here the failed Hager–Zhang search).
#[test]
fn the_fallback_stays_within_the_evaluation_budget() {
    let x0 = DVector::from_element(1, 1e30);
    let unlimited = minimize_lbfgs(
        &ScaledBowl(1.0),
        x0.clone(),
        &params(LineSearch::HagerZhang),
    );
    let unlimited = unlimited.unwrap();
    assert_eq!(unlimited.reason, Termination::Converged);
    assert_eq!(unlimited.line_search_fallbacks, 1);
    let budget = unlimited.gradient_evaluations - 8;
    for (budget, fallbacks, evaluations) in [(budget, 1, Some(budget)), (50, 0, None)] {
        let p = params(LineSearch::HagerZhang).with_max_evaluations(budget);
        let res = minimize_lbfgs(&ScaledBowl(1.0), x0.clone(), &p).unwrap();
        let text = &res.termination;
        assert_eq!(
            res.reason,
            Termination::EvaluationBudget,
            "{budget}: {text}"
        );
        assert_eq!(res.line_search_fallbacks, fallbacks, "{budget}: {text}");
        assert_eq!(res.iterations, 1, "{budget}");
        match evaluations {
            Some(n) => assert_eq!(res.gradient_evaluations, n, "{budget}"),
            None => assert!(
                res.gradient_evaluations > budget
                    && res.gradient_evaluations < budget + LINE_SEARCH_MAX_EVALUATIONS,
                "{budget}: {}",
                res.gradient_evaluations
            ),
        }
        assert!(
            text.contains(&format!(
                "evaluation budget (max_evaluations = {budget}) spent"
            )) && text.contains("(after Hager–Zhang: more than"),
            "{budget}: {text}"
        );
    }
}

/// `‖x + 3‖²/2` that refuses (an error) every point with `x < 0`: Hager–Zhang's first bracket
/// end, `x₀ − 1e5`, is refused. An error of the problem is never retried by the fallback: the
/// problem is asked nothing more in that search, and the run stops at `x₀`, as before the
/// fallback existed (`minimize_lbfgs` reports it as a failed line search whose text is the
/// error's; `invert_lbfgs_flat` returns its potential's error).
#[test]
fn an_error_of_the_problem_is_not_retried() {
    use std::cell::Cell;
    struct Refusing {
        calls: Cell<usize>,
        refused_at: Cell<Option<usize>>,
    }
    impl Refusing {
        fn check(&self, x: &DVector<f64>) -> Result<(), Error> {
            self.calls.set(self.calls.get() + 1);
            if x[0] < 0.0 {
                self.refused_at
                    .set(self.refused_at.get().or(Some(self.calls.get())));
                return Err(Error::msg("negative input"));
            }
            Ok(())
        }
    }
    impl CostFunction for Refusing {
        type Param = DVector<f64>;
        type Output = f64;
        fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
            self.check(x)?;
            Ok((x[0] + 3.0).powi(2) / 2.0)
        }
    }
    impl Gradient for Refusing {
        type Param = DVector<f64>;
        type Gradient = DVector<f64>;
        fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
            self.check(x)?;
            Ok(x.add_scalar(3.0))
        }
    }
    let problem = Refusing {
        calls: Cell::new(0),
        refused_at: Cell::new(None),
    };
    let res = minimize_lbfgs(
        &problem,
        DVector::from_element(1, 5.0),
        &params(LineSearch::HagerZhang),
    )
    .unwrap();
    let refused_at = problem.refused_at.get().expect("a negative trial point");
    // No call after the refusal: the returned point is `x₀`, with the gradient evaluated there
    // at the start (it used to be evaluated again, one call more).
    assert_eq!(problem.calls.get(), refused_at);
    assert_eq!(res.line_search_fallbacks, 0);
    assert_eq!(res.x[0], 5.0);
    assert_eq!(
        res.reason,
        Termination::LineSearchFailed,
        "{}",
        res.termination
    );
    assert!(
        res.termination.contains("negative input"),
        "{}",
        res.termination
    );
}
