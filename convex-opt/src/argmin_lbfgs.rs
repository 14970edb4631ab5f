//! argmin's L-BFGS (with a Moré–Thuente strong-Wolfe line search) on nalgebra vectors, stopped
//! on the ∞-norm of the gradient.

use std::cell::{Cell, RefCell};

use argmin::core::ArgminFloat;
use argmin::core::{
    CostFunction, Executor, Gradient, IterState, KV, Problem, Solver, State, TerminationReason,
    TerminationStatus,
};
use argmin::solver::linesearch::{HagerZhangLineSearch, MoreThuenteLineSearch};
use argmin::solver::quasinewton::LBFGS;
use argmin_math::ArgminZero;
use nalgebra::{DVector, RealField};

use crate::first_step::FirstStepScaled;
use crate::lbfgs_params::{LbfgsParams, LineSearch};
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
    /// Last iterate.
    pub x: DVector<F>,
    /// Cost at `x`.
    pub cost: F,
    /// Gradient at `x`.
    pub gradient: DVector<F>,
    /// `‖∇f(x)‖∞`.
    pub gradient_inf: f64,
    /// `gradient_inf ≤ gradient_tolerance`.
    pub converged: bool,
    /// Iterations performed.
    pub iterations: u64,
    /// Gradient evaluations performed (line-search trials included).
    pub gradient_evaluations: u64,
    /// Why argmin stopped, in argmin's words (e.g. "Solver converged", "Maximum number of
    /// iterations reached", or a line-search failure).
    pub termination: String,
    /// Why the run stopped ([`Termination::Converged`] exactly when `converged`).
    pub reason: Termination,
}

/// Most potential evaluations one line search may spend (a trial point asked for again counts
/// again, although it is served from a cache). argmin's line searches have no limit of
/// their own (Hager–Zhang's bracket update can loop, also on one point); past this cap the search fails and L-BFGS
/// stops with [`Termination::LineSearchFailed`]. A healthy Hager–Zhang search needs 3 (its
/// initial points `ε`, `1e5`, `1`) to a few dozen (bisecting from its upper bound `1e5` down to
/// the region where the potential is finite takes ~17 halvings of ≤ 3 evaluations each).
pub const LINE_SEARCH_MAX_EVALUATIONS: u64 = 100;

/// What [`ByRef`] does with a trial point whose cost or gradient is not finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NonFiniteTrial {
    /// Report it as a step that is too long (Hager–Zhang).
    Backtrack,
    /// End the line search with an error (Moré–Thuente).
    Stop,
}

/// A point with its cost and gradient.
type Evaluated<F> = (DVector<F>, F, DVector<F>);

/// State shared by [`ByRef`] (the problem argmin sees) and [`GradInfNormStop`] (which sees each
/// L-BFGS iterate before its line search starts).
struct RunShared<F: RealField + Copy> {
    /// The current L-BFGS iterate `x_k`: every line-search trial point is `x_k + α p`, `α > 0`.
    anchor: RefCell<Option<DVector<F>>>,
    /// Gradient evaluations in the whole run.
    gradient_evaluations: Cell<u64>,
    /// Evaluations since `anchor` was set.
    line_search_evaluations: Cell<u64>,
    /// The problem returned a non-finite cost or gradient at a finite trial point, which ended
    /// the line search ([`NonFiniteTrial::Stop`]).
    stopped_on_non_finite: Cell<bool>,
    /// The trial point itself was not finite (a NaN or ±∞ step length, e.g. Moré–Thuente's
    /// `0/0` interpolation at the rounding level of the cost, or an overflowing step), which
    /// ended the line search ([`NonFiniteTrial::Stop`]): a line-search failure, not a
    /// non-finite value of the problem.
    stopped_on_non_finite_step: Cell<bool>,
    /// Finite (other than `anchor` itself) and non-finite points evaluated since `anchor` was
    /// set.
    finite_trials: Cell<u64>,
    non_finite_trials: Cell<u64>,
}

/// Lends a problem to argmin by reference, so that it is still usable after the run (argmin's
/// L-BFGS drops the problem when its line search fails), counts gradient evaluations, caps the
/// evaluations of one line search, and handles non-finite trial points.
///
/// Cost and gradient are evaluated together (argmin's line searches and L-BFGS always ask for
/// both at every point, so a one-point cache makes this free) so that a point with a finite cost
/// but a non-finite gradient is recognised when its cost is asked for.
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
/// can still fail on its own on extreme slopes, e.g. `exp` near overflow, where a secant step
/// lands on the bracket's end; that is reported as [`Termination::LineSearchFailed`].) A large *finite* cost would do as well for Hager–Zhang but
/// could be picked as "best" when every trial point is non-finite; `+∞` cannot be confused with
/// a real value. Moré–Thuente interpolates cost values (`∞ − ∞`), so there a non-finite cost
/// or gradient at a finite trial point ends the line search as before
/// ([`Termination::NonFinite`]); a trial point that is itself not finite (a NaN or ±∞ step
/// length: Moré–Thuente's interpolation is `0/0` once the cost no longer resolves the step,
/// at its rounding level) also ends it, as a [`Termination::LineSearchFailed`].
struct ByRef<'a, O, F: RealField + Copy> {
    problem: &'a O,
    shared: &'a RunShared<F>,
    non_finite: NonFiniteTrial,
    last: RefCell<Option<Evaluated<F>>>,
}

impl<O, F> ByRef<'_, O, F>
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
    F: ArgminFloat + RealField + Copy,
{
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
        let c = self.problem.cost(x)?;
        shared
            .gradient_evaluations
            .set(shared.gradient_evaluations.get() + 1);
        let g = self.problem.gradient(x)?;
        let (c, g) = if is_finite(c) && g.iter().all(|v| is_finite(*v)) {
            // A step of length 0 (Hager–Zhang's secant can land there) is not a trial step.
            if shared.anchor.borrow().as_ref().is_some_and(|a| a != x) {
                bump(&shared.finite_trials);
            }
            (c, g)
        } else {
            bump(&shared.non_finite_trials);
            match (self.non_finite, shared.anchor.borrow().as_ref()) {
                (NonFiniteTrial::Backtrack, Some(anchor)) => (F::infinity(), x - anchor),
                (NonFiniteTrial::Stop, Some(_)) => {
                    // The anchor is an accepted iterate (finite, with a finite cost and
                    // gradient), so a trial point that is not finite comes from the line
                    // search's step, not from the problem.
                    if x.iter().all(|v| is_finite(*v)) {
                        shared.stopped_on_non_finite.set(true);
                        return Err(argmin::core::Error::msg(
                            "non-finite cost or gradient at a trial point",
                        ));
                    }
                    shared.stopped_on_non_finite_step.set(true);
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

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// `v` is finite (`v − v` is 0 for finite `v` and NaN for `±∞` and NaN).
#[allow(clippy::eq_op)]
fn is_finite<F: ArgminFloat>(v: F) -> bool {
    let z = v - v;
    z == z
}

impl<O, F> CostFunction for ByRef<'_, O, F>
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
    F: ArgminFloat + RealField + Copy,
{
    type Param = DVector<F>;
    type Output = F;
    fn cost(&self, x: &DVector<F>) -> Result<F, argmin::core::Error> {
        Ok(self.evaluate(x, true)?.0)
    }
}

impl<O, F> Gradient for ByRef<'_, O, F>
where
    O: CostFunction<Param = DVector<F>, Output = F>
        + Gradient<Param = DVector<F>, Gradient = DVector<F>>,
    F: ArgminFloat + RealField + Copy,
{
    type Param = DVector<F>;
    type Gradient = DVector<F>;
    fn gradient(&self, x: &DVector<F>) -> Result<DVector<F>, argmin::core::Error> {
        Ok(self.evaluate(x, false)?.1)
    }
}

/// Stops an inner solver when the ∞-norm of the gradient in the state is small enough, when
/// the evaluation budget is spent (checked between iterations), or when the iterate's cost is
/// not finite; records each iterate as the anchor of the next line search.
struct GradInfNormStop<'a, S, F: RealField + Copy> {
    inner: S,
    tol: f64,
    shared: &'a RunShared<F>,
    max_evaluations: u64,
}

/// argmin termination text of the evaluation-budget stop.
const BUDGET_SPENT: &str = "evaluation budget spent";
/// argmin termination text of a stop on a non-finite iterate.
const NON_FINITE_ITERATE: &str = "non-finite cost at the iterate";

type VecState<F> = IterState<DVector<F>, DVector<F>, (), (), (), F>;

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

impl<O, S, F> Solver<O, VecState<F>> for GradInfNormStop<'_, S, F>
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
        *self.shared.anchor.borrow_mut() = state.get_param().cloned();
        self.shared.line_search_evaluations.set(0);
        self.shared.finite_trials.set(0);
        self.shared.non_finite_trials.set(0);
        self.inner.next_iter(problem, state)
    }

    fn terminate(&mut self, state: &VecState<F>) -> TerminationStatus {
        if !is_finite(state.get_cost()) {
            return TerminationStatus::Terminated(TerminationReason::SolverExit(
                NON_FINITE_ITERATE.into(),
            ));
        }
        if let Some(g) = state.get_gradient()
            && inf_norm(g) <= self.tol
        {
            return TerminationStatus::Terminated(TerminationReason::SolverConverged);
        }
        // As PyTorch's `LBFGS.step`, the budget is tested after an iteration (the evaluation at
        // the starting point alone never stops the run), and after the iteration limit.
        let iter = state.get_iter();
        if iter > 0
            && iter < state.get_max_iters()
            && self.shared.gradient_evaluations.get() >= self.max_evaluations
        {
            return TerminationStatus::Terminated(TerminationReason::SolverExit(
                BUDGET_SPENT.into(),
            ));
        }
        self.inner.terminate(state)
    }
}

fn to_float<F: ArgminFloat>(v: f64, what: &str) -> Result<F, ConvexOptError> {
    F::from_f64(v).ok_or_else(|| {
        ConvexOptError::InvalidParameter(format!("{what} = {v} is not representable"))
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
/// [`MinimizeResult::reason`], not as an error. With the Hager–Zhang line search a trial point
/// where the cost or gradient is not finite (an overflow far along the search direction) counts
/// as a step that is too long and is backtracked from; with Moré–Thuente it ends the run
/// ([`Termination::NonFinite`]). A Moré–Thuente trial point that is itself not finite (a NaN
/// step length from the search's interpolation at the rounding level of the cost, or a step
/// that overflows) ends the run as [`Termination::LineSearchFailed`], at the last iterate. A
/// line search is capped at [`LINE_SEARCH_MAX_EVALUATIONS`]
/// evaluations. Errors of the problem are returned
/// (a [`ConvexOptError`] raised inside `cost`/`gradient` comes back as itself). Parameters
/// outside the ranges documented on [`LbfgsParams`] (e.g. `c1 ≥ 0.5` with Hager–Zhang) are a
/// [`ConvexOptError::InvalidParameter`] naming the field, before any evaluation.
///
/// ```
/// use argmin::core::{CostFunction, Error, Gradient};
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
    params.validate()?;
    if !x0.iter().all(|v| v.is_finite()) {
        return Err(ConvexOptError::NonFinite("initial point x0"));
    }
    let (c1, c2) = (
        to_float::<F>(params.c1, "c1")?,
        to_float::<F>(params.c2, "c2")?,
    );
    let cost_tol = to_float::<F>(params.cost_tolerance, "cost_tolerance")?;
    let shared = RunShared {
        anchor: RefCell::new(None),
        gradient_evaluations: Cell::new(0),
        line_search_evaluations: Cell::new(0),
        stopped_on_non_finite: Cell::new(false),
        stopped_on_non_finite_step: Cell::new(false),
        finite_trials: Cell::new(0),
        non_finite_trials: Cell::new(0),
    };
    let max_evaluations = params
        .max_evaluations
        .unwrap_or_else(|| params.max_iterations.saturating_mul(5) / 4);
    // argmin's L-BFGS bounds its line search by a private type, so each line search gets its
    // own (identical) concrete code path.
    macro_rules! run_with {
        ($line_search:expr, $non_finite:expr) => {{
            let lbfgs = LBFGS::new(FirstStepScaled::new($line_search), params.history)
                .with_tolerance_grad(<F as ArgminZero>::zero())
                .map_err(ConvexOptError::from_argmin)?
                .with_tolerance_cost(cost_tol)
                .map_err(ConvexOptError::from_argmin)?;
            let solver = GradInfNormStop {
                inner: lbfgs,
                tol: params.gradient_tolerance,
                shared: &shared,
                max_evaluations,
            };
            Executor::new(
                ByRef {
                    problem,
                    shared: &shared,
                    non_finite: $non_finite,
                    last: RefCell::new(None),
                },
                solver,
            )
            .configure(|state| state.param(x0).max_iters(params.max_iterations))
            .timer(false)
            .run()
            .map_err(ConvexOptError::from_argmin)?
            .state
        }};
    }
    let mut state = match params.line_search {
        LineSearch::MoreThuente => {
            let ls: MoreThuenteLineSearch<DVector<F>, DVector<F>, F> = MoreThuenteLineSearch::new()
                .with_c(c1, c2)
                .map_err(ConvexOptError::from_argmin)?;
            run_with!(ls, NonFiniteTrial::Stop)
        }
        LineSearch::HagerZhang => {
            let ls: HagerZhangLineSearch<DVector<F>, DVector<F>, F> = HagerZhangLineSearch::new()
                .with_delta_sigma(c1, c2)
                .map_err(ConvexOptError::from_argmin)?;
            run_with!(ls, NonFiniteTrial::Backtrack)
        }
    };
    let argmin_reason = state.get_termination_reason().cloned();
    let termination = argmin_reason
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |r| r.text().to_string());
    let iterations = state.get_iter();
    // After a line-search failure argmin's L-BFGS leaves the state without parameter and
    // gradient, and after a stop on a non-finite iterate the state holds that iterate; the best
    // parameter (the last accepted finite iterate: costs decrease monotonically) is still there.
    let finite_state = is_finite(state.get_cost());
    let (x, gradient, cost) = match state.take_param().filter(|_| finite_state) {
        Some(x) => {
            let g = match state.take_gradient() {
                Some(g) => g,
                None => problem.gradient(&x).map_err(ConvexOptError::from_argmin)?,
            };
            (x, g, state.get_cost())
        }
        None => {
            let x = state
                .take_best_param()
                .ok_or_else(|| ConvexOptError::Argmin("no parameter in the final state".into()))?;
            let g = problem.gradient(&x).map_err(ConvexOptError::from_argmin)?;
            (x, g, state.get_best_cost())
        }
    };
    let gradient_inf = inf_norm(&gradient);
    let converged = gradient_inf <= params.gradient_tolerance;
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
            _ if shared.stopped_on_non_finite.get() => Termination::NonFinite,
            // Moré–Thuente's step itself was NaN or ±∞ (from finite data): the search failed.
            _ if shared.stopped_on_non_finite_step.get() => Termination::LineSearchFailed,
            // A failed Hager–Zhang search that found no finite point at all.
            _ if shared.finite_trials.get() == 0 && shared.non_finite_trials.get() > 0 => {
                Termination::NonFinite
            }
            // "Line search terminated with: …" (argmin's L-BFGS); the other reasons (timeout,
            // Ctrl-C, target cost) are not enabled here.
            _ => Termination::LineSearchFailed,
        }
    };
    Ok(MinimizeResult {
        x,
        cost,
        gradient,
        gradient_inf,
        converged,
        iterations,
        gradient_evaluations: shared.gradient_evaluations.get(),
        termination,
        reason,
    })
}
