//! `log q(z | x)` at arbitrary points `z` (not drawn from `q`): invert the posterior flow
//! (closed form for the ActNorms, convex-opt for the CP-Flow blocks), then run the exact
//! forward pass from the recovered base point.

use candle_core::Tensor;

use super::amortized::{AmortizedPosterior, PosteriorLayer};
use crate::block_inverse::InverseParams;
use crate::error::{CpflowError, Result};
use crate::flow::check_matrix;

/// The density of given points under the posterior (detached).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::{InverseParams, posterior::{AmortizedPosterior, PosteriorConfig}};
/// # fn main() -> cpflow::Result<()> {
/// // Without blocks the "inversion" is the identity: z₀ = z, and log q is the Gaussian's.
/// let dev = Device::Cpu;
/// let q = AmortizedPosterior::new(&VarMap::new(), "q", &PosteriorConfig::gaussian(1, 1), &dev)?;
/// let (mu, ls) = (Tensor::new(&[[0.0f64]], &dev)?, Tensor::new(&[[0.0f64]], &dev)?);
/// let h = Tensor::zeros((1, 1), DType::F64, &dev)?;
/// let z = Tensor::new(&[[1.0f64]], &dev)?;
/// let d = q.log_q_exact_at(&z, &mu, &ls, &h, &InverseParams::default())?;
/// assert!(d.converged && d.max_residual == 0.0);
/// assert_eq!(d.z0.to_vec2::<f64>()?, vec![vec![1.0]]);
/// let want = -0.5 - 0.5 * (2.0 * std::f64::consts::PI).ln(); // log N(1; 0, 1)
/// assert!((d.log_q.to_vec1::<f64>()?[0] - want).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PosteriorDensity {
    /// `log q(z | x)` per row, `(B,)`, exact log-dets.
    pub log_q: Tensor,
    /// The recovered base points `z₀ = f⁻¹(z)`, `(B, d)`.
    pub z0: Tensor,
    /// Whether every block inversion met its tolerance for every row.
    pub converged: bool,
    /// Largest final residual `‖∇Φ(x) − y‖∞` over the blocks and rows.
    pub max_residual: f64,
}

impl AmortizedPosterior {
    /// `log q(z | x)` at the rows of `z` `(B, d)` for the encoder outputs `(μ, log σ, h)`:
    /// each layer is inverted (blocks by `params.solver` to its tolerances, row `i` with
    /// context row `h_i`, whether the contexts differ or are one data point's for many `z`),
    /// `ε = (z₀ − μ)/σ`, and the exact forward pass gives the log-density. Unconverged inversions are reported in the result,
    /// never hidden. Detached; for evaluation and tests (sampling never needs it).
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::candle_nn::VarMap;
    /// use cpflow::{InverseParams, posterior::{AmortizedPosterior, PosteriorConfig}};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let dev = Device::Cpu;
    /// let cfg = PosteriorConfig::reference_vae(2, 1).with_blocks(1).with_picnn(8, 2);
    /// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
    /// let mu = Tensor::zeros((4, 2), DType::F64, &dev)?;
    /// let ls = Tensor::zeros((4, 2), DType::F64, &dev)?;
    /// // Initialised on contexts that vary (a constant context is an initialisation error),
    /// // then evaluated at one data point's context for every row.
    /// let h0 = Tensor::new(&[[0.5f64], [1.0], [1.5], [2.0]], &dev)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(1);
    /// q.initialize(&mu, &ls, &h0, &mut rng)?;
    /// let h = Tensor::ones((4, 1), DType::F64, &dev)?;
    /// let s = q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng)?;
    /// let back = q.log_q_exact_at(&s.z, &mu, &ls, &h, &InverseParams::default())?;
    /// assert!(back.converged);
    /// let diff = (back.log_q - s.log_q)?.abs()?.max(0)?.to_scalar::<f64>()?;
    /// assert!(diff < 1e-6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_q_exact_at(
        &self,
        z: &Tensor,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        params: &InverseParams,
    ) -> Result<PosteriorDensity> {
        let z = check_matrix(z, self.latent_dim(), "z", self.dtype(), z.device())?;
        let [mu, ls, h, z] = self.check_batch(mu, log_sigma, h, &z)?;
        let (mu, ls, h, z) = (mu.detach(), ls.detach(), h.detach(), z.detach());
        let (mut converged, mut max_residual) = (true, 0.0f64);
        let mut z0 = z;
        for l in self.layers().iter().rev() {
            z0 = match l {
                PosteriorLayer::ActNorm(a) => a.inverse(&z0)?,
                PosteriorLayer::Cpf(b) => {
                    let res = b.inverse(&z0, Some(&h), params)?;
                    converged &= res.all_converged();
                    max_residual = res.residual_inf.iter().fold(max_residual, |m, r| m.max(*r));
                    res.x
                }
            };
        }
        let eps = ((&z0 - &mu)? / ls.exp()?)?;
        let s = self.transform_noise_exact_detached(&mu, &ls, &h, &eps)?;
        if !max_residual.is_finite() {
            return Err(CpflowError::InvalidInput(
                "the posterior inversion produced non-finite residuals".into(),
            ));
        }
        Ok(PosteriorDensity {
            log_q: s.log_q.detach(),
            z0,
            converged,
            max_residual,
        })
    }
}
