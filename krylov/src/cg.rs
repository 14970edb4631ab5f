//! Batched (preconditioned) conjugate gradient with per-system step sizes and convergence.

use crate::cg_reorth::{ResidualBasis, confirm_on_true_residual};
use crate::operator::check_operator_shape;
use crate::preconditioner::{Preconditioner, Prepared};
use crate::vectors::{check_finite, power_of_two_scale};
use crate::{BatchOperator, BatchVectors, KrylovError};

/// When the batch stops iterating.
///
/// With [`CgStopping::PerSystem`] an easy system stops early and costs no further operator
/// work; [`CgStopping::BatchGlobal`] keeps it iterating until the whole batch has converged.
///
/// ```
/// use krylov::{cg, CgParams, CgStopping, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0 is 2·I (one step); system 1 has two distinct eigenvalues (two steps).
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![2.0, 0.0; 0.0, 2.0],
///     dmatrix![1.0, 0.0; 0.0, 5.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let params = CgParams::default().with_rtol(1e-12);
/// let per = cg(&op, &b, &params)?;
/// let global = cg(&op, &b, &params.with_stopping(CgStopping::BatchGlobal))?;
/// assert_eq!(per.applications, vec![1, 2]);
/// assert_eq!(global.applications, vec![2, 2]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgStopping {
    /// Each system stops as soon as it satisfies its own test and is then frozen: it receives no
    /// further operator applications and no vector updates. The default.
    #[default]
    PerSystem,
    /// **Reference behaviour** (CP-Flow's `conjugate_gradient`): every system keeps iterating
    /// (and costs an operator application per iteration) until *all* systems satisfy the test
    /// or `max_iters` is reached. Kept for comparison and benchmarks. Systems whose iteration
    /// cannot continue (zero or non-finite curvature `pᵀHp`, e.g. an exactly zero residual) are
    /// still frozen.
    BatchGlobal,
}

/// Parameters of [`cg`]. Build with `CgParams::default()` and the `with_*` setters.
///
/// System `i` has converged when `‖r_i‖∞ ≤ atol + rtol·‖b_i‖∞`, where `r_i` is the recursively
/// updated residual (in exact arithmetic `b_i − H_i x_i`).
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator, KrylovError};
/// use nalgebra::{DMatrix, dmatrix};
/// let params = CgParams::default().with_rtol(1e-10).with_max_iters(1);
/// assert_eq!(params.max_iters, Some(1));
/// // Two distinct eigenvalues need two iterations: one is not enough.
/// let op = DenseNalgebraOperator::new(vec![dmatrix![1.0, 0.0; 0.0, 3.0]])?;
/// let b = DMatrix::<f64>::from_element(2, 1, 1.0);
/// let res = cg(&op, &b, &params)?;
/// assert!(!res.converged[0] && res.iterations[0] == 1);
/// // Invalid tolerances are rejected before any work.
/// let bad = CgParams::default().with_atol(-1.0);
/// assert!(matches!(cg(&op, &b, &bad), Err(KrylovError::InvalidParameter(_))));
/// # Ok::<(), KrylovError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CgParams {
    /// Absolute tolerance on `‖r_i‖∞`. Default `0`.
    pub atol: f64,
    /// Relative tolerance (times `‖b_i‖∞`). Default `1e-6`.
    pub rtol: f64,
    /// Maximum number of iterations per system. `None` (default) means
    /// [`default_max_iters`]`(d) = 2d + 10`: in exact arithmetic CG needs at most `d`
    /// iterations, and the slack absorbs the delay caused by rounding on ill-conditioned
    /// systems (the CP-Flow reference uses exactly `d`).
    pub max_iters: Option<usize>,
    /// Per-system (default) or batch-global (reference) stopping.
    pub stopping: CgStopping,
    /// Preconditioner (default none).
    pub preconditioner: Preconditioner,
    /// Re-orthogonalise every new residual against all previous ones (two Gram–Schmidt passes
    /// in the `M⁻¹` inner product). Restores CG's finite termination in floating point, so
    /// every system converges in about `d` iterations whatever the spectrum, at `O(k·B·d)`
    /// extra memory and work per iteration `k`. Default `false` (the reference does not).
    /// Once the stored residuals span the space the updated residual is zero whatever `x` is,
    /// so convergence is confirmed on the true residual `b − H x` (one extra operator
    /// application for the systems that met the tolerance).
    pub reorthogonalize: bool,
}

impl Default for CgParams {
    fn default() -> Self {
        Self {
            atol: 0.0,
            rtol: 1e-6,
            max_iters: None,
            stopping: CgStopping::PerSystem,
            preconditioner: Preconditioner::None,
            reorthogonalize: false,
        }
    }
}

impl CgParams {
    /// Sets the absolute tolerance.
    pub fn with_atol(mut self, atol: f64) -> Self {
        self.atol = atol;
        self
    }
    /// Sets the relative tolerance.
    pub fn with_rtol(mut self, rtol: f64) -> Self {
        self.rtol = rtol;
        self
    }
    /// Sets the maximum number of iterations.
    pub fn with_max_iters(mut self, max_iters: usize) -> Self {
        self.max_iters = Some(max_iters);
        self
    }
    /// Sets the stopping rule.
    pub fn with_stopping(mut self, stopping: CgStopping) -> Self {
        self.stopping = stopping;
        self
    }
    /// Sets the preconditioner.
    pub fn with_preconditioner(mut self, preconditioner: Preconditioner) -> Self {
        self.preconditioner = preconditioner;
        self
    }

    /// Enables or disables residual re-orthogonalisation.
    pub fn with_reorthogonalize(mut self, reorthogonalize: bool) -> Self {
        self.reorthogonalize = reorthogonalize;
        self
    }

    fn validate(&self) -> Result<(), KrylovError> {
        if !(self.atol >= 0.0 && self.atol.is_finite()) {
            return Err(KrylovError::InvalidParameter(format!(
                "atol must be finite and ≥ 0, got {}",
                self.atol
            )));
        }
        if !(self.rtol >= 0.0 && self.rtol.is_finite()) {
            return Err(KrylovError::InvalidParameter(format!(
                "rtol must be finite and ≥ 0, got {}",
                self.rtol
            )));
        }
        if self.reorthogonalize && self.preconditioner == Preconditioner::Supplied {
            return Err(KrylovError::InvalidParameter(
                "re-orthogonalisation needs M^(-1/2), which a supplied preconditioner does not \
                 give: use Preconditioner::None or Jacobi with it"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The iteration cap used when [`CgParams::max_iters`] is `None`: `2d + 10`.
///
/// ```
/// use krylov::{cg, default_max_iters, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// assert_eq!(default_max_iters(3), 16);
/// // A zero tolerance is (in floating point) never met, so CG runs to the cap.
/// let h = DMatrix::<f64>::from_diagonal(&nalgebra::DVector::from_fn(20, |i, _| (i + 1) as f64));
/// let op = DenseNalgebraOperator::new(vec![h])?;
/// let b = DMatrix::<f64>::from_element(20, 1, 1.0);
/// let res = cg(&op, &b, &CgParams::default().with_rtol(0.0))?;
/// assert!(!res.converged[0]);
/// assert_eq!(res.iterations, vec![default_max_iters(20)]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
pub fn default_max_iters(dim: usize) -> usize {
    2 * dim + 10
}

/// Outcome of [`cg`]. Non-convergence is reported here, never as an error.
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0 is SPD; system 1 is negative definite, which CG cannot handle.
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![4.0, 0.0; 0.0, 4.0],
///     dmatrix![-1.0, 0.0; 0.0, -1.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let res = cg(&op, &b, &CgParams::default())?;
/// assert_eq!(res.converged, vec![true, false]);
/// assert_eq!(res.breakdown, vec![false, true]);
/// assert!(!res.all_converged());
/// assert!((res.x[(0, 0)] - 0.25).abs() < 1e-12 && res.residual_norms[0] < 1e-12);
/// assert_eq!(res.x[(0, 1)], 0.0); // system 1 never stepped
/// assert_eq!(res.total_applications(), 2);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CgResult<V> {
    /// The approximate solutions (a batch like `b`).
    pub x: V,
    /// Iterations (solution updates) performed per system.
    pub iterations: Vec<usize>,
    /// Final `‖r_i‖∞` per system: the recursively updated residual, except with
    /// [`CgParams::reorthogonalize`], where a system that met the tolerance is checked against
    /// the true residual `b_i − H_i x_i` and that norm is reported (and decides `converged`).
    pub residual_norms: Vec<f64>,
    /// Whether system `i` met `‖r_i‖∞ ≤ atol + rtol·‖b_i‖∞` (never with a non-finite
    /// residual).
    pub converged: Vec<bool>,
    /// Whether system `i` stopped because the iteration could not continue: non-positive or
    /// non-finite curvature `pᵀH_i p` or a non-finite residual, before convergence. Causes:
    /// the operator is not positive definite on the Krylov space, it produced NaN/Inf, or the
    /// per-system dot products overflowed because the entries of `H_i` are huge (a huge or tiny
    /// `b_i` is not a cause: it is rescaled by a power of two internally).
    /// `x_i` then holds the iterate reached when the system stopped (zero if it never
    /// stepped).
    pub breakdown: Vec<bool>,
    /// Operator applications per system (an initial residual `b − H x0` counts as one).
    pub applications: Vec<usize>,
    /// Number of calls to [`BatchOperator::apply`].
    pub operator_calls: usize,
}

impl<V> CgResult<V> {
    /// `true` when every system converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|c| *c)
    }

    /// Total operator applications over all systems.
    pub fn total_applications(&self) -> usize {
        self.applications.iter().sum()
    }
}

/// Solves `H_i x_i = b_i` for every system `i` by conjugate gradient, **starting at zero**.
///
/// Step sizes `α_i`, `β_i` are per system; with [`CgStopping::PerSystem`] (default) system `i`
/// stops when `‖r_i‖∞ ≤ atol + rtol·‖b_i‖∞` and is frozen (no more operator applications,
/// no more updates). The test is also checked before the first iteration (so `b_i = 0` costs
/// nothing). Each `H_i` must be symmetric positive definite; a system whose curvature `pᵀHp`
/// is not positive stops and is flagged in [`CgResult::breakdown`]. A system whose `‖b_i‖∞`
/// lies outside `[2⁻³², 2³²]` is solved for `b_i` multiplied by a power of two that brings it
/// near 1 (exact in floating point; CG is linear in `b`), so that its dot products neither
/// overflow nor underflow: `‖b_i‖ ≈ 1e200` in f64 or `1e30` in f32 converges like `b_i/‖b_i‖`.
///
/// Errors (before any operator work): a right-hand side with a NaN or ±Inf entry
/// ([`KrylovError::NonFiniteInput`], naming the system and the entry), a batch that does not
/// match the operator's [`BatchOperator::batch_shape`] ([`KrylovError::ShapeMismatch`]), a
/// tensor of another dtype than the operator's (`KrylovError::DTypeMismatch`, also raised
/// when an operator returns the wrong dtype). An empty batch (`B = 0`) gives an empty result.
///
/// `CgResult::applications[i]` counts the calls in which system `i` was marked active, i.e. the
/// work the operator was asked to do for it. In floating point, plain CG can need many more
/// than `d` iterations on ill-conditioned matrices with spread spectra (measured, f64,
/// log-uniform spectrum: ≈ 6d at cond 1e6, d = 43; ≈ 8d at cond 1e6, d = 200, rtol 1e-4);
/// [`CgParams::reorthogonalize`] restores convergence in at most ≈ `d` iterations.
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // Two systems (columns): H_0 = diag(1, 4), H_1 = [[2, 1], [1, 2]].
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![1.0, 0.0; 0.0, 4.0],
///     dmatrix![2.0, 1.0; 1.0, 2.0],
/// ]).unwrap();
/// let b = DMatrix::<f64>::from_column_slice(2, 2, &[1.0, 4.0, 3.0, 3.0]);
/// let res = cg(&op, &b, &CgParams::default().with_rtol(1e-12)).unwrap();
/// assert!(res.all_converged());
/// assert!((res.x[(0, 0)] - 1.0).abs() < 1e-12 && (res.x[(1, 0)] - 1.0).abs() < 1e-12);
/// assert!((res.x[(0, 1)] - 1.0).abs() < 1e-12 && (res.x[(1, 1)] - 1.0).abs() < 1e-12);
/// ```
pub fn cg<V, Op>(op: &Op, b: &V, params: &CgParams) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    cg_impl(op, b, None, params, None)
}

/// [`cg`] starting from the initial guess `x0` (the CP-Flow reference starts at `x0 = b`).
/// The initial residual `b − H x0` costs one operator application per system. Like `b`, `x0`
/// must be finite ([`KrylovError::NonFiniteInput`]).
///
/// ```
/// use krylov::{cg_with_initial_guess, CgParams, DenseFaerOperator};
/// use faer::Mat;
/// let op = DenseFaerOperator::new(vec![Mat::<f64>::identity(3, 3) * 2.0]).unwrap();
/// let b = Mat::<f64>::from_fn(3, 1, |i, _| i as f64);
/// let res = cg_with_initial_guess(&op, &b, &b, &CgParams::default()).unwrap();
/// assert_eq!(res.iterations, vec![1]);
/// assert!((res.x[(2, 0)] - 1.0).abs() < 1e-12);
/// ```
pub fn cg_with_initial_guess<V, Op>(
    op: &Op,
    b: &V,
    x0: &V,
    params: &CgParams,
) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    cg_impl(op, b, Some(x0), params, None)
}

/// One iteration of CG as [`cg_with_initial_guess_observed`] reports it, after the solution
/// update `x_i ← x_i + α_i p_i`.
///
/// ```
/// use krylov::{cg_with_initial_guess_observed, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0 (2·I) converges in one step, system 1 in two; then system 0 is frozen.
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![2.0, 0.0; 0.0, 2.0],
///     dmatrix![1.0, 0.0; 0.0, 5.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let x0 = DMatrix::<f64>::zeros(2, 2);
/// let mut steps = Vec::new();
/// cg_with_initial_guess_observed(&op, &b, &x0, &CgParams::default(), |step| {
///     steps.push((step.iteration, step.step_sizes.to_vec()));
///     Ok(())
/// })?;
/// assert_eq!(steps.len(), 2);
/// assert_eq!(steps[0].0, 0);
/// assert!((steps[0].1[0] - 0.5).abs() < 1e-15); // α = rᵀr / rᵀHr = 1/2 for 2·I
/// assert_eq!(steps[1].1[0], 0.0); // frozen: no step
/// assert!(steps[1].1[1] > 0.0);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CgStep<'a> {
    /// The iteration, from 0; iteration `k` updated the solution along the argument of the
    /// operator's call `k + 1` (call 0 formed the initial residual `b − H x0`).
    pub iteration: usize,
    /// `α_i` per system: `0` for a system that did not step (frozen or broken down).
    pub step_sizes: &'a [f64],
}

/// [`cg_with_initial_guess`], reporting every iteration's step sizes to `observer`, so that a
/// caller can follow any linear function of the solution through the operator's own calls:
/// the returned solution is `x0 + Σ_k α_k ⊙ p_k`, with `α_k` the step sizes of iteration `k`
/// (per system) and `p_k` the vector passed to the operator's call `k + 1`. The CP-Flow
/// surrogate uses it to accumulate the network's forward tangents of `u` from those of the
/// directions its Hessian-vector products already computed. An error returned by `observer`
/// stops the solve and is returned.
///
/// ```
/// use krylov::{cg_with_initial_guess_observed, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// let op = DenseNalgebraOperator::new(vec![dmatrix![2.0, 1.0; 1.0, 3.0]]).unwrap();
/// let b = DMatrix::<f64>::from_column_slice(2, 1, &[1.0, 2.0]);
/// let mut alphas = Vec::new();
/// let res = cg_with_initial_guess_observed(&op, &b, &b, &CgParams::default(), |step| {
///     alphas.push(step.step_sizes[0]);
///     Ok(())
/// })
/// .unwrap();
/// assert_eq!(alphas.len(), res.iterations[0]);
/// ```
pub fn cg_with_initial_guess_observed<V, Op, F>(
    op: &Op,
    b: &V,
    x0: &V,
    params: &CgParams,
    mut observer: F,
) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
    F: FnMut(&CgStep<'_>) -> Result<(), KrylovError>,
{
    cg_impl(op, b, Some(x0), params, Some(&mut observer))
}

/// What [`cg_impl`] calls after each solution update.
type StepObserver<'o> = dyn FnMut(&CgStep<'_>) -> Result<(), KrylovError> + 'o;

fn cg_impl<V, Op>(
    op: &Op,
    b: &V,
    x0: Option<&V>,
    params: &CgParams,
    mut observer: Option<&mut StepObserver<'_>>,
) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    params.validate()?;
    b.validate()?;
    check_operator_shape("cg: right-hand side vs operator", op, b)?;
    if let Some(x0) = x0 {
        b.check_compatible("cg initial guess", x0)?;
    }
    let n = b.n_systems();
    let max_iters = params
        .max_iters
        .unwrap_or_else(|| default_max_iters(b.system_dim()));
    let global = params.stopping == CgStopping::BatchGlobal;
    let pre = Prepared::new(params.preconditioner, op, b)?;
    let precondition = |r: &V, active: &[bool]| pre.apply(op, r, active);

    let b = b.detached();
    // NaN-propagating norms: a non-finite `b_i` would make the tolerance NaN or Inf (and
    // `inf ≤ inf` would report convergence), so it is refused up front.
    let b_norms = b.norms_inf()?;
    check_finite("cg right-hand side", &b, &b_norms)?;
    // Systems whose ‖b_i‖∞ is far from 1 are solved for `s_i·b_i`, with `s_i` a power of two
    // that brings the norm near 1: CG is linear in `b` and multiplying by a power of two is
    // exact, so the iterates, step sizes and convergence decisions are those of the unscaled
    // system, but the dot products `rᵀz` and `pᵀHp` no longer overflow (‖b‖ ≈ 1e200 in f64)
    // or underflow. Systems with a moderate norm are left alone (`s_i = 1`, no extra pass).
    let scales: Vec<f64> = b_norms
        .iter()
        .map(|&nb| power_of_two_scale(nb, b.unit_roundoff()))
        .collect();
    let rescaled = scales.iter().any(|s| *s != 1.0);
    let b = if rescaled {
        let mut scaled = b;
        scaled.scale_per_system(&scales)?;
        scaled
    } else {
        b
    };
    let tol: Vec<f64> = b_norms
        .iter()
        .zip(&scales)
        .map(|(nb, s)| s * (params.atol + params.rtol * nb))
        .collect();
    let mut applications = vec![0usize; n];
    let mut operator_calls = 0usize;
    let all = vec![true; n];

    let mut r = b.clone();
    let mut x = match x0 {
        Some(x0) => {
            let mut x = x0.detached();
            check_finite("cg initial guess", &x, &x.norms_inf()?)?;
            if rescaled {
                x.scale_per_system(&scales)?;
            }
            let hx = op.apply(&x, &all)?;
            b.check_compatible("operator output", &hx)?;
            operator_calls += 1;
            applications.iter_mut().for_each(|a| *a += 1);
            r.axpby_masked(&vec![1.0; n], &vec![-1.0; n], &hx, &all)?;
            x
        }
        None => b.zeros_like()?,
    };

    let mut reorth = if params.reorthogonalize {
        let mut basis = ResidualBasis::new(pre.inverse_diagonal())?;
        basis.orthogonalize_and_push(&mut r, &all)?;
        Some(basis)
    } else {
        None
    };

    let mut rnorm = r.norms_inf()?;
    let mut converged: Vec<bool> = rnorm
        .iter()
        .zip(&tol)
        .map(|(rn, t)| rn.is_finite() && rn <= t)
        .collect();
    let mut breakdown: Vec<bool> = rnorm.iter().map(|rn| !rn.is_finite()).collect();
    let mut iterations = vec![0usize; n];

    let mut z = precondition(&r, &all)?;
    let mut rz = r.dots(&z)?;
    let mut p = z.clone();
    let ones = vec![1.0; n];

    for iteration in 0..max_iters {
        let running: Vec<bool> = if global {
            if converged.iter().zip(&breakdown).all(|(c, bd)| *c || *bd) {
                break;
            }
            breakdown.iter().map(|bd| !bd).collect()
        } else {
            converged
                .iter()
                .zip(&breakdown)
                .map(|(c, bd)| !c && !bd)
                .collect()
        };
        if !running.iter().any(|a| *a) {
            break;
        }
        let hp = op.apply(&p, &running)?;
        b.check_compatible("operator output", &hp)?;
        operator_calls += 1;
        for (a, run) in applications.iter_mut().zip(&running) {
            *a += usize::from(*run);
        }
        let php = p.dots(&hp)?;
        let mut step = running.clone();
        let mut alpha = vec![0.0; n];
        let mut neg_alpha = vec![0.0; n];
        for i in 0..n {
            if !running[i] {
                continue;
            }
            let a = rz[i] / php[i];
            if php[i] > 0.0 && a.is_finite() {
                alpha[i] = a;
                neg_alpha[i] = -a;
            } else {
                // Cannot continue. Under batch-global stopping an already converged system
                // (typically r_i = 0 exactly) is simply frozen; otherwise it is a breakdown.
                step[i] = false;
                if converged[i] {
                    continue;
                }
                breakdown[i] = true;
            }
        }
        x.axpby_masked(&ones, &alpha, &p, &step)?;
        if let Some(observe) = observer.as_mut() {
            observe(&CgStep {
                iteration,
                step_sizes: &alpha,
            })?;
        }
        r.axpby_masked(&ones, &neg_alpha, &hp, &step)?;
        if let Some(basis) = reorth.as_mut() {
            basis.orthogonalize_and_push(&mut r, &step)?;
        }
        let new_norm = r.norms_inf()?;
        for i in (0..n).filter(|&i| step[i]) {
            iterations[i] += 1;
            rnorm[i] = new_norm[i];
            converged[i] = new_norm[i].is_finite() && new_norm[i] <= tol[i];
            if !new_norm[i].is_finite() {
                breakdown[i] = true;
            }
        }
        z = precondition(&r, &step)?;
        let rz_new = r.dots(&z)?;
        let beta: Vec<f64> = (0..n)
            .map(|i| {
                if step[i] && rz[i] != 0.0 {
                    rz_new[i] / rz[i]
                } else {
                    0.0
                }
            })
            .collect();
        p.axpby_masked(&beta, &ones, &z, &step)?;
        for i in (0..n).filter(|&i| step[i]) {
            rz[i] = rz_new[i];
        }
    }

    if reorth.is_some() {
        let calls = confirm_on_true_residual(
            op,
            &b,
            &x,
            &tol,
            &iterations,
            &mut converged,
            &mut rnorm,
            &mut applications,
        )?;
        operator_calls += calls;
    }

    if rescaled {
        let inverse: Vec<f64> = scales.iter().map(|s| 1.0 / s).collect();
        x.scale_per_system(&inverse)?;
        for (rn, s) in rnorm.iter_mut().zip(&scales) {
            *rn /= s;
        }
    }

    Ok(CgResult {
        x,
        iterations,
        residual_norms: rnorm,
        converged,
        breakdown,
        applications,
        operator_calls,
    })
}
