//! Pins an assumption of the stopping test at line-search trial points
//! (`trial_problem.rs::ByRef`): argmin 0.11's L-BFGS and line searches, as
//! [`crate::minimize_lbfgs`] runs them, ask for the cost of every point before its gradient.
//! `ByRef` tests a point for the run's goal when its cost is asked for (the gradient request
//! that follows is served from its one-point cache), so a point first asked for its gradient
//! would be offered as a candidate but never tested, and a run could go on past a point that
//! meets its goal.
//!
//! From argmin 0.11's sources: Hager–Zhang's `calc` (cost) precedes `calc_grad` at every trial
//! step (the initial points, `secant2`, `update`'s U3 bisection, the L2 midpoint);
//! Moré–Thuente asks for `cost` then `gradient` at each `stp`; L-BFGS's `init` asks for the
//! cost of `x₀` first (the state's cost is `+∞` until then). The only gradient-first request
//! is L-BFGS's at its new iterate after a line search: a point the search evaluated, cost
//! first (with Hager–Zhang not always the last one, so it is evaluated afresh, not tested,
//! and offered by the wrapper's `terminate` as the accepted iterate). The line searches are
//! handed the iterate's cost and gradient, so they ask for neither. These tests record every
//! request (`trial_problem.rs::request_log`) and fail if a point's first request is for its
//! gradient, so an argmin upgrade that changes the order is caught.

use argmin::core::{CostFunction, Error, Gradient};
use nalgebra::{DVector, RealField};

use crate::trial_problem::request_log::{Entry, Request, recording};
use crate::{LbfgsParams, LineSearch, MinimizeResult, minimize_lbfgs};

const SEARCHES: [LineSearch; 2] = [LineSearch::HagerZhang, LineSearch::MoreThuente];

/// `f(x) = Σ_j x_j⁴/4 + x_j²/2 − x_j y_j`, `∇f(x) = x³ + x − y` (strongly convex).
struct Quartic<F>(DVector<F>);

impl<F: RealField + Copy> CostFunction for Quartic<F> {
    type Param = DVector<F>;
    type Output = F;
    fn cost(&self, x: &DVector<F>) -> Result<F, Error> {
        let quarter = F::from_subset(&0.25);
        let half = F::from_subset(&0.5);
        Ok(x.iter().zip(self.0.iter()).fold(F::zero(), |s, (&v, &y)| {
            s + v * v * v * v * quarter + v * v * half - v * y
        }))
    }
}

impl<F: RealField + Copy> Gradient for Quartic<F> {
    type Param = DVector<F>;
    type Gradient = DVector<F>;
    fn gradient(&self, x: &DVector<F>) -> Result<DVector<F>, Error> {
        Ok(x.zip_map(&self.0, |v, y| v * v * v + v - y))
    }
}

/// `f(x) = Σ_j log(1 + e^{x_j}) + x_j²/2 − x_j y_j`, written naively: `e^x` overflows for
/// `x > 709`, where the cost is `+∞` and the gradient `e^x/(1 + e^x) + x − y` NaN. Hager–Zhang's
/// bracket end `α = 1e5` lands there, so its searches meet non-finite trial points.
struct NaiveSoftplus(DVector<f64>);

impl CostFunction for NaiveSoftplus {
    type Param = DVector<f64>;
    type Output = f64;
    fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
        Ok(x.iter()
            .zip(self.0.iter())
            .map(|(&v, &y)| v.exp().ln_1p() + v * v / 2.0 - v * y)
            .sum())
    }
}

impl Gradient for NaiveSoftplus {
    type Param = DVector<f64>;
    type Gradient = DVector<f64>;
    fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
        Ok(x.zip_map(&self.0, |v, y| v.exp() / (1.0 + v.exp()) + v - y))
    }
}

/// The points whose first request was for the gradient, and the number of distinct points.
fn gradient_first(log: &[Entry]) -> (Vec<usize>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut bad = Vec::new();
    for (i, (x, request)) in log.iter().enumerate() {
        if seen.insert(x) && *request == Request::Gradient {
            bad.push(i);
        }
    }
    (bad, seen.len())
}

/// Runs `minimize_lbfgs` with each line search, recording its requests, and checks that every
/// point was asked for its cost first; returns the results.
fn check_cost_first<O, F>(
    label: &str,
    problem: &O,
    x0: &DVector<F>,
    tolerance: f64,
) -> Vec<MinimizeResult<F>>
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
    F: argmin::core::ArgminFloat + argmin_math::ArgminZero + RealField + Copy,
{
    SEARCHES
        .iter()
        .map(|&search| {
            let params = LbfgsParams::default()
                .with_line_search(search)
                .with_gradient_tolerance(tolerance);
            let (res, log) = recording(|| minimize_lbfgs(problem, x0.clone(), &params));
            let res = res.unwrap();
            let (bad, points) = gradient_first(&log);
            assert!(
                bad.is_empty(),
                "{label}, {search:?}: {} of {points} points asked for their gradient first \
                 (requests {bad:?} of {}; {} evaluations, {})",
                bad.len(),
                log.len(),
                res.gradient_evaluations,
                res.termination
            );
            // The run did search: more points than `x₀` and its first trial point.
            assert!(points > 2, "{label}, {search:?}: {points} points");
            res
        })
        .collect()
}

/// Long runs to the rounding floor (a tolerance no iterate meets), in `f64` and `f32`: every
/// phase of both searches, and L-BFGS's gradient at each accepted iterate.
#[test]
fn runs_to_the_rounding_floor_ask_for_the_cost_first() {
    let y = DVector::from_vec(vec![1e-8, 0.0, 7.0, -3.5, 250.0]);
    for res in check_cost_first("quartic f64", &Quartic(y.clone()), &y, 1e-300) {
        assert!(
            !res.converged && res.iterations >= 10,
            "{}",
            res.termination
        );
    }
    let y = y.map(|v| v as f32);
    for res in check_cost_first("quartic f32", &Quartic(y.clone()), &y, 1e-30) {
        assert!(!res.converged && res.iterations >= 5, "{}", res.termination);
    }
}

/// A run that meets its tolerance, so it stops at a trial point.
#[test]
fn a_run_that_converges_asks_for_the_cost_first() {
    let y = DVector::from_vec(vec![3.0, -2.0, 0.5]);
    for res in check_cost_first("quartic", &Quartic(y), &DVector::zeros(3), 1e-9) {
        assert!(res.converged, "{}", res.termination);
    }
}

/// Hager–Zhang's first search fails (the minimum at `y = 1e8` lies beyond its bracket) and is
/// redone by Moré–Thuente (`line_search_fallback.rs`): the fallback's requests too.
#[test]
fn the_more_thuente_fallback_asks_for_the_cost_first() {
    let y = DVector::from_element(1, 1e8);
    let results = check_cost_first("quartic y = 1e8", &Quartic(y), &DVector::zeros(1), 1e-9);
    assert!(
        results[0].line_search_fallbacks > 0,
        "{}",
        results[0].termination
    );
}

/// Non-finite trial points (Hager–Zhang backtracks from them).
#[test]
fn non_finite_trial_points_are_asked_for_the_cost_first() {
    let y = DVector::from_vec(vec![50.0, -20.0, 3.0]);
    check_cost_first(
        "naive softplus",
        &NaiveSoftplus(y),
        &DVector::zeros(3),
        1e-10,
    );
}
