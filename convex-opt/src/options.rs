//! Options shared by the inversion solvers and the result they return.

use candle_core::{DType, Tensor};

use crate::error::short_float;
use crate::{ConvexOptError, Termination};

/// Default absolute tolerance on `‖∇Φ(x_i) − y_i‖∞` in `f64`.
pub const F64_ABS_TOLERANCE: f64 = 1e-9;
/// Default relative tolerance (times `‖y_i‖∞`, added to the absolute one) in `f64`: none.
pub const F64_REL_TOLERANCE: f64 = 0.0;
/// Default absolute tolerance on `‖∇Φ(x_i) − y_i‖∞` in `f32`.
///
/// A gradient computed in `f32` carries rounding errors of order `1e-6 … 1e-5` relative to
/// the magnitude of its terms (for a deep ICNN: the sum of many layer contributions), so
/// tolerances much below `1e-5·max(1, ‖y‖∞)` cannot be certified in `f32`; one below
/// [`RESIDUAL_RESOLUTION_ROUNDOFFS`]` · 1.2e-7 · max(1, ‖y_i‖∞)` is never reported met
/// ([`Termination::BelowResolution`]).
pub const F32_ABS_TOLERANCE: f64 = 2e-5;
/// Default relative tolerance in `f32` (times `‖y_i‖∞`, added to the absolute one).
pub const F32_REL_TOLERANCE: f64 = 2e-5;

/// The resolution of a computed residual `∇Φ(x_i) − y_i`, in units of `u·max(1, ‖y_i‖∞)`
/// (`u` the machine epsilon of the dtype: f32 `1.2e-7`, f64 `2.2e-16`): a sample whose
/// tolerance is below `RESIDUAL_RESOLUTION_ROUNDOFFS·u·max(1, ‖y_i‖∞)` and whose computed
/// residual meets it ends [`Termination::BelowResolution`], not converged.
///
/// At the solution `∇Φ(x_i) = y_i`, so the gradient's own rounding is at least half an ulp of
/// `‖y_i‖∞` (its output is rounded) plus the roundings of the network's sums: measured (f32,
/// `max_i ‖g₃₂ − g₆₄‖∞ / (u·max(1, ‖∇Φ‖∞))` over 512 points at each of `|x| ≈ 0.1, 1, 10,
/// 100`, same weights) up to 1.33 for an `Icnn2` 64×10 (d = 6; 0.56 at d = 43) and an `Icnn3`
/// 32×5, p99 ≤ 1.05. A computed residual below that level can be rounding alone: in the f32
/// precision audit (`Icnn2` 64×10, d = 6, `|y| ≈ 10`, `abs_tolerance = 1e-6`, `rel = 0`) 61
/// of 64 samples reported `Converged` and 39 of them had an f64 residual above the tolerance
/// (up to 2.46e-6). 2 sits above the measured 1.33; it is a lower bound (a potential whose
/// terms cancel more can err more), not an error bound. The defaults are far above it: f32's
/// `2e-5 + 2e-5·‖y‖∞` is 168·u·(1 + ‖y‖∞); f64's `1e-9` is reached only for
/// `‖y_i‖∞ > 2.2e6`.
pub const RESIDUAL_RESOLUTION_ROUNDOFFS: f64 = 2.0;

/// Options shared by the solvers of `∇Φ(x) = y`.
///
/// Sample `i` is converged when `‖∇Φ(x_i) − y_i‖∞ ≤ abs_tolerance + rel_tolerance·‖y_i‖∞`.
/// Unset tolerances take per-dtype defaults: `1e-9` and `0` in `f64`
/// ([`F64_ABS_TOLERANCE`], [`F64_REL_TOLERANCE`]), `2e-5` and `2e-5` in `f32`
/// ([`F32_ABS_TOLERANCE`], [`F32_REL_TOLERANCE`]). The absolute tolerance must be `> 0`
/// (and both finite, the relative one `≥ 0`): with `abs_tolerance = 0` a row whose target is
/// `y_i = 0` would get the tolerance 0, which its rounded residual never meets, and it would
/// run all `max_iterations` (every solver refuses it, with a
/// [`ConvexOptError::InvalidParameter`]).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{invert_newton_cg, ConvexOptError, InversionOptions, NewtonCgParams, QuadraticPotential};
/// use nalgebra::DMatrix;
/// let opts = InversionOptions::default();
/// assert_eq!(opts.tolerances(DType::F32)?, (2e-5, 2e-5));
/// let opts = opts.with_abs_tolerance(1e-6).with_max_iterations(50);
/// assert_eq!(opts.tolerances(DType::F64)?, (1e-6, 0.0));
/// assert!(matches!(opts.tolerances(DType::U32), Err(ConvexOptError::UnsupportedDType(_))));
/// // A zero absolute tolerance is refused, even with a relative one (a row with y = 0 could
/// // never meet it).
/// let zero = InversionOptions::default().with_abs_tolerance(0.0);
/// assert!(matches!(zero.tolerances(DType::F64), Err(ConvexOptError::InvalidParameter(_))));
/// let pure_rel = zero.with_rel_tolerance(1e-8);
/// assert!(matches!(pure_rel.tolerances(DType::F64), Err(ConvexOptError::InvalidParameter(_))));
/// // An initial point must have the dtype of the targets.
/// let pot = QuadraticPotential::new(&DMatrix::identity(2, 2), None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu)?;
/// let x0 = Tensor::zeros((1, 2), DType::F32, &Device::Cpu)?;
/// let res = invert_newton_cg(&pot, &y, &opts.with_x0(x0), &NewtonCgParams::default());
/// assert!(matches!(res, Err(ConvexOptError::DTypeMismatch { .. })));
/// # Ok::<(), ConvexOptError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InversionOptions {
    /// Absolute tolerance on the ∞-norm residual (finite, `> 0`); `None`: the dtype default.
    pub abs_tolerance: Option<f64>,
    /// Relative tolerance (times `‖y_i‖∞`; finite, `≥ 0`); `None`: the dtype default.
    pub rel_tolerance: Option<f64>,
    /// Maximum number of iterations per sample (default 1000). [`crate::invert_lbfgs_flat`]
    /// also caps its gradient evaluations separately
    /// ([`FlatLbfgsParams::max_evaluations`](crate::FlatLbfgsParams::max_evaluations), by
    /// default `1.25·max_iterations`), so it can stop earlier with
    /// [`Termination::EvaluationBudget`].
    pub max_iterations: usize,
    /// Initial point `(B, d)`, in the dtype of `y` (another dtype is a
    /// [`ConvexOptError::DTypeMismatch`], never cast); `None`: `x₀ = y` (as in the reference
    /// implementation).
    pub x0: Option<Tensor>,
}

impl Default for InversionOptions {
    fn default() -> Self {
        Self {
            abs_tolerance: None,
            rel_tolerance: None,
            max_iterations: 1000,
            x0: None,
        }
    }
}

impl InversionOptions {
    /// Sets the absolute tolerance on `‖∇Φ(x_i) − y_i‖∞`.
    pub fn with_abs_tolerance(mut self, tol: f64) -> Self {
        self.abs_tolerance = Some(tol);
        self
    }

    /// Sets the relative tolerance (multiplies `‖y_i‖∞`).
    pub fn with_rel_tolerance(mut self, tol: f64) -> Self {
        self.rel_tolerance = Some(tol);
        self
    }

    /// Sets the maximum number of iterations per sample.
    pub fn with_max_iterations(mut self, n: usize) -> Self {
        self.max_iterations = n;
        self
    }

    /// Sets the initial point (default `x₀ = y`).
    pub fn with_x0(mut self, x0: Tensor) -> Self {
        self.x0 = Some(x0);
        self
    }

    /// The `(absolute, relative)` tolerances in effect for `dtype`. Errors: a dtype other than
    /// `F32`/`F64` ([`ConvexOptError::UnsupportedDType`]); a tolerance that is not finite or
    /// negative, or an absolute tolerance of 0 ([`ConvexOptError::InvalidParameter`]: a row
    /// with `y_i = 0` would get the tolerance `0 + rel·0 = 0`, which a rounded residual
    /// cannot be expected to meet).
    pub fn tolerances(&self, dtype: DType) -> Result<(f64, f64), ConvexOptError> {
        let (a, r) = match dtype {
            DType::F64 => (F64_ABS_TOLERANCE, F64_REL_TOLERANCE),
            DType::F32 => (F32_ABS_TOLERANCE, F32_REL_TOLERANCE),
            other => return Err(ConvexOptError::UnsupportedDType(other)),
        };
        let a = self.abs_tolerance.unwrap_or(a);
        let r = self.rel_tolerance.unwrap_or(r);
        if !(a.is_finite() && r.is_finite() && a >= 0.0 && r >= 0.0) {
            return Err(ConvexOptError::InvalidParameter(format!(
                "tolerances must be finite and non-negative (abs {}, rel {})",
                short_float(a),
                short_float(r)
            )));
        }
        if a == 0.0 {
            return Err(ConvexOptError::InvalidParameter(format!(
                "InversionOptions.abs_tolerance = 0 (rel {}): the tolerance of sample i is \
                 abs + rel·‖y_i‖∞, so a sample with y_i = 0 could never meet it (its residual \
                 is rounding, not 0) and would run every iteration; use abs_tolerance > 0",
                short_float(r)
            )));
        }
        Ok((a, r))
    }
}

/// Work counters of a solver run (for benchmarks and for judging the working-set compaction).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{invert_newton_cg, InversionOptions, NewtonCgParams, QuadraticPotential};
/// use nalgebra::DMatrix;
/// // Φ(x) = ‖x‖²: Newton solves each row in one step; row 1 starts at its solution x = 0.
/// let a = DMatrix::identity(3, 3) * 2.0;
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0, 3.0], [0.0, 0.0, 0.0]], &Device::Cpu)?;
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &NewtonCgParams::default())?;
/// assert!(res.all_converged());
/// assert_eq!(res.iterations, vec![1, 0]);
/// let s = &res.stats;
/// assert_eq!(s.outer_iterations, 1);
/// assert!(s.hvp_calls >= 1 && s.hvp_rows >= s.hvp_calls);
/// assert!(s.gradient_calls >= 2 && s.gradient_rows >= s.gradient_calls);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SolverStats {
    /// Calls of `value_and_gradient` / `second_order` on the potential.
    pub gradient_calls: usize,
    /// Rows evaluated by those calls, summed.
    pub gradient_rows: usize,
    /// Hessian-vector-product calls.
    pub hvp_calls: usize,
    /// Rows of those calls, summed.
    pub hvp_rows: usize,
    /// Outer iterations of the solver loop (the maximum over samples).
    pub outer_iterations: usize,
    /// Number of working-set compactions (batched solvers).
    pub compactions: usize,
    /// Failed Hager–Zhang line searches redone by Moré–Thuente from the same point
    /// ([`invert_lbfgs_flat`](crate::invert_lbfgs_flat) with its default line search; 0 for the
    /// other solvers).
    pub line_search_fallbacks: usize,
}

/// The solution of `∇Φ(x) = y` for a batch, with per-sample diagnostics.
///
/// A sample with `converged[i] == false` was **not** solved to tolerance; its row of `x` is the
/// last iterate (with [`crate::invert_lbfgs_flat`], the best point its run evaluated),
/// `residual_inf[i]` says how far it is and `termination[i]` why the solver
/// stopped (iteration limit, failed line search, …). `Display` prints a one-line summary:
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{invert_lbfgs_batched, BatchedLbfgsParams, InversionOptions, QuadraticPotential, Termination};
/// use nalgebra::DMatrix;
/// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [0.0, 0.0]], &Device::Cpu)?;
/// let opts = InversionOptions::default().with_max_iterations(1);
/// let res = invert_lbfgs_batched(&pot, &y, &opts, &BatchedLbfgsParams::default())?;
/// // Row 1 starts at its solution x = 0; row 0 needs more than one iteration.
/// assert_eq!(res.termination, vec![Termination::MaxIterations, Termination::Converged]);
/// assert!(res.to_string().starts_with("1 of 2 samples converged"));
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InversionResult {
    /// Solutions `(B, d)`, in the dtype and on the device of `y`.
    pub x: Tensor,
    /// Iterations performed per sample.
    pub iterations: Vec<usize>,
    /// Final `‖∇Φ(x_i) − y_i‖∞` per sample (computed by the solver at the returned `x`).
    pub residual_inf: Vec<f64>,
    /// Per sample: the residual is within `tolerance[i]`.
    pub converged: Vec<bool>,
    /// The per-sample threshold `abs + rel·‖y_i‖∞` that was used.
    pub tolerance: Vec<f64>,
    /// Per sample: why the solver stopped ([`Termination::Converged`] exactly when
    /// `converged[i]`).
    pub termination: Vec<Termination>,
    /// Work counters.
    pub stats: SolverStats,
}

impl InversionResult {
    /// Whether every sample converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|&c| c)
    }

    /// Number of samples that did not converge.
    pub fn num_failed(&self) -> usize {
        self.converged.iter().filter(|&&c| !c).count()
    }

    /// Number of samples that stopped for `reason`.
    pub fn count(&self, reason: Termination) -> usize {
        self.termination.iter().filter(|&&t| t == reason).count()
    }

    /// The largest residual `max_i ‖∇Φ(x_i) − y_i‖∞` (NaN if some residual is NaN).
    pub fn max_residual(&self) -> f64 {
        self.residual_inf.iter().fold(0.0f64, |m, &r| {
            if r.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(r)
            }
        })
    }

    /// The results of independent row blocks of one batch, in row order, as one result: the
    /// per-sample fields and the solutions concatenated, the work counters summed (outer
    /// iterations: the largest). This is how a batch split into chunks that were solved
    /// separately — on several threads, say — reports as one; a per-sample solver
    /// ([`crate::invert_newton_cg`], [`crate::invert_lbfgs_batched`]) gives every sample the
    /// same iterates whatever else is in its batch.
    ///
    /// Errors: no parts, or solutions whose dtype, device or column count differ.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use convex_opt::{invert_newton_cg, InversionOptions, InversionResult, NewtonCgParams, QuadraticPotential};
    /// use nalgebra::DMatrix;
    /// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
    /// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
    /// let y = Tensor::new(&[[1.0f64, 2.0], [0.0, 0.0], [-3.0, 0.5]], &Device::Cpu)?;
    /// let (opts, params) = (InversionOptions::default(), NewtonCgParams::default());
    /// let whole = invert_newton_cg(&pot, &y, &opts, &params)?;
    /// let parts = vec![
    ///     invert_newton_cg(&pot, &y.narrow(0, 0, 1)?, &opts, &params)?,
    ///     invert_newton_cg(&pot, &y.narrow(0, 1, 2)?, &opts, &params)?,
    /// ];
    /// let joined = InversionResult::concat(parts)?;
    /// assert_eq!(joined.iterations, whole.iterations);
    /// assert_eq!(joined.converged, whole.converged);
    /// assert_eq!(joined.x.to_vec2::<f64>()?, whole.x.to_vec2::<f64>()?);
    /// # Ok::<(), convex_opt::ConvexOptError>(())
    /// ```
    pub fn concat(parts: Vec<InversionResult>) -> Result<InversionResult, ConvexOptError> {
        let Some(first) = parts.first() else {
            return Err(ConvexOptError::InvalidParameter(
                "InversionResult::concat needs at least one part".into(),
            ));
        };
        let (dtype, device, cols) = (first.x.dtype(), first.x.device().clone(), first.x.dim(1)?);
        for p in &parts {
            if p.x.dtype() != dtype {
                return Err(ConvexOptError::DTypeMismatch {
                    context: "InversionResult::concat",
                    expected: dtype,
                    found: p.x.dtype(),
                });
            }
            if !p.x.device().same_device(&device) || p.x.dim(1)? != cols {
                return Err(ConvexOptError::Shape {
                    context: "InversionResult::concat",
                    message: format!(
                        "parts must share device and columns: {:?} on {:?} vs (_, {cols}) on {:?}",
                        p.x.dims(),
                        p.x.device(),
                        device
                    ),
                });
            }
        }
        let xs: Vec<&Tensor> = parts.iter().map(|p| &p.x).collect();
        let x = Tensor::cat(&xs, 0)?;
        let mut out = InversionResult {
            x,
            iterations: Vec::new(),
            residual_inf: Vec::new(),
            converged: Vec::new(),
            tolerance: Vec::new(),
            termination: Vec::new(),
            stats: SolverStats::default(),
        };
        for p in parts {
            out.iterations.extend(p.iterations);
            out.residual_inf.extend(p.residual_inf);
            out.converged.extend(p.converged);
            out.tolerance.extend(p.tolerance);
            out.termination.extend(p.termination);
            let (s, q) = (&mut out.stats, p.stats);
            s.gradient_calls += q.gradient_calls;
            s.gradient_rows += q.gradient_rows;
            s.hvp_calls += q.hvp_calls;
            s.hvp_rows += q.hvp_rows;
            s.outer_iterations = s.outer_iterations.max(q.outer_iterations);
            s.compactions += q.compactions;
            s.line_search_fallbacks += q.line_search_fallbacks;
        }
        Ok(out)
    }

    /// Converts into a `Result` that fails unless every sample converged.
    pub fn into_converged(self) -> Result<Self, ConvexOptError> {
        if self.all_converged() {
            Ok(self)
        } else {
            Err(ConvexOptError::NotConverged {
                failed: self.num_failed(),
                total: self.converged.len(),
                max_residual: self.max_residual(),
            })
        }
    }
}

impl std::fmt::Display for InversionResult {
    /// `"k of B samples converged (max residual r); m: iteration limit reached, …"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} samples converged (max residual {:.3e})",
            self.converged.len() - self.num_failed(),
            self.converged.len(),
            self.max_residual()
        )?;
        let mut sep = ";";
        for reason in Termination::ALL {
            let k = self.count(reason);
            if reason != Termination::Converged && k > 0 {
                write!(f, "{sep} {k}: {reason}")?;
                sep = ",";
            }
        }
        Ok(())
    }
}
