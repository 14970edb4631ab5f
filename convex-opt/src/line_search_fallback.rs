//! argmin's Hager–Zhang line search, redone by Moré–Thuente from the same point when it fails.

use argmin::core::{ArgminFloat, Error, IterState, KV, Problem, Solver, State, TerminationStatus};
use argmin::core::{CostFunction, Gradient};
use argmin::solver::linesearch::{HagerZhangLineSearch, LineSearch, MoreThuenteLineSearch};
use nalgebra::{DVector, RealField};

use crate::trial_problem::RunShared;

type VecState<F> = IterState<DVector<F>, DVector<F>, (), (), (), F>;

/// Hager–Zhang, with Moré–Thuente along the same direction from the same point when the
/// Hager–Zhang search fails.
///
/// **Why it fails.** argmin 0.11's Hager–Zhang search has only the secant²/bisection phase of
/// the method: it starts from the fixed bracket `[a, b] = [ε, 1e5]` (plus the point `c = 1`,
/// which is only a candidate for the best point) and never runs the paper's bracketing phase,
/// which expands the interval until the slope `φ'` turns non-negative. When the line minimum
/// lies beyond `α = 1e5` (`φ'(1e5) < 0`) the secant steps extrapolate past `b` and are
/// discarded (its update rule U0), bisection moves `a` towards `b`, and the search ends only if
/// `α = 1e5` itself meets the Wolfe conditions; otherwise it loops until the line-search
/// evaluation cap ([`crate::LINE_SEARCH_MAX_EVALUATIONS`]). On `Σ x⁴/4 + x²/2` this happens
/// when a first step (unit `ℓ₁` length, see `first_step.rs`) leaves the minimum `|y|` away
/// (`y = 1e8`: `α* ≈ 1e8`), and at `y ≈ 1e5`, where the first search ends at `α = 1e5`,
/// `x₁ ≈ 0`: the curvature pair spans curvatures `1 … 3e10`, the second L-BFGS direction is
/// `≈ 1e-5·(−g)` and its minimum is at `α ≈ 4.6e6`. The other failure is argmin-rs/argmin#541:
/// a secant through a bracket end and itself is `0/0`, the trial point is NaN and the bracket
/// update reports "Reached unreachable point in `update`".
///
/// **The fallback.** Either failure (an error of the search or of the cap, never an error of
/// the problem itself, which is returned) restarts the line search with Moré–Thuente (the
/// reference's strong Wolfe search, whose first trial is `α = 1` and which extrapolates by 4×
/// until it brackets the minimum), with the same Wolfe constants, from the iterate and
/// direction of the failed search, with a fresh evaluation cap. During the fallback a
/// non-finite cost or gradient ends the search as in a Moré–Thuente run. argmin's
/// Moré–Thuente also stops "successfully" when its interval or step bounds leave no room (at
/// the rounding level of the cost), at a point that need not be better; the fallback's point
/// is accepted only if it meets the strong Wolfe conditions, so a run stalled at its rounding
/// floor still stops as a failed line search instead of wandering there until its evaluation
/// budget is spent (in a seeded sweep of 3,000 flat inversions, accepting any point brought
/// 14 more runs to their tolerance but ended 60 more as `EvaluationBudget`, with 12% more
/// evaluations in all). A search that never fails is untouched, bit for bit: the fallback only
/// changes runs that would have stopped on a failed line search. The number of fallbacks is
/// reported ([`crate::MinimizeResult::line_search_fallbacks`]).
#[derive(Clone)]
pub(crate) struct HagerZhangThenMoreThuente<'a, F: RealField + Copy> {
    hager_zhang: HagerZhangLineSearch<DVector<F>, DVector<F>, F>,
    more_thuente: MoreThuenteLineSearch<DVector<F>, DVector<F>, F>,
    shared: &'a RunShared<F>,
    /// The Wolfe constants `c₁`, `c₂` the fallback's result must meet.
    c1: F,
    c2: F,
    /// The search direction, kept for a restart.
    direction: Option<DVector<F>>,
    /// The iterate, its gradient and cost, kept for a restart.
    start: Option<(DVector<F>, DVector<F>, F)>,
    /// Set when Moré–Thuente took over: the iterate, `φ(0)` and `φ'(0)`.
    fallback: Option<Restart<F>>,
}

/// Where the fallback search started: `x_k`, the direction `p`, `φ(0) = f(x_k)` and
/// `φ'(0) = ∇f(x_k)ᵀp`.
#[derive(Clone)]
struct Restart<F: RealField + Copy> {
    x: DVector<F>,
    direction: DVector<F>,
    cost: F,
    slope: F,
}

impl<'a, F: ArgminFloat + RealField + Copy> HagerZhangThenMoreThuente<'a, F> {
    pub(crate) fn new(
        hager_zhang: HagerZhangLineSearch<DVector<F>, DVector<F>, F>,
        more_thuente: MoreThuenteLineSearch<DVector<F>, DVector<F>, F>,
        (c1, c2): (F, F),
        shared: &'a RunShared<F>,
    ) -> Self {
        Self {
            hager_zhang,
            more_thuente,
            shared,
            c1,
            c2,
            direction: None,
            start: None,
            fallback: None,
        }
    }

    /// Moré–Thuente from the start of the failed search, unless the problem itself failed.
    fn fall_back<O>(
        &mut self,
        problem: &mut Problem<O>,
        error: Error,
    ) -> Result<(VecState<F>, Option<KV>), Error>
    where
        MoreThuenteLineSearch<DVector<F>, DVector<F>, F>: Solver<O, VecState<F>>,
    {
        if self.shared.problem_failed.get() {
            return Err(error);
        }
        let (Some((x, g, cost)), Some(p)) = (self.start.take(), self.direction.take()) else {
            return Err(error);
        };
        self.more_thuente.search_direction(p.clone());
        self.fallback = Some(Restart {
            x: x.clone(),
            cost,
            slope: g.dot(&p),
            direction: p,
        });
        self.shared.start_fallback();
        let state = IterState::new().param(x).gradient(g).cost(cost);
        self.more_thuente.init(problem, state)
    }

    /// The strong Wolfe conditions at the point where Moré–Thuente stopped. argmin's search
    /// also stops, as if successful, when its interval of uncertainty or step bounds leave no
    /// room (at the rounding level of the cost); such a point is no progress that Hager–Zhang
    /// missed, so the line search fails as it would have without the fallback.
    fn meets_strong_wolfe(&self, state: &VecState<F>) -> bool {
        let (Some(start), Some(x), Some(g)) = (
            self.fallback.as_ref(),
            state.get_param(),
            state.get_gradient(),
        ) else {
            return false;
        };
        let p = &start.direction;
        let step = (x - &start.x).dot(p) / p.dot(p);
        let decrease = state.get_cost() <= start.cost + self.c1 * step * start.slope;
        let curvature = abs(g.dot(p)) <= self.c2 * abs(start.slope);
        decrease && curvature
    }
}

impl<F: ArgminFloat + RealField + Copy> LineSearch<DVector<F>, F>
    for HagerZhangThenMoreThuente<'_, F>
{
    fn search_direction(&mut self, direction: DVector<F>) {
        self.direction = Some(direction.clone());
        self.hager_zhang.search_direction(direction);
    }

    fn initial_step_length(&mut self, step_length: F) -> Result<(), Error> {
        self.more_thuente.initial_step_length(step_length)?;
        self.hager_zhang.initial_step_length(step_length)
    }
}

impl<O, F> Solver<O, VecState<F>> for HagerZhangThenMoreThuente<'_, F>
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
    F: ArgminFloat + RealField + Copy,
    HagerZhangLineSearch<DVector<F>, DVector<F>, F>: Solver<O, VecState<F>>,
    MoreThuenteLineSearch<DVector<F>, DVector<F>, F>: Solver<O, VecState<F>>,
{
    fn name(&self) -> &str {
        if self.fallback.is_some() {
            "More-Thuente line search (after Hager-Zhang failed)"
        } else {
            "Hager-Zhang line search"
        }
    }

    fn init(
        &mut self,
        problem: &mut Problem<O>,
        state: VecState<F>,
    ) -> Result<(VecState<F>, Option<KV>), Error> {
        self.fallback = None;
        self.start = state
            .get_param()
            .cloned()
            .zip(state.get_gradient().cloned())
            .map(|(x, g)| (x, g, state.get_cost()));
        match self.hager_zhang.init(problem, state) {
            Ok(next) => Ok(next),
            Err(e) => self.fall_back(problem, e),
        }
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        state: VecState<F>,
    ) -> Result<(VecState<F>, Option<KV>), Error> {
        if self.fallback.is_some() {
            let (state, kv) = self.more_thuente.next_iter(problem, state)?;
            if state.terminated() && !self.meets_strong_wolfe(&state) {
                return Err(Error::msg(
                    "Moré–Thuente (after Hager–Zhang failed) stopped without a strong Wolfe point",
                ));
            }
            return Ok((state, kv));
        }
        match self.hager_zhang.next_iter(problem, state) {
            Ok(next) => Ok(next),
            Err(e) => self.fall_back(problem, e),
        }
    }

    fn terminate_internal(&mut self, state: &VecState<F>) -> TerminationStatus {
        if self.fallback.is_some() {
            self.more_thuente.terminate_internal(state)
        } else {
            self.hager_zhang.terminate_internal(state)
        }
    }
}

fn abs<F: RealField + Copy>(v: F) -> F {
    if v < F::zero() { -v } else { v }
}
