//! Dense building blocks: the unconstrained linear layer and the positive linear layer (the
//! ActNorm is in `actnorm.rs`).
//!
//! Parameter names and shapes follow the reference PyTorch modules (`nn.Linear`:
//! `weight (out, in)`, `bias (out,)`), so a PyTorch `state_dict` converted to safetensors
//! loads under the same names.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rand::Rng;

use crate::activation::softplus;
use crate::error::Result;
use crate::layer_input::{
    check_dense_layer, check_has_inputs, check_rows, dense_size, describe_dense, with_name,
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
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer for `n_in = 0` (checked
    /// before any parameter is created), as [`Self::validate`]; the builder's errors.
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
    /// [`IcnnError::Shape`](crate::IcnnError::Shape) naming the layer and the expected and
    /// given shapes (no value is read).
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
