//! The reference implementation's inverse: the whole batch as one argmin L-BFGS problem.

use std::cell::{Cell, RefCell};

use argmin::core::ArgminFloat;
use argmin::core::{CostFunction, Gradient};
use argmin_math::ArgminZero;
use candle_core::{DType, Tensor, WithDType};
use nalgebra::{DVector, RealField};

use crate::argmin_lbfgs::minimize_lbfgs_ranked;
use crate::batch::{Collector, setup};
use crate::lbfgs_params::{check_history, check_non_negative, check_wolfe};
use crate::{
    BatchedPotential, ConvexOptError, InversionOptions, InversionResult, LbfgsParams, LineSearch,
    SolverStats, Termination,
};

/// Parameters of [`invert_lbfgs_flat`]. Defaults follow the reference implementation
/// (PyTorch `LBFGS`: history 100, Wolfe constants `c₁ = 1e-4`, `c₂ = 0.9`) with two
/// exceptions: the line search is Hager–Zhang's instead of the strong Wolfe (Moré–Thuente) one,
/// which stalls at the rounding level of the summed loss (in f64 around `1e-7` on small ICNN
/// problems; select it with [`FlatLbfgsParams::with_line_search`] to reproduce the reference),
/// and the loss-change stop is off (the reference's `1e-12` can be restored with
/// [`FlatLbfgsParams::with_cost_tolerance`]). As in the reference, the first step is scaled by
/// `min(1, 1/‖g₀‖₁)` (`g₀` the gradient of the whole flattened batch at `x₀`; see
/// [`crate::minimize_lbfgs`]), with either line search.
///
/// ```
/// use convex_opt::{invert_lbfgs_flat, FlatLbfgsParams, InversionOptions, LineSearch};
/// # use candle_core::{DType, Device, Tensor};
/// # use convex_opt::QuadraticPotential;
/// # use nalgebra::DMatrix;
/// // Φ(x) = ½ xᵀA x with A = [[2, 1], [1, 3]]: the inverse of ∇Φ is x = A⁻¹y.
/// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [-3.0, 0.5]], &Device::Cpu)?;
/// // The reference's settings: strong Wolfe search, loss-change stop 1e-12, and a tolerance
/// // that it reaches before stalling.
/// let reference = FlatLbfgsParams::default()
///     .with_line_search(LineSearch::MoreThuente)
///     .with_cost_tolerance(1e-12);
/// let opts = InversionOptions::default().with_abs_tolerance(1e-6);
/// let res = invert_lbfgs_flat(&pot, &y, &opts, &reference)?;
/// assert!(res.all_converged());
/// // One shared problem: every sample reports the same iteration count.
/// assert_eq!(res.iterations[0], res.iterations[1]);
/// let err = (res.x - pot.solve(&y)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-5);
/// // Hager–Zhang needs c₁ < 0.5: refused up front, naming the field.
/// let bad = FlatLbfgsParams::default().with_wolfe(0.6, 0.9);
/// let res = invert_lbfgs_flat(&pot, &y, &opts, &bad);
/// assert!(matches!(res, Err(convex_opt::ConvexOptError::InvalidParameter(m))
///     if m.contains("FlatLbfgsParams.c1")));
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct FlatLbfgsParams {
    /// Stored curvature pairs (default 100; at least 1).
    pub history: usize,
    /// Sufficient-decrease constant (default `1e-4`): `0 < c1 < c2`, and `c1 < 0.5` with
    /// [`LineSearch::HagerZhang`].
    pub c1: f64,
    /// Curvature constant (default `0.9`): `c1 < c2 < 1`.
    pub c2: f64,
    /// Stop when the total loss changes by less than this (default 0: off; `≥ 0`).
    pub cost_tolerance: f64,
    /// Line search (default Hager–Zhang; [`LineSearch::MoreThuente`] is the reference's strong
    /// Wolfe search, which stalls earlier). argmin 0.11's Hager–Zhang search only bisects and
    /// takes secant steps inside the fixed bracket `α ∈ [ε, 1e5]` along the search direction
    /// (it has no bracket-expansion phase), and it can fail when a secant step lands exactly
    /// on an end of its bracket: the next secant through that end and itself is `0/0`, its
    /// trial point is NaN, and the bracket update ends in "Reached unreachable point in
    /// `update`" (argmin-rs/argmin#541, open). With argmin's unscaled first direction `−g₀` a
    /// huge `g₀` put the far end absurdly far (on `Σ x⁴/4 + x²/2` from `x₀ = y = 5e3`,
    /// `|x| ≈ 1e16`, slope ratio ~1e37), the first secant rounded onto the near end, and every
    /// `|y| ≳ 5e3` failed in the first iteration; the first-step scaling (the reference's
    /// `min(1, 1/‖g₀‖₁)`, see [`invert_lbfgs_flat`]) removes that. When the line minimum lies
    /// beyond `α = 1e5` (on the quartic: the first search at `y = 1e8`, where the unit first
    /// step leaves the minimum `~|y|` away, and the second one at `y ∈ [9.999e4, 1.0001e5]`,
    /// where the first search ends at `x₁ ≈ 0` and the second direction is `≈ 1e-5·(−g₁)`),
    /// the search cannot reach it and bisects until its evaluation cap
    /// ([`LINE_SEARCH_MAX_EVALUATIONS`](crate::LINE_SEARCH_MAX_EVALUATIONS)). A failed
    /// Hager–Zhang search (the cap, #541) is therefore redone once by Moré–Thuente, from the
    /// same iterate along the same direction, with the same Wolfe constants and a cap of its
    /// own; its result is accepted only if it meets the strong Wolfe conditions, otherwise
    /// the run stops as [`Termination::LineSearchFailed`]
    /// (at the rounding floor of the summed cost, where neither search can make progress).
    /// [`SolverStats::line_search_fallbacks`](crate::SolverStats::line_search_fallbacks) counts
    /// the fallbacks; runs without a failed search are unchanged, bit for bit.
    pub line_search: LineSearch,
    /// Cap on the gradient evaluations of the run (line-search trials included), tested after
    /// each iteration, so at least one iteration runs; when it is spent the run stops with
    /// [`Termination::EvaluationBudget`]. The last iteration's line search may take the run
    /// past it: a run ends with at most `max(max_evaluations, 1) + LINE_SEARCH_MAX_EVALUATIONS
    /// − 1` evaluations ([`LINE_SEARCH_MAX_EVALUATIONS`](crate::LINE_SEARCH_MAX_EVALUATIONS)
    /// caps one line search); a failed Hager–Zhang search's Moré–Thuente redo evaluates only
    /// while the budget is not spent (cut short or not started, it stops the run as
    /// [`Termination::EvaluationBudget`]). `None` (default): PyTorch's `max_eval =
    /// 1.25·max_iterations` from [`InversionOptions::max_iterations`], which a run whose line
    /// searches take 2 or more evaluations spends before its iteration limit. Raise it to let
    /// `max_iterations` alone bound the run.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use convex_opt::{invert_lbfgs_flat, FlatLbfgsParams, InversionOptions, QuadraticPotential};
    /// use convex_opt::Termination;
    /// use nalgebra::DMatrix;
    /// let a = DMatrix::from_fn(5, 5, |i, j| if i == j { 1.0 + 3.0 * i as f64 } else { 0.1 });
    /// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
    /// let y = Tensor::new(&[[1.0f64, -2.0, 3.0, 0.5, 4.0]], &Device::Cpu)?;
    /// let opts = InversionOptions::default().with_max_iterations(20);
    /// // The default cap (25 evaluations) is spent before the 20 iterations...
    /// let res = invert_lbfgs_flat(&pot, &y, &opts, &FlatLbfgsParams::default())?;
    /// assert_eq!(res.termination, vec![Termination::EvaluationBudget]);
    /// // ...a larger one lets the run converge within them.
    /// let params = FlatLbfgsParams::default().with_max_evaluations(200);
    /// let res = invert_lbfgs_flat(&pot, &y, &opts, &params)?;
    /// assert!(res.all_converged() && res.iterations[0] <= 20);
    /// # Ok::<(), convex_opt::ConvexOptError>(())
    /// ```
    pub max_evaluations: Option<usize>,
}

impl Default for FlatLbfgsParams {
    fn default() -> Self {
        Self {
            history: 100,
            c1: 1e-4,
            c2: 0.9,
            cost_tolerance: 0.0,
            line_search: LineSearch::HagerZhang,
            max_evaluations: None,
        }
    }
}

impl FlatLbfgsParams {
    /// Sets the history size.
    pub fn with_history(mut self, m: usize) -> Self {
        self.history = m;
        self
    }
    /// Sets the Wolfe constants.
    pub fn with_wolfe(mut self, c1: f64, c2: f64) -> Self {
        self.c1 = c1;
        self.c2 = c2;
        self
    }
    /// Sets the loss-change tolerance (the reference uses `1e-12`).
    pub fn with_cost_tolerance(mut self, tol: f64) -> Self {
        self.cost_tolerance = tol;
        self
    }
    /// Sets the line search ([`LineSearch::MoreThuente`] reproduces the reference's strong
    /// Wolfe search).
    pub fn with_line_search(mut self, line_search: LineSearch) -> Self {
        self.line_search = line_search;
        self
    }
    /// Sets the cap on gradient evaluations (see [`FlatLbfgsParams::max_evaluations`]).
    pub fn with_max_evaluations(mut self, n: usize) -> Self {
        self.max_evaluations = Some(n);
        self
    }

    /// Checks the documented ranges; the error names the first field out of range.
    fn validate(&self) -> Result<(), ConvexOptError> {
        check_history("FlatLbfgsParams", self.history)?;
        check_wolfe("FlatLbfgsParams", self.c1, self.c2, Some(self.line_search))?;
        check_non_negative("FlatLbfgsParams.cost_tolerance", self.cost_tolerance)
    }
}

/// A point with its cost and gradient.
type Evaluation<F> = (DVector<F>, F, DVector<F>);

/// `Σ_i Φ(x_i) − x_iᵀy_i` as one argmin problem over the flattened batch (sample-major), with
/// a one-point cache so that argmin's separate `cost` and `gradient` calls at the same point
/// cost one potential evaluation (as PyTorch's closure does).
struct FlatProblem<'a, F: RealField + Copy> {
    potential: &'a dyn BatchedPotential,
    y: Tensor,
    n: usize,
    d: usize,
    cache: RefCell<Option<Evaluation<F>>>,
    evaluations: &'a Cell<usize>,
    /// The first error of the potential; argmin turns errors inside its line search into a
    /// termination reason, so they are kept here and returned after the run.
    failure: &'a RefCell<Option<ConvexOptError>>,
}

/// A failure of the potential inside argmin's line search, where argmin turns errors into a
/// termination reason: it ends the run, and the stashed error is returned afterwards.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SoftStop(&'static str);

impl<F> FlatProblem<'_, F>
where
    F: ArgminFloat + ArgminZero + RealField + Copy + WithDType,
{
    fn evaluate(&self, x: &DVector<F>) -> Result<(F, DVector<F>), ConvexOptError> {
        if let Some((cx, c, g)) = self.cache.borrow().as_ref()
            && cx == x
        {
            return Ok((*c, g.clone()));
        }
        if !x.iter().all(|v| v.is_finite()) {
            // The step overflowed: a point that is not finite is a non-finite trial point
            // (backtracked from, or ending the run), whatever the potential would say of it.
            let nan = <F as WithDType>::from_f64(f64::NAN);
            return Ok((nan, DVector::from_element(x.len(), nan)));
        }
        let xt = Tensor::from_slice(x.as_slice(), (self.n, self.d), self.y.device())?;
        let (value, grad) = self.potential.value_and_gradient(&xt)?;
        self.evaluations.set(self.evaluations.get() + 1);

        if value.dims() != [self.n] || grad.dims() != [self.n, self.d] {
            return Err(ConvexOptError::Shape {
                context: "potential output",
                message: format!(
                    "values {:?}, gradients {:?} for a ({}, {}) batch",
                    value.dims(),
                    grad.dims(),
                    self.n,
                    self.d
                ),
            });
        }
        crate::batch::check_output_dtypes(&value, &grad, self.y.dtype())?;
        let cost = (value.sum_all()? - (&xt * &self.y)?.sum_all()?)?.to_scalar::<F>()?;
        let g = (grad - &self.y)?.flatten_all()?.to_vec1::<F>()?;
        let g = DVector::from_vec(g);
        *self.cache.borrow_mut() = Some((x.clone(), cost, g.clone()));
        Ok((cost, g))
    }

    /// `evaluate` for argmin: records hard errors. Non-finite values are passed on: the
    /// wrapper in `minimize_lbfgs` treats them as a step that is too long (Hager–Zhang) or ends
    /// the line search (Moré–Thuente).
    fn guarded(&self, x: &DVector<F>) -> Result<(F, DVector<F>), argmin::core::Error> {
        self.evaluate(x).map_err(|e| {
            let msg = e.to_string();
            self.failure.borrow_mut().get_or_insert(e);
            argmin::core::Error::new(SoftStop("the potential failed")).context(msg)
        })
    }
}

impl<F> CostFunction for FlatProblem<'_, F>
where
    F: ArgminFloat + ArgminZero + RealField + Copy + WithDType,
{
    type Param = DVector<F>;
    type Output = F;

    fn cost(&self, x: &DVector<F>) -> Result<F, argmin::core::Error> {
        Ok(self.guarded(x)?.0)
    }
}

impl<F> Gradient for FlatProblem<'_, F>
where
    F: ArgminFloat + ArgminZero + RealField + Copy + WithDType,
{
    type Param = DVector<F>;
    type Gradient = DVector<F>;

    fn gradient(&self, x: &DVector<F>) -> Result<DVector<F>, argmin::core::Error> {
        Ok(self.guarded(x)?.1)
    }
}

/// Solves `∇Φ(x_i) = y_i` the way the reference implementation does: the batch is flattened
/// into one variable and `Σ_i Φ(x_i) − x_iᵀy_i` is minimised by argmin's L-BFGS (see
/// [`FlatLbfgsParams`] for the line search), so curvature pairs, step lengths and the stopping
/// test are shared by all samples. The first search direction is PyTorch's: `−t·g₀` with
/// `t = min(1, 1/‖g₀‖₁)` over the whole flattened batch, so the first trial point (step 1) is
/// at most a unit `ℓ₁` distance from `x₀` and a huge starting gradient (a target far out on a
/// steep potential) cannot throw the first line search to absurd points; with `‖g₀‖₁ ≤ 1`
/// nothing changes. Each evaluation copies the iterate to a tensor and the
/// gradient back to the host, in the dtype of `y` (the argmin state is `DVector<f32>` or
/// `DVector<f64>`).
///
/// It stops when every sample is within its own tolerance, `‖∇Φ(x_i) − y_i‖∞ ≤ tolerance_i`,
/// at `x₀` or at any trial point of a line search (as soon as it is evaluated, whether or not
/// the search would accept it; see below), at the iteration limit, when the evaluation budget
/// ([`FlatLbfgsParams::max_evaluations`], by default `1.25·max_iterations` gradient
/// evaluations) is spent, or when the line search fails (rounding floor); per-sample
/// residuals, flags and [`Termination`] reasons are reported as for the batched solvers, with
/// the shared iteration count for every sample (all iterations performed). A trial point
/// where the potential is not finite (e.g. an overflow far along the search direction: argmin's
/// Hager–Zhang search tries step `1e5` in every line search) is backtracked from with the
/// default line search (a failed Hager–Zhang search is redone by Moré–Thuente, see
/// [`FlatLbfgsParams::line_search`], whose non-finite trial values end that search; the run
/// then stops as [`Termination::NonFinite`] only if neither search found a finite value,
/// otherwise as [`Termination::LineSearchFailed`]); with [`LineSearch::MoreThuente`] it ends
/// the run ([`Termination::NonFinite`]). A trial point that is itself not finite (the step
/// overflowed, a NaN step length from either search's interpolation) is never passed to the
/// potential, so a potential may refuse non-finite input; it says nothing of the potential,
/// so a search that fails on such points is [`Termination::LineSearchFailed`] with either
/// line search. Parameters outside the ranges documented on [`FlatLbfgsParams`] are a
/// [`ConvexOptError::InvalidParameter`] naming the field, before any evaluation. Kept as the
/// baseline the batched solvers are measured against.
///
/// **Not the robust choice:** its one line search for the whole batch can stop with a few
/// rows just above their tolerance, reported per row as [`Termination::LineSearchFailed`]
/// ("line search failed"; an audit saw 4 of 64 rows at 1.8× the f64 tolerance on a
/// log-sum-exp + quartic potential, in 1 of 9 random batches). Where every row must
/// converge, use [`invert_newton_cg`](crate::invert_newton_cg) (batched Newton–CG, per-row
/// backtracking) or [`invert_lbfgs_batched`](crate::invert_lbfgs_batched).
///
/// **The returned point** of a run that meets its test is the point that met it, bit for bit
/// as evaluated: every sample `Converged`, with the shared count of the iterations begun (the
/// one whose line search evaluated it included). That test is the samples' own tolerances, not
/// the largest residual within the smallest tolerance (the reference's one number): with
/// relative tolerances, or `f32`'s defaults, the samples' tolerances differ, and a run went on
/// after every sample was within its own. Nor does a line search go on past such a trial point
/// (at the rounding floor of the summed cost it can fail the Armijo test, and the run used to
/// continue, sometimes until its budget or a failed search). In a seeded sweep of 3,000 runs
/// per line search (`examples/flat_sweep.rs`) the two together saved 15% of the evaluations
/// with Hager–Zhang (217,554 → 185,778) and 52% with Moré–Thuente (746,559 → 356,576), in
/// the 1,173 and 1,134 runs that had met the test before they stopped; the runs and samples
/// that converge are the same, and the other runs are unchanged, bit for bit.
///
/// A run that does not meet its test returns the evaluated point, among the accepted
/// iterates (`x₀` included) and the line searches' trial points (the gradient is the
/// residual, evaluated at every trial point), with the smallest largest residual
/// `max_i ‖∇Φ(x_i) − y_i‖∞`, the later of equal ones; its residuals, flags and reasons are
/// the ones evaluated there (no extra evaluation). At the rounding floor of the summed cost
/// it can be an earlier
/// iterate: argmin keeps the iterate of least cost, which in `f32` was often far from the
/// least residual (on `Σ x⁴/4 + x²/2` with targets `(1e-8, 0, 7)` and a tolerance below the
/// floor, `1.4e-4` where `4.8e-7` had been reached); or a trial point that the line search
/// rejected (its cost not below the Armijo line by rounding, or the search failing
/// afterwards): in the sweep, returning such points (before they stopped the run) brought 44
/// more runs to every sample's tolerance with Hager–Zhang (2,790 → 2,834) and 243 more with
/// Moré–Thuente (2,587 → 2,830). A run that does not meet its test reports its
/// [`Termination`] for the samples outside their tolerance and `Converged` for the others.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{invert_lbfgs_flat, FlatLbfgsParams, InversionOptions, QuadraticPotential};
/// use nalgebra::DMatrix;
/// let a = DMatrix::from_row_slice(2, 2, &[3.0, 1.0, 1.0, 2.0]);
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [-1.0, 0.5]], &Device::Cpu)?;
/// let res = invert_lbfgs_flat(&pot, &y, &InversionOptions::default(), &FlatLbfgsParams::default())?;
/// assert!(res.all_converged());
/// let exact = pot.solve(&y)?;
/// assert!((res.x - exact)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-8);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
pub fn invert_lbfgs_flat<P: BatchedPotential + ?Sized>(
    potential: &P,
    y: &Tensor,
    options: &InversionOptions,
    params: &FlatLbfgsParams,
) -> Result<InversionResult, ConvexOptError> {
    params.validate()?;
    // The solver is compiled once, for `dyn BatchedPotential`, not once per potential type.
    match y.dtype() {
        DType::F64 => invert_flat_typed::<f64>(&potential, y, options, params),
        DType::F32 => invert_flat_typed::<f32>(&potential, y, options, params),
        other => Err(ConvexOptError::UnsupportedDType(other)),
    }
}

fn invert_flat_typed<F>(
    potential: &dyn BatchedPotential,
    y: &Tensor,
    options: &InversionOptions,
    params: &FlatLbfgsParams,
) -> Result<InversionResult, ConvexOptError>
where
    F: ArgminFloat + ArgminZero + RealField + Copy + WithDType,
{
    let setup = setup(potential, y, options)?;
    let mut out = Collector::new(&setup);
    let mut stats = SolverStats::default();
    if setup.n == 0 {
        return out.finish(&setup.y, stats);
    }
    let (n, d) = (setup.n, setup.d);
    let evaluations = Cell::new(0usize);
    let failure = RefCell::new(None);
    let x0 = DVector::from_vec(setup.x0.flatten_all()?.to_vec1::<F>()?);
    let problem = FlatProblem {
        potential,
        y: setup.y.clone(),
        n,
        d,
        cache: RefCell::new(None),
        evaluations: &evaluations,
        failure: &failure,
    };
    // Fail early, like the batched solvers, on a non-finite start.
    let (c0, g0) = problem.evaluate(&x0)?;
    if !c0.is_finite() || !g0.iter().all(|v| v.is_finite()) {
        // Name the first row that is not finite on its own (none when only the sum overflowed).
        let rows = crate::batch::objective(potential, &setup.x0, &setup.y, &mut stats)?;
        let gnorm = crate::batch::row_inf_norms(&rows.g)?;
        let first = (0..n).find(|&i| !(rows.f[i].is_finite() && gnorm[i].is_finite()));
        return Err(match first {
            Some(row) => ConvexOptError::NonFiniteRow {
                context: "potential or gradient at the initial point",
                row,
            },
            None => ConvexOptError::NonFinite("potential at the initial point"),
        });
    }
    // The stopping test is the rank's goal below (every sample within its own tolerance), not
    // `LbfgsParams::gradient_tolerance`.
    let mut lbfgs = LbfgsParams::default()
        .with_history(params.history)
        .with_wolfe(params.c1, params.c2)
        .with_cost_tolerance(params.cost_tolerance)
        .with_max_iterations(setup.max_iterations as u64)
        .with_line_search(params.line_search);
    if let Some(n) = params.max_evaluations {
        lbfgs = lbfgs.with_max_evaluations(u64::try_from(n).unwrap_or(u64::MAX));
    }
    // The run's test (the rank's goal: every sample within its own tolerance) and, unless the
    // run meets it, the order of the candidates for the returned point (the smallest largest
    // residual; see `invert_lbfgs_flat`), computed as reported below.
    let tolerance = &setup.tolerance;
    let rank = |g: &DVector<F>| {
        row_residuals(g, d)
            .zip(tolerance)
            .fold((false, 0.0), |(short, worst), (r, &tol)| {
                (short || r.is_nan() || r > tol, nan_max(worst, r))
            })
    };
    let res = minimize_lbfgs_ranked(&problem, x0, &lbfgs, &rank);
    if let Some(e) = failure.borrow_mut().take() {
        return Err(e);
    }
    let res = res?;
    let evaluations = evaluations.get();
    stats.gradient_calls = evaluations;
    stats.gradient_rows = evaluations * n;
    stats.outer_iterations = res.iterations as usize;
    stats.line_search_fallbacks = usize::try_from(res.line_search_fallbacks).unwrap_or(usize::MAX);

    let iterations = res.iterations as usize;
    // The run stops as a whole: samples within their tolerance are converged, the others share
    // the run's reason (a run that converged has every sample within its own tolerance).
    let run_reason = match res.reason {
        // Unreachable: only a NaN residual could fail its tolerance after a converged run.
        Termination::Converged => Termination::NonFinite,
        other => other,
    };
    for (i, r) in row_residuals(&res.gradient, d).enumerate() {
        out.residual[i] = r;
        out.iterations[i] = iterations;
        out.status[i] = Some(out.reached(i, r).unwrap_or(run_reason));
    }
    let xt = Tensor::from_slice(res.x.as_slice(), (n, d), setup.y.device())?;
    out.store(&(0..n).collect::<Vec<_>>(), &xt, &vec![true; n])?;
    out.finish(&setup.y, stats)
}

/// `max(m, v)`, NaN if either is.
fn nan_max(m: f64, v: f64) -> f64 {
    if v.is_nan() || m.is_nan() {
        f64::NAN
    } else {
        m.max(v)
    }
}

/// `‖g_i‖∞` of each sample `g_i` (`d` entries each) of a flattened gradient, NaN for a sample
/// with a NaN entry.
fn row_residuals<F>(g: &DVector<F>, d: usize) -> impl Iterator<Item = f64> + '_
where
    F: RealField + Copy,
{
    g.as_slice().chunks(d).map(|gi| {
        gi.iter().fold(0.0f64, |m, v| {
            nan_max(
                m,
                nalgebra::try_convert::<F, f64>(v.abs()).unwrap_or(f64::NAN),
            )
        })
    })
}
