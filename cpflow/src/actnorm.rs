//! ActNorm with a log-determinant and a data-dependent initialisation that is saved with the
//! model.
//!
//! `y = (x + b) ⊙ (exp(logs) + 0.001)` per feature (`docs/reference/cpflow-reference.md` §1.3). The log-det is
//! the scalar `Σ_c log(exp(logs_c) + 0.001)`, the same for every sample. Unlike the reference,
//! the "initialised" flag is a variable stored beside the parameters, so a loaded model needs no
//! dummy forward pass.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::{CpflowError, Result};

/// The lower bound added to the ActNorm scale (`_scaling_min` in the reference).
pub const ACTNORM_SCALE_MIN: f64 = 1e-3;

/// Per-feature affine normalisation layer with log-det (a flow layer).
#[derive(Clone, Debug)]
pub struct ActNorm {
    dim: usize,
    vars: ActNormVars,
}

/// Look a variable up by its full name in a [`VarMap`].
pub(crate) fn var_by_name(varmap: &VarMap, name: &str) -> Result<Var> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| CpflowError::InvalidConfig("variable map lock poisoned".into()))?;
    data.get(name)
        .cloned()
        .ok_or_else(|| CpflowError::InvalidConfig(format!("variable {name} not found")))
}

impl ActNorm {
    /// Create (or fetch) the layer's variables `<prefix>.bias`, `<prefix>.logs`,
    /// `<prefix>.initialized` in `varmap`. The layer starts uninitialised (identity up to the
    /// 0.001 scale offset) until [`ActNorm::initialize`] is called.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        dim: usize,
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(CpflowError::InvalidConfig(
                "ActNorm dimension must be positive".into(),
            ));
        }
        Ok(ActNorm {
            dim,
            vars: ActNormVars::new(varmap, prefix, dim, dtype, device)?,
        })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the data-dependent initialisation has run (stored in the weights).
    pub fn is_initialized(&self) -> Result<bool> {
        self.vars.is_initialized()
    }

    /// Data-dependent initialisation: `b = −mean(x)`, `logs = log(1/(std(x) + 1e-6))`, with
    /// the biased variance over the batch. Marks the layer initialised.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let x = x.detach();
        let mean = x.mean_keepdim(0)?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
        self.vars.initialize_from(&mean, &var.sqrt()?)
    }

    /// `y = (x + b) ⊙ scale` and the log-det `Σ log scale` (a scalar tensor, tracked).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.vars.ensure_initialized()?;
        let scale = self.vars.scale()?;
        let y = x
            .broadcast_add(self.vars.bias.as_tensor())?
            .broadcast_mul(&scale)?;
        let logdet = scale.log()?.sum_all()?;
        Ok((y, logdet))
    }

    /// Closed-form inverse `x = y / scale − b`.
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        self.vars.ensure_initialized()?;
        let scale = self.vars.scale()?.detach();
        Ok(y.broadcast_div(&scale)?
            .broadcast_sub(&self.vars.bias.as_tensor().detach())?)
    }

    /// The trainable variables (bias, logs); the flag is not trainable.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.vars.trainable()
    }
}

/// The variables of every ActNorm flavour (per feature, per channel, scalar): `bias` and `logs`
/// of shape `(1, width)` and the saved `initialized` flag `(1,)`.
#[derive(Clone, Debug)]
pub(crate) struct ActNormVars {
    pub(crate) bias: Var,
    pub(crate) logs: Var,
    flag: Var,
}

impl ActNormVars {
    /// Create (or fetch) `<prefix>.bias`, `<prefix>.logs` (both `(1, width)`, zero) and
    /// `<prefix>.initialized` in `varmap`.
    pub(crate) fn new(
        varmap: &VarMap,
        prefix: &str,
        width: usize,
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let builder = VarBuilder::from_varmap(varmap, dtype, device).pp(prefix);
        builder.get_with_hints((1, width), "bias", Init::Const(0.0))?;
        builder.get_with_hints((1, width), "logs", Init::Const(0.0))?;
        builder.get_with_hints(1, "initialized", Init::Const(0.0))?;
        Ok(ActNormVars {
            bias: var_by_name(varmap, &format!("{prefix}.bias"))?,
            logs: var_by_name(varmap, &format!("{prefix}.logs"))?,
            flag: var_by_name(varmap, &format!("{prefix}.initialized"))?,
        })
    }

    /// Whether the data-dependent initialisation has run (stored in the weights).
    pub(crate) fn is_initialized(&self) -> Result<bool> {
        let v = self
            .flag
            .as_tensor()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        Ok(v.first().copied().unwrap_or(0.0) > 0.5)
    }

    /// `Err(NotInitialized)` before the initialisation.
    pub(crate) fn ensure_initialized(&self) -> Result<()> {
        if self.is_initialized()? {
            Ok(())
        } else {
            Err(CpflowError::NotInitialized)
        }
    }

    /// Set `b = −mean`, `logs = −log(std + 1e-6)` (both reshaped to `(1, width)`) and mark
    /// the layer initialised.
    pub(crate) fn initialize_from(&self, mean: &Tensor, std: &Tensor) -> Result<()> {
        let shape = self.bias.shape().clone();
        self.bias.set(&mean.neg()?.reshape(&shape)?)?;
        self.logs
            .set(&(std + 1e-6)?.log()?.neg()?.reshape(&shape)?)?;
        self.flag.set(&self.flag.ones_like()?)?;
        Ok(())
    }

    /// Scale `exp(logs) + 0.001`, `(1, width)`, parameter-tracking.
    pub(crate) fn scale(&self) -> Result<Tensor> {
        Ok((self.logs.as_tensor().exp()? + ACTNORM_SCALE_MIN)?)
    }

    /// The trainable variables (bias, logs); the flag is not trainable.
    pub(crate) fn trainable(&self) -> Vec<Var> {
        vec![self.bias.clone(), self.logs.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn init_standardises_and_inverse_and_logdet_are_right() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let an = ActNorm::new(&vm, "an", 3, DType::F64, &dev).unwrap();
        assert!(!an.is_initialized().unwrap());
        let data: Vec<f64> = (0..30)
            .map(|i| ((i * 37 % 11) as f64) * 0.7 - 2.0 + (i % 3) as f64)
            .collect();
        let x = Tensor::from_vec(data, (10, 3), &dev).unwrap();
        assert!(matches!(an.forward(&x), Err(CpflowError::NotInitialized)));
        an.initialize(&x).unwrap();
        assert!(an.is_initialized().unwrap());
        let (y, ld) = an.forward(&x).unwrap();
        // Mean zero exactly; std = s/(s+1e-6)·(1 + 0.001·(s+1e-6)) ≈ 1 + 0.001·s.
        let mean = y.mean(0).unwrap().to_vec1::<f64>().unwrap();
        for m in mean {
            assert!(m.abs() < 1e-12);
        }
        let xb = an.inverse(&y).unwrap();
        let err = (xb - &x)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(err < 1e-12);
        // log-det vs the closed form Σ log(1/(std+1e-6) + 0.001)
        let xs = x.to_vec2::<f64>().unwrap();
        let mut expect = 0.0;
        for c in 0..3 {
            let m: f64 = xs.iter().map(|r| r[c]).sum::<f64>() / 10.0;
            let v: f64 = xs.iter().map(|r| (r[c] - m).powi(2)).sum::<f64>() / 10.0;
            expect += (1.0 / (v.sqrt() + 1e-6) + 1e-3).ln();
        }
        assert!((ld.to_scalar::<f64>().unwrap() - expect).abs() < 1e-12);
    }
}
