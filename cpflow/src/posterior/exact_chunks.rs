//! The exact `log q` of many posterior samples for evaluation: detached, in row chunks that
//! run in parallel on the CPU.
//!
//! The importance-sampled likelihood and the test −ELBO evaluate the posterior's dense
//! Hessians for hundreds of rows at once. Those products are too small for the matrix
//! product's own threads ([`crate::cpu_threads::GEMM_THREADING_THRESHOLD`]), so one core did
//! the posterior while the other waited for the decoder's convolutions.

use candle_core::Tensor;

use super::amortized::{AmortizedPosterior, PosteriorSample};
use crate::error::Result;
use crate::flow::{exact_chunk_rows, map_row_chunks, parallel_chunk_rows};

impl AmortizedPosterior {
    /// [`AmortizedPosterior::transform_noise_exact`] for evaluation: the same values,
    /// detached (no gradient), computed in row chunks (sized to keep each chunk's Hessian
    /// recursion in cache, as [`crate::Flow::log_prob_exact`]'s) that run in parallel on the
    /// CPU. Rows are independent, so the values equal the whole batch's up to rounding:
    /// candle's products may round a row's last bit differently for another row count
    /// (measured on a two-block posterior: `z` within 1 ulp, `log q` identical).
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::candle_nn::VarMap;
    /// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let dev = Device::Cpu;
    /// // 64 latent dimensions: chunks of 43 rows, so 100 rows make three.
    /// let (n, d) = (100, 64);
    /// let cfg = PosteriorConfig::reference_vae(d, 1).with_blocks(1).with_picnn(8, 2);
    /// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let mu = Tensor::zeros((n, d), DType::F64, &dev)?;
    /// let ls = Tensor::zeros((n, d), DType::F64, &dev)?;
    /// let h = Tensor::arange(0u32, n as u32, &dev)?.to_dtype(DType::F64)?.affine(0.01, 0.0)?.unsqueeze(1)?;
    /// q.initialize(&mu, &ls, &h, &mut rng)?;
    /// let eps = q.draw_noise(n, &mut rng)?;
    /// let chunked = q.transform_noise_exact_detached(&mu, &ls, &h, &eps)?;
    /// let whole = q.transform_noise_exact(&mu, &ls, &h, &eps)?;
    /// let diff = (&chunked.log_q - &whole.log_q)?.abs()?.max(0)?.to_scalar::<f64>()?;
    /// assert!(diff <= 1e-12, "{diff}");
    /// assert!(!chunked.log_q.track_op());
    /// # Ok(())
    /// # }
    /// ```
    pub fn transform_noise_exact_detached(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        eps: &Tensor,
    ) -> Result<PosteriorSample> {
        let [mu, ls, h, eps] = self.check_batch(mu, log_sigma, h, eps)?;
        let detached = |mu: &Tensor, ls: &Tensor, h: &Tensor, eps: &Tensor| {
            let [mu, ls, h, eps] = [mu, ls, h, eps].map(Tensor::detach);
            let s = self.transform_noise_exact(&mu, &ls, &h, &eps)?;
            Ok(PosteriorSample {
                z0: s.z0.detach(),
                z: s.z.detach(),
                log_q: s.log_q.detach(),
                log_det: s.log_det.detach(),
            })
        };
        let rows = parallel_chunk_rows(&eps, exact_chunk_rows(self.latent_dim(), None))?;
        if eps.dim(0)? <= rows {
            return detached(&mu, &ls, &h, &eps);
        }
        let parts = map_row_chunks(&eps, None, rows, |i, eps, _| {
            let part = |t: &Tensor| t.narrow(0, i * rows, eps.dim(0)?);
            detached(&part(&mu)?, &part(&ls)?, &part(&h)?, eps)
        })?;
        let cat = |f: fn(&PosteriorSample) -> &Tensor| -> Result<Tensor> {
            let ts: Vec<&Tensor> = parts.iter().map(f).collect();
            Ok(Tensor::cat(&ts, 0)?)
        };
        Ok(PosteriorSample {
            z0: cat(|s| &s.z0)?,
            z: cat(|s| &s.z)?,
            log_q: cat(|s| &s.log_q)?,
            log_det: cat(|s| &s.log_det)?,
        })
    }
}
