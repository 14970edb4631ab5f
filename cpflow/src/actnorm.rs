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
    bias: Var,
    logs: Var,
    initialized: Var,
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
        let vb = VarBuilder::from_varmap(varmap, dtype, device).pp(prefix);
        vb.get_with_hints((1, dim), "bias", Init::Const(0.0))?;
        vb.get_with_hints((1, dim), "logs", Init::Const(0.0))?;
        vb.get_with_hints(1, "initialized", Init::Const(0.0))?;
        Ok(ActNorm {
            dim,
            bias: var_by_name(varmap, &format!("{prefix}.bias"))?,
            logs: var_by_name(varmap, &format!("{prefix}.logs"))?,
            initialized: var_by_name(varmap, &format!("{prefix}.initialized"))?,
        })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the data-dependent initialisation has run (stored in the weights).
    pub fn is_initialized(&self) -> Result<bool> {
        let v = self
            .initialized
            .as_tensor()
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        Ok(v.first().copied().unwrap_or(0.0) > 0.5)
    }

    /// Data-dependent initialisation: `b = −mean(x)`, `logs = log(1/(std(x) + 1e-6))`, with
    /// the biased variance over the batch. Marks the layer initialised.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let x = x.detach();
        let mean = x.mean_keepdim(0)?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
        let logs = (var.sqrt()? + 1e-6)?.log()?.neg()?;
        self.bias.set(&mean.neg()?)?;
        self.logs.set(&logs)?;
        self.initialized.set(&self.initialized.ones_like()?)?;
        Ok(())
    }

    fn ensure_initialized(&self) -> Result<()> {
        if self.is_initialized()? {
            Ok(())
        } else {
            Err(CpflowError::NotInitialized)
        }
    }

    /// Per-feature scale `exp(logs) + 0.001`, shape (1, d), parameter-tracking.
    fn scale(&self) -> Result<Tensor> {
        Ok((self.logs.as_tensor().exp()? + ACTNORM_SCALE_MIN)?)
    }

    /// `y = (x + b) ⊙ scale` and the log-det `Σ log scale` (a scalar tensor, tracked).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.ensure_initialized()?;
        let scale = self.scale()?;
        let y = x
            .broadcast_add(self.bias.as_tensor())?
            .broadcast_mul(&scale)?;
        let logdet = scale.log()?.sum_all()?;
        Ok((y, logdet))
    }

    /// Closed-form inverse `x = y / scale − b`.
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        self.ensure_initialized()?;
        let scale = self.scale()?.detach();
        Ok(y.broadcast_div(&scale)?
            .broadcast_sub(&self.bias.as_tensor().detach())?)
    }

    /// The trainable variables (bias, logs); the flag is not trainable.
    pub fn trainable_vars(&self) -> Vec<Var> {
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
