//! The problem argmin's L-BFGS sees in [`crate::minimize_lbfgs`]: the caller's problem lent by
//! reference, with evaluation counts, the per-line-search evaluation cap, the handling of
//! non-finite trial points, and every finite trial point offered as a candidate for the
//! returned point (`best_iterate.rs`), the first one that meets the run's stopping test ending
//! the run there.

use std::cell::{Cell, RefCell};

use argmin::core::{ArgminFloat, CostFunction, Gradient};
use nalgebra::{DVector, RealField};

use crate::ConvexOptError;
use crate::argmin_lbfgs::LINE_SEARCH_MAX_EVALUATIONS;
use crate::best_iterate::BestIterateTracker;

/// What [`ByRef`] does with a trial point whose cost or gradient is not finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonFiniteTrial {
    /// Report it as a step that is too long (Hager–Zhang).
    Backtrack,
    /// End the line search with an error (Moré–Thuente).
    Stop,
}

/// The caller's problem behind one vtable. [`ByRef`] holds it as `&dyn Objective<F>`, so
/// argmin's solver, line searches and executor are compiled once per float type rather than
/// once per problem type (a crate that inverts a dozen potentials built a dozen copies of
/// them: about half of the machine code of convex-opt's own test crate). One indirect call
/// per evaluation costs nothing next to the evaluation.
pub(crate) trait Objective<F> {
    /// The problem's [`CostFunction::cost`].
    fn objective_cost(&self, x: &DVector<F>) -> Result<F, argmin::core::Error>;
    /// The problem's [`Gradient::gradient`].
    fn objective_gradient(&self, x: &DVector<F>) -> Result<DVector<F>, argmin::core::Error>;
}

impl<O, F> Objective<F> for O
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
{
    fn objective_cost(&self, x: &DVector<F>) -> Result<F, argmin::core::Error> {
        self.cost(x)
    }
    fn objective_gradient(&self, x: &DVector<F>) -> Result<DVector<F>, argmin::core::Error> {
        self.gradient(x)
    }
}

/// A point with its cost and gradient.
type Evaluated<F> = (DVector<F>, F, DVector<F>);

/// The error with which [`ByRef`] ends a line search at a trial point that meets the run's
/// stopping test ([`RunShared::met_test_at_trial`] says so to the rest of the run: the
/// Hager–Zhang search's fallback does not redo such a search, and the L-BFGS wrapper turns
/// argmin's "line search terminated" into a converged stop).
#[derive(Debug, thiserror::Error)]
#[error("a line-search trial point met the stopping test")]
pub(crate) struct MetTestAtTrialPoint;

/// State shared by [`ByRef`] (the problem argmin sees), the L-BFGS wrapper that sees each
/// iterate before its line search starts, and the Hager–Zhang search's Moré–Thuente fallback
/// (`line_search_fallback.rs`).
pub(crate) struct RunShared<F: RealField + Copy> {
    /// The current L-BFGS iterate `x_k`: every line-search trial point is `x_k + α p`, `α > 0`.
    pub(crate) anchor: RefCell<Option<DVector<F>>>,
    /// Gradient evaluations in the whole run.
    pub(crate) gradient_evaluations: Cell<u64>,
    /// The run's gradient-evaluation budget ([`crate::LbfgsParams::max_evaluations`]),
    /// tested between iterations and, during a Moré–Thuente fallback, before each evaluation.
    pub(crate) max_evaluations: u64,
    /// A Moré–Thuente fallback is running (since the failed search, until the next line
    /// search starts).
    pub(crate) in_fallback: Cell<bool>,
    /// The evaluation budget ended a fallback, or left none for it: the run stops as
    /// [`crate::Termination::EvaluationBudget`].
    pub(crate) fallback_out_of_budget: Cell<bool>,
    /// Evaluations since `anchor` was set (or since the fallback search started).
    pub(crate) line_search_evaluations: Cell<u64>,
    /// How the running line search treats a non-finite cost or gradient: the run's own line
    /// search's way, [`NonFiniteTrial::Stop`] during a Moré–Thuente fallback.
    pub(crate) non_finite: Cell<NonFiniteTrial>,
    /// The problem's `cost` or `gradient` returned an error (never retried).
    pub(crate) problem_failed: Cell<bool>,
    /// The problem returned a non-finite cost or gradient at a finite trial point, which ended
    /// the line search ([`NonFiniteTrial::Stop`]). A trial point that is itself not finite (a
    /// NaN or ±∞ step length, e.g. Moré–Thuente's `0/0` interpolation at the rounding level of
    /// the cost, or an overflowing step) also ends it, but is a line-search failure, not a
    /// non-finite value of the problem, and does not set this.
    pub(crate) stopped_on_non_finite: Cell<bool>,
    /// Finite points (other than `anchor` itself) with a finite cost and gradient evaluated
    /// since `anchor` was set.
    pub(crate) finite_trials: Cell<u64>,
    /// Finite points with a non-finite cost or gradient evaluated since `anchor` was set
    /// (trial points that are themselves not finite are not counted: they say nothing of the
    /// problem).
    pub(crate) non_finite_values: Cell<u64>,
    /// Hager–Zhang searches that failed and were redone by Moré–Thuente, in the whole run.
    pub(crate) fallbacks: Cell<u64>,
    /// A line-search trial point met the stopping test: [`ByRef`] ended the search there with
    /// [`MetTestAtTrialPoint`], and the run stops, converged, at that point.
    pub(crate) met_test_at_trial: Cell<bool>,
}

impl<F: RealField + Copy> RunShared<F> {
    pub(crate) fn new(non_finite: NonFiniteTrial, max_evaluations: u64) -> Self {
        Self {
            anchor: RefCell::new(None),
            gradient_evaluations: Cell::new(0),
            max_evaluations,
            in_fallback: Cell::new(false),
            fallback_out_of_budget: Cell::new(false),
            line_search_evaluations: Cell::new(0),
            non_finite: Cell::new(non_finite),
            problem_failed: Cell::new(false),
            stopped_on_non_finite: Cell::new(false),
            finite_trials: Cell::new(0),
            non_finite_values: Cell::new(0),
            fallbacks: Cell::new(0),
            met_test_at_trial: Cell::new(false),
        }
    }

    /// A new line search from `anchor`, treating non-finite values the `non_finite` way.
    pub(crate) fn start_line_search(&self, anchor: Option<DVector<F>>, non_finite: NonFiniteTrial) {
        *self.anchor.borrow_mut() = anchor;
        self.line_search_evaluations.set(0);
        self.non_finite.set(non_finite);
        self.in_fallback.set(false);
        self.finite_trials.set(0);
        self.non_finite_values.set(0);
    }

    /// The run's evaluation budget is spent.
    pub(crate) fn budget_spent(&self) -> bool {
        self.gradient_evaluations.get() >= self.max_evaluations
    }

    /// The failed Hager–Zhang search is redone by Moré–Thuente from the same point: a cap of
    /// its own, but within what is left of the run's evaluation budget, and non-finite values
    /// end it (Moré–Thuente interpolates cost values). The counts of finite and non-finite
    /// trial points go on over both searches.
    pub(crate) fn start_fallback(&self) {
        self.line_search_evaluations.set(0);
        self.non_finite.set(NonFiniteTrial::Stop);
        self.in_fallback.set(true);
        bump(&self.fallbacks);
    }
}

/// Lends a problem to argmin by reference, so that it is still usable after the run (argmin's
/// L-BFGS drops the problem when its line search fails), counts gradient evaluations, caps the
/// evaluations of one line search (and those of a Moré–Thuente fallback at the run's budget),
/// handles non-finite trial points, and offers every trial point with a finite cost and
/// gradient to the run's [`BestIterateTracker`].
///
/// **A trial point that meets the run's stopping test** (the tracker's rank says so, from the
/// ranking done anyway) becomes the run's answer, and the line search ends there with
/// [`MetTestAtTrialPoint`], whether or not it would have accepted the point: argmin's L-BFGS
/// turns the error into a failed line search, the Hager–Zhang search's fallback does not redo
/// it, and the L-BFGS wrapper (`argmin_lbfgs.rs`) reports a converged run. Every accepted
/// iterate is such a trial point first, so a run that meets its test stops at the first point
/// evaluated within it, without the evaluations the search (or the next iterations, when the
/// search rejected it) would have spent after it.
///
/// Cost and gradient are evaluated together (argmin's line searches and L-BFGS always ask for
/// both at every point, so a one-point cache makes this free) so that a point with a finite cost
/// but a non-finite gradient is recognised when its cost is asked for. (Both searches ask for
/// both: Hager–Zhang's `calc` and `calc_grad` at every trial step, Moré–Thuente's `cost` and
/// `gradient` at every `stp`; the Moré–Thuente fallback goes through this problem too.) So every
/// trial point that is evaluated at all has its cost and gradient, both as the problem returned
/// them; those are what is offered, never the `+∞`/`x − x_k` stand-ins below. A point is
/// tested when its cost is asked for: argmin 0.11 asks for the cost of every point first (its
/// only gradient-first request, L-BFGS's at its new iterate, is at a point its search
/// evaluated, cost first, before), which `evaluation_order_tests.rs` checks for both line
/// searches and the fallback, so that an argmin upgrade that changes the order is caught.
///
/// **Non-finite trial points with Hager–Zhang.** argmin's Hager–Zhang search evaluates its upper
/// bound `α = 1e5` in every line search, where potentials such as `log(1 + exp(x))` written
/// naively overflow. Such a point is reported as `cost = +∞` with the gradient `x − x_k`, the
/// gradient of `½‖x − x_k‖²` (unit curvature around the current iterate). Its slope along the
/// search direction is `α‖p‖² > 0`, finite and increasing in `α`, so the search's bracket
/// update takes the point as the upper end of the bracket (its rule U1: `φ'(c) ≥ 0`) and its
/// secant and bisection steps move back towards the finite region (a slope constant in `α`
/// would make the secant through two such points `0/0`); `+∞` never becomes the search's best
/// point (it picks the smallest cost), so L-BFGS only accepts finite points. (argmin's search
/// can still fail on its own, e.g. on extreme slopes such as `exp` near overflow, where a
/// secant step lands on the bracket's end; such a search is redone by Moré–Thuente, see
/// `line_search_fallback.rs`.) A large *finite* cost would do as well for Hager–Zhang but
/// could be picked as "best" when every trial point is non-finite; `+∞` cannot be confused with
/// a real value. Moré–Thuente interpolates cost values (`∞ − ∞`), so there a non-finite cost
/// or gradient at a finite trial point ends the line search
/// ([`crate::Termination::NonFinite`] for a Moré–Thuente run); a trial point that is itself
/// not finite (a NaN or ±∞ step length: Moré–Thuente's interpolation is `0/0` once the cost no
/// longer resolves the step, at its rounding level) also ends it, as a
/// [`crate::Termination::LineSearchFailed`].
pub(crate) struct ByRef<'a, 'r, F: RealField + Copy> {
    problem: &'a dyn Objective<F>,
    shared: &'a RunShared<F>,
    last: RefCell<Option<Evaluated<F>>>,
    /// Where finite trial points go as candidates for the returned point.
    candidates: &'a RefCell<BestIterateTracker<'r, F>>,
}

impl<'a, 'r, F> ByRef<'a, 'r, F>
where
    F: ArgminFloat + RealField + Copy,
{
    pub(crate) fn new(
        problem: &'a dyn Objective<F>,
        shared: &'a RunShared<F>,
        candidates: &'a RefCell<BestIterateTracker<'r, F>>,
    ) -> Self {
        Self {
            problem,
            shared,
            last: RefCell::new(None),
            candidates,
        }
    }

    /// `trial`: argmin asks for a cost (a new trial point; its gradient request follows at the
    /// same point). A trial at the cached point still counts towards the line-search cap:
    /// Hager–Zhang's bisection can converge onto one floating-point number and ask for it
    /// forever, which a cap on cache misses alone would not stop.
    fn evaluate(
        &self,
        x: &DVector<F>,
        trial: bool,
    ) -> Result<(F, DVector<F>), argmin::core::Error> {
        let shared = self.shared;
        let cached = self
            .last
            .borrow()
            .as_ref()
            .filter(|(cx, _, _)| cx == x)
            .map(|(_, c, g)| (*c, g.clone()));
        if (cached.is_none() || trial) && shared.anchor.borrow().is_some() {
            let k = shared.line_search_evaluations.get() + 1;
            shared.line_search_evaluations.set(k);
            if k > LINE_SEARCH_MAX_EVALUATIONS {
                return Err(argmin::core::Error::msg(format!(
                    "more than {LINE_SEARCH_MAX_EVALUATIONS} evaluations in one line search"
                )));
            }
        }
        if let Some(hit) = cached {
            return Ok(hit);
        }
        // A Moré–Thuente fallback spends only what is left of the run's budget, so that it
        // never takes the run past it (a run without a fallback is checked between iterations
        // only, as PyTorch's).
        if shared.in_fallback.get() && shared.budget_spent() {
            shared.fallback_out_of_budget.set(true);
            return Err(argmin::core::Error::msg(format!(
                "evaluation budget (max_evaluations = {}) spent",
                shared.max_evaluations
            )));
        }
        let failed = |e| {
            shared.problem_failed.set(true);
            e
        };
        let c = self.problem.objective_cost(x).map_err(failed)?;
        shared
            .gradient_evaluations
            .set(shared.gradient_evaluations.get() + 1);
        let g = self.problem.objective_gradient(x).map_err(failed)?;
        let point_finite = x.iter().all(|v| is_finite(*v));
        let (c, g) = if is_finite(c) && g.iter().all(|v| is_finite(*v)) {
            // A step of length 0 (Hager–Zhang's secant can land there) is not a trial step
            // (and the anchor was offered as an accepted iterate).
            if shared.anchor.borrow().as_ref().is_some_and(|a| a != x) {
                bump(&shared.finite_trials);
                // A trial point (a cost request: the line searches ask for the cost first,
                // then for the gradient at the same point, served from the cache) that meets
                // the run's test ends the run at once, as its answer. A gradient evaluated
                // afresh here is L-BFGS's at its new iterate, which its search evaluated
                // before: the wrapper offers it as the accepted iterate (`argmin_lbfgs.rs`,
                // before the next iteration or the end of the run).
                if trial && self.candidates.borrow_mut().offer(x, c, &g) {
                    shared.met_test_at_trial.set(true);
                    return Err(argmin::core::Error::new(MetTestAtTrialPoint));
                }
            }
            (c, g)
        } else {
            if point_finite {
                bump(&shared.non_finite_values);
            }
            match (shared.non_finite.get(), shared.anchor.borrow().as_ref()) {
                (NonFiniteTrial::Backtrack, Some(anchor)) => (F::infinity(), x - anchor),
                (NonFiniteTrial::Stop, Some(_)) => {
                    // The anchor is an accepted iterate (finite, with a finite cost and
                    // gradient), so a trial point that is not finite comes from the line
                    // search's step, not from the problem.
                    if point_finite {
                        shared.stopped_on_non_finite.set(true);
                        return Err(argmin::core::Error::msg(
                            "non-finite cost or gradient at a trial point",
                        ));
                    }
                    return Err(argmin::core::Error::msg(
                        "non-finite trial point (NaN or infinite step length)",
                    ));
                }
                (_, None) => {
                    return Err(argmin::core::Error::new(ConvexOptError::NonFinite(
                        "cost or gradient at the initial point",
                    )));
                }
            }
        };
        *self.last.borrow_mut() = Some((x.clone(), c, g.clone()));
        Ok((c, g))
    }
}

pub(crate) fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// `v` is finite (`v − v` is 0 for finite `v` and NaN for `±∞` and NaN).
#[allow(clippy::eq_op)]
pub(crate) fn is_finite<F: ArgminFloat>(v: F) -> bool {
    let z = v - v;
    z == z
}

impl<F> CostFunction for ByRef<'_, '_, F>
where
    F: ArgminFloat + RealField + Copy,
{
    type Param = DVector<F>;
    type Output = F;
    fn cost(&self, x: &DVector<F>) -> Result<F, argmin::core::Error> {
        #[cfg(test)]
        request_log::record(x, request_log::Request::Cost);
        Ok(self.evaluate(x, true)?.0)
    }
}

impl<F> Gradient for ByRef<'_, '_, F>
where
    F: ArgminFloat + RealField + Copy,
{
    type Param = DVector<F>;
    type Gradient = DVector<F>;
    fn gradient(&self, x: &DVector<F>) -> Result<DVector<F>, argmin::core::Error> {
        #[cfg(test)]
        request_log::record(x, request_log::Request::Gradient);
        Ok(self.evaluate(x, false)?.1)
    }
}

/// What argmin asked [`ByRef`] for, in order, while [`request_log::recording`] runs (unit tests
/// only, one log per thread): `evaluation_order_tests.rs` checks with it that every point is
/// asked for its cost before its gradient, which the stopping test at trial points relies on.
#[cfg(test)]
pub(crate) mod request_log {
    use std::cell::RefCell;

    use nalgebra::{DVector, RealField};

    /// A call of [`super::ByRef`]'s `cost` or `gradient`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Request {
        Cost,
        Gradient,
    }

    /// A point (the bits of its entries as `f64`: `f32` widens exactly) and what was asked of it.
    pub(crate) type Entry = (Vec<u64>, Request);

    thread_local! {
        static LOG: RefCell<Option<Vec<Entry>>> = const { RefCell::new(None) };
    }

    /// Appends a request to this thread's log, if one is being recorded.
    pub(crate) fn record<F: RealField + Copy>(x: &DVector<F>, request: Request) {
        LOG.with_borrow_mut(|log| {
            if let Some(log) = log {
                let bits = x
                    .iter()
                    .map(|&v| nalgebra::try_convert::<F, f64>(v).map_or(u64::MAX, f64::to_bits));
                log.push((bits.collect(), request));
            }
        });
    }

    /// Runs `f`, returning its value and the requests made on this thread meanwhile.
    pub(crate) fn recording<T>(f: impl FnOnce() -> T) -> (T, Vec<Entry>) {
        LOG.set(Some(Vec::new()));
        let value = f();
        (value, LOG.take().unwrap_or_default())
    }
}
