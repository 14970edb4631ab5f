//! Tensor helpers shared by the batched solvers: per-row reductions, host transfers, input
//! validation and the bookkeeping of which rows are still being solved.

use candle_core::{DType, Device, Tensor};

use crate::options::RESIDUAL_RESOLUTION_ROUNDOFFS;
use crate::{
    BatchedPotential, ConvexOptError, InversionOptions, InversionResult, SolverStats, Termination,
};

/// Per-row dot products of two `(k, d)` tensors, as a `(k, 1)` tensor.
pub(crate) fn row_dots(a: &Tensor, b: &Tensor) -> Result<Tensor, ConvexOptError> {
    Ok((a * b)?.sum_keepdim(1)?)
}

/// A `(k,)` or `(k, 1)` tensor copied to the host as `f64`.
pub(crate) fn to_host(t: &Tensor) -> Result<Vec<f64>, ConvexOptError> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Per-row dot products on the host.
pub(crate) fn row_dots_host(a: &Tensor, b: &Tensor) -> Result<Vec<f64>, ConvexOptError> {
    to_host(&row_dots(a, b)?)
}

/// Per-row ∞-norms on the host: `+∞` for a row holding an infinity, NaN for a row holding a
/// NaN (and no infinity).
///
/// candle's `max` skips a NaN after the first entry (`max([1, NaN, 0]) = 1`), so NaN is
/// detected separately: the row sum of `|a|` is NaN exactly when the row holds a NaN (no
/// cancellation among non-negative terms).
pub(crate) fn row_inf_norms(a: &Tensor) -> Result<Vec<f64>, ConvexOptError> {
    let abs = a.abs()?;
    let max = abs.max_keepdim(1)?;
    let nan_flag = abs.sum_keepdim(1)?;
    let both = to_host(&Tensor::cat(&[&max, &nan_flag], 1)?)?;
    Ok(both
        .chunks_exact(2)
        .map(|mf| inf_norm_of(mf[0], mf[1]))
        .collect())
}

/// A row's `‖·‖∞` from the `max` and the sum of its `|a_j|`: `+∞` where the max is, NaN where
/// the sum is (a NaN in the row), else the max. CUDA's `max` skips every NaN (`fmax` from
/// `−∞`), so a row of NaN only has the max `−∞` there (NaN on the CPU).
fn inf_norm_of(max: f64, abs_sum: f64) -> f64 {
    if abs_sum.is_nan() && max != f64::INFINITY {
        f64::NAN
    } else {
        max
    }
}

/// A `(k, 1)` column with the dtype and device of `like`.
pub(crate) fn column(values: &[f64], like: &Tensor) -> Result<Tensor, ConvexOptError> {
    Ok(
        Tensor::from_vec(values.to_vec(), (values.len(), 1), like.device())?
            .to_dtype(like.dtype())?,
    )
}

/// A `u32` index tensor.
pub(crate) fn index_tensor(rows: &[usize], device: &Device) -> Result<Tensor, ConvexOptError> {
    let idx: Vec<u32> = rows
        .iter()
        .map(|&r| {
            u32::try_from(r).map_err(|_| ConvexOptError::InvalidParameter("batch too large".into()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Tensor::from_vec(idx, rows.len(), device)?)
}

/// Rows `rows` of `t` (a no-op copy when `rows` is every row in order).
pub(crate) fn select_rows(t: &Tensor, rows: &[usize]) -> Result<Tensor, ConvexOptError> {
    let n = t.dim(0)?;
    if rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r) {
        return Ok(t.clone());
    }
    Ok(t.index_select(&index_tensor(rows, t.device())?, 0)?)
}

/// `full` with rows `rows` replaced by the rows of `src` (`(rows.len(), d)`).
pub(crate) fn scatter_rows(
    full: &Tensor,
    rows: &[usize],
    src: &Tensor,
) -> Result<Tensor, ConvexOptError> {
    let n = full.dim(0)?;
    if rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r) {
        return Ok(src.clone());
    }
    if rows.is_empty() {
        return Ok(full.clone());
    }
    let d = full.dim(1)?;
    let idx = index_tensor(rows, full.device())?
        .unsqueeze(1)?
        .broadcast_as((rows.len(), d))?
        .contiguous()?;
    Ok(full.contiguous()?.scatter(&idx, &src.contiguous()?, 0)?)
}

/// `mask ? a : b` row-wise, with `mask` a host slice of length `k`.
pub(crate) fn where_rows(mask: &[bool], a: &Tensor, b: &Tensor) -> Result<Tensor, ConvexOptError> {
    if mask.iter().all(|&m| m) {
        return Ok(a.clone());
    }
    if mask.iter().all(|&m| !m) {
        return Ok(b.clone());
    }
    let m: Vec<u8> = mask.iter().map(|&v| u8::from(v)).collect();
    let m = Tensor::from_vec(m, (mask.len(), 1), a.device())?.broadcast_as(a.shape())?;
    Ok(m.where_cond(a, b)?)
}

/// Validated inputs of an inversion.
pub(crate) struct Setup {
    /// Targets `(n, d)`, detached and contiguous.
    pub y: Tensor,
    /// Initial point `(n, d)`.
    pub x0: Tensor,
    /// Per-sample thresholds.
    pub tolerance: Vec<f64>,
    /// Per-sample resolution of the computed residual ([`residual_resolution`]): a threshold
    /// below it is not certified.
    pub resolution: Vec<f64>,
    /// Batch size.
    pub n: usize,
    /// Dimension.
    pub d: usize,
    /// Max iterations per sample.
    pub max_iterations: usize,
}

/// Checks `y` (shape, dtype against [`BatchedPotential::expected_dtype`], finiteness: a NaN
/// or ±Inf is [`ConvexOptError::NonFiniteRow`] naming the first such row), the options and the
/// initial point (shape, dtype of `y`, finiteness, likewise), and computes the per-sample
/// tolerances.
pub(crate) fn setup<P: BatchedPotential + ?Sized>(
    potential: &P,
    y: &Tensor,
    options: &InversionOptions,
) -> Result<Setup, ConvexOptError> {
    let (n, d) = y.dims2().map_err(|_| ConvexOptError::Shape {
        context: "targets y",
        message: format!("expected a (B, d) tensor, got shape {:?}", y.dims()),
    })?;
    if d == 0 {
        return Err(ConvexOptError::Shape {
            context: "targets y",
            message: "d = 0".into(),
        });
    }
    let (atol, rtol) = options.tolerances(y.dtype())?;
    if let Some(expected) = potential.expected_dtype()
        && expected != y.dtype()
    {
        return Err(ConvexOptError::DTypeMismatch {
            context: "targets y",
            expected,
            found: y.dtype(),
        });
    }
    let y = y.detach().contiguous()?;
    let y_inf = finite_row_inf_norms(&y, "targets y")?;
    let x0 = match &options.x0 {
        None => y.clone(),
        Some(x0) => {
            if x0.dims() != y.dims() {
                return Err(ConvexOptError::Shape {
                    context: "initial point x0",
                    message: format!("x0 has shape {:?}, y has {:?}", x0.dims(), y.dims()),
                });
            }
            if x0.dtype() != y.dtype() {
                return Err(ConvexOptError::DTypeMismatch {
                    context: "initial point x0",
                    expected: y.dtype(),
                    found: x0.dtype(),
                });
            }
            let x0 = x0.detach().to_device(y.device())?.contiguous()?;
            finite_row_inf_norms(&x0, "initial point x0")?;
            x0
        }
    };
    let tolerance = y_inf.iter().map(|yi| atol + rtol * yi).collect();
    let resolution = y_inf
        .iter()
        .map(|yi| residual_resolution(*yi, y.dtype()))
        .collect();
    Ok(Setup {
        y,
        x0,
        tolerance,
        resolution,
        n,
        d,
        max_iterations: options.max_iterations,
    })
}

/// The level below which changes of the per-sample objective are not trusted, relative to
/// `|Φ(x)| + |xᵀy|` (the objective is the difference of these two terms, each a sum of many
/// rounded contributions whose cancellation can make its error far larger than `eps·|f|`).
/// As in Hager & Zhang's approximate Wolfe conditions (`ε = 1e-6` in double precision), steps
/// whose value change is below this level are judged by gradient information instead.
pub(crate) fn value_noise_level(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-6,
        _ => 1e-3,
    }
}

/// The per-sample objective `f_i = Φ(x_i) − x_iᵀy_i` at a batch of points.
pub(crate) struct Objective {
    /// `f_i` on the host.
    pub f: Vec<f64>,
    /// Changes of `f_i` below this level are treated as rounding noise.
    pub noise: Vec<f64>,
    /// `g_i = ∇Φ(x_i) − y_i`, `(k, d)`.
    pub g: Tensor,
}

/// Evaluates the objective and its gradient at the trial points `x`, checking the shapes
/// returned by the potential (see [`TrialPoints`] for rows that are not finite).
pub(crate) fn objective<P: BatchedPotential + ?Sized>(
    potential: &P,
    x: &Tensor,
    y: &Tensor,
    stats: &mut SolverStats,
) -> Result<Objective, ConvexOptError> {
    let trial = TrialPoints::new(x, y)?;
    let (value, grad) = potential.value_and_gradient(trial.points())?;
    stats.gradient_calls += 1;
    stats.gradient_rows += x.dim(0)?;
    trial.objective(&value, &grad, y)
}

/// The objective from a value `(k,)` and gradient `(k, d)` already computed at `x`.
pub(crate) fn objective_from(
    value: &Tensor,
    grad: &Tensor,
    x: &Tensor,
    y: &Tensor,
) -> Result<Objective, ConvexOptError> {
    TrialPoints {
        x: x.clone(),
        xy: row_dots_host(x, y)?,
        non_finite: None,
    }
    .objective(value, grad, y)
}

/// Trial points `x` `(k, d)` of a line search, prepared for the potential. A row that is not
/// finite (the step overflowed) is not passed on: it is replaced by zeros, so that a potential
/// that refuses non-finite input (e.g. one calling `icnn::check_finite`) still evaluates the
/// other rows, and its objective and gradient are NaN, which every line search treats as a
/// step that is too long. Such rows are found from `xᵀy`, which the objective needs anyway
/// (`±∞·y_j` is `±∞` or NaN, so a non-finite row has a non-finite `xᵀy`): no extra pass over
/// `x` on the usual path.
pub(crate) struct TrialPoints {
    /// The points to evaluate (non-finite rows zeroed).
    x: Tensor,
    /// `x_iᵀy_i` on the host, at the original points.
    xy: Vec<f64>,
    /// Which rows were not finite (`None` when all were).
    non_finite: Option<Vec<bool>>,
}

impl TrialPoints {
    /// Prepares `x` `(k, d)` for the targets `y` `(k, d)`.
    pub(crate) fn new(x: &Tensor, y: &Tensor) -> Result<Self, ConvexOptError> {
        let xy = row_dots_host(x, y)?;
        if xy.iter().all(|v| v.is_finite()) {
            return Ok(Self {
                x: x.clone(),
                xy,
                non_finite: None,
            });
        }
        let mask: Vec<bool> = xy.iter().map(|v| !v.is_finite()).collect();
        Ok(Self {
            x: where_rows(&mask, &x.zeros_like()?, x)?,
            xy,
            non_finite: Some(mask),
        })
    }

    /// The points to pass to the potential.
    pub(crate) fn points(&self) -> &Tensor {
        &self.x
    }

    /// The objective from the potential's value `(k,)` and gradient `(k, d)` at
    /// [`Self::points`].
    pub(crate) fn objective(
        &self,
        value: &Tensor,
        grad: &Tensor,
        y: &Tensor,
    ) -> Result<Objective, ConvexOptError> {
        let x = &self.x;
        let k = x.dim(0)?;
        if value.dims() != [k] || grad.dims() != x.dims() {
            return Err(ConvexOptError::Shape {
                context: "potential output",
                message: format!(
                    "for x of shape {:?} the potential returned values {:?} and gradients {:?}",
                    x.dims(),
                    value.dims(),
                    grad.dims()
                ),
            });
        }
        check_output_dtypes(value, grad, x.dtype())?;
        let level = value_noise_level(x.dtype());
        let mut g = (grad - y)?;
        let v = to_host(value)?;
        let mut f: Vec<f64> = v.iter().zip(&self.xy).map(|(a, b)| a - b).collect();
        let mut noise: Vec<f64> = v
            .iter()
            .zip(&self.xy)
            .map(|(a, b)| level * (a.abs() + b.abs()))
            .collect();
        if let Some(mask) = &self.non_finite {
            for (j, _) in mask.iter().enumerate().filter(|(_, bad)| **bad) {
                f[j] = f64::NAN;
                noise[j] = f64::NAN;
            }
            g = where_rows(mask, &g.affine(0.0, f64::NAN)?, &g)?;
        }
        Ok(Objective { f, noise, g })
    }
}

/// Refuses a potential's value or gradient of another dtype than the points `x` it was asked
/// at ([`ConvexOptError::DTypeMismatch`], context `potential value` / `potential gradient`),
/// as a Hessian-vector product of another dtype is refused: an `f32` gradient for `f64`
/// points was cast and used, and its rounding (1e-7 relative) stalled the line searches at
/// the `f64` tolerance (Newton–CG ended `LineSearchFailed`, batched L-BFGS ran its 1,000
/// iterations).
pub(crate) fn check_output_dtypes(
    value: &Tensor,
    grad: &Tensor,
    expected: DType,
) -> Result<(), ConvexOptError> {
    for (context, t) in [("potential value", value), ("potential gradient", grad)] {
        if t.dtype() != expected {
            return Err(ConvexOptError::DTypeMismatch {
                context,
                expected,
                found: t.dtype(),
            });
        }
    }
    Ok(())
}

/// Machine epsilon of a float dtype: krylov's (the same four values).
pub(crate) use krylov::unit_roundoff_of as unit_roundoff;

/// `RESIDUAL_RESOLUTION_ROUNDOFFS · u · max(1, ‖y_i‖∞)` for a sample with target max-norm
/// `y_inf`: below this a computed residual does not certify a tolerance (see
/// [`RESIDUAL_RESOLUTION_ROUNDOFFS`]).
pub(crate) fn residual_resolution(y_inf: f64, dtype: DType) -> f64 {
    RESIDUAL_RESOLUTION_ROUNDOFFS * unit_roundoff(dtype) * y_inf.max(1.0)
}

/// Per-sample results accumulated on the host while rows leave the working set.
pub(crate) struct Collector {
    d: usize,
    x: Vec<f64>,
    pub iterations: Vec<usize>,
    pub residual: Vec<f64>,
    /// `None` while the sample is being solved, then why it stopped.
    pub status: Vec<Option<Termination>>,
    pub tolerance: Vec<f64>,
    /// [`Setup::resolution`].
    resolution: Vec<f64>,
}

impl Collector {
    pub(crate) fn new(setup: &Setup) -> Self {
        Self {
            d: setup.d,
            x: vec![0.0; setup.n * setup.d],
            iterations: vec![0; setup.n],
            residual: vec![f64::INFINITY; setup.n],
            status: vec![None; setup.n],
            tolerance: setup.tolerance.clone(),
            resolution: setup.resolution.clone(),
        }
    }

    /// How sample `r` ends when its computed residual `gn` meets its tolerance:
    /// [`Termination::Converged`], or [`Termination::BelowResolution`] when the tolerance is
    /// below the residual's resolution ([`residual_resolution`]); `None` when `gn` does not
    /// meet it (or is NaN).
    pub(crate) fn reached(&self, r: usize, gn: f64) -> Option<Termination> {
        if gn <= self.tolerance[r] {
            Some(if self.tolerance[r] >= self.resolution[r] {
                Termination::Converged
            } else {
                Termination::BelowResolution
            })
        } else {
            None
        }
    }

    /// Records the residuals `gnorm[j]` of the working rows `rows[j]` and stops the rows that
    /// reached their tolerance or `max_iterations`; returns which working rows are still active.
    pub(crate) fn update_status(
        &mut self,
        rows: &[usize],
        gnorm: &[f64],
        max_iterations: usize,
    ) -> Vec<bool> {
        rows.iter()
            .zip(gnorm)
            .map(|(&r, &gn)| {
                self.residual[r] = gn;
                if self.status[r].is_none() {
                    if let Some(end) = self.reached(r, gn) {
                        self.status[r] = Some(end);
                    } else if self.iterations[r] >= max_iterations {
                        self.status[r] = Some(Termination::MaxIterations);
                    }
                }
                self.status[r].is_none()
            })
            .collect()
    }

    /// Stores the rows `x_work[j]` as the final iterates of the original rows `rows[j]`, for
    /// the `j` where `pick[j]`.
    pub(crate) fn store(
        &mut self,
        rows: &[usize],
        x_work: &Tensor,
        pick: &[bool],
    ) -> Result<(), ConvexOptError> {
        let local: Vec<usize> = (0..rows.len()).filter(|&j| pick[j]).collect();
        if local.is_empty() {
            return Ok(());
        }
        let sel = select_rows(x_work, &local)?;
        let host = sel.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        for (k, &j) in local.iter().enumerate() {
            let r = rows[j];
            self.x[r * self.d..(r + 1) * self.d]
                .copy_from_slice(&host[k * self.d..(k + 1) * self.d]);
        }
        Ok(())
    }

    /// Stops, before the first iteration, the rows of the full batch whose objective `f` or
    /// gradient norm `gnorm` at the initial point `x0` is not finite (e.g. a huge but finite
    /// target the potential overflows on): each is reported as [`Termination::NonFinite`]
    /// (not converged), with its residual `gnorm` and its solution left at the initial point.
    /// Returns the rows that remain, or `None` when every row is finite. The solvers drop the
    /// stopped rows before iterating, so the other rows follow exactly the iterates of a solve
    /// without them.
    pub(crate) fn stop_non_finite_start(
        &mut self,
        x0: &Tensor,
        f: &[f64],
        gnorm: &[f64],
    ) -> Result<Option<Vec<usize>>, ConvexOptError> {
        let bad: Vec<bool> = f
            .iter()
            .zip(gnorm)
            .map(|(f, g)| !(f.is_finite() && g.is_finite()))
            .collect();
        if !bad.iter().any(|&b| b) {
            return Ok(None);
        }
        let all: Vec<usize> = (0..bad.len()).collect();
        self.store(&all, x0, &bad)?;
        for (r, _) in bad.iter().enumerate().filter(|(_, b)| **b) {
            self.status[r] = Some(Termination::NonFinite);
            self.residual[r] = gnorm[r];
        }
        Ok(Some(all.into_iter().filter(|&r| !bad[r]).collect()))
    }

    /// Builds the result tensor (dtype and device of `like`).
    pub(crate) fn finish(
        self,
        like: &Tensor,
        stats: SolverStats,
    ) -> Result<InversionResult, ConvexOptError> {
        let n = self.iterations.len();
        let x = Tensor::from_vec(self.x, (n, self.d), like.device())?.to_dtype(like.dtype())?;
        // The solvers loop until no sample is active, so `None` is not left here; were one left,
        // it would be a sample stopped by the solver's loop limit.
        let termination: Vec<Termination> = self
            .status
            .iter()
            .map(|s| s.unwrap_or(Termination::MaxIterations))
            .collect();
        let converged = termination
            .iter()
            .map(|&t| t == Termination::Converged)
            .collect();
        Ok(InversionResult {
            x,
            iterations: self.iterations,
            residual_inf: self.residual,
            converged,
            tolerance: self.tolerance,
            termination,
            stats,
        })
    }
}

/// The per-row `‖·‖∞` of `t` (`(B, d)`, empty for `B = 0`), or
/// [`ConvexOptError::NonFiniteRow`] naming the first row that holds a NaN or ±Inf.
fn finite_row_inf_norms(t: &Tensor, context: &'static str) -> Result<Vec<f64>, ConvexOptError> {
    if t.dim(0)? == 0 {
        return Ok(Vec::new());
    }
    let norms = row_inf_norms(t)?;
    match norms.iter().position(|v| !v.is_finite()) {
        Some(row) => Err(ConvexOptError::NonFiniteRow { context, row }),
        None => Ok(norms),
    }
}

#[cfg(test)]
mod tests {
    use super::{SolverStats, inf_norm_of, objective};
    use crate::FnPotential;
    use candle_core::{DType, Device, Tensor};

    /// The (max, sum) pairs of rows holding a NaN, as the CPU (`max` NaN or the finite
    /// values' max) and CUDA (`max` of a row of NaN: `−∞`) reduce them, give NaN; `+∞` stays.
    #[test]
    fn rows_with_a_nan_have_a_nan_norm_whatever_their_max() {
        for max in [f64::NAN, 2.0, f64::NEG_INFINITY] {
            assert!(inf_norm_of(max, f64::NAN).is_nan(), "{max}");
        }
        assert_eq!(inf_norm_of(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert_eq!(inf_norm_of(f64::INFINITY, f64::INFINITY), f64::INFINITY);
        assert_eq!(inf_norm_of(2.0, 3.0), 2.0);
    }

    #[test]
    fn non_finite_trial_rows_are_not_evaluated_and_get_a_nan_objective() {
        // Φ = ½‖x‖², refusing non-finite input.
        let pot = FnPotential::new(|x: &Tensor| {
            let v = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            if !v.iter().flatten().all(|e| e.is_finite()) {
                return Err(candle_core::Error::Msg("non-finite input".into()));
            }
            Ok(((x.sqr()?.sum(1)? * 0.5)?, x.clone()))
        });
        for dtype in [DType::F64, DType::F32] {
            let rows = [
                [1.0, 2.0],
                [f64::INFINITY, 0.0],
                [f64::NAN, 1.0],
                [-1.0, 0.5],
            ];
            let x = Tensor::new(&rows, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let y = Tensor::new(
                &[[1.0f64, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
                &Device::Cpu,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
            let mut stats = SolverStats::default();
            // Before the fix: the potential's error.
            let ev = objective(&pot, &x, &y, &mut stats).unwrap();
            assert_eq!(stats.gradient_rows, 4);
            // f = ½‖x‖² − xᵀy on the finite rows, NaN on the others.
            assert_eq!(ev.f[0], 2.5 - 1.0);
            assert_eq!(ev.f[3], 0.625 - 0.5);
            assert!(ev.f[1].is_nan() && ev.f[2].is_nan(), "{:?}", ev.f);
            assert!(ev.noise[1].is_nan() && ev.noise[2].is_nan());
            let g = ev.g.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
            assert_eq!(g[0], vec![0.0, 2.0]);
            assert_eq!(g[3], vec![-1.0, -0.5]);
            assert!(g[1].iter().chain(&g[2]).all(|v| v.is_nan()), "{g:?}");
        }
    }
}
