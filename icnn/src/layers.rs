//! Building blocks: unconstrained linear layer, positive linear layer, ActNorm (no log-det).
//!
//! Parameter names and shapes follow the reference PyTorch modules (`nn.Linear`:
//! `weight (out, in)`, `bias (out,)`; `ActNormNoLogdet`: `b (1, C, 1)`, `logs (1, C, 1)`), so a
//! PyTorch `state_dict` converted to safetensors loads under the same names.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rand::Rng;

use crate::activation::softplus;
use crate::actnorm_init::ActNormInit;
use crate::error::{IcnnError, Result};
use crate::layer_input::{
    check_dense_layer, check_has_inputs, check_rows, dense_size, describe_dense,
    same_dtype_and_device, with_name,
};
use crate::params;

/// `y = x Wᵀ + b` with PyTorch's default init `U(−1/√n_in, 1/√n_in)` for `W` and `b`.
///
/// Built under a [`VarBuilder`] ([`Linear::new`], [`Linear::new_zeros`]) or from tensors of
/// your own ([`Linear::from_tensors`], which checks them). The layer keeps its parameter
/// prefix ([`Linear::name`]), and its error messages name it.
///
/// ```
/// use icnn::Linear;
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let layer = Linear::new(&vb.pp("fc"), 3, 2, true, &mut rng)?;
/// assert_eq!((layer.n_in(), layer.n_out(), layer.name()), (3, 2, "fc"));
/// // PyTorch's init: every weight in [−1/√3, 1/√3].
/// let w = layer.weight.to_vec2::<f64>()?;
/// assert!(w.iter().flatten().all(|v| v.abs() <= 1.0 / 3f64.sqrt()));
/// // x = e₀ picks the first column of W, plus the bias.
/// let x = Tensor::new(&[[1.0f64, 0.0, 0.0]], &Device::Cpu)?;
/// let y = layer.forward(&x)?.to_vec2::<f64>()?;
/// let b = layer.bias.as_ref().unwrap().to_vec1::<f64>()?;
/// assert!((y[0][1] - (w[1][0] + b[1])).abs() < 1e-15);
/// // Four features for a 3-input layer: a shape error naming the layer, before candle runs.
/// let wide = Tensor::zeros((1, 4), DType::F64, &Device::Cpu)?;
/// match layer.forward(&wide) {
///     Err(icnn::IcnnError::Shape(m)) => assert!(m.starts_with("Linear (3 → 2) at `fc`"), "{m}"),
///     other => panic!("unexpected {other:?}"),
/// }
/// // The context gates start at zero.
/// let gate = Linear::new_zeros(&vb.pp("gate"), 3, 2)?;
/// assert_eq!(gate.forward(&x)?.to_vec2::<f64>()?, vec![vec![0.0, 0.0]]);
/// // Tensors of your own are checked: a 1-D weight is refused, not a panic later.
/// let flat = Tensor::zeros(6, DType::F64, &Device::Cpu)?;
/// assert!(matches!(Linear::from_tensors("mine", flat, None), Err(icnn::IcnnError::Shape(_))));
/// let mine = Linear::from_tensors("mine", layer.weight.clone(), None)?;
/// assert_eq!((mine.n_in(), mine.n_out()), (3, 2));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Linear {
    /// `(out, in)`. Replacing it by hand is checked by [`Linear::validate`] (run by
    /// [`Linear::forward`]).
    pub weight: Tensor,
    /// `(out,)`, when the layer has a bias.
    pub bias: Option<Tensor>,
    /// The parameter prefix (`block3.z1`), used in error messages.
    name: String,
}

impl Linear {
    /// Creates (or loads) `weight` and, when `bias` is true, `bias` under `vb`.
    pub fn new<R: Rng + ?Sized>(
        vb: &VarBuilder,
        n_in: usize,
        n_out: usize,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let weight = params::linear_default(vb, (n_out, n_in), "weight", n_in, rng)?;
        let bias = if bias {
            Some(params::linear_default(vb, n_out, "bias", n_in, rng)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            name: vb.prefix(),
        })
    }

    /// Creates (or loads) a linear layer whose weight and bias are zero-initialised
    /// (the reference's context gates).
    pub fn new_zeros(vb: &VarBuilder, n_in: usize, n_out: usize) -> Result<Self> {
        let weight = params::constant(vb, (n_out, n_in), "weight", 0.0)?;
        let bias = Some(params::constant(vb, n_out, "bias", 0.0)?);
        Ok(Self {
            weight,
            bias,
            name: vb.prefix(),
        })
    }

    /// A layer with the given `weight` `(out, in)` and `bias` `(out,)`, named `name` in error
    /// messages (`""` for none). The tensors are used as they are (not copied, not detached).
    ///
    /// # Errors
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer and the expected and
    /// given shapes, as [`Self::validate`].
    pub fn from_tensors(
        name: impl Into<String>,
        weight: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let layer = Self {
            weight,
            bias,
            name: name.into(),
        };
        layer.validate()?;
        Ok(layer)
    }

    /// The parameter prefix of the layer (`block3.z1`; the name given to
    /// [`Self::from_tensors`]), empty for a layer built at the root of its builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the layer's own tensors: `weight` is `(out, in)` of a floating-point dtype and
    /// `bias`, when present, is `(out,)` of the weight's dtype, on its device.
    ///
    /// # Errors
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer and the expected and
    /// given shapes (no value is read).
    pub fn validate(&self) -> Result<()> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        check_dense_layer("Linear", w, b, &self.name, |_| Ok(()))
    }

    /// `"Linear (in → out) at `name`"`.
    fn describe(&self) -> String {
        describe_dense("Linear", &self.weight, &self.name)
    }

    /// `x Wᵀ + b` for `x` of shape `(B, in)`.
    ///
    /// # Errors
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer and the expected and
    /// given shapes when `x` is not `(B, in)` or has another dtype or device than `W`, or when
    /// the layer's own tensors do not agree ([`Self::validate`]); checked first: no value is
    /// read.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.validate()?;
        check_rows(|| self.describe(), x, self.n_in(), &self.weight)?;
        self.forward_unchecked(x)
    }

    /// [`Self::forward`] without its input check, for callers that validated `x` already.
    pub(crate) fn forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Number of inputs (0 when `weight` is not 2-D: a weight replaced by hand, which
    /// [`Self::validate`] refuses).
    pub fn n_in(&self) -> usize {
        dense_size(&self.weight, 1)
    }

    /// Number of outputs (0 when `weight` is not 2-D, as [`Self::n_in`]).
    pub fn n_out(&self) -> usize {
        dense_size(&self.weight, 0)
    }
}

/// Positive linear layer of the reference (`PosLinear`): `y = (x softplus(W)ᵀ + b) / n_in`.
/// The `1/n_in` gain applies to the bias too.
///
/// ```
/// use icnn::PosLinear;
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let layer = PosLinear::new(&vb.pp("pos"), 4, 3, true, &mut rng)?;
/// let w = layer.effective_weight()?;
/// assert_eq!(w.dims(), &[3, 4]);
/// assert!(w.flatten_all()?.to_vec1::<f64>()?.iter().all(|&v| v > 0.0));
/// // Non-negative weights: the output is non-decreasing in every input.
/// let lo = Tensor::new(&[[0.0f64, 1.0, -1.0, 2.0]], &Device::Cpu)?;
/// let hi = (&lo + 0.5)?;
/// let diff = (layer.forward(&hi)? - layer.forward(&lo)?)?.to_vec2::<f64>()?;
/// assert!(diff[0].iter().all(|&d| d > 0.0));
/// // A bias of 4 entries for 3 outputs is refused, naming the layer.
/// let bias = Tensor::zeros(4, DType::F64, &Device::Cpu)?;
/// match PosLinear::from_tensors("p", layer.weight.clone(), Some(bias)) {
///     Err(icnn::IcnnError::Shape(m)) => assert!(m.starts_with("PosLinear (4 → 3) at `p`")),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PosLinear {
    /// Unconstrained weight `(out, in)`; the effective weight is `softplus(W)/n_in ≥ 0`.
    /// Replacing it by hand is checked by [`PosLinear::validate`] (run by
    /// [`PosLinear::forward`] and the effective parameters).
    pub weight: Tensor,
    /// `(out,)`, when the layer has a bias.
    pub bias: Option<Tensor>,
    /// The parameter prefix (`icnn.Wzs.2`), used in error messages.
    name: String,
}

impl PosLinear {
    /// Creates (or loads) the layer under `vb` (PyTorch default init of `nn.Linear`).
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer for `n_in = 0` (checked before any parameter is
    /// created), as [`Self::validate`]; the builder's errors.
    pub fn new<R: Rng + ?Sized>(
        vb: &VarBuilder,
        n_in: usize,
        n_out: usize,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let layer = || with_name(format!("PosLinear ({n_in} → {n_out})"), &vb.prefix());
        check_has_inputs(layer, n_in)?;
        let l = Linear::new(vb, n_in, n_out, bias, rng)?;
        Ok(Self {
            weight: l.weight,
            bias: l.bias,
            name: l.name,
        })
    }

    /// A layer with the given unconstrained `weight` `(out, in)` and `bias` `(out,)`, named
    /// `name` in error messages (`""` for none). The tensors are used as they are.
    ///
    /// # Errors
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer and the expected and
    /// given shapes, as [`Self::validate`].
    pub fn from_tensors(
        name: impl Into<String>,
        weight: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let layer = Self {
            weight,
            bias,
            name: name.into(),
        };
        layer.validate()?;
        Ok(layer)
    }

    /// The parameter prefix of the layer (`icnn.Wzs.2`; the name given to
    /// [`Self::from_tensors`]), empty for a layer built at the root of its builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the layer's own tensors, as [`Linear::validate`], and that it has inputs: the
    /// effective weight and bias divide by `n_in`, so a layer with none would have an
    /// infinite (or NaN) bias. (A plain [`Linear`] with no inputs is allowed: its output is
    /// its bias.)
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes (no value is
    /// read).
    pub fn validate(&self) -> Result<()> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        check_dense_layer("PosLinear", w, b, &self.name, |layer| {
            check_has_inputs(layer, self.n_in())
        })
    }

    /// `"PosLinear (in → out) at `name`"`.
    fn describe(&self) -> String {
        describe_dense("PosLinear", &self.weight, &self.name)
    }

    /// Number of inputs (0 when `weight` is not 2-D, as [`Linear::n_in`]).
    pub fn n_in(&self) -> usize {
        dense_size(&self.weight, 1)
    }

    /// Number of outputs (0 when `weight` is not 2-D, as [`Linear::n_in`]).
    pub fn n_out(&self) -> usize {
        dense_size(&self.weight, 0)
    }

    /// The effective non-negative weight `softplus(W)/n_in`, shape `(out, in)`.
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn effective_weight(&self) -> Result<Tensor> {
        self.validate()?;
        self.effective_weight_unchecked()
    }

    /// The effective bias `b/n_in`, shape `(out,)`.
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn effective_bias(&self) -> Result<Option<Tensor>> {
        self.validate()?;
        self.effective_bias_unchecked()
    }

    fn effective_weight_unchecked(&self) -> Result<Tensor> {
        Ok(softplus(&self.weight)?.affine(1.0 / self.n_in() as f64, 0.0)?)
    }

    fn effective_bias_unchecked(&self) -> Result<Option<Tensor>> {
        Ok(match &self.bias {
            Some(b) => Some(b.affine(1.0 / self.n_in() as f64, 0.0)?),
            None => None,
        })
    }

    /// `(x softplus(W)ᵀ + b)/n_in` for `x` of shape `(B, in)`.
    ///
    /// # Errors
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer and the expected and
    /// given shapes when `x` is not `(B, in)` or has another dtype or device than `W`, or when
    /// the layer's own tensors do not agree ([`Self::validate`]); checked first: no value is
    /// read.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.validate()?;
        check_rows(|| self.describe(), x, self.n_in(), &self.weight)?;
        let y = x.matmul(&self.effective_weight_unchecked()?.t()?)?;
        Ok(match self.effective_bias_unchecked()? {
            Some(b) => y.broadcast_add(&b)?,
            None => y,
        })
    }
}

/// The lower bound added to the ActNorm scale (reference `_scaling_min`).
pub const ACTNORM_SCALE_MIN: f64 = 0.001;

/// ActNorm without log-det (reference `ActNormNoLogdet`): `y = (x + b) ⊙ (exp(logs) + 0.001)`.
///
/// The data-dependent initialisation (`b = −mean`, `logs = log(1/(std + 1e-6))`, biased std
/// over the batch) is run by the owning network on its first `potential`/`linearize` call
/// (see [`ActNorm::initialize`]); the network keeps an `initialized` flag variable next to
/// the parameters, so a loaded model is not re-initialised. A batch of fewer than 2 rows,
/// with non-finite values, or on which no unit varies is an
/// [`IcnnError::Initialization`](crate::IcnnError::Initialization) and writes nothing.
///
/// ```
/// use icnn::{ActNorm, IcnnError};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let an = ActNorm::new(&vb.pp("an"), 2)?;
/// assert_eq!(an.features(), 2);
/// let x = Tensor::new(&[[1.0f64, 10.0], [2.0, 10.0], [3.0, 20.0], [4.0, 20.0]], &Device::Cpu)?;
/// an.initialize(&x)?;
/// // After the init each feature has mean 0 and standard deviation
/// // std·(1/(std + 1e-6) + 0.001) = 1 + O(1e-3·std) over the batch.
/// let y = an.forward(&x)?;
/// let mean = y.mean(0)?.to_vec1::<f64>()?;
/// let std = y.sqr()?.mean(0)?.sqrt()?.to_vec1::<f64>()?;
/// assert!(mean.iter().all(|m| m.abs() < 1e-12));
/// assert!(std.iter().all(|s| (s - 1.0).abs() < 0.01));
/// // One row has no spread: refused, and nothing is written.
/// let err = an.initialize(&x.narrow(0, 0, 1)?).unwrap_err();
/// assert!(matches!(err, IcnnError::Initialization { .. }));
/// assert_eq!(an.name(), "an");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ActNorm {
    /// Shift, stored as `(1, C, 1)` like the reference.
    pub b: Tensor,
    /// Log-scale, stored as `(1, C, 1)` like the reference.
    pub logs: Tensor,
    /// When true the shift is used detached (not trained), as the reference's ICNN3 output
    /// ActNorm (`b.requires_grad_(False)`); it is still set by the data-dependent init.
    pub frozen_bias: bool,
    /// The parameter prefix (`icnn.actnorms.2`), used in error messages.
    name: String,
}

impl ActNorm {
    /// Creates (or loads) `b` and `logs` (zeros) under `vb`.
    pub fn new(vb: &VarBuilder, features: usize) -> Result<Self> {
        let b = params::constant(vb, (1, features, 1), "b", 0.0)?;
        let logs = params::constant(vb, (1, features, 1), "logs", 0.0)?;
        Ok(Self {
            b,
            logs,
            frozen_bias: false,
            name: vb.prefix(),
        })
    }

    /// Number of features `C` (0 when `b` is not `(1, C, 1)`: a shift replaced by hand).
    pub fn features(&self) -> usize {
        match *self.b.dims() {
            [1, c, 1] => c,
            _ => 0,
        }
    }

    /// Checks the layer's own tensors: `b` is `(1, C, 1)` of a floating-point dtype and
    /// `logs` is `(1, C, 1)` of `b`'s dtype, on its device. Run by [`Self::forward`],
    /// [`Self::shift`], [`Self::scale`] and [`Self::initialize`], so a parameter replaced by
    /// hand is refused there.
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes, dtypes and
    /// devices (no value is read).
    ///
    /// ```
    /// use icnn::{ActNorm, IcnnError};
    /// # use candle_core::{DType, Device, Tensor};
    /// # use candle_nn::{VarBuilder, VarMap};
    /// # fn main() -> icnn::Result<()> {
    /// let varmap = VarMap::new();
    /// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    /// let mut an = ActNorm::new(&vb.pp("an"), 3)?;
    /// an.validate()?;
    /// // A log-scale of 4 features for 3: refused, naming the layer (not candle's reshape error).
    /// an.logs = Tensor::zeros((1, 4, 1), DType::F64, &Device::Cpu)?;
    /// match an.scale() {
    ///     Err(IcnnError::Shape(m)) => assert!(m.starts_with("ActNorm `an` (3 features)"), "{m}"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn validate(&self) -> Result<()> {
        let b = &self.b;
        if !(matches!(*b.dims(), [1, _, 1]) && b.dtype().is_float()) {
            return Err(IcnnError::Shape(format!(
                "{}: expected a shift `b` of shape (1, C, 1) of a floating-point dtype; got \
                 shape {:?}, {:?}",
                self.describe(),
                b.dims(),
                b.dtype()
            )));
        }
        let (logs, c) = (&self.logs, self.features());
        if matches!(*logs.dims(), [1, n, 1] if n == c) && same_dtype_and_device(logs, b) {
            return Ok(());
        }
        Err(IcnnError::Shape(format!(
            "{}: expected a log-scale `logs` of shape (1, {c}, 1), {:?}, on {:?} like `b`; got \
             shape {:?}, {:?}, on {:?}",
            self.describe(),
            b.dtype(),
            b.device().location(),
            logs.dims(),
            logs.dtype(),
            logs.device().location()
        )))
    }

    /// `"ActNorm `name` (C features)"`, the layer in error messages.
    fn describe(&self) -> String {
        format!("ActNorm `{}` ({} features)", self.name, self.features())
    }

    /// The shift `b` as a `(C,)` tensor (detached when the bias is frozen).
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn shift(&self) -> Result<Tensor> {
        self.validate()?;
        self.shift_unchecked()
    }

    /// The positive scale `exp(logs) + 0.001` as a `(C,)` tensor.
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn scale(&self) -> Result<Tensor> {
        self.validate()?;
        self.scale_unchecked()
    }

    fn shift_unchecked(&self) -> Result<Tensor> {
        let b = self.b.reshape(self.features())?;
        Ok(if self.frozen_bias { b.detach() } else { b })
    }

    fn scale_unchecked(&self) -> Result<Tensor> {
        Ok(self
            .logs
            .reshape(self.features())?
            .exp()?
            .affine(1.0, ACTNORM_SCALE_MIN)?)
    }

    /// `(x + b) ⊙ scale` for `x` of shape `(B, C)`.
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes when `x` is not
    /// `(B, C)` or has another dtype or device than the parameters, or when the layer's own
    /// tensors do not agree ([`Self::validate`]); checked first: no value is read.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        self.apply(x)
    }

    /// [`Self::forward`] without its input check, for callers that validated `x` already
    /// (the layer's own tensors are still checked).
    pub(crate) fn forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        self.validate()?;
        self.apply(x)
    }

    /// `(x + b) ⊙ scale` of a validated layer.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_add(&self.shift_unchecked()?)?
            .broadcast_mul(&self.scale_unchecked()?)?)
    }

    /// The layer's own tensors ([`Self::validate`]), then `x`: `(B, C)` of the parameters'
    /// dtype, on their device.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        self.validate()?;
        check_rows(|| self.describe(), x, self.features(), &self.b)
    }

    /// The parameter prefix of the layer (`icnn.actnorms.2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Data-dependent initialisation from a batch `x` `(B, C)` of pre-activations:
    /// `b = −mean(x)`, `logs = log(1/(std(x) + 1e-6))` (biased std over the batch).
    ///
    /// A unit constant over the batch gets `logs = log(1e6)` as in the reference. Fewer than
    /// 2 rows, a non-finite value, or a batch on which no unit varies is an
    /// [`IcnnError::Initialization`](crate::IcnnError::Initialization) naming the layer, and
    /// leaves `b` and `logs` as they were. A batch that is not `(B, C)` of the parameters'
    /// dtype, on their device, or a layer whose own tensors do not agree
    /// ([`Self::validate`]), is an [`IcnnError::Shape`] as in [`Self::forward`].
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let init = self.statistics(x)?;
        self.write(&init)
    }

    /// The checked initialisation statistics of the batch `x` `(B, C)`, not written yet.
    pub(crate) fn statistics(&self, x: &Tensor) -> Result<ActNormInit> {
        self.check_input(x)?;
        ActNormInit::from_batch(&self.name, x)
    }

    /// Writes statistics computed by [`Self::statistics`].
    pub(crate) fn write(&self, init: &ActNormInit) -> Result<()> {
        params::write_in_place(&self.b, &init.shift)?;
        params::write_in_place(&self.logs, &init.logs)?;
        Ok(())
    }
}
