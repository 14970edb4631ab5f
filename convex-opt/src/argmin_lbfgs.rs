//! argmin's L-BFGS (Hager–Zhang line search with a Moré–Thuente fallback, or Moré–Thuente's
//! strong-Wolfe search alone) on nalgebra vectors, stopped on the ∞-norm of the gradient.

use std::cell::RefCell;

use argmin::core::ArgminFloat;
use argmin::core::{
    CostFunction, Executor, Gradient, IterState, KV, Problem, Solver, State, TerminationReason,
    TerminationStatus,
};
use argmin::solver::linesearch::{HagerZhangLineSearch, MoreThuenteLineSearch};
use argmin::solver::quasinewton::LBFGS;
use argmin_math::ArgminZero;
use nalgebra::{DVector, RealField};

use crate::best_iterate::{BestIterate, BestIterateTracker, RankFn};
use crate::first_step::FirstStepScaled;
use crate::lbfgs_params::{LbfgsParams, LineSearch};
use crate::line_search_fallback::HagerZhangThenMoreThuente;
use crate::trial_problem::{ByRef, NonFiniteTrial, Objective, RunShared, is_finite};
use crate::{ConvexOptError, Termination};

/// Outcome of [`minimize_lbfgs`].
///
/// ```
/// use convex_opt::{minimize_lbfgs, LbfgsParams, Termination};
/// # use argmin::core::{CostFunction, Error, Gradient};
/// # use nalgebra::DVector;
/// // f(x) = ½ Σ_j (j + 1)(x_j − 1)², minimised at x = (1, …, 1).
/// struct P;
/// # impl CostFunction for P {
/// #     type Param = DVector<f64>;
/// #     type Output = f64;
/// #     fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
/// #         Ok(x.iter().enumerate().map(|(j, v)| 0.5 * (j + 1) as f64 * (v - 1.0).powi(2)).sum())
/// #     }
/// # }
/// # impl Gradient for P {
/// #     type Param = DVector<f64>;
/// #     type Gradient = DVector<f64>;
/// #     fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
/// #         Ok(DVector::from_iterator(x.len(), x.iter().enumerate().map(|(j, v)| (j + 1) as f64 * (v - 1.0))))
/// #     }
/// # }
/// let res = minimize_lbfgs(&P, DVector::zeros(3), &LbfgsParams::default())?;
/// assert!(res.converged && res.reason == Termination::Converged);
/// assert!(res.gradient_inf <= 1e-9 && res.gradient.amax() == res.gradient_inf);
/// assert!(res.cost.abs() < 1e-15 && (res.x[2] - 1.0).abs() < 1e-9);
/// // Every iteration evaluates the gradient at least once (line-search trials included).
/// assert!(res.iterations >= 1 && res.gradient_evaluations >= res.iterations);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MinimizeResult<F: RealField + Copy> {
    /// When the run converged, the first point that met the gradient tolerance, where the run
    /// stopped: `x₀`, or (usually) a line-search trial point, at which the search ended before
    /// accepting or rejecting it (so not one of argmin's iterates). Otherwise the point of
    /// smallest `‖∇f‖∞` among the accepted iterates (`x₀` included) and the line searches'
    /// trial points, the later of equal ones (see [`minimize_lbfgs`]): the last iterate unless
    /// the run ended at the rounding floor of the cost.
    pub x: DVector<F>,
    /// Cost at `x`, as evaluated there.
    pub cost: F,
    /// Gradient at `x`, as evaluated there.
    pub gradient: DVector<F>,
    /// `‖∇f(x)‖∞`.
    pub gradient_inf: f64,
    /// `gradient_inf ≤ gradient_tolerance`: the run stopped on its test (at `x`, which may be
    /// a trial point that the line search had not accepted).
    pub converged: bool,
    /// Iterations performed.
    pub iterations: u64,
    /// Gradient evaluations performed (line-search trials included).
    pub gradient_evaluations: u64,
    /// Hager–Zhang line searches that failed and were redone by Moré–Thuente from the same
    /// point (always 0 with [`LineSearch::MoreThuente`]); see [`minimize_lbfgs`].
    pub line_search_fallbacks: u64,
    /// Why argmin stopped, in argmin's words (e.g. "Solver converged", also for a stop at a
    /// trial point within the tolerance, or "Maximum number of iterations reached"). For
    /// [`Termination::LineSearchFailed`] it starts with "line search failed: no further
    /// decrease of the cost found …" and `‖∇f‖∞` at the returned point, then argmin's message
    /// as a detail (without argmin's request to report a potential bug: at the rounding floor
    /// its Hager–Zhang search reaches that branch in normal use).
    pub termination: String,
    /// Why the run stopped: [`Termination::Converged`] exactly when `converged`.
    pub reason: Termination,
}

/// Most potential evaluations one line search may spend (a trial point asked for again counts
/// again, although it is served from a cache). argmin's line searches have no limit of
/// their own (Hager–Zhang's bracket update can loop, also on one point); past this cap the
/// search fails: a Hager–Zhang search is then redone by Moré–Thuente from the same point, with
/// a cap of its own but within the run's evaluation budget (see [`minimize_lbfgs`]), and a
/// failed Moré–Thuente search stops L-BFGS
/// with [`Termination::LineSearchFailed`]. A healthy Hager–Zhang search needs 3 (its
/// initial points `ε`, `1e5`, `1`) to a few dozen (bisecting from its upper bound `1e5` down to
/// the region where the potential is finite takes ~17 halvings of ≤ 3 evaluations each).
pub const LINE_SEARCH_MAX_EVALUATIONS: u64 = 100;

/// Stops an inner solver when the iterate in the state meets the run's test (the rank's goal,
/// `best_iterate.rs`: for [`minimize_lbfgs`] `‖∇f‖∞ ≤ gradient_tolerance`), when the
/// evaluation budget is spent (checked between iterations), or when the iterate's cost is not
/// finite; records each iterate as the anchor of the next line search, and offers it as a
/// candidate for the returned point, which it becomes when it meets the test. Every accepted
/// iterate, `x₀` first, passes through `terminate` (argmin calls it before each iteration and
/// once more after the last one, except after an iteration that ended the run itself: a
/// failed line search, which accepts no iterate).
///
/// Trial points are offered by [`ByRef`], which ends the line search at the first one that
/// meets the test (every accepted iterate but `x₀` is such a trial point first, so in practice
/// only `x₀` stops the run here). argmin's L-BFGS reports that as a failed line search; this
/// wrapper turns it into [`TerminationReason::SolverConverged`], and the tracker returns the
/// trial point.
struct GradInfNormStop<'a, 'r, S, F: RealField + Copy> {
    inner: S,
    shared: &'a RunShared<F>,
    /// How the run's own line search treats non-finite trial values.
    non_finite: NonFiniteTrial,
    /// The candidates for the returned point (trial points are offered by [`ByRef`]).
    best: &'a RefCell<BestIterateTracker<'r, F>>,
}

/// argmin termination text of the evaluation-budget stop.
const BUDGET_SPENT: &str = "evaluation budget spent";
/// argmin termination text of a stop on a non-finite iterate.
const NON_FINITE_ITERATE: &str = "non-finite cost at the iterate";

type VecState<F> = IterState<DVector<F>, DVector<F>, (), (), (), F>;

/// `‖v‖∞` as `f64` (NaN or `+∞` when an entry is not finite).
fn inf_norm<F: RealField + Copy>(v: &DVector<F>) -> f64 {
    // `amax` is a max of absolute values; the conversion to f64 is exact for f32/f64.
    let m = v.iter().fold(F::zero(), |m, x| {
        if x.abs() > m || !x.is_finite() {
            x.abs()
        } else {
            m
        }
    });
    nalgebra::try_convert::<F, f64>(m).unwrap_or(f64::NAN)
}

impl<O, S, F> Solver<O, VecState<F>> for GradInfNormStop<'_, '_, S, F>
where
    S: Solver<O, VecState<F>>,
    F: ArgminFloat + RealField + Copy,
{
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn init(
        &mut self,
        problem: &mut Problem<O>,
        state: VecState<F>,
    ) -> Result<(VecState<F>, Option<KV>), argmin::core::Error> {
        self.inner.init(problem, state)
    }

    fn next_iter(
        &mut self,
        problem: &mut Problem<O>,
        state: VecState<F>,
    ) -> Result<(VecState<F>, Option<KV>), argmin::core::Error> {
        self.shared
            .start_line_search(state.get_param().cloned(), self.non_finite);
        let (state, kv) = self.inner.next_iter(problem, state)?;
        // argmin's L-BFGS ends the run as a failed line search ("Line search terminated
        // with: …") when the search's problem returns an error; [`ByRef`]'s stop at a trial
        // point that met the test (now the tracker's answer) is a converged run.
        if self.shared.met_test_at_trial.get() {
            return Ok((state.terminate_with(TerminationReason::SolverConverged), kv));
        }
        Ok((state, kv))
    }

    fn terminate(&mut self, state: &VecState<F>) -> TerminationStatus {
        if !is_finite(state.get_cost()) {
            return TerminationStatus::Terminated(TerminationReason::SolverExit(
                NON_FINITE_ITERATE.into(),
            ));
        }
        // An iterate that meets the test ranks first (the run stopped at no point before it),
        // so it is kept: the run's answer.
        if let (Some(x), Some(g)) = (state.get_param(), state.get_gradient())
            && self.best.borrow_mut().offer(x, state.get_cost(), g)
        {
            return TerminationStatus::Terminated(TerminationReason::SolverConverged);
        }
        // As PyTorch's `LBFGS.step`, the budget is tested after an iteration (the evaluation at
        // the starting point alone never stops the run), and after the iteration limit.
        let iter = state.get_iter();
        if iter > 0 && iter < state.get_max_iters() && self.shared.budget_spent() {
            return TerminationStatus::Terminated(TerminationReason::SolverExit(
                BUDGET_SPENT.into(),
            ));
        }
        self.inner.terminate(state)
    }
}

/// The sentence argmin appends to its `PotentialBug` errors (e.g. Hager–Zhang's "Reached
/// unreachable point in `update` method", met when the search's values are rounding noise).
const ARGMIN_BUG_REPORT: &str = ". This is potentially a bug. Please file a report on https://github.com/argmin-rs/argmin/issues";
/// The prefix argmin gives the same errors.
const ARGMIN_BUG_PREFIX: &str = "Potential bug: ";

/// The [`MinimizeResult::termination`] text of a run that stopped as
/// [`Termination::LineSearchFailed`]: what happened first (the line search found no step that
/// decreases the cost, typically because the cost no longer resolves the decrease at the
/// rounding floor, with `‖∇f‖∞` at the returned point to judge by), then argmin's message as a
/// detail, without its invitation to file a bug report: argmin calls a failed Hager–Zhang
/// update a potential bug, but at the rounding floor its comparisons of rounding noise (or a
/// NaN secant step) reach that branch in normal use.
fn line_search_failure_text(argmin_text: &str, gradient_inf: f64) -> String {
    let detail = argmin_text
        .replace(ARGMIN_BUG_REPORT, "")
        .replace(ARGMIN_BUG_PREFIX, "");
    format!(
        "line search failed: no further decrease of the cost found along the search direction \
         (typically the rounding floor of the cost; ‖∇f‖∞ = {gradient_inf:e} at the returned \
         point); argmin: {detail}"
    )
}

fn to_float<F: ArgminFloat>(v: f64, what: &str) -> Result<F, ConvexOptError> {
    F::from_f64(v).ok_or_else(|| {
        ConvexOptError::InvalidParameter(format!(
            "{what} = {} is not representable",
            crate::error::short_float(v)
        ))
    })
}

/// Minimises a smooth function with argmin's L-BFGS (Hager–Zhang or Moré–Thuente line search,
/// see [`LineSearch`]), stopping when `‖∇f(x)‖∞ ≤ gradient_tolerance`.
///
/// As PyTorch's `LBFGS`, the first step is scaled by `t = min(1, 1/‖∇f(x₀)‖₁)`: the first
/// line search runs along `−t·∇f(x₀)` (its unit step is PyTorch's first trial point), later
/// ones along argmin's L-BFGS direction. argmin alone would search along `−∇f(x₀)` with its
/// usual step scale, which for a huge gradient sends the first trial points (Moré–Thuente's
/// `α = 1`, Hager–Zhang's bracket end `α = 1e5`) absurdly far; see
/// [`FlatLbfgsParams::line_search`](crate::FlatLbfgsParams::line_search). With
/// `‖∇f(x₀)‖₁ ≤ 1` the run is the same as without the scaling, bit for bit.
///
/// `problem` (borrowed) implements argmin's [`CostFunction`] and [`Gradient`] on `DVector<F>`
/// (`F` = `f32` or `f64`). Not converging within the iteration limit, or a line-search failure
/// (typically: rounding-error floor reached), is reported in [`MinimizeResult::converged`] and
/// [`MinimizeResult::reason`], not as an error.
///
/// **The stopping test** `‖∇f‖∞ ≤ gradient_tolerance` is applied at `x₀` and at every trial
/// point of the line searches (the Moré–Thuente fallback's included), as soon as its cost and
/// gradient are evaluated: the first point that meets it ends the run there, returned bit for
/// bit as evaluated, `Converged`, after the iterations begun (the one whose line search found
/// it counts), whether or not the line search would have accepted it. A search does not
/// continue past such a point (at the rounding floor of the cost a point within the tolerance
/// can fail the Armijo test, and the search and later iterations used to go on, sometimes
/// until the evaluation budget or a failed search; in a seeded sweep of 3,000 flat inversions,
/// `examples/flat_sweep.rs`, stopping there saved 15% of the evaluations with Hager–Zhang and
/// 52% with Moré–Thuente, with every run's converged samples the same).
///
/// **The returned point** of a run that did not meet the test is the point of smallest
/// `‖∇f‖∞` that the run evaluated,
/// the later of equal ones: the accepted iterates (`x₀` included) and every line-search trial
/// point with a finite cost and gradient (both searches, and the Moré–Thuente fallback,
/// evaluate both at every trial point), with its cost and gradient as evaluated there (no
/// extra evaluation). At the rounding floor of the cost that need not be the last iterate:
/// argmin itself keeps the iterate of least cost, and equal costs, or Hager–Zhang's approximate
/// Wolfe steps that may raise the cost by `ε|f|`, leave that one behind the last; and a trial
/// point that the search rejects (its cost not below the Armijo line by rounding, or the
/// search failing afterwards) can have a smaller gradient than every accepted iterate.
/// [`MinimizeResult::converged`] and [`MinimizeResult::reason`] describe the returned point
/// ([`MinimizeResult::termination`] keeps argmin's words); `iterations` counts all
/// iterations.
///
/// **Hager–Zhang failures.** argmin's Hager–Zhang search never looks beyond its fixed bracket
/// `α ∈ [ε, 1e5]` (no bracket-expansion phase), so it fails (at the evaluation cap) when the
/// line minimum lies further out, and it can fail on a NaN secant step (argmin-rs/argmin#541).
/// Such a search is redone by Moré–Thuente from the same iterate along the same direction
/// (same Wolfe constants, a cap of its own), whose first trial is `α = 1` and which
/// extrapolates until it brackets the minimum; its point is accepted only if it meets the
/// strong Wolfe conditions, otherwise the run stops as [`Termination::LineSearchFailed`]
/// (the text in [`MinimizeResult::termination`] names both errors: `Moré–Thuente: … (after
/// Hager–Zhang: …)`). The redo evaluates only while the run's evaluation budget
/// ([`LbfgsParams::max_evaluations`]) is not spent; cut short by it, or not started because
/// none is left, it stops the run as [`Termination::EvaluationBudget`].
/// [`MinimizeResult::line_search_fallbacks`] counts the fallbacks; a run in which no
/// Hager–Zhang search fails is the same as without them, bit for bit. An error of the problem
/// is never retried.
///
/// **Non-finite trial points.** With the Hager–Zhang line search a trial point where the cost
/// or gradient is not finite (an overflow far along the search direction) counts as a step
/// that is too long and is backtracked from; during a Moré–Thuente fallback it ends that
/// search, and the run stops as [`Termination::NonFinite`] only if the two searches found no
/// finite value at all (and some non-finite value at a finite point), otherwise as
/// [`Termination::LineSearchFailed`]. With Moré–Thuente it ends the run
/// ([`Termination::NonFinite`]). A trial point that is itself not finite (a NaN step length
/// from either search's interpolation or secant at the rounding level, or a step that
/// overflows) says nothing of the problem: a search that fails on such points ends the run as
/// [`Termination::LineSearchFailed`] with either line search, at the last iterate. A line
/// search is capped at [`LINE_SEARCH_MAX_EVALUATIONS`] evaluations.
///
/// Errors of the problem at the starting point or at an accepted iterate are returned (a
/// [`ConvexOptError`] raised inside `cost`/`gradient` comes back as itself); argmin's L-BFGS
/// turns an error inside a line search into a failed line search, reported as
/// [`Termination::LineSearchFailed`] with the error's text in [`MinimizeResult::termination`].
/// Parameters outside the ranges documented on [`LbfgsParams`] (e.g. `c1 ≥ 0.5` with
/// Hager–Zhang) are a [`ConvexOptError::InvalidParameter`] naming the field, before any
/// evaluation.
///
/// The problem implements argmin's traits, re-exported as [`crate::argmin`]:
///
/// ```
/// use convex_opt::argmin::core::{CostFunction, Error, Gradient};
/// use convex_opt::{minimize_lbfgs, LbfgsParams};
/// use nalgebra::DVector;
/// // f(x) = Σ_j (x_j − j)⁴/4 + ½‖x‖², strongly convex.
/// struct P;
/// impl CostFunction for P {
///     type Param = DVector<f64>;
///     type Output = f64;
///     fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
///         Ok(x.iter().enumerate().map(|(j, v)| (v - j as f64).powi(4) / 4.0 + v * v / 2.0).sum())
///     }
/// }
/// impl Gradient for P {
///     type Param = DVector<f64>;
///     type Gradient = DVector<f64>;
///     fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
///         Ok(DVector::from_iterator(x.len(), x.iter().enumerate().map(|(j, v)| (v - j as f64).powi(3) + v)))
///     }
/// }
/// let res = minimize_lbfgs(&P, DVector::zeros(5), &LbfgsParams::default().with_gradient_tolerance(1e-10))?;
/// assert!(res.converged && res.gradient_inf <= 1e-10);
/// assert_eq!(res.reason, convex_opt::Termination::Converged);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
pub fn minimize_lbfgs<O, F>(
    problem: &O,
    x0: DVector<F>,
    params: &LbfgsParams,
) -> Result<MinimizeResult<F>, ConvexOptError>
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
    F: ArgminFloat + ArgminZero + RealField + Copy,
{
    let tol = params.gradient_tolerance_for::<F>();
    minimize_lbfgs_ranked(problem, x0, params, &|g| {
        let r = inf_norm(g);
        (r.is_nan() || r > tol, r)
    })
}

/// [`minimize_lbfgs`] with the stopping test and the order of candidates given by `rank`: the
/// run stops at the first evaluated point (`x₀`, an accepted iterate or a trial point) whose
/// rank says it meets its goal (`rank(g).0 == false`), and otherwise returns the point that
/// `rank` puts first (the later of equal ones). [`minimize_lbfgs`] ranks by `(‖∇f‖∞ >
/// gradient_tolerance, ‖∇f‖∞)`; [`crate::invert_lbfgs_flat`] by whether some sample is outside
/// its own tolerance, then the largest residual. `params.gradient_tolerance` is not used
/// here; `MinimizeResult::converged` says whether the returned point meets the goal (and
/// `gradient_inf` is its `‖∇f‖∞`).
///
/// The problem comes behind its vtable ([`Objective`]): one copy of the run per float type.
pub(crate) fn minimize_lbfgs_ranked<F>(
    problem: &dyn Objective<F>,
    x0: DVector<F>,
    params: &LbfgsParams,
    rank: RankFn<'_, F>,
) -> Result<MinimizeResult<F>, ConvexOptError>
where
    F: ArgminFloat + ArgminZero + RealField + Copy,
{
    params.validate()?;
    if !x0.iter().all(|v| v.is_finite()) {
        return Err(ConvexOptError::NonFinite("initial point x0"));
    }
    let (c1, c2) = (
        to_float::<F>(params.c1, "c1")?,
        to_float::<F>(params.c2, "c2")?,
    );
    let cost_tol = to_float::<F>(params.cost_tolerance, "cost_tolerance")?;
    let non_finite = match params.line_search {
        LineSearch::MoreThuente => NonFiniteTrial::Stop,
        LineSearch::HagerZhang => NonFiniteTrial::Backtrack,
    };
    let max_evaluations = params
        .max_evaluations
        .unwrap_or_else(|| params.max_iterations.saturating_mul(5) / 4);
    let shared = RunShared::new(non_finite, max_evaluations);
    // argmin's L-BFGS allocates room for `m` pairs up front: a history of `usize::MAX` ("keep
    // every pair") was a capacity-overflow panic, one of 2⁴⁰ an aborted allocation. It stores
    // one pair per iteration and drops the oldest from iteration `m` on, so a history capped
    // at `max_iterations` (at least 1) runs exactly as the one asked for.
    let history = params.history.min(
        usize::try_from(params.max_iterations)
            .unwrap_or(usize::MAX)
            .max(1),
    );
    let best = RefCell::new(BestIterateTracker::new(rank));
    // argmin's L-BFGS bounds its line search by a private type, so each line search gets its
    // own (identical) concrete code path.
    macro_rules! run_with {
        ($line_search:expr) => {{
            let lbfgs = LBFGS::new(FirstStepScaled::new($line_search), history)
                .with_tolerance_grad(<F as ArgminZero>::zero())
                .map_err(ConvexOptError::from_argmin)?
                .with_tolerance_cost(cost_tol)
                .map_err(ConvexOptError::from_argmin)?;
            let solver = GradInfNormStop {
                inner: lbfgs,
                shared: &shared,
                non_finite,
                best: &best,
            };
            let result = Executor::new(ByRef::new(problem, &shared, &best), solver)
                .configure(|state| state.param(x0).max_iters(params.max_iterations))
                .timer(false)
                .run()
                .map_err(ConvexOptError::from_argmin)?;
            result.state
        }};
    }
    let more_thuente: MoreThuenteLineSearch<DVector<F>, DVector<F>, F> =
        MoreThuenteLineSearch::new()
            .with_c(c1, c2)
            .map_err(ConvexOptError::from_argmin)?;
    let state = match params.line_search {
        LineSearch::MoreThuente => run_with!(more_thuente),
        LineSearch::HagerZhang => {
            let hager_zhang: HagerZhangLineSearch<DVector<F>, DVector<F>, F> =
                HagerZhangLineSearch::new()
                    .with_delta_sigma(c1, c2)
                    .map_err(ConvexOptError::from_argmin)?;
            run_with!(HagerZhangThenMoreThuente::new(
                hager_zhang,
                more_thuente,
                (c1, c2),
                &shared
            ))
        }
    };
    let argmin_reason = state.get_termination_reason().cloned();
    let termination = argmin_reason
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |r| r.text().to_string());
    let iterations = state.get_iter();
    // The iterate that met the test, else the best-ranked evaluated point, not the state's:
    // after a line-search failure argmin's L-BFGS leaves the state without parameter and
    // gradient (its best parameter is the iterate of least cost, see `best_iterate.rs`), and
    // after a stop on a non-finite iterate the state holds that iterate. `x₀` was offered with
    // a finite cost and gradient (`ByRef` refuses others), so there is one.
    let BestIterate { x, cost, gradient } = best
        .into_inner()
        .into_best()
        .ok_or_else(|| ConvexOptError::Argmin("no finite iterate in the run".into()))?;
    let gradient_inf = inf_norm(&gradient);
    let converged = !rank(&gradient).0;
    let reason = if converged {
        Termination::Converged
    } else {
        match argmin_reason {
            Some(TerminationReason::MaxItersReached) => Termination::MaxIterations,
            // The ∞-norm test did not pass, so it was L-BFGS's own cost-change test.
            Some(TerminationReason::SolverConverged) => Termination::CostTolerance,
            Some(TerminationReason::SolverExit(text)) if text == BUDGET_SPENT => {
                Termination::EvaluationBudget
            }
            Some(TerminationReason::SolverExit(text)) if text == NON_FINITE_ITERATE => {
                Termination::NonFinite
            }
            // A failed Hager–Zhang search whose Moré–Thuente redo the budget cut short (or
            // left no evaluation for).
            _ if shared.fallback_out_of_budget.get() => Termination::EvaluationBudget,
            // Moré–Thuente met a non-finite cost or gradient at a finite trial point. (Its
            // step itself being NaN or ±∞, from finite data, is a failed search.)
            _ if non_finite == NonFiniteTrial::Stop && shared.stopped_on_non_finite.get() => {
                Termination::NonFinite
            }
            // A failed Hager–Zhang search (and its Moré–Thuente fallback) that found no finite
            // value at all, only non-finite ones at finite points. Trial points that are
            // themselves not finite are a failed search, as with Moré–Thuente.
            _ if non_finite == NonFiniteTrial::Backtrack
                && shared.finite_trials.get() == 0
                && shared.non_finite_values.get() > 0 =>
            {
                Termination::NonFinite
            }
            // "Line search terminated with: …" (argmin's L-BFGS); the other reasons (timeout,
            // Ctrl-C, target cost) are not enabled here.
            _ => Termination::LineSearchFailed,
        }
    };
    let termination = if reason == Termination::LineSearchFailed {
        line_search_failure_text(&termination, gradient_inf)
    } else {
        termination
    };
    Ok(MinimizeResult {
        x,
        cost,
        gradient,
        gradient_inf,
        converged,
        iterations,
        gradient_evaluations: shared.gradient_evaluations.get(),
        line_search_fallbacks: shared.fallbacks.get(),
        termination,
        reason,
    })
}
