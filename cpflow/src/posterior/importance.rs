//! The importance-sampled marginal log-likelihood of a latent-variable model,
//! `log p(x) ≈ log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k | x)` with `z_k ~ q(· | x)`
//! (Burda et al. 2016; the Sylvester-flows evaluation that `images-vae.md` §3.7 says the
//! CP-Flow code dropped).

use candle_core::{DType, Tensor};
use rand::Rng;

use super::amortized::AmortizedPosterior;
use crate::error::{CpflowError, Result};

/// An importance-sampled estimate of `log p(x)` for one data point.
///
/// ```
/// use cpflow::posterior::importance_sampled_log_likelihood;
/// // Weights w = e⁰ and e^{ln 3}: log mean = log 2; effective sample size (1 + 3)²/(1 + 9).
/// let zeros = [0.0, 0.0];
/// let est = importance_sampled_log_likelihood(&[0.0, 3f64.ln()], &zeros, &zeros).unwrap();
/// assert_eq!(est.samples, 2);
/// assert!((est.log_likelihood - 2f64.ln()).abs() < 1e-12);
/// assert!((est.effective_sample_size - 1.6).abs() < 1e-12);
/// // sd(w)/(√K·mean(w)) = √2/(√2·2) = ½.
/// assert!((est.std_err - 0.5).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImportanceEstimate {
    /// `log (1/K) Σ_k w_k`, computed by log-sum-exp. A consistent estimate of `log p(x)`
    /// that is biased low by `O(1/K)` (Jensen) and is a lower bound in expectation.
    pub log_likelihood: f64,
    /// Delta-method standard error of the estimate: `sd(w)/(√K · mean(w))` with the sample
    /// standard deviation of the weights (`NaN` for `K = 1`). It is itself estimated from
    /// the same weights, so it is optimistic when a few weights dominate (look at
    /// [`ImportanceEstimate::effective_sample_size`]).
    pub std_err: f64,
    /// Kish's effective sample size `(Σ w)² / Σ w²`, between 1 and `K`.
    pub effective_sample_size: f64,
    /// Number of samples `K`.
    pub samples: usize,
}

/// The importance-sampled `log p(x)` from `K` samples `z_k ~ q(· | x)`, given per sample
/// `log p(x | z_k)`, `log p(z_k)` and `log q(z_k | x)` (the same normalisation conventions
/// in `p` and `q`: include the `−½ log 2π` terms in both or in neither).
///
/// Weights with `log w = −∞` (e.g. an impossible reconstruction) count as zero; `NaN`,
/// `+∞`, mismatched lengths, `K = 0` or all weights zero are errors.
///
/// ```
/// use cpflow::posterior::importance_sampled_log_likelihood;
/// // If q(z|x) = p(z|x) every weight equals p(x): here p(x) = e^{-2}.
/// let lq = [-1.0, -0.3, -2.5];
/// let lpz = [-1.5, -0.9, -1.0];
/// let lpx: Vec<f64> = lq.iter().zip(&lpz).map(|(q, p)| -2.0 + q - p).collect();
/// let est = importance_sampled_log_likelihood(&lpx, &lpz, &lq).unwrap();
/// assert!((est.log_likelihood + 2.0).abs() < 1e-12);
/// assert!(est.std_err.abs() < 1e-12 && (est.effective_sample_size - 3.0).abs() < 1e-12);
/// ```
pub fn importance_sampled_log_likelihood(
    log_p_x_given_z: &[f64],
    log_p_z: &[f64],
    log_q_z: &[f64],
) -> Result<ImportanceEstimate> {
    let k = log_p_x_given_z.len();
    if k == 0 || log_p_z.len() != k || log_q_z.len() != k {
        return Err(CpflowError::InvalidInput(format!(
            "importance sampling needs K ≥ 1 samples with matching lengths, got {k}, {}, {}",
            log_p_z.len(),
            log_q_z.len()
        )));
    }
    let mut log_w = Vec::with_capacity(k);
    for i in 0..k {
        let (a, b, c) = (log_p_x_given_z[i], log_p_z[i], log_q_z[i]);
        if a.is_nan() || b.is_nan() || c.is_nan() || a == f64::INFINITY || b == f64::INFINITY {
            return Err(CpflowError::InvalidInput(format!(
                "importance sample {i}: log p(x|z) = {a}, log p(z) = {b} (NaN or +∞)"
            )));
        }
        if !c.is_finite() {
            return Err(CpflowError::InvalidInput(format!(
                "importance sample {i}: log q(z|x) = {c} is not finite (z was not drawn from q)"
            )));
        }
        log_w.push(a + b - c);
    }
    let m = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return Err(CpflowError::InvalidInput(
            "every importance weight is zero (log p(x|z) + log p(z) = −∞ for all samples)".into(),
        ));
    }
    // Shifted weights w̃ = exp(log w − max) ∈ (0, 1], the largest exactly 1.
    let w: Vec<f64> = log_w.iter().map(|l| (l - m).exp()).collect();
    let kf = k as f64;
    let sum: f64 = w.iter().sum();
    let sum_sq: f64 = w.iter().map(|v| v * v).sum();
    let mean = sum / kf;
    let std_err = if k > 1 {
        let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (kf - 1.0);
        var.sqrt() / (kf.sqrt() * mean)
    } else {
        f64::NAN
    };
    Ok(ImportanceEstimate {
        log_likelihood: m + mean.ln(),
        std_err,
        effective_sample_size: sum * sum / sum_sq,
        samples: k,
    })
}

/// [`importance_sampled_log_likelihood`] for a batch: `(B, K)` tensors (row `b` holds the
/// `K` samples of data point `b`), one estimate per row.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::posterior::importance_sampled_log_likelihood;
/// use cpflow::posterior::importance_sampled_log_likelihood_batch;
/// # fn main() -> cpflow::Result<()> {
/// let dev = Device::Cpu;
/// let lpxz = Tensor::new(&[[-1.0f64, -2.0, -0.5], [-3.0, -3.5, -2.5]], &dev)?;
/// let lpz = Tensor::new(&[[-1.0f64, -1.2, -0.9], [-1.1, -0.8, -1.0]], &dev)?;
/// let lqz = Tensor::new(&[[-0.7f64, -1.0, -1.3], [-0.9, -1.2, -1.0]], &dev)?;
/// let batch = importance_sampled_log_likelihood_batch(&lpxz, &lpz, &lqz)?;
/// assert_eq!(batch.len(), 2);
/// // Row 1 is the single-point estimate of its samples.
/// let row = |t: &Tensor| t.get(1).and_then(|r| r.to_vec1::<f64>());
/// let one = importance_sampled_log_likelihood(&row(&lpxz)?, &row(&lpz)?, &row(&lqz)?)?;
/// assert_eq!(batch[1], one);
/// // Inputs must be (batch, samples) matrices.
/// assert!(importance_sampled_log_likelihood_batch(&lpxz.flatten_all()?, &lpz, &lqz).is_err());
/// # Ok(())
/// # }
/// ```
pub fn importance_sampled_log_likelihood_batch(
    log_p_x_given_z: &Tensor,
    log_p_z: &Tensor,
    log_q_z: &Tensor,
) -> Result<Vec<ImportanceEstimate>> {
    let host = |t: &Tensor, what: &str| -> Result<Vec<Vec<f64>>> {
        if t.rank() != 2 {
            return Err(CpflowError::InvalidInput(format!(
                "{what} must be a (batch, samples) matrix, got shape {:?}",
                t.dims()
            )));
        }
        Ok(t.detach().to_dtype(DType::F64)?.to_vec2::<f64>()?)
    };
    let (a, b, c) = (
        host(log_p_x_given_z, "log p(x|z)")?,
        host(log_p_z, "log p(z)")?,
        host(log_q_z, "log q(z|x)")?,
    );
    if a.len() != b.len() || a.len() != c.len() {
        return Err(CpflowError::InvalidInput(
            "importance-sampling inputs have different batch sizes".into(),
        ));
    }
    a.iter()
        .zip(&b)
        .zip(&c)
        .map(|((x, y), z)| importance_sampled_log_likelihood(x, y, z))
        .collect()
}

impl AmortizedPosterior {
    /// The importance-sampled `log p(x)` of **one** data point from `samples` draws of this
    /// posterior, `chunk` rows at a time: `(μ, log σ, h)` are the encoder outputs for `x`
    /// (one row each, repeated here), `log_joint(z)` returns `log p(x | z) + log p(z)` per
    /// row of `z` `(n, d)` as an `(n,)` tensor (the decoder's log-likelihood plus the prior,
    /// with the Gaussian constants included, as in `log q`). `log q` is exact (dense
    /// log-dets); nothing is tracked. Reference evaluation: `K = 5000` samples in chunks of
    /// 500 (`images-vae.md` §3.7).
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::candle_nn::VarMap;
    /// use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// // A Gaussian posterior equal to the exact one of p(z) = N(0, 1), p(x|z) = N(z, 1)
    /// // at x = 1: q = N(1/2, 1/2), and log p(x) = log N(1; 0, 2).
    /// let dev = Device::Cpu;
    /// let q = AmortizedPosterior::new(&VarMap::new(), "q", &PosteriorConfig::gaussian(1, 1), &dev)?;
    /// let mu = Tensor::new(&[[0.5f64]], &dev)?;
    /// let ls = Tensor::new(&[[0.5f64.sqrt().ln()]], &dev)?;
    /// let h = Tensor::zeros((1, 1), DType::F64, &dev)?;
    /// let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    /// let log_joint = |z: &Tensor| -> cpflow::Result<Tensor> {
    ///     let lik = ((z - 1.0)?.sqr()?.sum(1)? * -0.5)?;
    ///     let prior = (z.sqr()?.sum(1)? * -0.5)?;
    ///     Ok(((lik + prior)? - ln_2pi)?)
    /// };
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let est = q.importance_sampled_log_likelihood(&mu, &ls, &h, 100, 32, log_joint, &mut rng)?;
    /// let exact = -0.5 * (ln_2pi + 2f64.ln()) - 0.25;
    /// assert!((est.log_likelihood - exact).abs() < 1e-12);
    /// # Ok(())
    /// # }
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn importance_sampled_log_likelihood<F, R>(
        &self,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        samples: usize,
        chunk: usize,
        mut log_joint: F,
        rng: &mut R,
    ) -> Result<ImportanceEstimate>
    where
        F: FnMut(&Tensor) -> Result<Tensor>,
        R: Rng + ?Sized,
    {
        for (what, t) in [("mu", mu), ("log_sigma", log_sigma), ("context", h)] {
            if t.rank() != 2 || t.dim(0)? != 1 {
                return Err(CpflowError::InvalidInput(format!(
                    "{what} must be one row (1, n) for one data point, got shape {:?}",
                    t.dims()
                )));
            }
        }
        let (mut lpxz, mut lq) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
        let rows = |t: &Tensor, n: usize| -> Result<Tensor> {
            Ok(t.detach().broadcast_as((n, t.dim(1)?))?.contiguous()?)
        };
        while lq.len() < samples {
            let n = chunk.max(1).min(samples - lq.len());
            let eps = self.draw_noise(n, rng)?;
            let s = self.transform_noise_exact_detached(
                &rows(mu, n)?,
                &rows(log_sigma, n)?,
                &rows(h, n)?,
                &eps,
            )?;
            let z = s.z.detach();
            let lj = log_joint(&z)?;
            if lj.dims() != [n] {
                return Err(CpflowError::InvalidInput(format!(
                    "log_joint must return ({n},) for z of shape {:?}, got {:?}",
                    z.dims(),
                    lj.dims()
                )));
            }
            lpxz.extend(lj.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?);
            lq.extend(s.log_q.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        let zeros = vec![0.0; lq.len()];
        importance_sampled_log_likelihood(&lpxz, &zeros, &lq)
    }
}
