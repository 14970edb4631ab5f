//! ActNorm without log-det (the reference's `ActNormNoLogdet`), the per-unit affine
//! normalisation inside the ICNNs. Its data-dependent initialisation's statistics are in
//! `actnorm_init.rs`.
//!
//! Parameter names and shapes follow the reference PyTorch module (`b (1, C, 1)`,
//! `logs (1, C, 1)`), so a PyTorch `state_dict` converted to safetensors loads under the same
//! names.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::actnorm_init::ActNormInit;
use crate::error::{IcnnError, Result};
use crate::layer_input::{check_rows, same_dtype_and_device, with_name};
use crate::params;

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
/// Built under a [`VarBuilder`] ([`ActNorm::new`]) or from tensors of your own
/// ([`ActNorm::from_tensors`], which checks them). The layer keeps its parameter prefix
/// ([`ActNorm::name`]), and its error messages name it (``ActNorm (3 features) at `an` ``).
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
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer for `features = 0` (checked before any parameter
    /// is created), as [`Self::validate`]; the builder's errors.
    pub fn new(vb: &VarBuilder, features: usize) -> Result<Self> {
        if features == 0 {
            return Err(IcnnError::Shape(format!(
                "{}: an ActNorm needs at least one feature (C ≥ 1)",
                describe(&vb.prefix(), 0)
            )));
        }
        let b = params::constant(vb, (1, features, 1), "b", 0.0)?;
        let logs = params::constant(vb, (1, features, 1), "logs", 0.0)?;
        Ok(Self {
            b,
            logs,
            frozen_bias: false,
            name: vb.prefix(),
        })
    }

    /// A layer with the given shift `b` and log-scale `logs`, both `(1, C, 1)` with `C ≥ 1`,
    /// of one floating-point dtype, on one device, named `name` in error messages (`""` for
    /// none); [`Self::frozen_bias`] is false. The tensors are used as they are (not copied,
    /// not detached): [`Self::initialize`] writes its statistics into their storage, so pass
    /// the tensors of [`candle_core::Var`]s (or of a `VarMap`) to train or initialise the
    /// layer, as [`Self::new`] does.
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes, dtypes and
    /// devices, as [`Self::validate`] (no value is read).
    ///
    /// ```
    /// use icnn::{ActNorm, IcnnError};
    /// # use candle_core::{DType, Device, Tensor};
    /// # fn main() -> icnn::Result<()> {
    /// let dev = Device::Cpu;
    /// let b = Tensor::new(&[1.0f64, -2.0], &dev)?.reshape((1, 2, 1))?;
    /// let logs = Tensor::zeros((1, 2, 1), DType::F64, &dev)?;
    /// let an = ActNorm::from_tensors("mine", b.clone(), logs)?;
    /// assert_eq!((an.features(), an.name()), (2, "mine"));
    /// // (x + b)·(exp(0) + 0.001)
    /// let y = an.forward(&Tensor::new(&[[1.0f64, 2.0]], &dev)?)?.to_vec2::<f64>()?;
    /// assert_eq!(y, vec![vec![2.0 * 1.001, 0.0]]);
    /// // A log-scale of 3 features for a shift of 2: refused, naming the layer.
    /// let wide = Tensor::zeros((1, 3, 1), DType::F64, &dev)?;
    /// match ActNorm::from_tensors("mine", b, wide) {
    ///     Err(IcnnError::Shape(m)) => assert!(m.starts_with("ActNorm (2 features) at `mine`")),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// // A shift `(C,)` instead of `(1, C, 1)` is refused too.
    /// let flat = Tensor::zeros(2, DType::F64, &dev)?;
    /// let logs = Tensor::zeros((1, 2, 1), DType::F64, &dev)?;
    /// assert!(matches!(ActNorm::from_tensors("", flat, logs), Err(IcnnError::Shape(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_tensors(name: impl Into<String>, b: Tensor, logs: Tensor) -> Result<Self> {
        let layer = Self {
            b,
            logs,
            frozen_bias: false,
            name: name.into(),
        };
        layer.validate()?;
        Ok(layer)
    }

    /// Number of features `C` (0 when `b` is not `(1, C, 1)`: a shift replaced by hand).
    pub fn features(&self) -> usize {
        match *self.b.dims() {
            [1, c, 1] => c,
            _ => 0,
        }
    }

    /// Checks the layer's own tensors: `b` is `(1, C, 1)` with `C ≥ 1` of a floating-point
    /// dtype and `logs` is `(1, C, 1)` of `b`'s dtype, on its device. Run by
    /// [`Self::from_tensors`], [`Self::forward`],
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
    ///     Err(IcnnError::Shape(m)) => assert!(m.starts_with("ActNorm (3 features) at `an`"), "{m}"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn validate(&self) -> Result<()> {
        let b = &self.b;
        if !(matches!(*b.dims(), [1, c, 1] if c > 0) && b.dtype().is_float()) {
            return Err(IcnnError::Shape(format!(
                "{}: expected a shift `b` of shape (1, C, 1) with C ≥ 1, of a floating-point \
                 dtype; got shape {:?}, {:?}",
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

    /// `"ActNorm (C features) at `name`"`, the layer in error messages.
    fn describe(&self) -> String {
        describe(&self.name, self.features())
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

    /// The parameter prefix of the layer (`icnn.actnorms.2`; the name given to
    /// [`Self::from_tensors`]), empty for a layer built at the root of its builder.
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
    /// ([`Self::validate`]), is an [`IcnnError::Shape`] as in [`Self::forward`]; so is a `b`
    /// or `logs` that is not contiguous (a strided view given to [`Self::from_tensors`]:
    /// the statistics are written in place), checked before anything is written.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let init = self.statistics(x)?;
        self.write(&init)
    }

    /// The checked initialisation statistics of the batch `x` `(B, C)`, not written yet.
    pub(crate) fn statistics(&self, x: &Tensor) -> Result<ActNormInit> {
        self.check_input(x)?;
        self.check_writable()?;
        ActNormInit::from_batch(&self.name, x)
    }

    /// `b` and `logs` can be written in place ([`Self::write`]): both contiguous. Checked
    /// before either is written, so that a failed write cannot leave `b` written and `logs`
    /// not.
    fn check_writable(&self) -> Result<()> {
        if self.b.is_contiguous() && self.logs.is_contiguous() {
            return Ok(());
        }
        Err(IcnnError::Shape(format!(
            "{}: the initialisation writes `b` and `logs` in place and needs both contiguous; \
             got strides {:?} and {:?}",
            self.describe(),
            self.b.stride(),
            self.logs.stride()
        )))
    }

    /// Writes statistics computed by [`Self::statistics`].
    pub(crate) fn write(&self, init: &ActNormInit) -> Result<()> {
        params::write_in_place(&self.b, &init.shift)?;
        params::write_in_place(&self.logs, &init.logs)?;
        Ok(())
    }
}

/// `"ActNorm (C features) at `name`"` (without ` at …` for an unnamed layer), an ActNorm in
/// error messages, in the form of the other layers' (`Linear (3 → 2) at `z1``).
fn describe(name: &str, features: usize) -> String {
    with_name(format!("ActNorm ({features} features)"), name)
}
