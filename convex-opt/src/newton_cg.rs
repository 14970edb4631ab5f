//! Batched damped Newton: Newton systems solved by `krylov`'s batched CG from Hessian-vector
//! products, with per-sample backtracking.

use std::cell::RefCell;

use candle_core::Tensor;
use krylov::{BatchOperator, CgParams, KrylovError, cg};

use crate::batch::{
    Collector, TrialPoints, column, objective_from, row_dots_host, row_inf_norms, scatter_rows,
    select_rows, setup, where_rows,
};
use crate::rows::RowView;
use crate::working_rows::{StartRows, WorkingRows};
use crate::{
    BatchedPotential, ConvexOptError, InversionOptions, InversionResult, SecondOrderModel,
    SolverStats, Termination,
};

/// Parameters of [`invert_newton_cg`].
///
/// ```
/// use convex_opt::{invert_newton_cg, ConvexOptError, InversionOptions, NewtonCgParams};
/// # use candle_core::{DType, Device, Tensor};
/// # use convex_opt::QuadraticPotential;
/// # use nalgebra::DMatrix;
/// // Φ(x) = ½ xᵀA x with A = [[2, 1], [1, 3]]: the inverse of ∇Φ is x = A⁻¹y.
/// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [-3.0, 0.5]], &Device::Cpu)?;
/// // CG limited to one iteration per Newton system: inexact Newton steps, still converging.
/// let params = NewtonCgParams::default().with_cg_max_iterations(1).with_max_backtracks(10);
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &params)?;
/// assert!(res.all_converged());
/// let err = (res.x - pot.solve(&y)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-8);
/// // The forcing term must lie in (0, 1).
/// let bad = NewtonCgParams::default().with_forcing_max(1.0);
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &bad);
/// assert!(matches!(res, Err(ConvexOptError::InvalidParameter(_))));
/// # Ok::<(), ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NewtonCgParams {
    /// Armijo constant of the backtracking line search (default `1e-4`).
    pub c1: f64,
    /// Step halvings (at most) before a sample is declared stalled (default 30).
    pub max_backtracks: usize,
    /// CG iterations per Newton system; `None` (default): krylov's default `2d + 10`.
    pub cg_max_iterations: Option<usize>,
    /// Upper bound of the forcing term: CG stops when
    /// `‖H p + g‖∞ ≤ min(forcing_max, √‖g‖∞)·‖g‖∞` (default 0.5).
    pub forcing_max: f64,
    /// When the active samples are at most this fraction of the working set, the working set is
    /// compacted to them (default 0.5; 0 disables). This saves the Hessian-vector products of
    /// finished rows, which the cached second-order model otherwise computes with the batch.
    pub compaction_threshold: f64,
}

impl Default for NewtonCgParams {
    fn default() -> Self {
        Self {
            c1: 1e-4,
            max_backtracks: 30,
            cg_max_iterations: None,
            forcing_max: 0.5,
            compaction_threshold: 0.5,
        }
    }
}

impl NewtonCgParams {
    /// Sets the Armijo constant.
    pub fn with_c1(mut self, c1: f64) -> Self {
        self.c1 = c1;
        self
    }
    /// Sets the maximum number of step halvings.
    pub fn with_max_backtracks(mut self, n: usize) -> Self {
        self.max_backtracks = n;
        self
    }
    /// Sets the CG iteration limit per Newton system.
    pub fn with_cg_max_iterations(mut self, n: usize) -> Self {
        self.cg_max_iterations = Some(n);
        self
    }
    /// Sets the upper bound of the forcing term.
    pub fn with_forcing_max(mut self, eta: f64) -> Self {
        self.forcing_max = eta;
        self
    }
    /// Sets the working-set compaction threshold (0 disables compaction).
    pub fn with_compaction_threshold(mut self, f: f64) -> Self {
        self.compaction_threshold = f;
        self
    }

    fn validate(&self) -> Result<(), ConvexOptError> {
        if !(0.0 < self.c1 && self.c1 < 0.5)
            || self.max_backtracks == 0
            || self.cg_max_iterations == Some(0)
            || !(0.0 < self.forcing_max && self.forcing_max < 1.0)
            || !(0.0..=1.0).contains(&self.compaction_threshold)
        {
            return Err(ConvexOptError::InvalidParameter(format!(
                "NewtonCgParams: need 0 < c1 < 0.5, max_backtracks ≥ 1, cg_max_iterations ≥ 1, \
                 0 < forcing_max < 1, compaction_threshold in [0, 1]; got {self:?}"
            )));
        }
        Ok(())
    }
}

/// The Hessian of a [`SecondOrderModel`] as a krylov operator. A failure of the potential is
/// stashed so that it can be returned as itself rather than as a krylov string error.
struct HessianOperator<'m, 'a> {
    model: &'m SecondOrderModel<'a>,
    failure: RefCell<Option<ConvexOptError>>,
}

impl BatchOperator<Tensor> for HessianOperator<'_, '_> {
    fn apply(&self, x: &Tensor, _active: &[bool]) -> Result<Tensor, KrylovError> {
        // The cached model evaluates the whole working set; inactive rows are ignored by CG.
        self.model.hvp(x).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            KrylovError::operator(HvpFailed)
        })
    }
}

/// Placeholder carried through krylov while the potential's own error waits in
/// [`HessianOperator::failure`]; the solver returns that error instead.
#[derive(Debug, thiserror::Error)]
#[error("the potential's Hessian-vector product failed")]
struct HvpFailed;

/// Solves `∇Φ(x_i) = y_i` for every row of `y` by damped Newton on `Φ(x) − yᵀx`: the Newton
/// systems `∇²Φ(x_i) p_i = −g_i` are solved together by `krylov`'s batched CG (per-system
/// stopping with forcing term `min(0.5, √‖g_i‖∞)`), from the potential's Hessian-vector
/// products ([`BatchedPotential::second_order`]); each sample then backtracks on its own
/// (Armijo, quadratic interpolation) and stops on its own tolerance.
///
/// Requires Hessian-vector products (`BatchedPotential::hvp` or an overridden `second_order`),
/// and `∇²Φ ≻ 0` (strong convexity) for CG. Works in the dtype and on the device of `y`.
/// Near the solution the change of `Φ(x) − yᵀx` drops below its rounding error (which can be
/// far larger than `eps·|f|`, since `f` is a difference of large sums); when the value changes by
/// less than `1e-6·(|Φ(x)| + |xᵀy|)` (`1e-3` in `f32`), a step is also accepted if it decreases
/// the residual `‖g‖₂` by the Armijo fraction `1 − c₁t` (gradients stay accurate there). A
/// sample for which no step is accepted after `max_backtracks` reductions stops and is reported
/// as not converged.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{invert_newton_cg, FnPotential, InversionOptions, NewtonCgParams};
/// // Φ(x) = Σ_j cosh(x_j) + ½‖x‖²: ∇Φ(x) = sinh(x) + x, ∇²Φ(x) = diag(cosh(x) + 1).
/// let pot = FnPotential::new(|x: &Tensor| {
///     let (e, ei) = (x.exp()?, x.neg()?.exp()?);
///     let v = (((&e + &ei)? * 0.5)? + (x.sqr()? * 0.5)?)?.sum(1)?;
///     Ok((v, (((e - ei)? * 0.5)? + x)?))
/// })
/// .with_hvp(|x: &Tensor, v: &Tensor| {
///     let c = (((x.exp()? + x.neg()?.exp()?)? * 0.5)? + 1.0)?;
///     c * v
/// });
/// let y = Tensor::new(&[[0.5f64, -2.0, 3.0], [0.0, 1.0, -1.0]], &Device::Cpu)?;
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &NewtonCgParams::default())?;
/// assert!(res.all_converged() && res.max_residual() <= 1e-9);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
pub fn invert_newton_cg<P: BatchedPotential + ?Sized>(
    potential: &P,
    y: &Tensor,
    options: &InversionOptions,
    params: &NewtonCgParams,
) -> Result<InversionResult, ConvexOptError> {
    // The solver is compiled once, for `dyn BatchedPotential`, not once per potential type.
    invert_newton_cg_dyn(&potential, y, options, params)
}

fn invert_newton_cg_dyn(
    potential: &dyn BatchedPotential,
    y: &Tensor,
    options: &InversionOptions,
    params: &NewtonCgParams,
) -> Result<InversionResult, ConvexOptError> {
    params.validate()?;
    let setup = setup(potential, y, options)?;
    let mut stats = SolverStats::default();
    let mut out = Collector::new(&setup);
    if setup.n == 0 {
        return out.finish(&setup.y, stats);
    }
    let mut cg_params = CgParams::default()
        .with_atol(1.0)
        .with_rtol(0.0)
        .with_confirm_with_true_residual(false);
    if let Some(m) = params.cg_max_iterations {
        cg_params = cg_params.with_max_iters(m);
    }

    let first = potential.second_order(&setup.x0)?;
    stats.gradient_calls += 1;
    stats.gradient_rows += setup.n;
    let start = objective_from(first.value(), first.gradient(), &setup.x0, &setup.y)?;
    let mut ws = WorkingRows::start(setup.x0.clone(), setup.y.clone(), start, ())?;
    let mut first_model = Some(first);
    // Rows that are not finite at the start stop there (NonFinite, x left at x0); the others
    // are solved as a batch without them.
    match ws.stop_non_finite_start(&mut out)? {
        StartRows::AllFinite => {}
        StartRows::NoneLeft => return out.finish(&setup.y, stats),
        // The model was built for the whole batch; the first iteration rebuilds it.
        StartRows::Dropped => first_model = None,
    }

    // One pass per working set: a compaction starts the next one. The potential restricted to
    // the working set (per-row data follows, `BatchedPotential::select_rows`) lives for the
    // pass, and so can the second-order models it hands out.
    'working_sets: loop {
        let work = RowView::new(potential, &ws.rows, setup.n, y.device())?;
        let mut model = first_model.take();
        loop {
            let active = out.update_status(&ws.rows, &ws.gnorm, setup.max_iterations);
            if !active.contains(&true) {
                out.store(&ws.rows, &ws.x, &vec![true; ws.len()])?;
                break 'working_sets;
            }
            if ws.compact_if_sparse(&mut out, &active, params.compaction_threshold)? {
                stats.compactions += 1;
                continue 'working_sets;
            }
            stats.outer_iterations += 1;
            let current = match model.take() {
                Some(m) => m,
                None => {
                    stats.gradient_calls += 1;
                    stats.gradient_rows += ws.len();
                    work.second_order(&ws.x)?
                }
            };
            let step = newton_step(&current, &ws.g, &ws.gnorm, &active, params, &cg_params)?;
            stats.hvp_calls += step.operator_calls;
            stats.hvp_rows += step.operator_calls * ws.len();
            let (p, dphi0) = (step.p, step.dphi0);
            // Rows whose Hessian curves downwards along the gradient, or whose Hessian-vector
            // product is not finite, stop here (their x is the last iterate): no descent
            // method can be trusted on them.
            let mut active = active;
            for (j, &r) in ws.rows.iter().enumerate() {
                let reason = if step.non_finite[j] {
                    Termination::NonFinite
                } else if step.not_convex[j] {
                    Termination::NotConvex
                } else {
                    continue;
                };
                if active[j] {
                    out.status[r] = Some(reason);
                    active[j] = false;
                }
            }

            // Per-sample backtracking, batched over the rows still searching. A step is
            // accepted on the Armijo condition, or, when the value changes by less than its
            // noise level (near the solution, where rounding errors of f exceed the decrease),
            // when the residual ‖g‖₂ decreases by the same relative amount; gradients stay
            // accurate there.
            let g2 = row_dots_host(&ws.g, &ws.g)?;
            let mut t: Vec<f64> = active.iter().map(|&a| if a { 1.0 } else { 0.0 }).collect();
            // The first round evaluates the whole working set (t = 0 on inactive rows) so that,
            // when every step is accepted, its second-order model serves the next iteration.
            let mut pend: Vec<usize> = (0..ws.len()).collect();
            let mut x_new = ws.x.clone();
            let mut g_new = ws.g.clone();
            let mut f_new = ws.f.clone();
            let mut noise_new = ws.noise.clone();
            let mut gnorm_new = ws.gnorm.clone();
            let mut next_model = None;
            for round in 0..params.max_backtracks {
                if pend.is_empty() {
                    break;
                }
                let ts: Vec<f64> = pend.iter().map(|&j| t[j]).collect();
                let p_sub = select_rows(&p, &pend)?;
                let x_sub =
                    (select_rows(&ws.x, &pend)? + p_sub.broadcast_mul(&column(&ts, &p)?)?)?;
                let y_sub = select_rows(&ws.y, &pend)?;
                stats.gradient_calls += 1;
                stats.gradient_rows += pend.len();
                // Rows of x_sub that overflowed are not evaluated; their objective is NaN.
                let points = TrialPoints::new(&x_sub, &y_sub)?;
                let (ev, trial) = if pend.len() == ws.len() {
                    let trial = work.second_order(points.points())?;
                    let ev = points.objective(trial.value(), trial.gradient(), &y_sub)?;
                    (ev, Some(trial))
                } else {
                    // A subset of the working set (the rows still backtracking).
                    let originals: Vec<usize> = pend.iter().map(|&j| ws.rows[j]).collect();
                    let sub = RowView::new(potential, &originals, setup.n, y.device())?;
                    let trial = sub.second_order(points.points())?;
                    let ev = points.objective(trial.value(), trial.gradient(), &y_sub)?;
                    (ev, None)
                };
                let gn_t = row_inf_norms(&ev.g)?;
                let g2_t = row_dots_host(&ev.g, &ev.g)?;
                let mut take = Vec::new();
                let mut take_local = Vec::new();
                let mut still = Vec::new();
                for (k, &j) in pend.iter().enumerate() {
                    if !active[j] {
                        continue;
                    }
                    let decrease = ev.f[k] - ws.f[j];
                    let armijo = decrease <= params.c1 * t[j] * dphi0[j];
                    let within_noise = decrease.abs() <= ws.noise[j];
                    let residual_progress =
                        g2_t[k].sqrt() <= (1.0 - params.c1 * t[j]) * g2[j].sqrt();
                    let ok = armijo || (within_noise && residual_progress);
                    if ev.f[k].is_finite() && gn_t[k].is_finite() && ok {
                        take.push(j);
                        take_local.push(k);
                        f_new[j] = ev.f[k];
                        noise_new[j] = ev.noise[k];
                        gnorm_new[j] = gn_t[k];
                    } else if within_noise {
                        t[j] *= 0.5;
                        still.push(j);
                    } else {
                        // Minimiser of the quadratic through φ(0), φ'(0), φ(t), kept in
                        // [0.1t, 0.5t].
                        let denom = 2.0 * (decrease - t[j] * dphi0[j]);
                        let cand = if denom > 0.0 && denom.is_finite() {
                            -dphi0[j] * t[j] * t[j] / denom
                        } else {
                            f64::NAN
                        };
                        t[j] = if cand.is_finite() {
                            cand.clamp(0.1 * t[j], 0.5 * t[j])
                        } else {
                            0.5 * t[j]
                        };
                        still.push(j);
                    }
                }
                if round == 0 && still.is_empty() {
                    // Every active row accepted the unit step; inactive rows were evaluated at
                    // t = 0.
                    x_new = x_sub;
                    g_new = ev.g;
                    next_model = trial;
                } else if !take.is_empty() {
                    x_new = scatter_rows(&x_new, &take, &select_rows(&x_sub, &take_local)?)?;
                    g_new = scatter_rows(&g_new, &take, &select_rows(&ev.g, &take_local)?)?;
                }
                pend = still;
            }
            for &j in &pend {
                // No acceptable step even after max_backtracks halvings: rounding floor reached.
                out.status[ws.rows[j]] = Some(Termination::LineSearchFailed);
            }
            for (j, &r) in ws.rows.iter().enumerate() {
                if active[j] {
                    out.iterations[r] += 1;
                }
            }
            drop(current);
            ws.x = x_new;
            ws.g = g_new;
            ws.f = f_new;
            ws.noise = noise_new;
            ws.gnorm = gnorm_new;
            model = next_model;
        }
    }
    out.finish(&setup.y, stats)
}

/// A Newton direction per working row, with its directional derivative `gᵀp` on the host.
struct NewtonStep {
    p: Tensor,
    dphi0: Vec<f64>,
    operator_calls: usize,
    /// Active rows whose CG broke down at its first step on finite curvature: `bᵀHb ≤ 0`
    /// for `b ∝ −g`.
    not_convex: Vec<bool>,
    /// Active rows whose CG broke down at its first step because the Hessian-vector product
    /// was not finite (NaN or ±∞ entries; or `bᵀHb` overflowed).
    non_finite: Vec<bool>,
}

/// Newton directions `H p = −g` at the model `current`, scaled per system so that the absolute
/// CG tolerance 1 is the per-system forcing test `‖H p + g‖∞ ≤ η_i‖g_i‖∞`; zero on inactive
/// rows, steepest descent on rows where CG did not return a descent direction.
fn newton_step(
    current: &SecondOrderModel<'_>,
    g: &Tensor,
    gnorm: &[f64],
    active: &[bool],
    params: &NewtonCgParams,
    cg_params: &CgParams,
) -> Result<NewtonStep, ConvexOptError> {
    let k = active.len();
    // Capped at the dtype's largest value: a gradient below ~1e-205 (f64) would make the
    // scale infinite, and CG refuses a right-hand side with infinite or NaN entries.
    let scale_max = match g.dtype() {
        candle_core::DType::F32 => f32::MAX as f64,
        _ => f64::MAX,
    };
    let scale: Vec<f64> = (0..k)
        .map(|j| {
            if active[j] {
                let eta = params.forcing_max.min(gnorm[j].sqrt());
                (1.0 / (eta * gnorm[j])).min(scale_max)
            } else {
                0.0
            }
        })
        .collect();
    let b = g.broadcast_mul(&column(&scale, g)?)?.neg()?;
    let op = HessianOperator {
        model: current,
        failure: RefCell::new(None),
    };
    let sol = match cg(&op, &b, cg_params) {
        Ok(sol) => sol,
        Err(e) => return Err(op.failure.into_inner().unwrap_or(ConvexOptError::Krylov(e))),
    };
    let inv_scale: Vec<f64> = scale
        .iter()
        .map(|&s| if s > 0.0 { 1.0 / s } else { 0.0 })
        .collect();
    let p = sol.x.broadcast_mul(&column(&inv_scale, g)?)?;
    let mut p = where_rows(active, &p, &p.zeros_like()?)?;
    let mut dphi0 = row_dots_host(g, &p)?;
    let bad: Vec<bool> = (0..k)
        .map(|j| active[j] && (dphi0[j].is_nan() || dphi0[j] >= 0.0))
        .collect();
    if bad.iter().any(|&v| v) {
        p = where_rows(&bad, &g.neg()?, &p)?;
        let gg = row_dots_host(g, g)?;
        for j in 0..k {
            if bad[j] {
                dphi0[j] = -gg[j];
            }
        }
    }
    // CG stopped before its first step on a finite right-hand side: the curvature bᵀHb along
    // b ∝ −g was finite and non-positive, or it was NaN/±∞ (krylov's `non_finite`: the product
    // itself was not finite, or bᵀHb overflowed).
    let stalled = |j: usize| {
        active[j] && sol.breakdown[j] && sol.iterations[j] == 0 && sol.residual_norms[j].is_finite()
    };
    let not_convex = (0..k).map(|j| stalled(j) && !sol.non_finite[j]).collect();
    let non_finite = (0..k).map(|j| stalled(j) && sol.non_finite[j]).collect();
    Ok(NewtonStep {
        p,
        dphi0,
        operator_calls: sol.operator_calls,
        not_convex,
        non_finite,
    })
}
