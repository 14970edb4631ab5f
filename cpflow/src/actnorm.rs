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

/// The epsilon in `logs = −log(std + 1e-6)` (the reference's): the layer scales a feature
/// by at most about `1e6`.
pub const ACTNORM_STD_EPS: f64 = 1e-6;

/// The lower bound added to the ActNorm scale (`_scaling_min` in the reference).
pub const ACTNORM_SCALE_MIN: f64 = 1e-3;

/// Per-feature affine normalisation layer with log-det (a flow layer).
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::ActNorm;
/// # fn main() -> cpflow::Result<()> {
/// let varmap = VarMap::new();
/// let norm = ActNorm::new(&varmap, "norm", 2, DType::F64, &Device::Cpu)?;
/// let x = Tensor::new(&[[1.0f64, 10.0], [3.0, 20.0], [5.0, 30.0]], &Device::Cpu)?;
/// assert!(norm.forward(&x).is_err()); // not initialised yet
/// norm.initialize(&x)?; // b = −mean, scale ≈ 1/std (biased std over the batch)
/// let (y, logdet) = norm.forward(&x)?;
/// for m in y.mean(0)?.to_vec1::<f64>()? {
///     assert!(m.abs() < 1e-12); // centred
/// }
/// // log-det = Σ_c log(1/(std_c + 1e-6) + 0.001)
/// let want: f64 = [(8.0f64 / 3.0).sqrt(), (200.0f64 / 3.0).sqrt()]
///     .iter()
///     .map(|s| (1.0 / (s + 1e-6) + 0.001).ln())
///     .sum();
/// assert!((logdet.to_scalar::<f64>()? - want).abs() < 1e-12);
/// let back = norm.inverse(&y)?;
/// assert!((back - &x)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// # Ok(())
/// # }
/// ```
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
    /// The statistics are accumulated on the host in `f64`, mean first, then the centred
    /// squares, whatever the layer's dtype ([`icnn::feature_statistics`]), and then rounded
    /// to it: in f32 the sums drift on data far from 0 (65,536 rows of spread 1 around `1e4`
    /// were normalised to |mean| 0.97 and std 0.25, no error). On f64 data the results are
    /// those of the f64 reductions before, bit for bit.
    ///
    /// `x` is `(n, dim)` with `n ≥ 2` finite rows, and every feature must vary over them: a
    /// constant feature (standard deviation 0) would be scaled by `1e6` and is an error, which
    /// leaves the layer as it was (a feature whose values are all equal counts as constant
    /// even when the rounding of its mean leaves a tiny standard deviation). So are statistics
    /// `f64` cannot hold: a feature whose values differ so little (below about `1e-162`) that
    /// its variance underflows to 0, or so much (about `1e154`) that it overflows; f32 data
    /// cannot reach either (a spread too small for the layer is refused by the floor below).
    /// The errors say which, with values in scientific notation.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let x = self.check_rows(x)?;
        let n = x.dim(0)?;
        if n < 2 {
            return Err(CpflowError::InvalidInput(format!(
                "ActNorm initialisation needs at least 2 rows to standardise each feature, got {n}"
            )));
        }
        let rows = x
            .detach()
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let icnn::BatchStatistics { mean, std } = icnn::feature_statistics(&rows, self.dim)?;
        check_feature_spread(&rows, self.dim, (&mean, &std), x.dtype())?;
        let as_layer = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (1, self.dim), x.device())?.to_dtype(x.dtype())?)
        };
        self.vars
            .initialize_from(&as_layer(mean)?, &as_layer(std)?, "feature")
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
            .set(&(std + ACTNORM_STD_EPS)?.log()?.neg()?.reshape(&shape)?)?;
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

/// The per-feature diagnosis behind a zero or non-finite standard deviation (`f64`
/// statistics `mean`, `std`) of the finite row-major `(n, d)` batch `rows` (of the layer's
/// `dtype`), which [`check_statistics`] cannot make from the statistics alone: a feature
/// whose values are all equal (named with its value; also when the rounding of the mean left
/// a standard deviation within rounding of 0), one that varies but whose variance underflows
/// to 0 (values too close together for `f64`), or one whose mean or variance overflows.
/// Features with a non-finite value are left to [`check_statistics`].
fn check_feature_spread(
    rows: &[f64],
    d: usize,
    (mean, std): (&[f64], &[f64]),
    dtype: DType,
) -> Result<()> {
    // All-equal values whose mean is rounded have a standard deviation of a few ulps of it
    // (of `f64`, where the statistics are computed; the margin of the layer's type is kept).
    let rounding = 64.0
        * match dtype {
            DType::F64 => f64::EPSILON,
            _ => f64::from(f32::EPSILON),
        };
    let suspect = |j: usize| {
        !(mean[j].is_finite() && std[j].is_finite()) || std[j] <= rounding * mean[j].abs()
    };
    if !(0..std.len()).any(suspect) {
        return Ok(());
    }
    let (mut constant, mut underflow, mut overflow) = (Vec::new(), Vec::new(), Vec::new());
    for j in (0..d).filter(|&j| suspect(j)) {
        let column = rows.iter().skip(j).step_by(d.max(1));
        if column.clone().any(|v| !v.is_finite()) {
            continue;
        }
        let (lo, hi) = column.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        if lo == hi {
            constant.push((j, lo));
        } else if !(mean[j].is_finite() && std[j].is_finite()) {
            overflow.push((j, lo, hi));
        } else if std[j] == 0.0 {
            underflow.push((j, lo, hi));
        }
    }
    // "feature 3" or "feature 3, 5 (feature 3: …)": the values of the first one.
    let named = |js: &[usize], values: String| match js {
        [j] => format!("feature {j} ({values})"),
        _ => format!("feature {} (feature {}: {values})", first_few(js, 8), js[0]),
    };
    if let Some(&(_, lo, hi)) = overflow.first() {
        let js: Vec<usize> = overflow.iter().map(|o| o.0).collect();
        return Err(CpflowError::InvalidInput(format!(
            "ActNorm initialisation: the mean or variance of {} overflows {dtype:?}: the \
             values are too large for the float type; rescale the data (e.g. standardise it)",
            named(&js, format!("values from {lo:e} to {hi:e}"))
        )));
    }
    if let Some(&(_, lo, hi)) = underflow.first() {
        let js: Vec<usize> = underflow.iter().map(|u| u.0).collect();
        return Err(CpflowError::InvalidInput(format!(
            "ActNorm initialisation: {} is not constant over the batch, but its variance \
             underflows to 0 in {dtype:?}: the values differ by too little for the float \
             type; rescale the data (e.g. standardise it)",
            named(&js, format!("values from {lo:e} to {hi:e}"))
        )));
    }
    if !constant.is_empty() {
        let js: Vec<usize> = constant.iter().map(|c| c.0).collect();
        let values: Vec<String> = constant.iter().map(|(_, v)| format!("{v:e}")).collect();
        return Err(CpflowError::InvalidInput(format!(
            "ActNorm initialisation: feature {} is constant over the batch (every value {} in \
             {dtype:?}), which the layer would scale by 1e6; drop a constant feature from the \
             data, or initialise from a batch in which every feature varies (data that vary \
             by less than {dtype:?} resolves are constant once converted to it: then rescale \
             them)",
            first_few(&js, 8),
            if js.len() == 1 {
                values[0].clone()
            } else {
                format!("resp. {}", first_few(&values, 8))
            }
        )));
    }
    Ok(())
}

/// The initialisation statistics' errors: non-finite values, then constant units, then units
/// whose spread is too small for the layer's scale to bring to a resolvable one (each named
/// by its index, at most 8 of them).
fn check_statistics(mean: &Tensor, std: &Tensor, unit: &str) -> Result<()> {
    let std_dtype = std.dtype();
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
            "ActNorm initialisation: {} has standard deviation 0 over the batch, which the \
             layer would scale by 1e6: it is constant (then initialise from a batch in which \
             every {unit} varies, or drop a constant {unit} from the data) or its values \
             differ by so little that their variance underflows in the float type (then \
             rescale the data)",
            list(constant)
        )));
    }
    // The layer scales by at most 1/(std + 1e-6) ≈ 1e6: a unit of spread std leaves it with
    // spread std/(std + 1e-6). Below √ε of the float type (1.5e-8 in f64, 3.5e-4 in f32: a
    // data spread below 1.5e-14, resp. 3.5e-10), the next layers, which add terms of order 1
    // to it, keep half its digits or fewer; a network behind it saw its units as constant
    // ("none of its 16 units varies … initialise from a batch of distinct points" for data
    // ×1e-30, whose points were distinct).
    let resolution = krylov::unit_roundoff_of(std_dtype).sqrt();
    let spread = |s: f64| s / (s + ACTNORM_STD_EPS);
    let narrow: Vec<usize> = (0..std.len())
        .filter(|&i| spread(std[i]) < resolution)
        .collect();
    if let Some(&first) = narrow.first() {
        return Err(CpflowError::InvalidInput(format!(
            "ActNorm initialisation: {} has standard deviation {:e} over the batch ({unit} \
             {first}), below the spread the layer can bring to unit scale: it scales by at \
             most 1/(std + {ACTNORM_STD_EPS:e}), so its output would vary by {:e}, within \
             the rounding of {std_dtype:?} once later layers add terms of order 1. The data's \
             spread is below ActNorm's 1e-6 floor: standardise the data (subtract each \
             column's mean, divide by its standard deviation)",
            list(narrow.clone()),
            std[first],
            spread(std[first])
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
        assert!(m.contains("every value resp. 5e0, 3e0 in F64"), "{m}");
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

    /// Statistics the float type cannot hold are told apart from constant features: a column
    /// of spread 1e-200 (its variance, ~1e-400, underflows to 0 in f64) is "not constant"
    /// with its range; one around 1e300 is constant with its value printed as `1e300` (it was
    /// a 301-digit number); one of spread 1e200 overflows. A column of equal values whose
    /// mean rounds (0.1 · 3 / 3) is constant too. Before, the first read "constant
    /// (standard deviation 0)" and the last passed with a scale of ~1e6.
    #[test]
    fn underflow_overflow_and_constant_values_are_told_apart() {
        let dev = Device::Cpu;
        let an = ActNorm::new(&VarMap::new(), "an", 2, DType::F64, &dev).unwrap();
        let message = |v: &[f64]| {
            let x = Tensor::from_vec(v.to_vec(), (v.len() / 2, 2), &dev).unwrap();
            let e = an.initialize(&x).unwrap_err();
            assert!(matches!(e, CpflowError::InvalidInput(_)), "{e}");
            assert!(!an.is_initialized().unwrap());
            e.to_string()
        };
        let m = message(&[1e-200, 1.0, -2e-200, 2.0, 3e-200, 0.5]);
        assert!(
            m.contains("feature 0 (values from -2e-200 to 3e-200) is not constant")
                && m.contains("underflows to 0 in F64")
                && m.contains("rescale the data"),
            "{m}"
        );
        let m = message(&[1e300, 1.0, 1e300, 2.0, 1e300, 0.5]);
        assert!(
            m.contains("feature 0 is constant") && m.contains("every value 1e300"),
            "{m}"
        );
        assert!(!m.contains("000000"), "{m}");
        let m = message(&[1.0, 1e200, 2.0, -1e200, 0.5, 3e199]);
        assert!(
            m.contains("variance of feature 1 (values from -1e200 to 1e200) overflows F64"),
            "{m}"
        );
        let m = message(&[1.0, 0.1, 2.0, 0.1, 0.5, 0.1]);
        assert!(
            m.contains("feature 1 is constant") && m.contains("every value 1e-1"),
            "{m}"
        );
        // Values of different magnitudes whose spread is tiny relative to them are fine.
        let x = Tensor::from_vec(vec![1.0, 1e3, 2.0, 1e3 + 1e-9, 0.5, 1e3], (3, 2), &dev).unwrap();
        an.initialize(&x).unwrap();
    }

    /// In f32, data of spread 1e-50 are all 0 once converted: constant, with the hint that
    /// data finer than the float type resolves become constant in it; a spread of 1e-30
    /// survives the conversion, and its variance (1e-60, which underflowed in f32 before the
    /// statistics were accumulated in f64) is the f64 statistics' own: it is refused by the
    /// layer's 1e-6 floor instead.
    #[test]
    fn values_flushed_to_zero_in_f32_are_constant_with_a_hint() {
        let dev = Device::Cpu;
        let an = ActNorm::new(&VarMap::new(), "an", 2, DType::F32, &dev).unwrap();
        let message = |spread: f64| {
            let x = Tensor::from_vec(vec![spread, 1.0, -spread, 2.0], (2, 2), &dev)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            an.initialize(&x).unwrap_err().to_string()
        };
        let m = message(1e-50);
        assert!(
            m.contains("feature 0 is constant")
                && m.contains("every value 0e0 in F32")
                && m.contains("constant once converted"),
            "{m}"
        );
        let m = message(1e-30);
        assert!(
            m.contains("feature 0 has standard deviation") && m.contains("standardise the data"),
            "{m}"
        );
    }

    /// Data whose spread is far below ActNorm's 1e-6 floor are refused with the remedy
    /// "standardise the data": before, data ×1e-30 initialised this layer and the next
    /// network's ActNorm refused its units as constant, asking for distinct points.
    #[test]
    fn spread_below_the_floor_is_refused_with_standardise() {
        let dev = Device::Cpu;
        for (dtype, tiny, fine) in [(DType::F64, 1e-30, 1e-13), (DType::F32, 1e-12, 1e-9)] {
            let an = ActNorm::new(&VarMap::new(), "an", 2, dtype, &dev).unwrap();
            let rows = |s: f64| {
                let v: Vec<f64> = (0..8).flat_map(|i| [i as f64 * s, i as f64]).collect();
                Tensor::from_vec(v, (8, 2), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            };
            let m = an.initialize(&rows(tiny)).unwrap_err().to_string();
            assert!(
                m.contains("feature 0 has standard deviation")
                    && m.contains("below ActNorm's 1e-6 floor: standardise the data"),
                "{m}"
            );
            assert!(!an.is_initialized().unwrap());
            // Spreads above √ε·1e-6 (1.5e-14 in f64, 3.5e-10 in f32) initialise.
            an.initialize(&rows(fine)).unwrap();
        }
    }
}
