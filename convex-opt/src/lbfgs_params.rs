//! Parameters of the argmin L-BFGS minimiser ([`crate::minimize_lbfgs`]): the line search,
//! tolerances and budgets.

#[cfg(doc)]
use crate::minimize_lbfgs;

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
    /// smaller gradients.
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
/// // The Wolfe constants need 0 < c₁ < c₂ < 1.
/// let bad = LbfgsParams::default().with_wolfe(0.9, 0.1);
/// let err = minimize_lbfgs(&P, DVector::zeros(4), &bad).unwrap_err();
/// assert!(matches!(err, ConvexOptError::InvalidParameter(_)));
/// # Ok::<(), ConvexOptError>(())
/// ```
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
}
