//! The isotropic Gaussian prior `N(0, σ² I)` of the flow.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{CpflowError, Result};

/// Isotropic Gaussian prior `N(0, exp(log_var) · I)`.
///
/// The reference's tabular flows use `log_var = 0`; its one-block toy uses `log_var = 2`
/// (std `e`). The reference's toy density adds `1e-5` to `2σ²` in the denominator; this prior is
/// the exact Gaussian (the difference is below 1e-6 nats at `σ² = e²`).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::{FlowRng, GaussianPrior};
/// # fn main() -> cpflow::Result<()> {
/// let prior = GaussianPrior::with_log_var(2.0); // σ² = e²
/// // At the origin: log N(0; 0, σ²I) = −(d/2)·log(2πσ²), here d = 2.
/// let z = Tensor::zeros((1, 2), DType::F64, &Device::Cpu)?;
/// let lp = prior.log_prob(&z)?.to_vec1::<f64>()?[0];
/// assert!((lp + (2.0 * std::f64::consts::PI).ln() + 2.0).abs() < 1e-14);
/// // Samples have variance σ² per coordinate (4,000 draws: within 10 %).
/// let s = prior.sample(2000, 2, DType::F64, &Device::Cpu, &mut FlowRng::seed_from_u64(0))?;
/// let var = s.sqr()?.mean_all()?.to_scalar::<f64>()?;
/// assert!((var / 2f64.exp() - 1.0).abs() < 0.1, "{var}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianPrior {
    /// Log of the per-coordinate variance.
    pub log_var: f64,
}

impl Default for GaussianPrior {
    fn default() -> Self {
        GaussianPrior { log_var: 0.0 }
    }
}

impl GaussianPrior {
    /// The largest `|log_var|` a flow accepts: `σ²` from `e⁻⁸⁰ ≈ 1.8e-35` to `e⁸⁰ ≈ 5.5e34`,
    /// so that `σ²`, `1/σ²` and the densities stay finite in f32 (a finite `log_var` of −800
    /// made `σ²` underflow to 0 and every log-density NaN).
    pub const MAX_ABS_LOG_VAR: f64 = 80.0;

    /// Standard normal prior.
    pub fn standard() -> Self {
        Self::default()
    }

    /// Refuses a log-variance that is not finite or beyond ±[`GaussianPrior::MAX_ABS_LOG_VAR`]
    /// ([`CpflowError::InvalidConfig`]); the flow configurations' `validate` call it.
    ///
    /// ```
    /// use cpflow::GaussianPrior;
    /// assert!(GaussianPrior::with_log_var(2.0).validate().is_ok());
    /// let err = GaussianPrior::with_log_var(-800.0).validate().unwrap_err();
    /// assert!(err.to_string().contains("within ±80"), "{err}");
    /// assert!(GaussianPrior::with_log_var(f64::NAN).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !(self.log_var.is_finite() && self.log_var.abs() <= Self::MAX_ABS_LOG_VAR) {
            return Err(CpflowError::InvalidConfig(format!(
                "prior log-variance must be finite and within ±{} (σ² from e⁻⁸⁰ ≈ 1.8e-35 to \
                 e⁸⁰ ≈ 5.5e34; beyond, σ² or 1/σ² overflows f32), got {}",
                Self::MAX_ABS_LOG_VAR,
                self.log_var
            )));
        }
        Ok(())
    }

    /// Prior with the given log-variance.
    pub fn with_log_var(log_var: f64) -> Self {
        GaussianPrior { log_var }
    }

    /// `log N(z; 0, σ² I)` per row of `z` (B, d) → (B,), in `z`'s dtype (parameter-tracking).
    /// An empty batch gives an empty `(0,)` tensor.
    pub fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let d = z.dim(1)? as f64;
        if z.dim(0)? == 0 {
            // No reduction: candle's CUDA backend divides by the number of outputs of a sum,
            // so `(0, d).sum(1)` panics there (0 / 0); the CPU gives this same empty result.
            let mut dims = z.dims().to_vec();
            dims.remove(1);
            return Ok(Tensor::zeros(dims, z.dtype(), z.device())?);
        }
        let var = self.log_var.exp();
        let c = -0.5 * d * ((2.0 * std::f64::consts::PI).ln() + self.log_var);
        Ok(z.sqr()?.sum(1)?.affine(-0.5 / var, c)?)
    }

    /// Draw `n` samples of dimension `d` from the host RNG.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        d: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        let len = n.checked_mul(d).ok_or_else(|| {
            CpflowError::InvalidInput(format!(
                "{n} samples of dimension {d} are more values than memory can address"
            ))
        })?;
        if len == 0 {
            // No cast: candle's CUDA backend launches a conversion kernel on 0 threads for an
            // empty tensor, which CUDA refuses (`CUDA_ERROR_INVALID_VALUE`).
            return Ok(Tensor::zeros((n, d), dtype, device)?);
        }
        // The caller sizes this buffer: an impossible request is an error, not an abort.
        let mut v: Vec<f64> = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            CpflowError::InvalidInput(format!(
                "{n} samples of dimension {d} need {len} values ({} GiB as f64), more than can be allocated; \
                 draw them in chunks",
                (len as f64 * 8.0 / (1u64 << 30) as f64).ceil()
            ))
        })?;
        let std = (0.5 * self.log_var).exp();
        v.extend((0..len).map(|_| std * rng.sample::<f64, _>(StandardNormal)));
        Ok(Tensor::from_vec(v, (n, d), device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn an_unallocatable_sample_is_an_error_not_an_abort() {
        // 2^40 rows of 2^10 values is 8 PiB of f64: no allocator grants it, so the request
        // fails before a single value is drawn (an abort would end the test process).
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let err = GaussianPrior::standard()
            .sample(1 << 40, 1 << 10, DType::F64, &Device::Cpu, &mut rng)
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("more than can be allocated"), "{msg}");
        assert!(
            msg.contains("1099511627776 samples of dimension 1024"),
            "{msg}"
        );
    }

    #[test]
    fn log_prob_matches_closed_form() {
        let p = GaussianPrior::with_log_var(2.0);
        let z = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.0], (2, 2), &Device::Cpu).unwrap();
        let lp = p.log_prob(&z).unwrap().to_vec1::<f64>().unwrap();
        let var = 2f64.exp();
        let f = |a: f64, b: f64| {
            -((2.0 * std::f64::consts::PI * var).ln()) - (a * a + b * b) / (2.0 * var)
        };
        assert!((lp[0] - f(0.5, -1.0)).abs() < 1e-14);
        assert!((lp[1] - f(2.0, 0.0)).abs() < 1e-14);
    }

    /// Empty batches: `log_prob` of `(0, d)` rows is `(0,)` and `sample(0, d)` is `(0, d)`,
    /// in the dtype asked for (on CUDA both avoid candle kernels that fail on empty tensors;
    /// here the results the CPU ops gave before).
    #[test]
    fn empty_batches_give_empty_tensors() {
        let p = GaussianPrior::standard();
        let mut rng = crate::FlowRng::seed_from_u64(0);
        for dtype in [DType::F32, DType::F64] {
            let s = p.sample(0, 3, dtype, &Device::Cpu, &mut rng).unwrap();
            assert_eq!((s.dims(), s.dtype()), (&[0usize, 3][..], dtype));
            let lp = p.log_prob(&s).unwrap();
            assert_eq!((lp.dims(), lp.dtype()), (&[0usize][..], dtype));
            let want = s.sqr().unwrap().sum(1).unwrap();
            assert_eq!(lp.dims(), want.dims());
        }
    }

    /// At the accepted extremes the densities are finite in f32 and f64 and match the closed
    /// form `−(d/2)·log(2πσ²) − ‖z‖²/(2σ²)` (relative 1e-6: f32 rounding of values near 80);
    /// one step beyond, the prior is refused.
    #[test]
    fn extreme_log_variances_are_finite_or_refused() {
        for log_var in [
            -GaussianPrior::MAX_ABS_LOG_VAR,
            GaussianPrior::MAX_ABS_LOG_VAR,
        ] {
            let p = GaussianPrior::with_log_var(log_var);
            p.validate().unwrap();
            let std = (0.5 * log_var).exp();
            for dtype in [DType::F32, DType::F64] {
                let z = (Tensor::new(&[[0.0f64, 0.0], [std, -std]], &Device::Cpu).unwrap())
                    .to_dtype(dtype)
                    .unwrap();
                let lp = p.log_prob(&z).unwrap().to_dtype(DType::F64).unwrap();
                let lp = lp.to_vec1::<f64>().unwrap();
                let c = -((2.0 * std::f64::consts::PI).ln() + log_var);
                for (got, want) in lp.iter().zip([c, c - 1.0]) {
                    assert!(
                        got.is_finite() && (got - want).abs() <= 1e-6 * want.abs(),
                        "{got} {want}"
                    );
                }
            }
        }
        // A sample size whose value count overflows is refused (it wrapped around in release).
        let err = GaussianPrior::standard()
            .sample(
                usize::MAX / 2,
                3,
                DType::F64,
                &Device::Cpu,
                &mut rand::rng(),
            )
            .unwrap_err();
        assert!(matches!(err, CpflowError::InvalidInput(_)), "{err:?}");
        for log_var in [-80.5, 80.5, -800.0, f64::INFINITY] {
            assert!(
                GaussianPrior::with_log_var(log_var).validate().is_err(),
                "{log_var}"
            );
        }
    }
}
