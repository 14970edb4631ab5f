//! Line-search trial points as candidates for the returned point: at the rounding floor a
//! trial point that the line search rejects (its cost not below the Armijo line by rounding,
//! or the search failing afterwards) can have a smaller residual than every accepted iterate,
//! and its cost and gradient were evaluated anyway. A run that meets its own stopping test
//! stops at, and returns, the first point that met it (`trial_point_stop.rs`).

use std::cell::RefCell;

use argmin::core::{CostFunction, Error, Gradient};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    FlatLbfgsParams, InversionOptions, InversionResult, LbfgsParams, LineSearch, Termination,
    invert_lbfgs_flat, minimize_lbfgs,
};
use nalgebra::DVector;

use crate::common::residuals;
use crate::flat_lbfgs_best_iterate::{HostQuartic, quartic};

/// Inverts `Σ x⁴/4 + x²/2` at `f32` targets `y` (one coordinate per sample) with the default
/// tolerances (`2e-5 + 2e-5·|y_i|`) and checks that the reported residuals are the ones at the
/// returned `x`.
fn invert_f32_quartic(y: &[f32], search: LineSearch) -> InversionResult {
    let pot = quartic();
    let y = Tensor::from_slice(y, (y.len(), 1), &Device::Cpu).unwrap();
    let params = FlatLbfgsParams::default().with_line_search(search);
    let res = invert_lbfgs_flat(&pot, &y, &InversionOptions::default(), &params).unwrap();
    assert_eq!(res.residual_inf, residuals(&pot, &res.x, &y), "{search:?}");
    assert_eq!(res.x.dtype(), DType::F32);
    res
}

/// Run 2415 of `examples/flat_sweep.rs` (Hager–Zhang, `f32`): targets `(−3886.09, 3.9e-8,
/// −3.7e-8)`. Its accepted iterates never bring the first sample within its tolerance
/// (`0.078`; the best one: residual `0.197`, then the line search fails), but a trial point of
/// the search solves all three exactly (residual `0` in `f32`). Returned before the change: the
/// accepted iterate, `LineSearchFailed` on the first sample.
#[test]
fn hager_zhang_trial_point_at_the_floor_is_returned() {
    let res = invert_f32_quartic(
        &[-3886.0908, 3.8564647e-8, -3.6597708e-8],
        LineSearch::HagerZhang,
    );
    assert!(res.all_converged(), "{res}: {:?}", res.residual_inf);
    assert_eq!(res.termination, vec![Termination::Converged; 3]);
}

/// Run 495 (Moré–Thuente, `f32`): targets `(−2961.65, 0)`. The best accepted iterate has
/// residual `0.223` on the first sample (tolerance `0.059`); a trial point that the search
/// rejected (before such a point ended the run) has `4.9e-4`, within every sample's tolerance,
/// and is returned.
#[test]
fn more_thuente_trial_point_at_the_floor_is_returned() {
    let res = invert_f32_quartic(&[-2961.6523, 0.0], LineSearch::MoreThuente);
    assert!(res.all_converged(), "{res}: {:?}", res.residual_inf);
    assert!(res.max_residual() <= 1e-3, "{res}: {:?}", res.residual_inf);
}

/// [`HostQuartic`] recording every point at which its gradient is evaluated, with that
/// gradient's `‖·‖∞`.
struct Recorded<'a> {
    problem: HostQuartic<f32>,
    points: &'a RefCell<Vec<(DVector<f32>, f64)>>,
}

impl CostFunction for Recorded<'_> {
    type Param = DVector<f32>;
    type Output = f32;
    fn cost(&self, x: &DVector<f32>) -> Result<f32, Error> {
        self.problem.cost(x)
    }
}

impl Gradient for Recorded<'_> {
    type Param = DVector<f32>;
    type Gradient = DVector<f32>;
    fn gradient(&self, x: &DVector<f32>) -> Result<DVector<f32>, Error> {
        let g = self.problem.gradient(x)?;
        self.points
            .borrow_mut()
            .push((x.clone(), f64::from(g.amax())));
        Ok(g)
    }
}

/// [`minimize_lbfgs`] at a tolerance below the `f32` floor (`1e-9`), on seeded targets over
/// many magnitudes: a run that stops short returns a point of least `‖∇f‖∞` among all the
/// points it evaluated (trial points included: every one is evaluated for cost and gradient),
/// with the cost and gradient evaluated there and `converged = false`; a run that converges
/// returns a point meeting the tolerance. When only accepted iterates were candidates, 8 of
/// these 40 runs (1 Hager–Zhang, 7 Moré–Thuente) returned a larger gradient than one of their
/// trial points had: `0.15` where `9.8e-4` had been evaluated, and `1.5e-8` (Hager–Zhang) or
/// `6e-8` (Moré–Thuente) where a trial point had a gradient of exactly 0 in `f32` (that point
/// was then returned, converged, although the line search failed; now it ends the run there).
#[test]
fn minimize_lbfgs_returns_the_least_gradient_point_it_evaluated() {
    let mut beaten = Vec::new();
    for search in [LineSearch::HagerZhang, LineSearch::MoreThuente] {
        for seed in 0..20u32 {
            // Deterministic targets `±s·10^e`, `e ∈ [−3, 4]`, three coordinates.
            let y = DVector::from_fn(3, |j, _| {
                let k = (seed * 3 + j as u32) as f32;
                let sign = if (seed + j as u32).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                };
                sign * (1.0 + (k * 0.618).fract()) * 10f32.powi((k as i32 * 7) % 8 - 3)
            });
            let points = RefCell::new(Vec::new());
            let problem = Recorded {
                problem: HostQuartic(y.clone()),
                points: &points,
            };
            let params = LbfgsParams::default()
                .with_line_search(search)
                .with_gradient_tolerance(1e-9);
            let res = minimize_lbfgs(&problem, y.clone(), &params).unwrap();
            // The reported cost and gradient are those at the returned point.
            assert_eq!(res.gradient, problem.problem.gradient(&res.x).unwrap());
            assert_eq!(res.cost, problem.problem.cost(&res.x).unwrap());
            assert_eq!(res.gradient_inf, f64::from(res.gradient.amax()));
            assert_eq!(res.converged, res.gradient_inf <= 1e-9);
            assert_eq!(res.converged, res.reason == Termination::Converged);
            let least = points
                .borrow()
                .iter()
                .map(|(_, g)| *g)
                .fold(f64::INFINITY, f64::min);
            if !res.converged && res.gradient_inf > least {
                beaten.push(format!(
                    "{search:?} y = {:?}: returned ‖∇f‖∞ = {:e} ({:?}), {least:e} evaluated",
                    y.as_slice(),
                    res.gradient_inf,
                    res.reason
                ));
            }
        }
    }
    assert!(beaten.is_empty(), "{beaten:#?}");
}
