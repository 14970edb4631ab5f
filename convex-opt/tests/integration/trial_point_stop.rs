//! A line-search trial point that meets the run's stopping test ends the run there, as
//! converged: the search does not go on (for an inversion every evaluation is a pass through
//! the potential). Before, the run went on until an accepted iterate met the test (or the
//! search failed) and returned that trial point only at the end, if no iterate ranked first.
//!
//! The problems below reject such a point on purpose: their cost jumps up by 1 within `0.01`
//! of the solution while the gradient stays that of `½‖x − x*‖²`, as the cost of a real run at
//! its rounding floor can fail the Armijo test at a point whose gradient is within tolerance.
//! The first trial point of the first line search is the solution itself (a unit step along
//! `−∇f(x₀)`, `‖∇f(x₀)‖₁ ≤ 1` so the first step is not scaled), with a gradient of exactly 0;
//! Hager–Zhang evaluates it third (after its bracket ends `α = ε` and `α = 1e5`), Moré–Thuente
//! first.

use std::cell::Cell;

use argmin::core::{CostFunction, Error, Gradient};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    FlatLbfgsParams, FnPotential, InversionOptions, LbfgsParams, LineSearch, Termination,
    invert_lbfgs_flat, minimize_lbfgs,
};
use nalgebra::DVector;

/// Gradient evaluations when the first trial point stops the run: `x₀`, then Hager–Zhang's
/// `α = ε`, `α = 1e5`, `α = 1`, or Moré–Thuente's `α = 1`.
fn evaluations_to_first_unit_step(search: LineSearch) -> u64 {
    match search {
        LineSearch::HagerZhang => 4,
        LineSearch::MoreThuente => 2,
    }
}

/// `f(x) = ½x² + [|x| < 0.01]` in one variable, gradient `x` (the jump not seen by it),
/// counting gradient evaluations.
struct BumpAtTheMinimum {
    evaluations: Cell<u64>,
}

impl CostFunction for BumpAtTheMinimum {
    type Param = DVector<f64>;
    type Output = f64;
    fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
        let bump = if x[0].abs() < 0.01 { 1.0 } else { 0.0 };
        Ok(0.5 * x[0] * x[0] + bump)
    }
}

impl Gradient for BumpAtTheMinimum {
    type Param = DVector<f64>;
    type Gradient = DVector<f64>;
    fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
        self.evaluations.set(self.evaluations.get() + 1);
        Ok(x.clone())
    }
}

/// From `x₀ = 0.5` the first trial point is `x = 0` (`0.5 − 1·0.5`, exact), gradient 0: the run
/// stops there, converged, after one iteration. Before, both searches rejected it (cost `1 >
/// 0.125`) and the run went on: Hager–Zhang 125 evaluations in 8 iterations (stopping on a
/// failed search), Moré–Thuente 107 in 10 (converged at an accepted iterate).
#[test]
fn minimize_lbfgs_stops_at_the_first_trial_point_within_the_tolerance() {
    let mut wrong = Vec::new();
    for search in [LineSearch::HagerZhang, LineSearch::MoreThuente] {
        let problem = BumpAtTheMinimum {
            evaluations: Cell::new(0),
        };
        let params = LbfgsParams::default()
            .with_line_search(search)
            .with_gradient_tolerance(1e-9);
        let res = minimize_lbfgs(&problem, DVector::from_element(1, 0.5), &params).unwrap();
        let expected = evaluations_to_first_unit_step(search);
        let got = (
            res.gradient_evaluations,
            problem.evaluations.get(),
            res.iterations,
            res.line_search_fallbacks,
        );
        if got != (expected, expected, 1, 0) {
            wrong.push(format!(
                "{search:?}: (evaluations, counted, iterations, fallbacks) = {got:?}, expected \
                 ({expected}, {expected}, 1, 0); {}",
                res.termination
            ));
        }
        // Converged at the trial point, with the cost and gradient evaluated there.
        assert_eq!(res.x[0].to_bits(), 0.0f64.to_bits(), "{search:?}");
        assert_eq!((res.cost, res.gradient[0]), (1.0, 0.0), "{search:?}");
        assert!(res.converged, "{search:?}: {res:?}");
        assert_eq!(res.reason, Termination::Converged, "{search:?}");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The flat inversion of `Φ(x_i) = ½‖x_i‖² + [‖x_i − y_i‖∞ < 0.01]` (`∇Φ(x) = x`) at
/// `y = (1, −1, 0.5)` from `x₀ = y ± 0.25` (`‖g₀‖₁ = 0.75`): the first trial point is `x = y`,
/// every residual exactly 0, so every sample is within its own tolerance there (the run's test,
/// the largest residual within the smallest tolerance, holds): the run stops there with every
/// sample `Converged` and the one shared iteration. Before: Hager–Zhang 64 evaluations in 6
/// iterations, Moré–Thuente 86 in 8.
#[test]
fn flat_inversion_stops_at_the_first_trial_point_within_every_tolerance() {
    let dev = Device::Cpu;
    let y = Tensor::new(&[[1.0f64], [-1.0], [0.5]], &dev).unwrap();
    let x0 = Tensor::new(&[[1.25f64], [-1.25], [0.25]], &dev).unwrap();
    let target = y.clone();
    let pot = FnPotential::new(move |x: &Tensor| {
        let smooth = (x.sqr()?.sum(1)? * 0.5)?;
        let near = (x - &target)?
            .abs()?
            .max(1)?
            .lt(0.01)?
            .to_dtype(DType::F64)?;
        Ok(((smooth + near)?, x.clone()))
    });
    let mut wrong = Vec::new();
    for search in [LineSearch::HagerZhang, LineSearch::MoreThuente] {
        // Relative tolerances make the samples' tolerances differ.
        let opts = InversionOptions::default()
            .with_abs_tolerance(1e-9)
            .with_rel_tolerance(1e-6)
            .with_x0(x0.clone());
        let params = FlatLbfgsParams::default().with_line_search(search);
        let res = invert_lbfgs_flat(&pot, &y, &opts, &params).unwrap();
        let expected = evaluations_to_first_unit_step(search) as usize;
        let got = (res.stats.gradient_calls, res.iterations[0]);
        if got != (expected, 1) {
            wrong.push(format!(
                "{search:?}: (evaluations, iterations) = {got:?}, expected ({expected}, 1)"
            ));
        }
        assert_eq!(res.x.to_vec2::<f64>().unwrap(), y.to_vec2::<f64>().unwrap());
        assert_eq!(res.residual_inf, vec![0.0; 3], "{search:?}");
        assert_eq!(
            res.termination,
            vec![Termination::Converged; 3],
            "{search:?}"
        );
        assert_eq!(res.converged, vec![true; 3], "{search:?}");
        // One shared problem: one iteration count.
        assert!(res.iterations.iter().all(|&k| k == res.iterations[0]));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
