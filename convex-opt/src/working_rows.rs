//! The working set of a per-sample solver: the rows still being solved and their state, which
//! shrinks together when rows leave it (non-finite at the start, or finished at a compaction).

use candle_core::Tensor;

use crate::ConvexOptError;
use crate::batch::{Collector, Objective, row_inf_norms, select_rows};

/// Per-row state of a working set: anything indexed by the working rows, which must follow
/// when the working set is narrowed to some of its rows.
pub(crate) trait RowState {
    /// Keeps the rows `keep` (indices into the current rows, increasing) and drops the others.
    fn keep_rows(&mut self, keep: &[usize]) -> Result<(), ConvexOptError>;
}

/// A `(k, …)` tensor of the working rows.
impl RowState for Tensor {
    fn keep_rows(&mut self, keep: &[usize]) -> Result<(), ConvexOptError> {
        *self = select_rows(self, keep)?;
        Ok(())
    }
}

/// A host value per working row.
impl<T: Copy> RowState for Vec<T> {
    fn keep_rows(&mut self, keep: &[usize]) -> Result<(), ConvexOptError> {
        *self = keep.iter().map(|&j| self[j]).collect();
        Ok(())
    }
}

/// No per-row state of the solver's own.
impl RowState for () {
    fn keep_rows(&mut self, _keep: &[usize]) -> Result<(), ConvexOptError> {
        Ok(())
    }
}

/// What [`WorkingRows::stop_non_finite_start`] left to solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartRows {
    /// Every row is finite at the start: nothing changed.
    AllFinite,
    /// Some rows were stopped and dropped from the working set.
    Dropped,
    /// Every row was stopped: nothing is left to solve (the working set is unchanged).
    NoneLeft,
}

/// The rows a per-sample solver is still iterating on: their original indices, iterates,
/// targets and objective, plus the solver's own per-row state `S` (e.g. L-BFGS histories).
/// Row `j` of every field is the original row `rows[j]`.
pub(crate) struct WorkingRows<S = ()> {
    /// Original row index of each working row.
    pub rows: Vec<usize>,
    /// Iterates `(k, d)`.
    pub x: Tensor,
    /// Targets `(k, d)`.
    pub y: Tensor,
    /// Objective gradients `∇Φ(x) − y`, `(k, d)`.
    pub g: Tensor,
    /// Objective values `Φ(x) − xᵀy` on the host.
    pub f: Vec<f64>,
    /// Rounding-noise levels of `f` (see `batch::value_noise_level`).
    pub noise: Vec<f64>,
    /// Residuals `‖g‖∞` on the host.
    pub gnorm: Vec<f64>,
    /// The solver's own per-row state.
    pub extra: S,
}

impl<S: RowState> WorkingRows<S> {
    /// Every row of the batch, at the initial point `x0` with targets `y` and the objective
    /// `start` evaluated there.
    pub(crate) fn start(
        x0: Tensor,
        y: Tensor,
        start: Objective,
        extra: S,
    ) -> Result<Self, ConvexOptError> {
        let gnorm = row_inf_norms(&start.g)?;
        Ok(Self {
            rows: (0..gnorm.len()).collect(),
            x: x0,
            y,
            g: start.g,
            f: start.f,
            noise: start.noise,
            gnorm,
            extra,
        })
    }

    /// Number of working rows.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Stops the rows that are not finite at the start (see
    /// [`Collector::stop_non_finite_start`]) and drops them, so that the others follow exactly
    /// the iterates of a solve without them. Call before the first iteration.
    pub(crate) fn stop_non_finite_start(
        &mut self,
        out: &mut Collector,
    ) -> Result<StartRows, ConvexOptError> {
        match out.stop_non_finite_start(&self.x, &self.f, &self.gnorm)? {
            None => Ok(StartRows::AllFinite),
            Some(keep) if keep.is_empty() => Ok(StartRows::NoneLeft),
            Some(keep) => {
                self.keep_rows(&keep)?;
                Ok(StartRows::Dropped)
            }
        }
    }

    /// When the `active` rows are fewer than all and at most the fraction `threshold` of the
    /// working set (the solvers' `compaction_threshold`), stores the final iterates of the
    /// other rows in `out` and narrows the working set to the active rows. Returns whether it
    /// compacted. The solvers stop before, when no row is active.
    pub(crate) fn compact_if_sparse(
        &mut self,
        out: &mut Collector,
        active: &[bool],
        threshold: f64,
    ) -> Result<bool, ConvexOptError> {
        let n_active = active.iter().filter(|&&a| a).count();
        let sparse = n_active < self.len() && (n_active as f64) <= threshold * self.len() as f64;
        if !sparse {
            return Ok(false);
        }
        let inactive: Vec<bool> = active.iter().map(|a| !a).collect();
        out.store(&self.rows, &self.x, &inactive)?;
        let keep: Vec<usize> = (0..self.len()).filter(|&j| active[j]).collect();
        self.keep_rows(&keep)?;
        Ok(true)
    }
}

impl<S: RowState> RowState for WorkingRows<S> {
    fn keep_rows(&mut self, keep: &[usize]) -> Result<(), ConvexOptError> {
        self.rows.keep_rows(keep)?;
        self.x.keep_rows(keep)?;
        self.y.keep_rows(keep)?;
        self.g.keep_rows(keep)?;
        self.f.keep_rows(keep)?;
        self.noise.keep_rows(keep)?;
        self.gnorm.keep_rows(keep)?;
        self.extra.keep_rows(keep)
    }
}
