//! argmin's L-BFGS (with a Moré–Thuente strong-Wolfe line search) on nalgebra vectors, stopped
//! on the ∞-norm of the gradient.

use std::cell::Cell;

use argmin::core::ArgminFloat;
use argmin::core::{
    CostFunction, Executor, Gradient, IterState, KV, Problem, Solver, State, TerminationReason,
    TerminationStatus,
};
use argmin::solver::linesearch::{HagerZhangLineSearch, MoreThuenteLineSearch};
use argmin::solver::quasinewton::LBFGS;
use argmin_math::ArgminZero;
use nalgebra::{DVector, RealField};

use crate::ConvexOptError;

/// The line search used by argmin's L-BFGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineSearch {
    /// Moré–Thuente: the strong Wolfe conditions, like PyTorch's `line_search_fn="strong_wolfe"`
    /// used by the reference implementation. Its sufficient-decrease test compares function
    /// values, so it stalls once the decrease falls below their rounding error.
    MoreThuente,
    /// Hager–Zhang (the default): switches to the approximate Wolfe conditions
    /// (derivative-based) when the function value stops resolving the decrease, so it reaches
    /// smaller gradients.
    #[default]
    HagerZhang,
}

/// Parameters of [`minimize_lbfgs`]. Defaults follow PyTorch's `LBFGS` as used by the
/// reference implementation (history 100, Wolfe constants `c₁ = 1e-4`, `c₂ = 0.9`) except the
/// line search: Hager–Zhang's approximate Wolfe search instead of the strong Wolfe
/// (Moré–Thuente) one, which stalls at the rounding level of the cost (see [`LineSearch`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct LbfgsParams {
    /// Number of stored curvature pairs (default 100).
    pub history: usize,
    /// Sufficient-decrease constant (default `1e-4`).
    pub c1: f64,
    /// Curvature constant (default `0.9`).
    pub c2: f64,
    /// Stop when `‖∇f(x)‖∞ ≤ gradient_tolerance` (default `1e-9`).
    pub gradient_tolerance: f64,
    /// Stop when the cost changes by less than this between iterations (default 0: off; the
    /// reference uses `1e-12`, which in `f64` stops before small gradient tolerances are met).
    pub cost_tolerance: f64,
    /// Iteration limit (default 1000).
    pub max_iterations: u64,
    /// Gradient-evaluation budget, checked between iterations; `None` (default): PyTorch's
    /// `max_eval = 1.25·max_iter`.
    pub max_evaluations: Option<u64>,
    /// Line search (default Hager–Zhang; `c1`/`c2` are its `δ`/`σ` and need `c1 < 0.5`).
    pub line_search: LineSearch,
}

impl Default for LbfgsParams {
    fn default() -> Self {
        Self {
            history: 100,
            c1: 1e-4,
            c2: 0.9,
            gradient_tolerance: 1e-9,
            cost_tolerance: 0.0,
            max_iterations: 1000,
            max_evaluations: None,
            line_search: LineSearch::HagerZhang,
        }
    }
}

impl LbfgsParams {
    /// Sets the history size.
    pub fn with_history(mut self, m: usize) -> Self {
        self.history = m;
        self
    }
    /// Sets the Wolfe constants `0 < c₁ < c₂ < 1`.
    pub fn with_wolfe(mut self, c1: f64, c2: f64) -> Self {
        self.c1 = c1;
        self.c2 = c2;
        self
    }
    /// Sets the ∞-norm gradient tolerance.
    pub fn with_gradient_tolerance(mut self, tol: f64) -> Self {
        self.gradient_tolerance = tol;
        self
    }
    /// Sets the cost-change tolerance (0 disables it).
    pub fn with_cost_tolerance(mut self, tol: f64) -> Self {
        self.cost_tolerance = tol;
        self
    }
    /// Sets the iteration limit.
    pub fn with_max_iterations(mut self, n: u64) -> Self {
        self.max_iterations = n;
        self
    }
    /// Sets the gradient-evaluation budget.
    pub fn with_max_evaluations(mut self, n: u64) -> Self {
        self.max_evaluations = Some(n);
        self
    }
    /// Sets the line search.
    pub fn with_line_search(mut self, line_search: LineSearch) -> Self {
        self.line_search = line_search;
        self
    }
}

/// Outcome of [`minimize_lbfgs`].
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
    /// Why argmin stopped (e.g. "Solver converged", "Maximum number of iterations reached", or
    /// a line-search failure).
    pub termination: String,
}

/// Lends a problem to argmin by reference, so that it is still usable after the run (argmin's
/// L-BFGS drops the problem when its line search fails).
/// It also counts gradient evaluations (every line-search trial evaluates the gradient).
struct ByRef<'a, O> {
    problem: &'a O,
    gradient_evaluations: &'a Cell<u64>,
}

impl<O: CostFunction<Output: ArgminFloat>> CostFunction for ByRef<'_, O> {
    type Param = O::Param;
    type Output = O::Output;
    fn cost(&self, x: &O::Param) -> Result<O::Output, argmin::core::Error> {
        let c = self.problem.cost(x)?;
        // A non-finite trial value would send the Moré–Thuente search into an endless loop;
        // as an error it ends the line search, and L-BFGS stops with the last good iterate.
        // `c − c` is 0 for finite `c` and NaN for ±∞ and NaN.
        #[allow(clippy::eq_op)]
        let z = c - c;
        #[allow(clippy::eq_op)]
        let finite = z == z;
        if finite {
            Ok(c)
        } else {
            Err(argmin::core::Error::msg("non-finite cost at a trial point"))
        }
    }
}

impl<O: Gradient> Gradient for ByRef<'_, O> {
    type Param = O::Param;
    type Gradient = O::Gradient;
    fn gradient(&self, x: &O::Param) -> Result<O::Gradient, argmin::core::Error> {
        self.gradient_evaluations
            .set(self.gradient_evaluations.get() + 1);
        self.problem.gradient(x)
    }
}

/// Stops an inner solver when the ∞-norm of the gradient in the state is small enough, or when
/// the evaluation budget is spent (checked between iterations: argmin's line searches have no
/// evaluation limit of their own).
struct GradInfNormStop<'a, S> {
    inner: S,
    tol: f64,
    gradient_evaluations: &'a Cell<u64>,
    max_evaluations: u64,
}

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

impl<O, S, F> Solver<O, VecState<F>> for GradInfNormStop<'_, S>
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
        self.inner.next_iter(problem, state)
    }

    fn terminate(&mut self, state: &VecState<F>) -> TerminationStatus {
        if let Some(g) = state.get_gradient()
            && inf_norm(g) <= self.tol
        {
            return TerminationStatus::Terminated(TerminationReason::SolverConverged);
        }
        if self.gradient_evaluations.get() >= self.max_evaluations {
            return TerminationStatus::Terminated(TerminationReason::SolverExit(
                "evaluation budget spent".into(),
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
/// `problem` (borrowed) implements argmin's [`CostFunction`] and [`Gradient`] on `DVector<F>`
/// (`F` = `f32` or `f64`). Not converging within the iteration limit, or a line-search failure
/// (typically: rounding-error floor reached), is reported in [`MinimizeResult::converged`] and
/// [`MinimizeResult::termination`], not as an error. Errors of the problem are returned
/// (a [`ConvexOptError`] raised inside `cost`/`gradient` comes back as itself).
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
    let valid = params.history > 0
        && 0.0 < params.c1
        && params.c1 < params.c2
        && params.c2 < 1.0
        && params.gradient_tolerance >= 0.0
        && params.cost_tolerance >= 0.0;
    if !valid {
        return Err(ConvexOptError::InvalidParameter(format!(
            "LbfgsParams: {params:?}"
        )));
    }
    if !x0.iter().all(|v| v.is_finite()) {
        return Err(ConvexOptError::NonFinite("initial point x0"));
    }
    let (c1, c2) = (
        to_float::<F>(params.c1, "c1")?,
        to_float::<F>(params.c2, "c2")?,
    );
    let cost_tol = to_float::<F>(params.cost_tolerance, "cost_tolerance")?;
    let evaluations = Cell::new(0u64);
    let max_evaluations = params
        .max_evaluations
        .unwrap_or_else(|| params.max_iterations.saturating_mul(5) / 4);
    // argmin's L-BFGS bounds its line search by a private type, so each line search gets its
    // own (identical) concrete code path.
    macro_rules! run_with {
        ($line_search:expr) => {{
            let lbfgs = LBFGS::new($line_search, params.history)
                .with_tolerance_grad(<F as ArgminZero>::zero())
                .map_err(ConvexOptError::from_argmin)?
                .with_tolerance_cost(cost_tol)
                .map_err(ConvexOptError::from_argmin)?;
            let solver = GradInfNormStop {
                inner: lbfgs,
                tol: params.gradient_tolerance,
                gradient_evaluations: &evaluations,
                max_evaluations,
            };
            Executor::new(
                ByRef {
                    problem,
                    gradient_evaluations: &evaluations,
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
            run_with!(ls)
        }
        LineSearch::HagerZhang => {
            let ls: HagerZhangLineSearch<DVector<F>, DVector<F>, F> = HagerZhangLineSearch::new()
                .with_delta_sigma(c1, c2)
                .map_err(ConvexOptError::from_argmin)?;
            run_with!(ls)
        }
    };
    let termination = state
        .get_termination_reason()
        .map_or_else(|| "unknown".to_string(), |r| r.text().to_string());
    let iterations = state.get_iter();
    // After a line-search failure argmin's L-BFGS leaves the state without parameter and
    // gradient; the best parameter (the last accepted iterate: costs decrease monotonically)
    // is still there.
    let (x, gradient, cost) = match state.take_param() {
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
    Ok(MinimizeResult {
        x,
        cost,
        gradient,
        gradient_inf,
        converged: gradient_inf <= params.gradient_tolerance,
        iterations,
        gradient_evaluations: evaluations.get(),
        termination,
    })
}
