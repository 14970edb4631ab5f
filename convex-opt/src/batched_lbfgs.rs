//! Batched L-BFGS on candle tensors: one independent L-BFGS run per sample (row), sharing
//! every potential evaluation.

use std::collections::VecDeque;

use candle_core::Tensor;

use crate::batch::{
    Collector, column, objective, row_dots_host, row_inf_norms, select_rows, setup, where_rows,
};
use crate::lbfgs_params::{check_history, check_wolfe};
use crate::rows::RowView;
use crate::wolfe::{WolfeParams, WolfeSearch, WolfeStep};
use crate::working_rows::{RowState, StartRows, WorkingRows};
use crate::{
    BatchedPotential, ConvexOptError, InversionOptions, InversionResult, SolverStats, Termination,
};

/// Parameters of [`invert_lbfgs_batched`].
///
/// ```
/// use convex_opt::{invert_lbfgs_batched, BatchedLbfgsParams, ConvexOptError, InversionOptions};
/// # use candle_core::{DType, Device, Tensor};
/// # use convex_opt::QuadraticPotential;
/// # use nalgebra::DMatrix;
/// // Φ(x) = ½ xᵀA x with A = [[2, 1], [1, 3]]: the inverse of ∇Φ is x = A⁻¹y.
/// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [-3.0, 0.5]], &Device::Cpu)?;
/// let params = BatchedLbfgsParams::default().with_history(5).with_compaction_threshold(0.0);
/// let res = invert_lbfgs_batched(&pot, &y, &InversionOptions::default(), &params)?;
/// assert!(res.all_converged());
/// assert_eq!(res.stats.compactions, 0); // compaction disabled
/// let err = (res.x - pot.solve(&y)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-8);
/// // Invalid Wolfe constants (c₁ ≥ c₂) are refused before any evaluation, naming the field.
/// let bad = params.with_wolfe(0.5, 0.1);
/// let res = invert_lbfgs_batched(&pot, &y, &InversionOptions::default(), &bad);
/// assert!(matches!(res, Err(ConvexOptError::InvalidParameter(m)) if m.contains("c1 = 0.5")));
/// # Ok::<(), ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct BatchedLbfgsParams {
    /// Number of curvature pairs kept per sample (default 10; at least 1).
    pub history: usize,
    /// Sufficient-decrease constant of the Wolfe line search (default `1e-4`; `0 < c1 < c2`).
    pub c1: f64,
    /// Curvature constant of the strong Wolfe conditions (default `0.9`; `c1 < c2 < 1`).
    pub c2: f64,
    /// Potential evaluations allowed per line search (default 25, as PyTorch's `max_ls`; at
    /// least 1).
    pub max_line_search_evals: usize,
    /// When the active samples are at most this fraction of the working set, the working set
    /// (iterates, histories) is compacted to the active rows (default 0.5; 0 disables). Inactive
    /// rows are never evaluated either way; compaction saves the two-loop recursion on them.
    pub compaction_threshold: f64,
}

impl Default for BatchedLbfgsParams {
    fn default() -> Self {
        Self {
            history: 10,
            c1: 1e-4,
            c2: 0.9,
            max_line_search_evals: 25,
            compaction_threshold: 0.5,
        }
    }
}

impl BatchedLbfgsParams {
    /// Sets the number of stored curvature pairs.
    pub fn with_history(mut self, m: usize) -> Self {
        self.history = m;
        self
    }
    /// Sets the Wolfe constants `c₁ < c₂`.
    pub fn with_wolfe(mut self, c1: f64, c2: f64) -> Self {
        self.c1 = c1;
        self.c2 = c2;
        self
    }
    /// Sets the evaluation budget of one line search.
    pub fn with_max_line_search_evals(mut self, n: usize) -> Self {
        self.max_line_search_evals = n;
        self
    }
    /// Sets the working-set compaction threshold (0 disables compaction).
    pub fn with_compaction_threshold(mut self, f: f64) -> Self {
        self.compaction_threshold = f;
        self
    }

    /// Checks the documented ranges; the error names the first field out of range.
    fn validate(&self) -> Result<(), ConvexOptError> {
        check_history("BatchedLbfgsParams", self.history)?;
        check_wolfe("BatchedLbfgsParams", self.c1, self.c2, None)?;
        if self.max_line_search_evals == 0 {
            return Err(ConvexOptError::InvalidParameter(
                "BatchedLbfgsParams.max_line_search_evals = 0: must be ≥ 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.compaction_threshold) {
            return Err(ConvexOptError::InvalidParameter(format!(
                "BatchedLbfgsParams.compaction_threshold = {}: must lie in [0, 1]",
                crate::error::short_float(self.compaction_threshold)
            )));
        }
        Ok(())
    }
}

/// One stored curvature pair for every row of the working set; rows without a valid pair have
/// `rho = 0` and contribute nothing to the two-loop recursion.
struct Pair {
    s: Tensor,
    y: Tensor,
    rho: Tensor,
}

/// The L-BFGS state of the working rows, besides their iterates.
struct Curvature {
    /// The last curvature pairs, oldest first.
    hist: VecDeque<Pair>,
    /// Per row, the initial inverse-Hessian scale `sᵀy/yᵀy` of the two-loop recursion.
    gamma: Vec<f64>,
    /// `fresh[j]`: row j has no curvature information (steepest descent next).
    fresh: Vec<bool>,
}

impl RowState for Curvature {
    fn keep_rows(&mut self, keep: &[usize]) -> Result<(), ConvexOptError> {
        for pair in self.hist.iter_mut() {
            pair.s.keep_rows(keep)?;
            pair.y.keep_rows(keep)?;
            pair.rho.keep_rows(keep)?;
        }
        self.gamma.keep_rows(keep)?;
        self.fresh.keep_rows(keep)
    }
}

/// Solves `∇Φ(x_i) = y_i` for every row of `y` by minimising `Φ(x) − yᵀx` with an independent
/// L-BFGS run per sample: per-sample curvature histories, per-sample strong-Wolfe line searches
/// (batched: each round evaluates the potential once on the rows still searching) and
/// per-sample convergence (converged rows are no longer evaluated).
///
/// The line search (bracketing and zoom with cubic interpolation, Nocedal & Wright Alg. 3.5–3.6)
/// also accepts Hager–Zhang's approximate Wolfe conditions when the value changes by less than
/// `1e-6·(|Φ(x)| + |xᵀy|)` (`1e-3` in `f32`), where function values no longer resolve the
/// decrease but gradients still do. Works in the dtype and on the device of `y`. Samples that do
/// not reach their tolerance are reported in [`InversionResult::converged`]; a sample whose line
/// search finds no acceptable step even along the steepest-descent direction stops (rounding
/// floor reached).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{invert_lbfgs_batched, BatchedLbfgsParams, FnPotential, InversionOptions};
/// // Φ(x) = Σ_j cosh(x_j) + ½‖x‖²: ∇Φ(x) = sinh(x) + x.
/// let pot = FnPotential::new(|x: &Tensor| {
///     let e = x.exp()?;
///     let ei = x.neg()?.exp()?;
///     let v = (((&e + &ei)? * 0.5)? + (x.sqr()? * 0.5)?)?.sum(1)?;
///     let g = (((e - ei)? * 0.5)? + x)?;
///     Ok((v, g))
/// });
/// let y = Tensor::new(&[[0.5f64, -2.0, 3.0], [0.0, 1.0, -1.0]], &Device::Cpu)?;
/// let res = invert_lbfgs_batched(&pot, &y, &InversionOptions::default(), &BatchedLbfgsParams::default())?;
/// assert!(res.all_converged());
/// assert!(res.max_residual() <= 1e-9);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
pub fn invert_lbfgs_batched<P: BatchedPotential + ?Sized>(
    potential: &P,
    y: &Tensor,
    options: &InversionOptions,
    params: &BatchedLbfgsParams,
) -> Result<InversionResult, ConvexOptError> {
    // The solver is compiled once, for `dyn BatchedPotential`, not once per potential type.
    invert_lbfgs_batched_dyn(&potential, y, options, params)
}

fn invert_lbfgs_batched_dyn(
    potential: &dyn BatchedPotential,
    y: &Tensor,
    options: &InversionOptions,
    params: &BatchedLbfgsParams,
) -> Result<InversionResult, ConvexOptError> {
    params.validate()?;
    let setup = setup(potential, y, options)?;
    let mut stats = SolverStats::default();
    let mut out = Collector::new(&setup);
    if setup.n == 0 {
        return out.finish(&setup.y, stats);
    }
    let eps = crate::batch::unit_roundoff(y.dtype());
    let wolfe = WolfeParams {
        c1: params.c1,
        c2: params.c2,
        max_evals: params.max_line_search_evals,
        t_max: 1e10,
    };

    // Working set: original row indices and the state of those rows.
    let start = objective(potential, &setup.x0, &setup.y, &mut stats)?;
    let curvature = Curvature {
        // Not `with_capacity(history)`: a history of `usize::MAX` ("keep every pair") was a
        // capacity-overflow panic, a large one an aborted allocation. One pair per iteration.
        hist: VecDeque::with_capacity(params.history.min(setup.max_iterations).min(64)),
        gamma: vec![1.0; setup.n],
        fresh: vec![true; setup.n],
    };
    let mut ws = WorkingRows::start(setup.x0.clone(), setup.y.clone(), start, curvature)?;
    // Rows that are not finite at the start stop there (NonFinite, x left at x0); the others
    // are solved as a batch without them.
    if ws.stop_non_finite_start(&mut out)? == StartRows::NoneLeft {
        return out.finish(&setup.y, stats);
    }
    // The potential restricted to the working set (per-row data follows,
    // `BatchedPotential::select_rows`); replaced at each compaction.
    let mut work = RowView::new(potential, &ws.rows, setup.n, y.device())?;

    loop {
        // Convergence bookkeeping on the current iterates.
        let mut active = out.update_status(&ws.rows, &ws.gnorm, setup.max_iterations);
        if !active.contains(&true) {
            out.store(&ws.rows, &ws.x, &vec![true; ws.len()])?;
            break;
        }
        if ws.compact_if_sparse(&mut out, &active, params.compaction_threshold)? {
            active = vec![true; ws.len()];
            work = RowView::new(potential, &ws.rows, setup.n, y.device())?;
            stats.compactions += 1;
        }
        let Curvature { hist, gamma, fresh } = &mut ws.extra;
        stats.outer_iterations += 1;

        // Search direction p = −H g (two-loop recursion, all rows at once).
        let mut p = two_loop(&ws.g, hist, gamma)?.neg()?;
        let mut dphi0 = row_dots_host(&ws.g, &p)?;
        let bad: Vec<bool> = (0..ws.rows.len())
            .map(|j| active[j] && (dphi0[j].is_nan() || dphi0[j] >= 0.0))
            .collect();
        if bad.iter().any(|&b| b) {
            // Not a descent direction (lost positive definiteness to rounding): restart the
            // row from steepest descent.
            p = where_rows(&bad, &ws.g.neg()?, &p)?;
            reset_rows(hist, &bad, &ws.g)?;
            let gg = row_dots_host(&ws.g, &ws.g)?;
            for j in 0..ws.rows.len() {
                if bad[j] {
                    dphi0[j] = -gg[j];
                    gamma[j] = 1.0;
                    fresh[j] = true;
                }
            }
        }

        // Per-row line searches, batched over the rows still searching.
        let mut searches: Vec<Option<WolfeSearch>> = (0..ws.rows.len())
            .map(|j| {
                active[j].then(|| {
                    let t0 = if fresh[j] {
                        1.0f64.min(1.0 / ws.gnorm[j].max(f64::MIN_POSITIVE))
                    } else {
                        1.0
                    };
                    WolfeSearch::new(ws.f[j], dphi0[j], t0, ws.noise[j], wolfe)
                })
            })
            .collect();
        let mut accepted = vec![false; ws.rows.len()];
        let mut failed = vec![false; ws.rows.len()];
        let mut x_new = ws.x.clone();
        let mut g_new = ws.g.clone();
        let mut f_new = ws.f.clone();
        let mut noise_new = ws.noise.clone();
        loop {
            let pend: Vec<usize> = (0..ws.rows.len())
                .filter(|&j| searches[j].is_some())
                .collect();
            if pend.is_empty() {
                break;
            }
            let ts: Vec<f64> = pend
                .iter()
                .map(|&j| searches[j].as_ref().map_or(0.0, WolfeSearch::trial))
                .collect();
            let p_sub = select_rows(&p, &pend)?;
            let x_sub = (select_rows(&ws.x, &pend)? + p_sub.broadcast_mul(&column(&ts, &p)?)?)?;
            let y_sub = select_rows(&ws.y, &pend)?;
            let trial = if pend.len() == ws.rows.len() {
                objective(&work, &x_sub, &y_sub, &mut stats)?
            } else {
                // A subset of the working set (the rows still searching).
                let originals: Vec<usize> = pend.iter().map(|&j| ws.rows[j]).collect();
                let sub = RowView::new(potential, &originals, setup.n, y.device())?;
                objective(&sub, &x_sub, &y_sub, &mut stats)?
            };
            let (f_sub, g_sub) = (&trial.f, &trial.g);
            let dphi = row_dots_host(g_sub, &p_sub)?;
            let mut take = Vec::new();
            let mut take_local = Vec::new();
            for (k, &j) in pend.iter().enumerate() {
                let Some(search) = searches[j].as_mut() else {
                    continue;
                };
                match search.update(f_sub[k], dphi[k]) {
                    WolfeStep::Evaluate(_) => {}
                    WolfeStep::Accept => {
                        accepted[j] = true;
                        f_new[j] = f_sub[k];
                        noise_new[j] = trial.noise[k];
                        take.push(j);
                        take_local.push(k);
                        searches[j] = None;
                    }
                    WolfeStep::Fail => {
                        failed[j] = true;
                        searches[j] = None;
                    }
                }
            }
            if !take.is_empty() {
                let xs = select_rows(&x_sub, &take_local)?;
                let gs = select_rows(g_sub, &take_local)?;
                x_new = crate::batch::scatter_rows(&x_new, &take, &xs)?;
                g_new = crate::batch::scatter_rows(&g_new, &take, &gs)?;
            }
        }

        // Curvature pairs from the accepted steps.
        let s = (&x_new - &ws.x)?;
        let yv = (&g_new - &ws.g)?;
        let sy = row_dots_host(&s, &yv)?;
        let yy = row_dots_host(&yv, &yv)?;
        let ss = row_dots_host(&s, &s)?;
        let valid: Vec<bool> = (0..ws.rows.len())
            .map(|j| {
                accepted[j]
                    && sy[j].is_finite()
                    && sy[j] > eps * (ss[j] * yy[j]).sqrt()
                    && sy[j] > 0.0
            })
            .collect();
        let rho: Vec<f64> = (0..ws.rows.len())
            .map(|j| if valid[j] { 1.0 / sy[j] } else { 0.0 })
            .collect();
        let zeros = s.zeros_like()?;
        if valid.iter().any(|&v| v) {
            if hist.len() == params.history {
                hist.pop_front();
            }
            hist.push_back(Pair {
                s: where_rows(&valid, &s, &zeros)?,
                y: where_rows(&valid, &yv, &zeros)?,
                rho: column(&rho, &s)?,
            });
        }
        for j in 0..ws.rows.len() {
            if valid[j] {
                gamma[j] = sy[j] / yy[j];
                fresh[j] = false;
            }
        }
        // Failed searches: restart from steepest descent once; a second failure stops the row.
        let restart: Vec<bool> = (0..ws.rows.len()).map(|j| failed[j] && !fresh[j]).collect();
        for j in 0..ws.rows.len() {
            if failed[j] && fresh[j] {
                out.status[ws.rows[j]] = Some(Termination::LineSearchFailed);
            }
            if restart[j] {
                fresh[j] = true;
                gamma[j] = 1.0;
            }
        }
        if restart.iter().any(|&r| r) {
            reset_rows(hist, &restart, &ws.g)?;
        }
        for (j, &r) in ws.rows.iter().enumerate() {
            if active[j] {
                out.iterations[r] += 1;
            }
        }
        let moved: Vec<usize> = (0..ws.rows.len()).filter(|&j| accepted[j]).collect();
        ws.x = x_new;
        ws.g = g_new;
        ws.f = f_new;
        ws.noise = noise_new;
        if !moved.is_empty() {
            let gn = row_inf_norms(&select_rows(&ws.g, &moved)?)?;
            for (k, &j) in moved.iter().enumerate() {
                ws.gnorm[j] = gn[k];
            }
        }
    }
    out.finish(&setup.y, stats)
}

/// `H g` for the L-BFGS inverse-Hessian approximation of every row (two-loop recursion).
fn two_loop(g: &Tensor, hist: &VecDeque<Pair>, gamma: &[f64]) -> Result<Tensor, ConvexOptError> {
    let mut q = g.clone();
    let mut alphas = Vec::with_capacity(hist.len());
    for pair in hist.iter().rev() {
        let a = (crate::batch::row_dots(&pair.s, &q)? * &pair.rho)?;
        q = (q - pair.y.broadcast_mul(&a)?)?;
        alphas.push(a);
    }
    let mut r = q.broadcast_mul(&column(gamma, g)?)?;
    for (pair, a) in hist.iter().zip(alphas.iter().rev()) {
        let b = (crate::batch::row_dots(&pair.y, &r)? * &pair.rho)?;
        r = (r + pair.s.broadcast_mul(&(a - b)?)?)?;
    }
    Ok(r)
}

/// Forgets the curvature pairs of the rows with `mask[j]` (sets their `rho` to 0).
fn reset_rows(
    hist: &mut VecDeque<Pair>,
    mask: &[bool],
    like: &Tensor,
) -> Result<(), ConvexOptError> {
    let keep: Vec<f64> = mask.iter().map(|&m| if m { 0.0 } else { 1.0 }).collect();
    let keep = column(&keep, like)?;
    for pair in hist.iter_mut() {
        pair.rho = (&pair.rho * &keep)?;
    }
    Ok(())
}
