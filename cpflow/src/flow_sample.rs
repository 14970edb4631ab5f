//! Inverting the flow and sampling from it.

use candle_core::Tensor;
use convex_opt::InversionResult;
use rand::Rng;

use crate::block_inverse::{InverseParams, InverseSolver};
use crate::error::{CpflowError, Result};
use crate::flow::{Flow, Layer, map_row_chunks, parallel_chunk_rows};
use crate::non_finite_rows::non_finite_rows;

/// Convergence report of a flow inversion: one entry per CP-Flow block (in the order the
/// blocks were inverted, i.e. last block first; none for an inversion of 0 points, which
/// has nothing to solve), plus the per-sample verdict.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::tabular(2, 2, pot).with_float(cpflow::FloatType::F64), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2], [-0.3, 0.8]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let (z, _logdet) = flow.transform(&x)?;
/// let report = flow.inverse(&z)?.report;
/// assert_eq!(report.blocks.len(), 2); // two CP-Flow blocks (ActNorms invert in closed form)
/// assert_eq!(report.converged, [true, true, true]);
/// assert!(report.all_converged() && report.num_failed() == 0);
/// // Default f64 tolerance: ‖∇Φ(x) − y‖∞ ≤ 1e-9 in every block.
/// assert!(report.max_residual() <= 1e-9 && report.max_iterations() > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct InverseReport {
    /// Per block: iterations, residuals `‖∇Φ(x_i) − y_i‖∞` and convergence flags.
    pub blocks: Vec<InversionResult>,
    /// Per sample: every block converged for it, and its final point is finite.
    pub converged: Vec<bool>,
}

/// Rows per chunk of a flow inversion on the CPU with a per-sample solver. The rows of a
/// batch are independent problems (Newton–CG and batched L-BFGS give each the same iterates
/// whatever else is in its batch), so the chunks run in parallel on rayon's pool (as the
/// evaluation passes do, [`crate::Flow::log_prob_exact`]): the matrix products of a tabular
/// flow are too small to split ([`crate::cpu_threads::GEMM_THREADING_THRESHOLD`]), and
/// without chunks an inversion ran on one core. Chunks smaller than the batch also leave
/// fewer finished rows in each solver's working set.
pub const INVERSE_CHUNK: usize = 256;

impl InverseReport {
    /// An empty report for `n` samples (every sample converged so far).
    pub(crate) fn new(n: usize) -> Self {
        InverseReport {
            blocks: Vec::new(),
            converged: vec![true; n],
        }
    }

    /// The reports of consecutive row chunks of one inversion, in row order, as one report.
    pub(crate) fn concat(parts: Vec<InverseReport>) -> Result<Self> {
        let blocks = parts.first().map_or(0, |p| p.blocks.len());
        let mut converged = Vec::new();
        let mut per_block: Vec<Vec<InversionResult>> = (0..blocks).map(|_| Vec::new()).collect();
        for p in parts {
            converged.extend(p.converged);
            for (k, b) in p.blocks.into_iter().enumerate() {
                per_block[k].push(b);
            }
        }
        let blocks = per_block
            .into_iter()
            .map(InversionResult::concat)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(InverseReport { blocks, converged })
    }

    /// Records one block's inversion and returns its solution.
    pub(crate) fn record(&mut self, res: InversionResult) -> Tensor {
        self.converged
            .iter_mut()
            .zip(&res.converged)
            .for_each(|(c, r)| *c &= *r);
        let x = res.x.clone();
        self.blocks.push(res);
        x
    }

    /// Marks as unconverged every sample whose final point `x` (rows of any shape) holds a
    /// non-finite value: a layer without a solver (ActNorm, logit) can overflow, and a solver's
    /// residual test says nothing about what follows it.
    pub(crate) fn mark_non_finite_rows(&mut self, x: &Tensor) -> Result<()> {
        for (c, bad) in self.converged.iter_mut().zip(non_finite_rows(x)?) {
            *c &= !bad;
        }
        Ok(())
    }

    /// Logs a warning naming `what` when some sample did not converge.
    pub(crate) fn warn_if_unconverged(&self, what: &str) {
        let failed = self.converged.iter().filter(|c| !**c).count();
        if failed > 0 {
            tracing::warn!(
                failed,
                total = self.converged.len(),
                "{what} inversion: some samples did not converge (see the report)"
            );
        }
    }

    /// Whether every sample converged in every block.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|c| *c)
    }

    /// Number of samples that failed in at least one block.
    pub fn num_failed(&self) -> usize {
        self.converged.iter().filter(|c| !**c).count()
    }

    /// Largest residual over blocks and samples.
    pub fn max_residual(&self) -> f64 {
        self.blocks
            .iter()
            .map(InversionResult::max_residual)
            .fold(0.0, f64::max)
    }

    /// Largest number of solver iterations over blocks and samples.
    pub fn max_iterations(&self) -> usize {
        self.blocks
            .iter()
            .flat_map(|b| b.iterations.iter().copied())
            .max()
            .unwrap_or(0)
    }
}

/// Samples (or inverted points) with their convergence report.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::tabular(2, 2, pot).with_float(cpflow::FloatType::F64), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2], [-0.3, 0.8]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let (z, _logdet) = flow.transform(&x)?;
/// let inv = flow.inverse(&z)?;
/// assert!(inv.report.all_converged());
/// let err = (inv.x - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-6, "round trip error {err}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FlowInverse {
    /// The points `x = f⁻¹(z)`, `(B, d)`, detached. Rows whose `report.converged` is false
    /// are the solver's last iterates, not solutions.
    pub x: Tensor,
    /// The convergence report.
    pub report: InverseReport,
}

impl Flow {
    /// `x = f⁻¹(z)` with the default [`InverseParams`] (Newton–CG, tolerance per dtype).
    pub fn inverse(&self, z: &Tensor) -> Result<FlowInverse> {
        self.inverse_given_opt(z, None, &InverseParams::default())
    }

    /// `x = f⁻¹(z)` with explicit solver parameters. On the CPU the per-sample solvers invert
    /// row chunks of [`INVERSE_CHUNK`] rows in parallel (the result does not depend on it);
    /// [`crate::InverseSolver::LbfgsFlat`] solves the whole batch as one problem.
    pub fn inverse_with(&self, z: &Tensor, params: &InverseParams) -> Result<FlowInverse> {
        self.inverse_given_opt(z, None, params)
    }

    /// [`Flow::inverse`] for a conditional flow: row `i` of `z` is inverted with context row
    /// `i` of `ctx` (default solver parameters).
    pub fn inverse_given(&self, z: &Tensor, ctx: &Tensor) -> Result<FlowInverse> {
        self.inverse_given_opt(z, Some(ctx), &InverseParams::default())
    }

    /// [`Flow::inverse_with`] for a conditional flow: row `i` of `z` is inverted with context
    /// row `i` of `ctx`, by the solver `params.solver` names (each of them handles per-row
    /// contexts).
    pub fn inverse_given_with(
        &self,
        z: &Tensor,
        ctx: &Tensor,
        params: &InverseParams,
    ) -> Result<FlowInverse> {
        self.inverse_given_opt(z, Some(ctx), params)
    }

    pub(crate) fn inverse_given_opt(
        &self,
        z: &Tensor,
        ctx: Option<&Tensor>,
        params: &InverseParams,
    ) -> Result<FlowInverse> {
        self.ensure_initialized()?;
        let (z, ctx) = self.check_rows(z, ctx)?;
        let n = z.dim(0)?;
        if n == 0 {
            let report = InverseReport::new(0);
            return Ok(FlowInverse { x: z, report });
        }
        // Chunks of [`INVERSE_CHUNK`] on the CPU with a per-sample solver; the whole batch for
        // [`InverseSolver::LbfgsFlat`], whose single problem couples the rows of its batch.
        let rows = match params.solver {
            InverseSolver::LbfgsFlat => n.max(1),
            InverseSolver::NewtonCg | InverseSolver::LbfgsBatched => {
                parallel_chunk_rows(&z, INVERSE_CHUNK)?
            }
        };
        let (x, mut report) = if rows < n {
            let parts = map_row_chunks(&z, ctx.as_ref(), rows, |_, zc, cc| {
                self.inverse_rows(zc, cc, params)
            })?;
            let (xs, reports): (Vec<Tensor>, Vec<InverseReport>) = parts.into_iter().unzip();
            (Tensor::cat(&xs, 0)?, InverseReport::concat(reports)?)
        } else {
            self.inverse_rows(&z, ctx.as_ref(), params)?
        };
        report.mark_non_finite_rows(&x)?;
        report.warn_if_unconverged("flow");
        Ok(FlowInverse { x, report })
    }

    /// The layers inverted in reverse order for the rows `z` (context rows `ctx`).
    fn inverse_rows(
        &self,
        z: &Tensor,
        ctx: Option<&Tensor>,
        params: &InverseParams,
    ) -> Result<(Tensor, InverseReport)> {
        let mut h = z.detach();
        let mut report = InverseReport::new(z.dim(0)?);
        for l in self.layers().iter().rev() {
            h = match l {
                Layer::ActNorm(a) => a.inverse(&h)?,
                Layer::Cpf(b) => report.record(b.inverse(&h, ctx, params)?),
            };
        }
        Ok((h, report))
    }

    /// Draw `n` samples: `z ~ prior` from the host RNG, then `x = f⁻¹(z)` (default solver
    /// parameters). Check `report` for unconverged samples. `n = 0` gives a `(0, d)` tensor
    /// and an empty report (no blocks, every sample converged).
    ///
    /// ```
    /// # use cpflow::candle::{Device, Tensor};
    /// # use cpflow::{Flow, FlowConfig, PotentialConfig};
    /// # use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
    /// flow.initialize(&Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4]], &Device::Cpu)?)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let s = flow.sample(5, &mut rng)?;
    /// assert_eq!(s.x.dims(), &[5, 2]);
    /// assert!(s.report.all_converged());
    /// let none = flow.sample(0, &mut rng)?;
    /// assert_eq!(none.x.dims(), &[0, 2]);
    /// assert!(none.report.all_converged() && none.report.converged.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<FlowInverse> {
        self.sample_with(n, &InverseParams::default(), rng)
    }

    /// [`Flow::sample`] with explicit solver parameters.
    pub fn sample_with<R: Rng + ?Sized>(
        &self,
        n: usize,
        params: &InverseParams,
        rng: &mut R,
    ) -> Result<FlowInverse> {
        let z = self
            .prior()
            .sample(n, self.dim(), self.dtype(), self.device(), rng)?;
        self.inverse_given_opt(&z, None, params)
    }

    /// [`Flow::sample`] for a conditional flow (`ctx` has one row per sample; default solver
    /// parameters).
    pub fn sample_given<R: Rng + ?Sized>(&self, ctx: &Tensor, rng: &mut R) -> Result<FlowInverse> {
        self.sample_given_with(ctx, &InverseParams::default(), rng)
    }

    /// [`Flow::sample_with`] for a conditional flow (`ctx` has one row per sample).
    pub fn sample_given_with<R: Rng + ?Sized>(
        &self,
        ctx: &Tensor,
        params: &InverseParams,
        rng: &mut R,
    ) -> Result<FlowInverse> {
        // The number of samples is the context's row count: a context that is not a matrix
        // is refused here, naming it, before anything is drawn.
        let Some(cols) = self.context_dim() else {
            return Err(CpflowError::InvalidInput(
                "this flow is unconditional: it takes no context (use `Flow::sample`)".into(),
            ));
        };
        let n = match *ctx.dims() {
            [n, _] => n,
            ref dims => {
                return Err(CpflowError::InvalidInput(format!(
                    "context must be a (samples, {cols}) matrix, one row per sample, got \
                     shape {dims:?}"
                )));
            }
        };
        let z = self
            .prior()
            .sample(n, self.dim(), self.dtype(), self.device(), rng)?;
        self.inverse_given_opt(&z, Some(ctx), params)
    }

    /// Samples and their exact log-density `log p(x)` (evaluated at the returned `x` with the
    /// dense log-det, [`Flow::log_prob_exact`]); default solver parameters. `n = 0` gives a
    /// `(0, d)` sample and a `(0,)` log-density.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{Flow, FlowConfig, FlowRng, FloatType, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64), &Device::Cpu)?;
    /// flow.initialize(&Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?)?;
    /// let (s, logp) = flow.sample_and_log_prob(4, &mut FlowRng::seed_from_u64(0))?;
    /// assert_eq!((s.x.dims(), logp.dims()), (&[4, 2][..], &[4][..]));
    /// assert_eq!(logp.to_vec1::<f64>()?, flow.log_prob(&s.x)?.to_vec1::<f64>()?);
    /// let (none, logp) = flow.sample_and_log_prob(0, &mut FlowRng::seed_from_u64(0))?;
    /// assert_eq!((none.x.dims(), logp.dims()), (&[0, 2][..], &[0][..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn sample_and_log_prob<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<(FlowInverse, Tensor)> {
        self.sample_and_log_prob_with(n, &InverseParams::default(), rng)
    }

    /// [`Flow::sample_and_log_prob`] with explicit solver parameters (as
    /// [`Flow::sample_with`]).
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{Flow, FlowConfig, FlowRng, FloatType, InverseParams, InverseSolver, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64), &Device::Cpu)?;
    /// flow.initialize(&Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?)?;
    /// let params = InverseParams { solver: InverseSolver::LbfgsBatched, ..Default::default() };
    /// let (s, logp) = flow.sample_and_log_prob_with(3, &params, &mut FlowRng::seed_from_u64(0))?;
    /// assert!(s.report.all_converged());
    /// // The same samples as `sample_with` draws from the same stream.
    /// let again = flow.sample_with(3, &params, &mut FlowRng::seed_from_u64(0))?;
    /// assert_eq!(s.x.to_vec2::<f64>()?, again.x.to_vec2::<f64>()?);
    /// assert_eq!(logp.to_vec1::<f64>()?, flow.log_prob_exact(&again.x)?.to_vec1::<f64>()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sample_and_log_prob_with<R: Rng + ?Sized>(
        &self,
        n: usize,
        params: &InverseParams,
        rng: &mut R,
    ) -> Result<(FlowInverse, Tensor)> {
        let s = self.sample_with(n, params, rng)?;
        let lp = self.log_prob_exact(&s.x)?;
        Ok((s, lp))
    }

    /// [`Flow::sample_and_log_prob`] for a conditional flow: one sample per row of `ctx`, and
    /// its exact conditional log-density `log p(x | c)` ([`Flow::log_prob_exact_given`] at the
    /// returned `x`); default solver parameters. The samples are those
    /// [`Flow::sample_given`] draws from the same stream.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{Flow, FlowConfig, FlowRng, FloatType, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Picnn(cpflow::icnn::PicnnConfig {
    ///     dim: 2, context_dim: 1, width: 4, depth: 2, ..Default::default()
    /// });
    /// let flow = Flow::new(FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64), &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?;
    /// let c = Tensor::new(&[[0.0f64], [1.0], [-1.0]], &Device::Cpu)?;
    /// flow.initialize_given(&x, &c)?;
    /// let (s, logp) = flow.sample_and_log_prob_given(&c, &mut FlowRng::seed_from_u64(0))?;
    /// assert_eq!((s.x.dims(), logp.dims()), (&[3, 2][..], &[3][..]));
    /// assert_eq!(logp.to_vec1::<f64>()?, flow.log_prob_exact_given(&s.x, &c)?.to_vec1::<f64>()?);
    /// let again = flow.sample_given(&c, &mut FlowRng::seed_from_u64(0))?;
    /// assert_eq!(s.x.to_vec2::<f64>()?, again.x.to_vec2::<f64>()?);
    /// // An unconditional flow takes no context.
    /// let icnn3 = cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() };
    /// let plain = Flow::new(FlowConfig::tabular(2, 1, PotentialConfig::Icnn3(icnn3)), &Device::Cpu)?;
    /// assert!(plain.sample_and_log_prob_given(&c, &mut FlowRng::seed_from_u64(0)).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn sample_and_log_prob_given<R: Rng + ?Sized>(
        &self,
        ctx: &Tensor,
        rng: &mut R,
    ) -> Result<(FlowInverse, Tensor)> {
        self.sample_and_log_prob_given_with(ctx, &InverseParams::default(), rng)
    }

    /// [`Flow::sample_and_log_prob_given`] with explicit solver parameters (as
    /// [`Flow::sample_given_with`]).
    pub fn sample_and_log_prob_given_with<R: Rng + ?Sized>(
        &self,
        ctx: &Tensor,
        params: &InverseParams,
        rng: &mut R,
    ) -> Result<(FlowInverse, Tensor)> {
        let s = self.sample_given_with(ctx, params, rng)?;
        let lp = self.log_prob_exact_given(&s.x, ctx)?;
        Ok((s, lp))
    }
}
