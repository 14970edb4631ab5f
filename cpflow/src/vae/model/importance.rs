//! Importance-sampled log-likelihoods of a VAE's images.

use candle_core::Tensor;
use rand::Rng;

use super::{Vae, VaeBatch};
use crate::error::Result;
use crate::posterior::ImportanceEstimate;

impl Vae {
    /// The importance-sampled `log p(x)` of every image of the batch from `samples` posterior
    /// draws (`chunk` at a time; exact `log q`).
    pub fn importance_log_likelihood<R: Rng + ?Sized>(
        &self,
        batch: &VaeBatch,
        samples: usize,
        chunk: usize,
        rng: &mut R,
    ) -> Result<Vec<ImportanceEstimate>> {
        self.importance_log_likelihood_monitored(batch, samples, chunk, rng, || Ok(()))
    }

    /// [`Vae::importance_log_likelihood`] calling `on_chunk` before each chunk of samples is
    /// scored; an error it returns stops the estimate and is returned (an interrupt of a
    /// long estimate: `samples` can be millions per image).
    pub fn importance_log_likelihood_monitored<R: Rng + ?Sized>(
        &self,
        batch: &VaeBatch,
        samples: usize,
        chunk: usize,
        rng: &mut R,
        mut on_chunk: impl FnMut() -> Result<()>,
    ) -> Result<Vec<ImportanceEstimate>> {
        self.check_batch(batch)?;
        let e = self.encode(&batch.x.detach())?;
        let n = batch.x.dim(0)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let row = |t: &Tensor| t.narrow(0, i, 1).map(|r| r.detach());
            let (mu, ls, h) = (row(&e.mu)?, row(&e.log_sigma)?, row(&e.feature)?);
            let xi = batch.x.narrow(0, i, 1)?;
            let ti = match &batch.targets {
                Some(t) => Some(t.narrow(0, i, 1)?),
                None => None,
            };
            let log_joint = |z: &Tensor| -> Result<Tensor> {
                on_chunk()?;
                let k = z.dim(0)?;
                let rep = |t: &Tensor| -> Result<Tensor> {
                    let mut dims = t.dims().to_vec();
                    dims[0] = k;
                    Ok(t.broadcast_as(dims)?.contiguous()?)
                };
                let b = VaeBatch {
                    x: rep(&xi)?,
                    targets: match &ti {
                        Some(t) => Some(rep(t)?),
                        None => None,
                    },
                };
                Ok((self.log_likelihood(&b, z)? + Self::log_prior(z)?)?)
            };
            out.push(
                self.posterior.importance_sampled_log_likelihood(
                    &mu, &ls, &h, samples, chunk, log_joint, rng,
                )?,
            );
        }
        Ok(out)
    }
}
