//! `minimize_lbfgs` when argmin's Hager–Zhang search fails: the search is redone by
//! Moré–Thuente from the same point, and a search that found no finite point is reported the
//! same way by both line searches.

use argmin::core::{CostFunction, Error, Gradient};
use convex_opt::{LbfgsParams, LineSearch, Termination, minimize_lbfgs};
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
    // One call after the refusal: the gradient at the returned point `x₀`.
    assert_eq!(problem.calls.get(), refused_at + 1);
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
