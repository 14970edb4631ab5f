//! Parameters of the argmin L-BFGS minimiser ([`crate::minimize_lbfgs`]): the line search,
//! tolerances and budgets.

use nalgebra::RealField;

use crate::ConvexOptError;
use crate::error::short_float;
#[cfg(doc)]
use crate::minimize_lbfgs;

/// Default gradient tolerance of [`minimize_lbfgs`] (`‖∇f‖∞`) for `f64` (and any float type at
/// least as precise): `1e-9`.
pub const F64_GRADIENT_TOLERANCE: f64 = 1e-9;
/// Default gradient tolerance of [`minimize_lbfgs`] (`‖∇f‖∞`) for `f32` (and any float type
/// less precise than `f64`): `2e-5`, about `170·u` for the f32 unit roundoff
/// `u = 2⁻²⁴ ≈ 6e-8` (`168·ε/2`), the same as the inversion solvers' f32 default
/// ([`F32_ABS_TOLERANCE`](crate::options::F32_ABS_TOLERANCE)).
///
/// Why: a gradient evaluated in f32 carries rounding errors of order `u` times the magnitude
/// of its terms, summed over them (`A x − b` with `d` terms per entry: up to `d·u·‖A‖‖x‖`),
/// so near the minimiser `‖∇f‖∞` stops decreasing at about `1e-6 … 1e-5` for unit-scale
/// problems, and f64's `1e-9` (`0.017·u`, below the rounding of a single unit-sized entry)
/// is never met: an f32 run solved to f32 precision (`|x − x*|∞ = 8e-8` on a 20-dimensional quadratic)
/// ended as a failed line search. Problems whose gradients are much larger than 1 need a
/// larger (or relative) tolerance in f32; set it with
/// [`LbfgsParams::with_gradient_tolerance`].
pub const F32_GRADIENT_TOLERANCE: f64 = 2e-5;

/// The line search used by argmin's L-BFGS.
///
/// ```
/// use convex_opt::{minimize_lbfgs, LbfgsParams, LineSearch};
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
/// assert_eq!(LineSearch::default(), LineSearch::HagerZhang);
/// for search in [LineSearch::HagerZhang, LineSearch::MoreThuente] {
///     let params = LbfgsParams::default().with_line_search(search).with_gradient_tolerance(1e-8);
///     let res = minimize_lbfgs(&P, DVector::zeros(4), &params)?;
///     assert!(res.converged, "{search:?}: {}", res.termination);
///     assert!((res.x.add_scalar(-1.0)).amax() < 1e-7);
/// }
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineSearch {
    /// Moré–Thuente: the strong Wolfe conditions, like PyTorch's `line_search_fn="strong_wolfe"`
    /// used by the reference implementation. Its sufficient-decrease test compares function
    /// values, so it stalls once the decrease falls below their rounding error.
    MoreThuente,
    /// Hager–Zhang (the default): switches to the approximate Wolfe conditions
    /// (derivative-based) when the function value stops resolving the decrease, so it reaches
    /// smaller gradients. argmin's implementation searches only inside `α ∈ [ε, 1e5]`; a
    /// search that fails (line minimum beyond that, argmin-rs/argmin#541) is redone by
    /// Moré–Thuente from the same point (see [`minimize_lbfgs`]).
    #[default]
    HagerZhang,
}

/// Parameters of [`minimize_lbfgs`]. Defaults follow PyTorch's `LBFGS` as used by the
/// reference implementation (history 100, Wolfe constants `c₁ = 1e-4`, `c₂ = 0.9`) except the
/// line search: Hager–Zhang's approximate Wolfe search instead of the strong Wolfe
/// (Moré–Thuente) one, which stalls at the rounding level of the cost (see [`LineSearch`]).
///
/// ```
/// use convex_opt::{minimize_lbfgs, ConvexOptError, LbfgsParams, Termination};
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
/// // One iteration is not enough for 4 distinct curvatures...
/// let params = LbfgsParams::default().with_history(5).with_max_evaluations(100);
/// let res = minimize_lbfgs(&P, DVector::zeros(4), &params.with_max_iterations(1))?;
/// assert!(!res.converged && res.reason == Termination::MaxIterations);
/// // ...and neither is a budget of one gradient evaluation (spent at the starting point;
/// // as in PyTorch, the budget is tested after the first iteration).
/// let res = minimize_lbfgs(&P, DVector::zeros(4), &params.with_max_evaluations(1))?;
/// assert!(!res.converged && res.reason == Termination::EvaluationBudget);
/// assert_eq!(res.iterations, 1);
/// // The Wolfe constants need 0 < c₁ < c₂ < 1, and Hager–Zhang (the default) c₁ < 0.5; the
/// // error names the field.
/// let bad = LbfgsParams::default().with_wolfe(0.9, 0.1);
/// let err = minimize_lbfgs(&P, DVector::zeros(4), &bad).unwrap_err();
/// assert!(matches!(err, ConvexOptError::InvalidParameter(_)));
/// let bad = LbfgsParams::default().with_wolfe(0.6, 0.9);
/// let err = minimize_lbfgs(&P, DVector::zeros(4), &bad).unwrap_err();
/// assert!(matches!(&err, ConvexOptError::InvalidParameter(m) if m.contains("LbfgsParams.c1")));
/// # Ok::<(), ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct LbfgsParams {
    /// Number of stored curvature pairs (default 100; at least 1).
    pub history: usize,
    /// Sufficient-decrease constant (default `1e-4`): `0 < c1 < c2`, and `c1 < 0.5` with
    /// [`LineSearch::HagerZhang`].
    pub c1: f64,
    /// Curvature constant (default `0.9`): `c1 < c2 < 1`.
    pub c2: f64,
    /// Stop when `‖∇f(x)‖∞ ≤ gradient_tolerance` (`≥ 0`). `None` (default): the float type's
    /// default, [`F64_GRADIENT_TOLERANCE`] (`1e-9`) in `f64`, [`F32_GRADIENT_TOLERANCE`]
    /// (`2e-5`) in `f32` (see [`LbfgsParams::gradient_tolerance_for`]).
    pub gradient_tolerance: Option<f64>,
    /// Stop when the cost changes by less than this between iterations (default 0: off; `≥ 0`;
    /// the reference uses `1e-12`, which in `f64` stops before small gradient tolerances are
    /// met).
    pub cost_tolerance: f64,
    /// Iteration limit (default 1000).
    pub max_iterations: u64,
    /// Gradient-evaluation budget (line-search trials included), checked between iterations;
    /// `None` (default): PyTorch's `max_eval = 1.25·max_iter`. A run may end past it, with at
    /// most `max(max_evaluations, 1) + LINE_SEARCH_MAX_EVALUATIONS − 1` evaluations: its last
    /// iteration starts below the budget (or is the first one, after the evaluation at `x₀`)
    /// and one line search is capped at
    /// [`LINE_SEARCH_MAX_EVALUATIONS`](crate::LINE_SEARCH_MAX_EVALUATIONS). The Moré–Thuente
    /// redo of a failed Hager–Zhang search adds nothing to that: it evaluates only while the
    /// budget is not spent, and a redo cut short (or not started) stops the run as
    /// [`EvaluationBudget`](crate::Termination::EvaluationBudget).
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
            gradient_tolerance: None,
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
    /// Sets the ∞-norm gradient tolerance (for every float type).
    pub fn with_gradient_tolerance(mut self, tol: f64) -> Self {
        self.gradient_tolerance = Some(tol);
        self
    }
    /// The gradient tolerance in effect for the float type `F`: the one set, else
    /// [`F64_GRADIENT_TOLERANCE`] when `F` is at least as precise as `f64` (its machine epsilon
    /// `≤ f64::EPSILON`), [`F32_GRADIENT_TOLERANCE`] otherwise.
    ///
    /// ```
    /// use convex_opt::{LbfgsParams, F32_GRADIENT_TOLERANCE};
    /// let params = LbfgsParams::default();
    /// assert_eq!(params.gradient_tolerance_for::<f64>(), 1e-9);
    /// assert_eq!(params.gradient_tolerance_for::<f32>(), F32_GRADIENT_TOLERANCE);
    /// let set = params.with_gradient_tolerance(1e-4);
    /// assert_eq!(set.gradient_tolerance_for::<f32>(), 1e-4);
    /// ```
    pub fn gradient_tolerance_for<F: RealField + Copy>(&self) -> f64 {
        self.gradient_tolerance.unwrap_or_else(|| {
            let eps = nalgebra::try_convert::<F, f64>(F::default_epsilon()).unwrap_or(f64::MAX);
            if eps <= f64::EPSILON {
                F64_GRADIENT_TOLERANCE
            } else {
                F32_GRADIENT_TOLERANCE
            }
        })
    }
    /// Sets the cost-change tolerance (0 disables it).
    pub fn with_cost_tolerance(mut self, tol: f64) -> Self {
        self.cost_tolerance = tol;
        self
    }
    /// Sets the iteration limit. Unless [`with_max_evaluations`](Self::with_max_evaluations)
    /// is also set, the evaluation budget follows it (`1.25·n`, PyTorch's rule), so a run whose
    /// line searches take several evaluations may stop on
    /// [`EvaluationBudget`](crate::Termination::EvaluationBudget) before it reaches `n`
    /// iterations. As in PyTorch, the budget is tested after each iteration, so at least one
    /// iteration runs.
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

    /// Checks the documented ranges; the error names the first field out of range.
    pub(crate) fn validate(&self) -> Result<(), ConvexOptError> {
        check_history("LbfgsParams", self.history)?;
        check_wolfe("LbfgsParams", self.c1, self.c2, Some(self.line_search))?;
        if let Some(tol) = self.gradient_tolerance {
            check_non_negative("LbfgsParams.gradient_tolerance", tol)?;
        }
        check_non_negative("LbfgsParams.cost_tolerance", self.cost_tolerance)
    }
}

/// Error unless at least one curvature pair is stored (`owner` names the parameter struct).
pub(crate) fn check_history(owner: &str, history: usize) -> Result<(), ConvexOptError> {
    if history == 0 {
        return Err(ConvexOptError::InvalidParameter(format!(
            "{owner}.history = 0: at least 1 curvature pair must be stored"
        )));
    }
    Ok(())
}

/// Error unless `value ≥ 0` (NaN is refused); `name` is `Struct.field`.
pub(crate) fn check_non_negative(name: &str, value: f64) -> Result<(), ConvexOptError> {
    if value.is_nan() || value < 0.0 {
        return Err(ConvexOptError::InvalidParameter(format!(
            "{name} = {}: must be ≥ 0",
            short_float(value)
        )));
    }
    Ok(())
}

/// Error unless the Wolfe constants satisfy `0 < c1 < c2 < 1` (NaN is refused) and, for
/// `Some(LineSearch::HagerZhang)`, `c1 < 0.5` (Hager–Zhang's `δ`: argmin's search otherwise
/// fails at run time with an internal error). `owner` names the parameter struct in the
/// message, which names the field out of range.
pub(crate) fn check_wolfe(
    owner: &str,
    c1: f64,
    c2: f64,
    line_search: Option<LineSearch>,
) -> Result<(), ConvexOptError> {
    let bad = |msg: String| Err(ConvexOptError::InvalidParameter(msg));
    let (c1s, c2s) = (short_float(c1), short_float(c2));
    if !(c1 > 0.0 && c1 < 1.0) {
        return bad(format!("{owner}.c1 = {c1s}: need 0 < c1 < c2 < 1"));
    }
    if !(c2 > 0.0 && c2 < 1.0) {
        return bad(format!("{owner}.c2 = {c2s}: need 0 < c1 < c2 < 1"));
    }
    if c1 >= c2 {
        return bad(format!(
            "{owner}.c1 = {c1s} is not below {owner}.c2 = {c2s}: need 0 < c1 < c2 < 1"
        ));
    }
    if line_search == Some(LineSearch::HagerZhang) && c1 >= 0.5 {
        return bad(format!(
            "{owner}.c1 = {c1s}: the Hager–Zhang line search needs c1 < 0.5 (its δ); \
             LineSearch::MoreThuente accepts 0 < c1 < c2 < 1"
        ));
    }
    Ok(())
}
