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
/// run whose last iterate ranks best returns it), unless the run met its stopping test
/// ([`BestIterateTracker::offer_trial`], [`BestIterateTracker::offer_accepted`]): then the
/// point that met it.
pub(crate) struct BestIterateTracker<'a, F: RealField + Copy> {
    rank: RankFn<'a, F>,
    best: Option<(IterateRank, BestIterate<F>)>,
    stopped_at: Option<BestIterate<F>>,
}

impl<'a, F: ArgminFloat + RealField + Copy> BestIterateTracker<'a, F> {
    pub(crate) fn new(rank: RankFn<'a, F>) -> Self {
        Self {
            rank,
            best: None,
            stopped_at: None,
        }
    }

    /// The rank of a point with this cost and gradient, `None` (never kept) when the cost or
    /// gradient is not finite or the residual is NaN.
    fn rank_of(&self, cost: F, gradient: &DVector<F>) -> Option<IterateRank> {
        if !(is_finite(cost) && gradient.iter().all(|v| is_finite(*v))) {
            return None;
        }
        let rank = (self.rank)(gradient);
        (!rank.1.is_nan()).then_some(rank)
    }

    /// Keeps the point if it ranks at least as well as the best one so far (`x` copied only
    /// then); true if it was kept.
    fn keep_if_better(
        &mut self,
        rank: IterateRank,
        x: &DVector<F>,
        cost: F,
        gradient: &DVector<F>,
    ) -> bool {
        let better = self.best.as_ref().is_none_or(|(best, _)| rank <= *best);
        if better {
            let iterate = BestIterate {
                x: x.clone(),
                cost,
                gradient: gradient.clone(),
            };
            self.best = Some((rank, iterate));
        }
        better
    }

    /// Offers an evaluated point that is no candidate for a stop (L-BFGS's gradient at its new
    /// iterate, evaluated afresh); one with a non-finite cost or gradient (or NaN residual) is
    /// never kept.
    pub(crate) fn offer(&mut self, x: &DVector<F>, cost: F, gradient: &DVector<F>) {
        if let Some(rank) = self.rank_of(cost, gradient) {
            self.keep_if_better(rank, x, cost, gradient);
        }
    }

    /// Offers a line-search trial point; true when it meets the run's goal (its rank's first
    /// component is `false`: the run's stopping test): then it is the run's answer
    /// ([`BestIterateTracker::into_best`]) and the run stops there.
    pub(crate) fn offer_trial(&mut self, x: &DVector<F>, cost: F, gradient: &DVector<F>) -> bool {
        let Some(rank) = self.rank_of(cost, gradient) else {
            return false;
        };
        if rank.0 {
            self.keep_if_better(rank, x, cost, gradient);
            return false;
        }
        self.stopped_at = Some(BestIterate {
            x: x.clone(),
            cost,
            gradient: gradient.clone(),
        });
        true
    }

    /// Offers an accepted iterate; true when it meets the run's goal: then it is the run's
    /// answer, whatever the rank of the points offered before it (a trial point may rank better
    /// and meet the goal too; the run's own answer is the iterate that stopped it).
    ///
    /// Every accepted iterate but `x₀` was evaluated as a trial point of the line search that
    /// found it and offered then (`trial_problem.rs::ByRef`, which stops the run at a trial
    /// point that meets the goal). When it is still the best point (the same bits of `x`, cost
    /// and gradient) offering it again would change nothing: it is neither ranked again nor
    /// copied. Otherwise (`x₀`, a step of length 0, a point the search evaluated before a
    /// better-ranked one) it is ranked and kept if it ranks at least as well as the best point,
    /// which, offered before, it can only tie (the later of equal ones wins, as always).
    pub(crate) fn offer_accepted(
        &mut self,
        x: &DVector<F>,
        cost: F,
        gradient: &DVector<F>,
    ) -> bool {
        let already_best = self.best.as_ref().and_then(|(rank, best)| {
            (same_bits(best.cost, cost)
                && same_entries(&best.x, x)
                && same_entries(&best.gradient, gradient))
            .then_some(*rank)
        });
        let (rank, kept) = match already_best {
            Some(rank) => (rank, true),
            None => match self.rank_of(cost, gradient) {
                Some(rank) => (rank, self.keep_if_better(rank, x, cost, gradient)),
                None => return false,
            },
        };
        if rank.0 {
            return false;
        }
        // It meets the goal, so it ranks first: kept unless a point that met the goal was
        // offered before and ranks better (not possible within one run, which stops at such a
        // point, but cheap to get right).
        let stopped = match self.best.take() {
            Some((_, best)) if kept => best,
            other => {
                self.best = other;
                BestIterate {
                    x: x.clone(),
                    cost,
                    gradient: gradient.clone(),
                }
            }
        };
        self.stopped_at = Some(stopped);
        true
    }

    /// The iterate that met the stopping test, or else the best-ranked point offered, if any.
    pub(crate) fn into_best(self) -> Option<BestIterate<F>> {
        self.stopped_at
            .or_else(|| self.best.map(|(_, iterate)| iterate))
    }
}

/// `a` and `b` have the same bits, for finite values (and NaN never equal): equal, and of
/// the same sign (`0.0 == -0.0`).
fn same_bits<F: RealField + Copy>(a: F, b: F) -> bool {
    a == b && a.is_sign_negative() == b.is_sign_negative()
}

/// [`same_bits`] entry by entry.
fn same_entries<F: RealField + Copy>(a: &DVector<F>, b: &DVector<F>) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|(u, v)| same_bits(*u, *v))
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

    /// The accepted iterate at which the run met its stopping test is returned, bit for bit,
    /// even after a better-ranked point (within the test too, offered as no stop candidate)
    /// and an equal one.
    #[test]
    fn the_iterate_that_met_the_test_is_returned() {
        let mut t = BestIterateTracker::new(&within_1e_9);
        let v = |a: f64| DVector::from_element(1, a);
        t.offer(&v(1.0), 0.0, &v(1e-12));
        t.offer(&v(0.0), -1.0, &v(1e-10));
        assert!(t.offer_accepted(&v(-0.0), -1.0, &v(1e-10)));
        let best = t.into_best().unwrap();
        assert_eq!(best.x[0].to_bits(), (-0.0f64).to_bits());
        assert_eq!((best.cost, best.gradient[0]), (-1.0, 1e-10));
    }

    /// A trial point within the test stops the run (it is returned, whatever comes after);
    /// one outside it does not, and is kept as a candidate.
    #[test]
    fn a_trial_point_within_the_test_is_the_answer() {
        let mut t = BestIterateTracker::new(&within_1e_9);
        let v = |a: f64| DVector::from_element(1, a);
        assert!(!t.offer_trial(&v(1.0), 0.0, &v(1e-3)));
        assert!(!t.offer_trial(&v(2.0), 0.0, &v(f64::NAN)));
        assert!(t.offer_trial(&v(3.0), 0.0, &v(1e-10)));
        t.offer(&v(4.0), 0.0, &v(1e-12));
        assert_eq!(t.into_best().unwrap().x[0], 3.0);
    }

    /// An accepted iterate offered again after its trial-point offer: when it is still the best
    /// point nothing changes; when a later trial point tied it, the accepted iterate (offered
    /// later) wins the tie, as it did when every accepted iterate was offered in full.
    #[test]
    fn an_accepted_iterate_wins_a_tie_with_an_earlier_offer() {
        let mut t = BestIterateTracker::new(&within_1e_9);
        let v = |a: f64| DVector::from_element(1, a);
        assert!(!t.offer_trial(&v(1.0), 3.0, &v(0.5)));
        assert!(!t.offer_trial(&v(2.0), 2.0, &v(0.5)));
        assert!(!t.offer_accepted(&v(1.0), 3.0, &v(0.5)));
        assert!(!t.offer_trial(&v(5.0), 9.0, &v(0.7)));
        assert!(!t.offer_accepted(&v(5.0), 9.0, &v(0.7)));
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
