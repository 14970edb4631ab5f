//! The reference VAE's `LayerActnorm`: one scalar shift and scale shared by all latent
//! dimensions (`docs/reference/images-vae.md` §3.4).
//!
//! `y = (x + b)·(exp(logs) + 0.001)` with scalars `b`, `logs`; log-det `d·log(exp(logs) +
//! 0.001)`. The data-dependent initialisation pools the batch **and** the `d` dimensions:
//! `b = −mean(x)`, `logs = −log(std(x) + 1e-6)` with the biased variance. (cpflow's
//! [`crate::ActNorm`] is per feature.)

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::actnorm::ActNormVars;
use crate::error::{CpflowError, Result};

/// A scalar ActNorm flow layer (reference `LayerActnorm` = `ActNorm(1)` on `(B, 1, d)`).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::posterior::ScalarActNorm;
/// # fn main() -> cpflow::Result<()> {
/// let vm = VarMap::new();
/// let an = ScalarActNorm::new(&vm, "an", 2, DType::F64, &Device::Cpu)?;
/// let x = Tensor::new(&[[1.0f64, 3.0], [5.0, 7.0]], &Device::Cpu)?;
/// an.initialize(&x)?; // mean 4, std √5 over all four entries
/// let (y, logdet) = an.forward(&x)?;
/// let scale = 1.0 / (5f64.sqrt() + 1e-6) + 1e-3;
/// assert!((logdet.to_scalar::<f64>()? - 2.0 * scale.ln()).abs() < 1e-12);
/// assert!((y.to_vec2::<f64>()?[0][0] + 3.0 * scale).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ScalarActNorm {
    dim: usize,
    vars: ActNormVars,
}

impl ScalarActNorm {
    /// Create (or fetch) `<prefix>.bias` (1, 1), `<prefix>.logs` (1, 1) and
    /// `<prefix>.initialized` (1,) in `varmap`, for rows of length `dim`.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(CpflowError::InvalidConfig(
                "ActNorm dimension must be positive".into(),
            ));
        }
        Ok(ScalarActNorm {
            dim,
            vars: ActNormVars::new(varmap, prefix, 1, dtype, device)?,
        })
    }

    /// Row length `d` (the log-det is `d` times the log-scale).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the data-dependent initialisation has run (the flag is saved with the weights).
    pub fn is_initialized(&self) -> Result<bool> {
        self.vars.is_initialized()
    }

    /// Data-dependent initialisation on a `(B, d)` batch, statistics pooled over all `B·d`
    /// entries. Marks the layer initialised.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let x = x.detach().flatten_all()?;
        let mean = x.mean_all()?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_all()?;
        self.vars
            .initialize_from(&mean, &var.sqrt()?, "pooled value")
    }

    /// `y = (x + b)·scale` and the log-det `d·log(scale)` (a scalar tensor), both tracked.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.vars.ensure_initialized()?;
        let scale = self.vars.scale()?;
        let y = x
            .broadcast_add(self.vars.bias.as_tensor())?
            .broadcast_mul(&scale)?;
        let logdet = (scale.log()?.sum_all()? * self.dim as f64)?;
        Ok((y, logdet))
    }

    /// Closed-form inverse `x = y / scale − b` (detached).
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        self.vars.ensure_initialized()?;
        let scale = self.vars.scale()?.detach();
        Ok(y.detach()
            .broadcast_div(&scale)?
            .broadcast_sub(&self.vars.bias.as_tensor().detach())?)
    }

    /// The trainable variables (bias, logs); the flag is not trainable.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.vars.trainable()
    }
}
