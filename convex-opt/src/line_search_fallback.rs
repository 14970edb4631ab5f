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
/// direction of the failed search, with a fresh evaluation cap, but only within what is left
/// of the run's evaluation budget: with none left it is not started, and it stops where the
/// budget is spent, the run then stopping as [`crate::Termination::EvaluationBudget`] (so a
/// fallback never takes a run past its budget). During the fallback a non-finite cost or
/// gradient ends the search as in a Moré–Thuente run. When the fallback fails too, its error
/// names both: `"Moré–Thuente: {error} (after Hager–Zhang: {error})"`. argmin's
/// Moré–Thuente also stops "successfully" when its interval or step bounds leave no room (at
/// the rounding level of the cost), at a point that need not be better; the fallback's point
/// is accepted only if it meets the strong Wolfe conditions (tested along `p/‖p‖∞`, so that
/// no dot product under- or overflows however long `p` is), so a run stalled at its rounding
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
    /// Set when Moré–Thuente took over: the iterate, `φ(0)`, `φ'(0)` and Hager–Zhang's error.
    fallback: Option<Restart<F>>,
}

/// Where the fallback search started, with what the strong Wolfe test of its result needs,
/// and why the Hager–Zhang search failed.
#[derive(Clone)]
struct Restart<F: RealField + Copy> {
    /// `x_k`.
    x: DVector<F>,
    /// The search direction divided by its largest absolute entry, `u = p/‖p‖∞`. The Wolfe
    /// conditions are the same along any positive multiple of `p`; along `u` the dot products
    /// below neither underflow nor overflow for extreme `‖p‖` (in `f32`, `p·p` is 0 for
    /// `‖p‖ ≲ 1e-23`, subnormal below `1e-19`, and `+∞` above `1.8e19`).
    unit_direction: DVector<F>,
    /// `f(x_k)`.
    cost: F,
    /// `∇f(x_k)ᵀu`.
    slope: F,
    /// The failed Hager–Zhang search's error, shown with the fallback's.
    hager_zhang_error: String,
}

impl<F: RealField + Copy> Restart<F> {
    fn new(x: DVector<F>, g: &DVector<F>, cost: F, p: &DVector<F>, hager_zhang: &Error) -> Self {
        // A zero or non-finite `p` gives a NaN `u`, which fails the test: Moré–Thuente cannot
        // have found a strong Wolfe point along it.
        let unit_direction = p / p.amax();
        Self {
            x,
            cost,
            slope: g.dot(&unit_direction),
            unit_direction,
            hager_zhang_error: hager_zhang.to_string(),
        }
    }

    /// The strong Wolfe conditions at `x = x_k + αp` with cost `cost` and gradient `g`:
    /// `f(x) ≤ f(x_k) + c₁αφ'(0)` and `|∇f(x)ᵀp| ≤ c₂|φ'(0)|`, evaluated along `u` (`αp =
    /// tu` with `t = (x − x_k)ᵀu/uᵀu = α‖p‖∞`).
    fn strong_wolfe(&self, x: &DVector<F>, cost: F, g: &DVector<F>, (c1, c2): (F, F)) -> bool {
        let u = &self.unit_direction;
        let t = (x - &self.x).dot(u) / u.dot(u);
        let decrease = cost <= self.cost + c1 * t * self.slope;
        let curvature = abs(g.dot(u)) <= c2 * abs(self.slope);
        decrease && curvature
    }

    /// An error of the fallback, with the Hager–Zhang error that started it.
    fn after_hager_zhang(&self, more_thuente: impl std::fmt::Display) -> Error {
        Error::msg(format!(
            "{more_thuente} (after Hager–Zhang: {})",
            self.hager_zhang_error
        ))
    }
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

    /// Moré–Thuente from the start of the failed search, unless the problem itself failed or
    /// the run's evaluation budget is spent.
    fn fall_back<O>(
        &mut self,
        problem: &mut Problem<O>,
        error: Error,
    ) -> Result<(VecState<F>, Option<KV>), Error>
    where
        MoreThuenteLineSearch<DVector<F>, DVector<F>, F>: Solver<O, VecState<F>>,
    {
        // An error of the problem is never retried, nor a stop at a trial point that met the
        // run's test (`trial_problem.rs::MetTestAtTrialPoint`).
        if self.shared.problem_failed.get() || self.shared.met_test_at_trial.get() {
            return Err(error);
        }
        let (Some((x, g, cost)), Some(p)) = (self.start.take(), self.direction.take()) else {
            return Err(error);
        };
        let restart = Restart::new(x.clone(), &g, cost, &p, &error);
        if self.shared.budget_spent() {
            self.shared.fallback_out_of_budget.set(true);
            return Err(restart.after_hager_zhang(format_args!(
                "evaluation budget (max_evaluations = {}) spent before the Moré–Thuente redo",
                self.shared.max_evaluations
            )));
        }
        self.more_thuente.search_direction(p);
        self.shared.start_fallback();
        let state = IterState::new().param(x).gradient(g).cost(cost);
        let started = self.more_thuente.init(problem, state);
        let started =
            started.map_err(|e| restart.after_hager_zhang(format_args!("Moré–Thuente: {e}")));
        self.fallback = Some(restart);
        started
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
        start.strong_wolfe(x, state.get_cost(), g, (self.c1, self.c2))
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
        if let Some(restart) = &self.fallback {
            let (state, kv) = self
                .more_thuente
                .next_iter(problem, state)
                .map_err(|e| restart.after_hager_zhang(format_args!("Moré–Thuente: {e}")))?;
            if state.terminated() && !self.meets_strong_wolfe(&state) {
                return Err(
                    restart.after_hager_zhang("Moré–Thuente stopped without a strong Wolfe point")
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `f(x) = ½‖x‖²` from `x₀ = (1, −2)` along `p = s·d`, `d = −∇f(x₀) = (−1, 2)`, at the
    /// points `x₀ + τd` (`φ(τ) = 2.5(1 − τ)²`), with `c₁ = 0.4`, `c₂ = 0.9`: `τ = 0.5` meets
    /// both conditions, `τ = 1.5` only the curvature condition (`0.625 > 2.5 − 2τ`), `τ = 0.05`
    /// only sufficient decrease (`|φ'(τ)| = 4.75 > 0.9·5`). The verdicts must not depend on
    /// the length `s` of `p`. With the test written along `p` itself, `p·p` underflowed to 0
    /// for `s ≤ 1e-30` in `f32` (`1e-170` in `f64`; step `∞`: every point rejected) and
    /// overflowed for `s ≥ 1e20` (`1e170`; step 0: the `τ = 1.5` point accepted).
    fn verdicts<F: ArgminFloat + RealField + Copy>(scale: F) -> Vec<bool> {
        let v = |a: f64, b: f64| {
            DVector::from_vec(vec![F::from_f64(a).unwrap(), F::from_f64(b).unwrap()])
        };
        let x0 = v(1.0, -2.0);
        let d = v(-1.0, 2.0);
        let p = &d * scale;
        let half = F::from_f64(0.5).unwrap();
        let cost = |x: &DVector<F>| x.dot(x) * half;
        let start = Restart::new(x0.clone(), &x0, cost(&x0), &p, &Error::msg("test"));
        let c = (F::from_f64(0.4).unwrap(), F::from_f64(0.9).unwrap());
        [0.5, 1.5, 0.05]
            .iter()
            .map(|&tau| {
                let x = &x0 + &d * F::from_f64(tau).unwrap();
                start.strong_wolfe(&x, cost(&x), &x, c)
            })
            .collect()
    }

    #[test]
    fn strong_wolfe_test_is_independent_of_the_direction_length() {
        let expected = vec![true, false, false];
        let mut wrong = Vec::new();
        for s in [1e-40f32, 1e-30, 1e-20, 1.0, 1e20, 1e30] {
            let got = verdicts(s);
            if got != expected {
                wrong.push(format!("f32, |p| ~ {s:e}: {got:?}"));
            }
        }
        for s in [1e-300f64, 1e-170, 1.0, 1e170, 1e300] {
            let got = verdicts(s);
            if got != expected {
                wrong.push(format!("f64, |p| ~ {s:e}: {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "expected {expected:?}; {wrong:#?}");
    }
}
