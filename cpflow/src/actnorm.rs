//! ActNorm with a log-determinant and a data-dependent initialisation that is saved with the
//! model.
//!
//! `y = (x + b) ⊙ (exp(logs) + 0.001)` per feature (`docs/reference/cpflow-reference.md` §1.3). The log-det is
//! the scalar `Σ_c log(exp(logs_c) + 0.001)`, the same for every sample. Unlike the reference,
//! the "initialised" flag is a variable stored beside the parameters, so a loaded model needs no
//! dummy forward pass.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::{CpflowError, Result, first_few};

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
    ///
    /// `x` is `(n, dim)` with `n ≥ 2` finite rows, and every feature must vary over them: a
    /// constant feature (standard deviation 0) would be scaled by `1e6` and is an error, which
    /// leaves the layer as it was.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let x = self.check_rows(x)?.detach();
        let n = x.dim(0)?;
        if n < 2 {
            return Err(CpflowError::InvalidInput(format!(
                "ActNorm initialisation needs at least 2 rows to standardise each feature, got {n}"
            )));
        }
        let mean = x.mean_keepdim(0)?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
        self.vars.initialize_from(&mean, &var.sqrt()?, "feature")
    }

    /// `x` as a `(n, dim)` matrix of the layer's dtype, or an error naming its shape / dtype.
    fn check_rows<'a>(&self, x: &'a Tensor) -> Result<&'a Tensor> {
        let dtype = self.vars.bias.dtype();
        match x.dims() {
            [_, d] if *d == self.dim && x.dtype() == dtype => Ok(x),
            [_, d] if *d == self.dim => Err(CpflowError::InvalidInput(format!(
                "ActNorm holds {dtype:?} parameters, got {:?} rows",
                x.dtype()
            ))),
            dims => Err(CpflowError::InvalidInput(format!(
                "ActNorm of dimension {} takes (batch, {}) rows, got shape {dims:?}",
                self.dim, self.dim
            ))),
        }
    }

    /// `y = (x + b) ⊙ scale` and the log-det `Σ log scale` (a scalar tensor, tracked).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.vars.ensure_initialized()?;
        let x = self.check_rows(x)?;
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
        let y = self.check_rows(y)?;
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
    /// the layer initialised. Statistics that are not finite, or a standard deviation of 0 (a
    /// `unit` — feature, channel — constant over the batch, which would be scaled by `1e6`),
    /// are an error that leaves the layer as it was.
    pub(crate) fn initialize_from(&self, mean: &Tensor, std: &Tensor, unit: &str) -> Result<()> {
        check_statistics(mean, std, unit)?;
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

/// The initialisation statistics' errors: non-finite values, then constant units (each named
/// by its index, at most 8 of them).
fn check_statistics(mean: &Tensor, std: &Tensor, unit: &str) -> Result<()> {
    let host = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    };
    let (mean, std) = (host(mean)?, host(std)?);
    let list = |bad: Vec<usize>| format!("{unit} {}", first_few(&bad, 8));
    let non_finite: Vec<usize> = (0..mean.len())
        .filter(|&i| !(mean[i].is_finite() && std[i].is_finite()))
        .collect();
    if !non_finite.is_empty() {
        return Err(CpflowError::InvalidInput(format!(
            "ActNorm initialisation: the batch's mean or standard deviation of {} is not finite",
            list(non_finite)
        )));
    }
    let constant: Vec<usize> = (0..std.len()).filter(|&i| std[i] == 0.0).collect();
    if !constant.is_empty() {
        return Err(CpflowError::InvalidInput(format!(
            "ActNorm initialisation: {} is constant over the batch (standard deviation 0), \
             which the layer would scale by 1e6; initialise from a batch in which every {unit} \
             varies (or drop a constant {unit} from the data)",
            list(constant)
        )));
    }
    Ok(())
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

    /// Degenerate batches are errors that leave the layer uninitialised; before, one row or a
    /// constant feature gave scales of 1e6 (log-densities of -1e68 afterwards), an empty batch
    /// NaN parameters, and a wrong shape was broadcast silently.
    #[test]
    fn degenerate_batches_and_wrong_shapes_are_errors() {
        let dev = Device::Cpu;
        let an = ActNorm::new(&VarMap::new(), "an", 3, DType::F64, &dev).unwrap();
        let rows = |v: &[f64], n: usize| Tensor::from_vec(v.to_vec(), (n, 3), &dev).unwrap();
        let message = |x: &Tensor| {
            let e = an.initialize(x).unwrap_err();
            assert!(matches!(e, CpflowError::InvalidInput(_)), "{e}");
            assert!(!an.is_initialized().unwrap());
            e.to_string()
        };
        assert!(message(&rows(&[1.0, 2.0, 3.0], 1)).contains("at least 2 rows"));
        assert!(message(&Tensor::zeros((0, 3), DType::F64, &dev).unwrap()).contains("got 0"));
        let m = message(&rows(&[1.0, 5.0, 3.0, 2.0, 5.0, 3.0], 2));
        assert!(m.contains("feature 1, 2 is constant"), "{m}");
        let m = message(&rows(&[1.0, 5.0, f64::NAN, 2.0, 4.0, 3.0], 2));
        assert!(m.contains("feature 2") && m.contains("not finite"), "{m}");
        for bad in [
            Tensor::zeros(3, DType::F64, &dev).unwrap(),
            Tensor::zeros((2, 1), DType::F64, &dev).unwrap(),
            Tensor::zeros((2, 4), DType::F64, &dev).unwrap(),
        ] {
            assert!(
                message(&bad).contains("takes (batch, 3) rows"),
                "{:?}",
                bad.dims()
            );
        }
        an.initialize(&rows(&[1.0, 5.0, 3.0, 2.0, 4.0, 2.0], 2))
            .unwrap();
        for bad in [
            Tensor::zeros(3, DType::F64, &dev).unwrap(),
            Tensor::zeros((2, 1), DType::F64, &dev).unwrap(),
        ] {
            assert!(an.forward(&bad).is_err() && an.inverse(&bad).is_err());
        }
        // Another dtype is named (it was candle's "dtype mismatch in copy_strided").
        let f32_rows = rows(&[1.0, 5.0, 3.0, 2.0, 4.0, 2.0], 2)
            .to_dtype(DType::F32)
            .unwrap();
        let e = an.forward(&f32_rows).unwrap_err().to_string();
        assert!(e.contains("F64 parameters, got F32 rows"), "{e}");
    }
}
