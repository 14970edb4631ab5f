//! A line-search trial point that meets the run's stopping test ends the run there, as
//! converged: the search does not go on (for an inversion every evaluation is a pass through
//! the potential). Before, the run went on until an accepted iterate met the test (or the
//! search failed) and returned that trial point only at the end, if no iterate ranked first.
//! The flat inversion's test is every sample within its own tolerance (before: the largest
//! residual within the smallest tolerance, which a batch of different tolerances could pass
//! long after every sample was within its own).
//!
//! The bump problems below reject such a point on purpose: their cost jumps up by 1 within
//! `0.01` of the solution while the gradient stays that of `½‖x − x*‖²`, as the cost of a real
//! run at its rounding floor can fail the Armijo test at a point whose gradient is within
//! tolerance. The first trial point of the first line search is the solution itself (a unit
//! step along `−∇f(x₀)`, `‖∇f(x₀)‖₁ ≤ 1` so the first step is not scaled), with a gradient of
//! exactly 0; Hager–Zhang evaluates it third (after its bracket ends `α = ε` and `α = 1e5`),
//! Moré–Thuente first.

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
/// every residual exactly 0, so every sample is within its own tolerance there (the run's
/// test; with residuals of 0 the old one, the largest residual within the smallest tolerance,
/// holds too: `flat_inversion_stops_when_every_sample_is_within_its_own_tolerance` tells the
/// two apart): the run stops there with every sample `Converged` and the one shared
/// iteration. Before: Hager–Zhang 64 evaluations in 6 iterations, Moré–Thuente 86 in 8.
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

/// The flat inversion of `Φ(x_i) = ¾‖x_i‖²` (`∇Φ(x) = 1.5x`, no bump: every step is accepted)
/// at `y = (1, 1000)` with the relative tolerance `1e-3` alone, so the samples' tolerances are
/// `1e-3` and `1`. With `x₀` chosen so that `g₀ = ∇Φ(x₀) − y = δ` (`‖δ‖₁ < 1`: the first step
/// is the unit step, not scaled), the first trial point is `x₀ − δ`, with residuals
/// `g₀ − 1.5δ = −δ/2`. Two starts, each ending at a point where every sample is within its
/// own tolerance but the largest residual is far above the smallest tolerance (so the old
/// test, `max_i r_i ≤ min_i tolerance_i`, fails there and the run went on):
/// * `δ = (5e-4, 0.5)`: `x₀` itself (`5e-4 ≤ 1e-3`, `0.5 ≤ 1`; largest `0.5`): one
///   evaluation, no iteration;
/// * `δ = (1.5e-3, 0.5)`: `x₀` has sample 0 outside (`1.5e-3 > 1e-3`); the first trial point
///   has residuals `(7.5e-4, 0.25)` (largest `0.25`, 250 times the smallest tolerance): one
///   iteration, 2 evaluations with Moré–Thuente (`x₀`, `α = 1`), 3 with Hager–Zhang (`x₀`,
///   `α = 1e5`, `α = 1`: its first bracket end `x₀ + ε·p` rounds to `x₀` itself, `ε·|p_i|`
///   being under half an ulp of `x₀`'s entries, ~0.67 and ~667, and is not evaluated again).
///
/// The old code (1ff6aa0) went on, from either start, to the solution (residuals 0): Hager–Zhang
/// 5 evaluations in 2 iterations, Moré–Thuente 3 in 2 (the second case's trial point was
/// accepted as the first iterate, and failed the old test there).
#[test]
fn flat_inversion_stops_when_every_sample_is_within_its_own_tolerance() {
    let dev = Device::Cpu;
    let y = [1.0f64, 1000.0];
    let y_t = Tensor::new(&[[y[0]], [y[1]]], &dev).unwrap();
    let pot = FnPotential::new(|x: &Tensor| Ok(((x.sqr()?.sum(1)? * 0.75)?, (x * 1.5)?)));
    // `abs_tolerance + rel_tolerance·|y_i|`: `1e-3` and `1` (to rounding; the absolute
    // tolerance must be > 0, and `1e-16` adds less than the checks below resolve).
    let opts = InversionOptions::default()
        .with_abs_tolerance(1e-16)
        .with_rel_tolerance(1e-3);
    let mut wrong = Vec::new();
    // (δ = g₀, the residuals where the run stops, iterations, evaluations with HZ and MT)
    type Start = ([f64; 2], [f64; 2], usize, [usize; 2]);
    let starts: [Start; 2] = [
        ([5e-4, 0.5], [5e-4, 0.5], 0, [1, 1]),
        ([1.5e-3, 0.5], [7.5e-4, 0.25], 1, [3, 2]),
    ];
    for (delta, residual, iterations, evaluations) in starts {
        let x0 = [(y[0] + delta[0]) / 1.5, (y[1] + delta[1]) / 1.5];
        let x0_t = Tensor::new(&[[x0[0]], [x0[1]]], &dev).unwrap();
        for (search, evaluations) in [LineSearch::HagerZhang, LineSearch::MoreThuente]
            .into_iter()
            .zip(evaluations)
        {
            let params = FlatLbfgsParams::default().with_line_search(search);
            let res = invert_lbfgs_flat(&pot, &y_t, &opts.clone().with_x0(x0_t.clone()), &params)
                .unwrap();
            let case = format!("δ = {delta:?}, {search:?}");
            // The tolerances differ, and the stopping point's largest residual exceeds the
            // smaller one: only the per-sample test stops here.
            assert!((res.tolerance[0] - 1e-3).abs() < 1e-15, "{case}: {res}");
            assert!((res.tolerance[1] - 1.0).abs() < 1e-12, "{case}: {res}");
            // The stopping point, with its residuals as predicted (`x₀ − δ` and `1.5·x` round at
            // ~1e-13 of 1000; the margins to the tolerances are ≥ 25%).
            let got = (res.stats.gradient_calls, res.iterations[0]);
            let at_the_point = res
                .residual_inf
                .iter()
                .zip(residual)
                .all(|(r, e)| (r - e).abs() < 1e-9);
            if got != (evaluations, iterations) || !at_the_point {
                wrong.push(format!(
                    "{case}: (evaluations, iterations) = {got:?}, expected ({evaluations}, \
                     {iterations}); residuals {:?}, expected {residual:?}",
                    res.residual_inf
                ));
            }
            assert_eq!(res.converged, vec![true; 2], "{case}: {res}");
            assert_eq!(res.termination, vec![Termination::Converged; 2], "{case}");
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
