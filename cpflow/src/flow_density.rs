//! The flow's log-densities: exact (dense Hessians) and by stochastic Lanczos quadrature.
//!
//! A row that overflows the flow (a point far outside the data) gets a NaN log-det, and so a
//! NaN log-density, in both passes; the other rows of its batch are scored as without it
//! (`non_finite_rows.rs`).

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::config::SlqConfig;
use crate::error::{CpflowError, Result};
use crate::flow::{Flow, SLQ_CHUNK};
use crate::non_finite_rows::or_non_finite_rows;
use crate::rng::FlowRng;
use crate::slq::{SlqLogProb, slq_logdet_block};

impl Flow {
    /// `log p(x)` per row, `(B,)`, detached: the exact log-density, i.e.
    /// [`Flow::log_prob_exact`] (dense Hessians and a host Cholesky per block and row,
    /// affordable for `d` up to a few hundred). For larger `d` use [`Flow::log_prob_slq`],
    /// the stochastic Lanczos estimate. A batch of 0 rows gives a `(0,)` tensor.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{Flow, FlowConfig, FloatType, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64), &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4], [1.0, 0.5]], &Device::Cpu)?;
    /// flow.initialize(&x)?;
    /// let logp = flow.log_prob(&x)?;
    /// assert_eq!(logp.dims(), &[3]);
    /// assert_eq!(logp.to_vec1::<f64>()?, flow.log_prob_exact(&x)?.to_vec1::<f64>()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        self.log_prob_exact(x)
    }

    /// `log p(x)` per row with the exact dense-Hessian log-det (the reference's test-NLL
    /// path), `(B,)`, detached; `(0,)` for a batch of 0 rows. A row that overflows the flow
    /// gets NaN, the other rows their values (see [`Flow::transform`]); a row whose `z`
    /// overflows gets `−∞` from the prior.
    ///
    /// ```
    /// # use cpflow::candle::{Device, Tensor};
    /// # use cpflow::{Flow, FlowConfig, FloatType, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.1f64, 0.2], [0.3, -0.4]], &Device::Cpu)?;
    /// flow.initialize(&x)?;
    /// let nll = flow.log_prob_exact(&x)?.neg()?.mean_all()?.to_scalar::<f64>()?;
    /// assert!(nll.is_finite());
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_prob_exact(&self, x: &Tensor) -> Result<Tensor> {
        self.log_prob_exact_given_opt(x, None)
    }

    /// [`Flow::log_prob_exact`] for a conditional flow.
    pub fn log_prob_exact_given(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.log_prob_exact_given_opt(x, Some(ctx))
    }

    pub(crate) fn log_prob_exact_given_opt(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (z, ld) = self.transform_given_opt(x, ctx)?;
        Ok((self.prior().log_prob(&z)? + ld)?)
    }

    /// `log p(x)` per row with each block's log-det estimated by stochastic Lanczos quadrature
    /// (`params.probes` unit Rademacher probes per sample, `min(params.steps, d)` Lanczos
    /// steps; reference evaluation: 1 probe, 10 steps), with the per-row standard error of the
    /// estimate (NaN with one probe). Detached. A row whose Hessian-vector products are not
    /// finite gets NaN (value and standard error), the other rows the values they get with the
    /// same probes without it; a batch of 0 rows gives empty results.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig, SlqConfig};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 3, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.1f64, 0.2, 0.0], [0.3, -0.4, 1.0]], &Device::Cpu)?;
    /// flow.initialize(&x)?;
    /// let mut rng = FlowRng::seed_from_u64(0);
    /// let slq = flow.log_prob_slq(&x, &SlqConfig { probes: 8, steps: 3 }, &mut rng)?;
    /// let exact = flow.log_prob_exact(&x)?.to_vec1::<f64>()?;
    /// for (b, e) in exact.iter().enumerate() {
    ///     let s = slq.log_prob.to_vec1::<f64>()?[b];
    ///     assert!((s - e).abs() <= 6.0 * slq.std_err[b] + 1e-9);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_prob_slq<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<SlqLogProb> {
        self.log_prob_slq_given_opt(x, None, params, rng)
    }

    /// [`Flow::log_prob_slq`] for a conditional flow.
    pub fn log_prob_slq_given<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        ctx: &Tensor,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<SlqLogProb> {
        self.log_prob_slq_given_opt(x, Some(ctx), params, rng)
    }

    pub(crate) fn log_prob_slq_given_opt<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<SlqLogProb> {
        self.ensure_initialized()?;
        if params.probes == 0 || params.steps == 0 {
            return Err(CpflowError::InvalidConfig(
                "SLQ needs probes ≥ 1 and steps ≥ 1".into(),
            ));
        }
        let (x, ctx) = self.check_rows(x, ctx)?;
        let n = x.dim(0)?;
        if n == 0 {
            return SlqLogProb::empty(&x);
        }
        // One probe stream per chunk, seeded from `rng` in chunk order: the chunks can run in
        // parallel and the estimate stays a function of `rng`'s state alone.
        let seeds: Vec<u64> = (0..n.div_ceil(SLQ_CHUNK)).map(|_| rng.random()).collect();
        let weights = self.host_weights(ctx.as_ref())?;
        let out = self.chunked(&x, ctx.as_ref(), SLQ_CHUNK, |i, xc, cc| {
            let mut r = FlowRng::seed_from_u64(seeds[i]);
            let rows = xc.dim(0)?;
            let mut variance = vec![0.0f64; rows];
            // The bias counts, summed over the blocks (as f64: exact up to 2⁵³).
            let (mut floored, mut early) = (vec![0.0f64; rows], vec![0.0f64; rows]);
            let (z, ld) = self.transform_chunk_with(xc, &weights, |blk, w, h, tolerate| {
                let (z, op) = blk.detached_operator_sharing(h, cc, w)?;
                let tolerate = or_non_finite_rows(tolerate, &z)?;
                let est = slq_logdet_block(&op, h, params, &mut r, &tolerate)?;
                for (i, s) in est.std_err.iter().enumerate() {
                    variance[i] += s * s;
                    floored[i] += est.floored_ritz_values[i] as f64;
                    early[i] += est.premature_breakdowns[i] as f64;
                }
                Ok((z, est.estimate))
            })?;
            let host = |v: Vec<f64>| Tensor::from_vec(v, rows, &Device::Cpu);
            let log_prob = (self.prior().log_prob(&z)? + ld)?;
            Ok(vec![
                log_prob,
                host(variance)?,
                host(floored)?,
                host(early)?,
            ])
        })?;
        let counts = |t: &Tensor| -> Result<Vec<usize>> {
            Ok(t.to_vec1::<f64>()?
                .into_iter()
                .map(|c| c as usize)
                .collect())
        };
        Ok(SlqLogProb {
            log_prob: out[0].clone(),
            std_err: out[1]
                .to_vec1::<f64>()?
                .into_iter()
                .map(f64::sqrt)
                .collect(),
            floored_ritz_values: counts(&out[2])?,
            premature_breakdowns: counts(&out[3])?,
        })
    }
}
