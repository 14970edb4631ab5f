//! Which point [`crate::minimize_lbfgs`] and [`crate::invert_lbfgs_flat`] return, and when
//! they stop: the first evaluated point that meets the run's stopping test (`x₀`, or a
//! line-search trial point, which ends the search at once: `trial_problem.rs::ByRef`) is the
//! run's answer; a run that never meets it returns the best point it evaluated by the run's
//! own convergence measure (accepted iterates and line-search trial points alike), not
//! argmin's best parameter (the iterate of least cost).
//!
//! At the rounding floor of the cost the two differ: equal costs keep argmin's earlier iterate
//! (its update needs a strictly smaller cost), Hager–Zhang's approximate Wolfe steps may raise
//! the cost by `ε|f|`, and in a flattened batch the summed cost no longer resolves the rows of
//! small targets at all. After a failed line search argmin's L-BFGS leaves no iterate in its
//! state but the least-cost one, which in `f32` was often far from the least-residual iterate
//! (`Σ x⁴/4 + x²/2`, targets `(1e-8, 0, 7)`: residual `1.4e-4` returned, `4.8e-7` visited).
//! For the same reason a trial point that the line search rejects (its cost not below the
//! Armijo line by rounding, or the search failing afterwards) can have a smaller gradient than
//! any accepted iterate; its cost and gradient were evaluated anyway (every trial point is
//! evaluated for both, see `trial_problem.rs`), so it is ranked too, at no extra evaluation.

use argmin::core::ArgminFloat;
use nalgebra::{DVector, RealField};

use crate::trial_problem::is_finite;

/// How good a point is, from its gradient: `(short of its goal, residual)`, compared
/// lexicographically, smaller first (`false < true`; a NaN residual ranks nowhere). The goal
/// is the run's stopping test: a point that meets it ends the run.
/// [`crate::minimize_lbfgs`] ranks by `(‖∇f‖∞ > gradient_tolerance, ‖∇f‖∞)` (the same order
/// as `‖∇f‖∞` alone); [`crate::invert_lbfgs_flat`] by whether some sample's residual exceeds
/// its own tolerance, then by the largest residual `max_i ‖∇Φ(x_i) − y_i‖∞`.
///
/// Not the number of samples short of their tolerance: in the seeded sweep
/// (`examples/flat_sweep.rs`, 3,000 runs per line search) that count, which never loses a
/// converged sample, gained 50 (Hager–Zhang) and 70 (Moré–Thuente) samples, but it prefers a
/// point where one more sample happens to be within its tolerance however far off the others
/// are: largest residuals of `1e6` (`f32`) and `2.8e20` (`f64`, a Hager–Zhang trial point far
/// along the line) where `0.09` and `5e-8` had been returned.
pub(crate) type IterateRank = (bool, f64);

/// Ranks a point by its gradient (see [`IterateRank`]).
pub(crate) type RankFn<'a, F> = &'a dyn Fn(&DVector<F>) -> IterateRank;

/// An evaluated point (an accepted iterate or a line-search trial point) with its cost and
/// gradient.
pub(crate) struct BestIterate<F: RealField + Copy> {
    pub(crate) x: DVector<F>,
    pub(crate) cost: F,
    pub(crate) gradient: DVector<F>,
}

/// Keeps the best-ranked point offered during a run, the later of equally ranked ones (so a
/// run whose last iterate ranks best returns it). A point that meets the run's goal ranks
/// before every point that does not, and the run stops at the first one offered
/// ([`BestIterateTracker::offer`] says so), so when the run met its stopping test the kept
/// point is the one that met it.
pub(crate) struct BestIterateTracker<'a, F: RealField + Copy> {
    rank: RankFn<'a, F>,
    best: Option<(IterateRank, BestIterate<F>)>,
}

impl<'a, F: ArgminFloat + RealField + Copy> BestIterateTracker<'a, F> {
    pub(crate) fn new(rank: RankFn<'a, F>) -> Self {
        Self { rank, best: None }
    }

    /// Offers an evaluated point (a line-search trial point or an accepted iterate): ranks
    /// it, keeps it if it ranks at least as well as the best point so far (`x` copied only
    /// then), and returns whether it meets the run's goal (its rank's first component is
    /// `false`: the run's stopping test), where the run stops. One with a non-finite cost or
    /// gradient (or a NaN residual) is never kept and meets no goal.
    ///
    /// Every accepted iterate but `x₀` was offered before, as a trial point of the line
    /// search that found it (`trial_problem.rs::ByRef`), which stops the run at a trial point
    /// that meets the goal; offered again as the iterate (`argmin_lbfgs.rs`) it ties its own
    /// earlier rank, and the later of equal ones wins, as always.
    pub(crate) fn offer(&mut self, x: &DVector<F>, cost: F, gradient: &DVector<F>) -> bool {
        if !(is_finite(cost) && gradient.iter().all(|v| is_finite(*v))) {
            return false;
        }
        let rank = (self.rank)(gradient);
        if rank.1.is_nan() {
            return false;
        }
        if self.best.as_ref().is_none_or(|(best, _)| rank <= *best) {
            let iterate = BestIterate {
                x: x.clone(),
                cost,
                gradient: gradient.clone(),
            };
            self.best = Some((rank, iterate));
        }
        !rank.0
    }

    /// The best-ranked point offered (the one that met the stopping test, if one did), if any.
    pub(crate) fn into_best(self) -> Option<BestIterate<F>> {
        self.best.map(|(_, iterate)| iterate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inf(g: &DVector<f64>) -> IterateRank {
        (false, g.amax())
    }

    /// Smaller rank wins, ties go to the later iterate, non-finite ones are never kept.
    #[test]
    fn keeps_the_later_of_the_best_ranked_finite_iterates() {
        let mut t = BestIterateTracker::new(&inf);
        let v = |a: f64| DVector::from_element(1, a);
        t.offer(&v(1.0), 0.0, &v(3.0));
        t.offer(&v(2.0), -1.0, &v(1.0));
        t.offer(&v(3.0), -2.0, &v(2.0));
        t.offer(&v(4.0), -2.0, &v(1.0));
        t.offer(&v(5.0), f64::NAN, &v(0.5));
        t.offer(&v(6.0), -3.0, &v(f64::INFINITY));
        let best = t.into_best().unwrap();
        assert_eq!((best.x[0], best.cost, best.gradient[0]), (4.0, -2.0, 1.0));
    }

    /// `(‖g‖∞ > 1e-9, ‖g‖∞)`: `minimize_lbfgs`'s rank at the tolerance `1e-9`.
    fn within_1e_9(g: &DVector<f64>) -> IterateRank {
        (g.amax() > 1e-9, g.amax())
    }

    /// The point at which the run met its stopping test is returned, bit for bit, after an
    /// equal point short of the test (`x = 0.0` against `−0.0`, the same cost).
    #[test]
    fn the_iterate_that_met_the_test_is_returned() {
        let mut t = BestIterateTracker::new(&within_1e_9);
        let v = |a: f64| DVector::from_element(1, a);
        assert!(!t.offer(&v(1.0), 0.0, &v(1e-3)));
        assert!(!t.offer(&v(0.0), -1.0, &v(1e-6)));
        assert!(t.offer(&v(-0.0), -1.0, &v(1e-10)));
        let best = t.into_best().unwrap();
        assert_eq!(best.x[0].to_bits(), (-0.0f64).to_bits());
        assert_eq!((best.cost, best.gradient[0]), (-1.0, 1e-10));
    }

    /// A trial point within the test stops the run (it is returned); one outside it does
    /// not, and is kept as a candidate; one with a NaN gradient is neither.
    #[test]
    fn a_trial_point_within_the_test_is_the_answer() {
        let mut t = BestIterateTracker::new(&within_1e_9);
        let v = |a: f64| DVector::from_element(1, a);
        assert!(!t.offer(&v(1.0), 0.0, &v(1e-3)));
        assert!(!t.offer(&v(2.0), 0.0, &v(f64::NAN)));
        assert!(t.offer(&v(3.0), 0.0, &v(1e-10)));
        assert_eq!(t.into_best().unwrap().x[0], 3.0);
    }

    /// An accepted iterate offered again after its trial-point offer: when it is still the best
    /// point nothing changes; when a later trial point tied it, the accepted iterate (offered
    /// later) wins the tie.
    #[test]
    fn an_accepted_iterate_wins_a_tie_with_an_earlier_offer() {
        let mut t = BestIterateTracker::new(&within_1e_9);
        let v = |a: f64| DVector::from_element(1, a);
        assert!(!t.offer(&v(1.0), 3.0, &v(0.5)));
        assert!(!t.offer(&v(2.0), 2.0, &v(0.5)));
        assert!(!t.offer(&v(1.0), 3.0, &v(0.5)));
        assert!(!t.offer(&v(5.0), 9.0, &v(0.7)));
        assert!(!t.offer(&v(5.0), 9.0, &v(0.7)));
        let best = t.into_best().unwrap();
        assert_eq!((best.x[0], best.cost), (1.0, 3.0));
    }

    /// An iterate meeting its goal ranks first, whatever its residual.
    #[test]
    fn an_iterate_meeting_its_goal_ranks_first() {
        // Tolerances 1 and 0.1 on the two entries.
        let rank = |g: &DVector<f64>| (g[0] > 1.0 || g[1] > 0.1, g.amax());
        let mut t = BestIterateTracker::new(&rank);
        let v = |a: f64| DVector::from_element(1, a);
        t.offer(&v(1.0), 0.0, &DVector::from_vec(vec![0.5, 0.2]));
        // Both within tolerance although its residual is larger: it wins.
        t.offer(&v(2.0), 0.0, &DVector::from_vec(vec![0.9, 0.05]));
        // Smaller residual, not within tolerance.
        t.offer(&v(3.0), 0.0, &DVector::from_vec(vec![0.01, 0.11]));
        // Within tolerance, smaller residual than the other one within: it wins.
        t.offer(&v(4.0), 0.0, &DVector::from_vec(vec![0.8, 0.09]));
        t.offer(&v(5.0), 0.0, &DVector::from_vec(vec![0.85, 0.09]));
        assert_eq!(t.into_best().unwrap().x[0], 4.0);
    }
}
