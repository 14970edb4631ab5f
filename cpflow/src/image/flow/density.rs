//! The evaluation passes of an [`ImageFlow`] over row chunks: the forward map alone, with
//! exact dense-Hessian log-dets (`transform`, `log_prob_exact`), or with SLQ estimates and
//! their standard errors (`log_prob_slq`).

use candle_core::{DType, Tensor};
use rand::Rng;

use super::{EVAL_CHUNK_UNITS, IMAGE_EVAL_CHUNK, ImageFlow, ImageLayer};
use crate::block::{CpFlowBlock, HessianOperator};
use crate::config::SlqConfig;
use crate::error::{CpflowError, Result};
use crate::flow::LayerWeights;
use crate::non_finite_rows::{
    exact_logdet_rows, name_not_convex, or_non_finite_rows, rows_without_value,
};
use crate::slq::{SlqLogProb, slq_logdet_block};

/// Hessian-vector products per pass when the exact log-det builds a dense Hessian
/// (`rows × columns` of one `apply_many` call).
const EXACT_HVPS_PER_PASS: usize = 256;

impl ImageFlow {
    /// The forward pass of validated rows, detached: `z (B, D)` (factored-out parts first,
    /// then the last scale, as the reference concatenates them), `Σ log-det` per row and
    /// `Σ se²` per row. Each block's `(z, log-det, se)` comes from `block(block, host
    /// weights, h, ld)`, given the log-det so far `ld` of each row (with `h`, what
    /// `non_finite_rows::rows_without_value` needs to tell which rows may fail on their own, as
    /// in [`crate::Flow`]). A block whose log-det finds its potential not positive definite is
    /// [`CpflowError::NotConvex`] naming its layer.
    pub(crate) fn forward_with<F>(
        &self,
        x: &Tensor,
        weights: &[Option<icnn::HostWeights>],
        mut block: F,
    ) -> Result<(Tensor, Vec<f64>, Vec<f64>)>
    where
        F: FnMut(
            &CpFlowBlock,
            Option<&icnn::HostWeights>,
            &Tensor,
            &[f64],
        ) -> Result<(Tensor, Vec<f64>, Vec<f64>)>,
    {
        let b = x.dim(0)?;
        let mut h = x.detach();
        let mut ld = vec![0.0f64; b];
        let mut var = vec![0.0f64; b];
        let mut out: Vec<Tensor> = Vec::new();
        let add_scalar = |ld: &mut [f64], t: &Tensor| -> Result<()> {
            let v = t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            ld.iter_mut().for_each(|l| *l += v);
            Ok(())
        };
        for (i, l) in self.layers.iter().enumerate() {
            h = match l {
                ImageLayer::Logit(t) => {
                    let (y, l) = t.forward(&h)?;
                    let l = l.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                    ld.iter_mut().zip(l).for_each(|(a, b)| *a += b);
                    y.detach()
                }
                ImageLayer::ActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    add_scalar(&mut ld, &l)?;
                    y.detach()
                }
                ImageLayer::FeatureActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    add_scalar(&mut ld, &l)?;
                    y.detach()
                }
                ImageLayer::Squeeze(s) => s.forward(&h)?,
                ImageLayer::FactorOut(n) => {
                    let keep = h.dim(1)? - n;
                    out.push(h.narrow(1, keep, *n)?);
                    h.narrow(1, 0, keep)?.contiguous()?
                }
                ImageLayer::Cpf(blk) => {
                    let w = weights.get(i).and_then(Option::as_ref);
                    let (z, l, se) = block(blk, w, &h, &ld).map_err(|e| name_not_convex(i, e))?;
                    ld.iter_mut().zip(l).for_each(|(a, b)| *a += b);
                    var.iter_mut().zip(se).for_each(|(a, s)| *a += s * s);
                    z.detach()
                }
            };
        }
        out.push(h);
        let z = Tensor::cat(&out, 1)?.contiguous()?;
        Ok((z, ld, var))
    }

    /// Images per chunk of the evaluation passes (SLQ, forward, and at most this many in the
    /// exact pass): [`IMAGE_EVAL_CHUNK`], fewer for blocks of over 2¹⁸ hidden units per image
    /// (2²⁶ units a chunk: an SLQ pass keeps about 17 values per unit).
    ///
    /// ```
    /// use cpflow::candle::Device;
    /// use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
    /// use cpflow::PotentialConfig;
    /// use cpflow::icnn::{ConvIcnn3Config, ImageShape};
    /// let mut ms = MultiscaleConfig::mnist();
    /// ms.nblocks = vec![1];
    /// let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms)?, &Device::Cpu)?;
    /// assert_eq!(flow.eval_chunk_rows(), 256); // 64 · 3 · 28 · 28 units per image
    /// let image = ImageShape::new(1, 28, 28);
    /// ms.potential = PotentialConfig::ConvIcnn3(ConvIcnn3Config { image, width: 256, depth: 2, ..Default::default() });
    /// let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms)?, &Device::Cpu)?;
    /// assert_eq!(flow.eval_chunk_rows(), (1 << 26) / (256 * 2 * 28 * 28)); // 167
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn eval_chunk_rows(&self) -> usize {
        match self.config.max_hidden_units() {
            Some(units) => (EVAL_CHUNK_UNITS / units.max(1)).clamp(1, IMAGE_EVAL_CHUNK),
            None => IMAGE_EVAL_CHUNK,
        }
    }

    /// The host weights of each layer (`None` but for CP-Flow blocks whose potentials the
    /// host kernels cover), built once for the chunks of an evaluation.
    fn host_weights(&self) -> Result<LayerWeights> {
        self.layers
            .iter()
            .map(|l| match l {
                ImageLayer::Cpf(b) => b.host_weights(None),
                _ => Ok(None),
            })
            .collect()
    }

    /// Apply `f` to row chunks and concatenate its outputs, with `icnn`'s array pool paused
    /// ([`icnn::pause_array_pool`]: it would keep the chunks' arrays beside the live ones).
    fn chunked<F>(&self, x: &Tensor, rows: usize, mut f: F) -> Result<Vec<Tensor>>
    where
        F: FnMut(&Tensor) -> Result<Vec<Tensor>>,
    {
        let _pause = icnn::pause_array_pool();
        let n = x.dim(0)?;
        let rows = rows.max(1);
        let mut parts: Vec<Vec<Tensor>> = Vec::new();
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            parts.push(f(&x.narrow(0, start, len)?)?);
            start += len;
        }
        let k = parts.first().map_or(0, Vec::len);
        (0..k)
            .map(|j| {
                let cols: Vec<Tensor> = parts.iter().map(|p| p[j].clone()).collect();
                Ok(Tensor::cat(&cols, 0)?)
            })
            .collect()
    }

    /// `z = f(x)` `(B, D)` without any log-det (one gradient evaluation per block): for
    /// reconstructions `f⁻¹(f(x))` and latents. Detached; 0 images give `(0, D)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.ensure_initialized()?;
        let x = self.check_images(x)?;
        if x.dim(0)? == 0 {
            return Ok(x);
        }
        let out = self.chunked(&x, self.eval_chunk_rows(), |xc| {
            let (z, _, _) = self.forward_with(xc, &[], |blk, _, h, _| {
                let z = blk.forward(h, None)?;
                let zeros = vec![0.0; h.dim(0)?];
                Ok((z, zeros.clone(), zeros))
            })?;
            Ok(vec![z])
        })?;
        Ok(out[0].clone())
    }

    /// `z = f(x)` `(B, D)` and the exact `log|det ∂z/∂x|` per image `(B,)` (logit, ActNorm
    /// and every block's dense Hessian, built from `D` Hessian-vector products and factored
    /// by Cholesky: affordable for `D` up to a few thousand on a handful of images).
    /// Outputs are detached. An image that overflows a block gets a NaN log-det alone, as in
    /// [`crate::Flow::transform`] (also in [`ImageFlow::log_prob_slq`]). 0 images give
    /// `(0, D)` and `(0,)` tensors.
    pub fn transform(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.ensure_initialized()?;
        let x = self.check_images(x)?;
        if x.dim(0)? == 0 {
            let ld = Tensor::zeros(0, x.dtype(), x.device())?;
            return Ok((x, ld));
        }
        let rows = (4096 / self.dim()).clamp(1, self.eval_chunk_rows());
        let weights = self.host_weights()?;
        let out = self.chunked(&x, rows, |xc| {
            let (z, ld, _) = self.forward_with(xc, &weights, |blk, w, h, ld| {
                let (z, op) = blk.detached_operator_sharing(h, None, w)?;
                let tolerate = or_non_finite_rows(&rows_without_value(h, ld)?, &z)?;
                let lds = exact_logdet(&op, h, &tolerate)?;
                let zeros = vec![0.0; lds.len()];
                Ok((z, lds, zeros))
            })?;
            let ld = Tensor::from_vec(ld, xc.dim(0)?, xc.device())?.to_dtype(xc.dtype())?;
            Ok(vec![z, ld])
        })?;
        Ok((out[0].clone(), out[1].clone()))
    }

    /// `log p(x)` per image with exact log-dets (nats, density on the data space, e.g.
    /// `[0, 1)^D` for a logit flow), `(B,)`, detached. See [`crate::image::bits_per_dim`].
    pub fn log_prob_exact(&self, x: &Tensor) -> Result<Tensor> {
        let (z, ld) = self.transform(x)?;
        Ok((self.prior().log_prob(&z)? + ld)?)
    }

    /// `log p(x)` per image with each block's log-det estimated by stochastic Lanczos
    /// quadrature (`probes` unit Rademacher probes, `min(steps, D)` Lanczos steps;
    /// reference evaluation: 1 probe, 10 steps), with the standard error of the estimate.
    /// 0 images give empty results.
    pub fn log_prob_slq<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<SlqLogProb> {
        self.ensure_initialized()?;
        if params.probes == 0 || params.steps == 0 {
            return Err(CpflowError::InvalidConfig(
                "SLQ needs probes ≥ 1 and steps ≥ 1".into(),
            ));
        }
        let x = self.check_images(x)?;
        if x.dim(0)? == 0 {
            return SlqLogProb::empty(&x);
        }
        let mut var_all = Vec::with_capacity(x.dim(0)?);
        // The bias counts of every image, summed over the blocks.
        let (mut floored_all, mut early_all) = (Vec::new(), Vec::new());
        let weights = self.host_weights()?;
        let out = self.chunked(&x, self.eval_chunk_rows(), |xc| {
            let rows = xc.dim(0)?;
            let (mut floored, mut early) = (vec![0usize; rows], vec![0usize; rows]);
            let (z, ld, var) = self.forward_with(xc, &weights, |blk, w, h, ld| {
                let (z, op) = blk.detached_operator_sharing(h, None, w)?;
                let tolerate = or_non_finite_rows(&rows_without_value(h, ld)?, &z)?;
                let est = slq_logdet_block(&op, h, params, &mut *rng, &tolerate)?;
                let add = |sum: &mut [usize], c: &[usize]| {
                    sum.iter_mut().zip(c).for_each(|(s, c)| *s += c);
                };
                add(&mut floored, &est.floored_ritz_values);
                add(&mut early, &est.premature_breakdowns);
                Ok((z, est.estimate, est.std_err))
            })?;
            var_all.extend(var);
            floored_all.extend(floored);
            early_all.extend(early);
            let ld = Tensor::from_vec(ld, rows, xc.device())?.to_dtype(xc.dtype())?;
            Ok(vec![(self.prior().log_prob(&z)? + ld)?])
        })?;
        Ok(SlqLogProb {
            log_prob: out[0].clone(),
            std_err: var_all.into_iter().map(f64::sqrt).collect(),
            floored_ritz_values: floored_all,
            premature_breakdowns: early_all,
        })
    }
}

/// `log det H` per row from the dense Hessian assembled by `apply_many` on identity columns
/// (NaN for a row that overflows, as `non_finite_rows::exact_logdet_rows` says).
fn exact_logdet(op: &HessianOperator, h: &Tensor, tolerate: &[bool]) -> Result<Vec<f64>> {
    let (b, d) = h.dims2()?;
    let cols = (EXACT_HVPS_PER_PASS / b).clamp(1, d);
    let eye = Tensor::eye(d, h.dtype(), h.device())?;
    let mut parts = Vec::with_capacity(d.div_ceil(cols));
    let mut start = 0;
    while start < d {
        let len = cols.min(d - start);
        let e = eye
            .narrow(0, start, len)?
            .unsqueeze(0)?
            .broadcast_as((b, len, d))?
            .contiguous()?;
        // Row i of the result is (H e_i)ᵀ, i.e. row i of the symmetric H.
        parts.push(op.apply_many(&e)?);
        start += len;
    }
    let hess = Tensor::cat(&parts, 1)?;
    exact_logdet_rows(&hess, tolerate)
}
