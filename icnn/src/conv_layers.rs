//! Convolutional building blocks: a plain 2-D convolution and the reference's positive
//! convolution `PosConv2d`, plus the adjoint (transposed) convolution used by the explicit
//! gradient and Hessian-vector products. The image shape and the convolution geometry are in
//! `conv_geometry.rs`.
//!
//! Parameter names and shapes follow PyTorch's `nn.Conv2d` (`weight (out, in, k, k)`,
//! `bias (out,)`) and the default init `U(±1/√fan_in)` with `fan_in = in·k·k`, drawn on the
//! host from the caller's RNG.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rand::Rng;

use crate::activation::softplus;
use crate::conv_geometry::ConvGeometry;
use crate::error::{IcnnError, Result};
use crate::layer_input::{
    check_conv_geometry, check_conv_layer, check_has_inputs, check_images, conv_channels,
    describe_conv, describe_conv_sizes,
};
use crate::params;

/// `y = conv(x, W) + b` (PyTorch `nn.Conv2d`, square kernel). `x` is `(B, C_in, H, W)`.
///
/// Built under a [`VarBuilder`] ([`Conv2d::new`]) or from tensors of your own
/// ([`Conv2d::from_tensors`], which checks them); error messages name the layer's parameter
/// prefix ([`Conv2d::name`]).
///
/// ```
/// use icnn::{Conv2d, ConvGeometry};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let geometry = ConvGeometry { kernel: 3, stride: 2, padding: 1 };
/// let conv = Conv2d::new(&vb.pp("conv"), 2, 4, geometry, true, &mut rng)?;
/// assert_eq!((conv.n_in(), conv.n_out(), conv.fan_in()), (2, 4, 18));
/// let x = Tensor::ones((3, 2, 5, 5), DType::F64, &Device::Cpu)?;
/// assert_eq!(conv.forward(&x)?.dims(), &[3, 4, 3, 3]); // (5 + 2 − 3)/2 + 1 = 3
/// // A zero image gives the bias in every pixel.
/// let y0 = conv.forward(&x.zeros_like()?)?;
/// let bias = conv.bias.as_ref().unwrap().to_vec1::<f64>()?;
/// assert_eq!(y0.get(0)?.get(1)?.to_vec2::<f64>()?[2][2], bias[1]);
/// // Three channels, or f32 pixels, for this f64 layer of 2 input channels: shape errors.
/// let rgb = Tensor::ones((3, 3, 5, 5), DType::F64, &Device::Cpu)?;
/// assert!(matches!(conv.forward(&rgb), Err(icnn::IcnnError::Shape(_))));
/// assert!(matches!(conv.forward(&x.to_dtype(DType::F32)?), Err(icnn::IcnnError::Shape(_))));
/// // A 3×3 kernel with a 5×5 geometry is refused when the layer is built.
/// let five = ConvGeometry { kernel: 5, ..geometry };
/// let r = Conv2d::from_tensors("mine", conv.weight.clone(), None, five);
/// assert!(matches!(r, Err(icnn::IcnnError::Shape(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `(out, in, k, k)`. Replacing it by hand is checked by [`Conv2d::validate`] (run by
    /// [`Conv2d::forward`]).
    pub weight: Tensor,
    /// `(out,)`, when the layer has a bias.
    pub bias: Option<Tensor>,
    /// Kernel size, stride, padding.
    pub geometry: ConvGeometry,
    /// The parameter prefix (`icnn.Wz0`), used in error messages.
    name: String,
}

impl Conv2d {
    /// Creates (or loads) `weight` and, when `bias` is true, `bias` under `vb`, with
    /// PyTorch's default init `U(±1/√fan_in)`, `fan_in = n_in·k·k` (weight drawn first).
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer for a kernel size or stride 0 (checked before
    /// any parameter is created), as [`Self::validate`]; the builder's errors.
    pub fn new<R: Rng + ?Sized>(
        vb: &VarBuilder,
        n_in: usize,
        n_out: usize,
        geometry: ConvGeometry,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let layer = || describe_conv_sizes("Conv2d", (n_in, n_out), geometry, &vb.prefix());
        check_conv_geometry(layer, geometry)?;
        let (weight, bias) = conv_parameters(vb, (n_in, n_out), geometry, bias, rng)?;
        Ok(Self {
            weight,
            bias,
            geometry,
            name: vb.prefix(),
        })
    }

    /// A layer with the given `weight` `(out, in, k, k)` (`k = geometry.kernel`) and `bias`
    /// `(out,)`, named `name` in error messages (`""` for none). The tensors are used as they
    /// are (not copied, not detached).
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes, as
    /// [`Self::validate`].
    pub fn from_tensors(
        name: impl Into<String>,
        weight: Tensor,
        bias: Option<Tensor>,
        geometry: ConvGeometry,
    ) -> Result<Self> {
        let layer = Self {
            weight,
            bias,
            geometry,
            name: name.into(),
        };
        layer.validate()?;
        Ok(layer)
    }

    /// The parameter prefix of the layer (`icnn.Wz0`; the name given to
    /// [`Self::from_tensors`]), empty for a layer built at the root of its builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the layer's own tensors: the geometry's kernel size and stride are positive,
    /// `weight` is `(out, in, k, k)` with `k` the geometry's kernel, of a floating-point
    /// dtype, and `bias`, when present, is `(out,)` of the weight's dtype, on its device. (No
    /// input channels is allowed: the output is then the bias.)
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes (no value is
    /// read).
    pub fn validate(&self) -> Result<()> {
        let (w, b, g) = (&self.weight, self.bias.as_ref(), self.geometry);
        check_conv_layer("Conv2d", w, b, g, &self.name)
    }

    /// Input channels (0 when `weight` is not 4-D: a weight replaced by hand, which
    /// [`Self::validate`] refuses).
    pub fn n_in(&self) -> usize {
        conv_channels(&self.weight, 1)
    }

    /// Output channels (0 when `weight` is not 4-D, as [`Self::n_in`]).
    pub fn n_out(&self) -> usize {
        conv_channels(&self.weight, 0)
    }

    /// `n_in·k·k` (0 when `weight` is not 4-D, as [`Self::n_in`]).
    pub fn fan_in(&self) -> usize {
        conv_fan_in(&self.weight)
    }

    /// `conv(x, W) + b` for `x` `(B, n_in, H, W)`.
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes when `x` is not
    /// `(B, n_in, H, W)`, its padded `H×W` does not hold the kernel, or it has another dtype or
    /// device than `W`, or when the layer's own tensors do not agree ([`Self::validate`]);
    /// checked first: no value is read.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.validate()?;
        check_images(
            || describe_conv("Conv2d", &self.weight, self.geometry, &self.name),
            x,
            self.n_in(),
            &self.weight,
            self.geometry,
        )?;
        let y = conv(x, &self.weight, self.geometry)?;
        add_channel_bias(y, self.bias.as_ref())
    }
}

/// The reference's positive convolution (`PosConv2d`): `y = (conv(x, softplus(W)) + b)/fan_in`
/// with `fan_in = n_in·k·k` fixed at construction. The bias is divided by `fan_in` too, as in
/// the reference (its `_conv_forward` adds the bias before the division).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvGeometry, PosConv2d};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let conv = PosConv2d::new(&vb.pp("conv"), 2, 3, ConvGeometry::SAME_3X3, true, &mut rng)?;
/// assert_eq!((conv.fan_in(), conv.name()), (18, "conv"));
/// // Positive kernel: a non-negative image gives a larger output than its zero image.
/// let x = Tensor::ones((1, 2, 4, 4), DType::F64, &Device::Cpu)?;
/// let zero = x.zeros_like()?;
/// let diff = (conv.forward(&x)? - conv.forward(&zero)?)?;
/// assert!(diff.flatten_all()?.min(0)?.to_scalar::<f64>()? > 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PosConv2d {
    /// Unconstrained weight `(out, in, k, k)`; the kernel is `softplus(W)/fan_in ≥ 0`.
    /// Replacing it by hand is checked by [`PosConv2d::validate`] (run by
    /// [`PosConv2d::forward`] and the effective parameters).
    pub weight: Tensor,
    /// `(out,)`, when the layer has a bias (effective bias `b/fan_in`).
    pub bias: Option<Tensor>,
    /// Kernel size, stride, padding.
    pub geometry: ConvGeometry,
    /// The parameter prefix (`icnn.Wzs.0.1`), used in error messages.
    name: String,
}

impl PosConv2d {
    /// Creates (or loads) the layer under `vb` (PyTorch default init of `nn.Conv2d`).
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer for a kernel size or stride 0, or no input
    /// channels (checked before any parameter is created), as [`Self::validate`]; the
    /// builder's errors.
    pub fn new<R: Rng + ?Sized>(
        vb: &VarBuilder,
        n_in: usize,
        n_out: usize,
        geometry: ConvGeometry,
        bias: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let layer = || describe_conv_sizes("PosConv2d", (n_in, n_out), geometry, &vb.prefix());
        check_conv_geometry(layer, geometry)?;
        check_has_inputs(layer, n_in)?;
        let (weight, bias) = conv_parameters(vb, (n_in, n_out), geometry, bias, rng)?;
        Ok(Self {
            weight,
            bias,
            geometry,
            name: vb.prefix(),
        })
    }

    /// A layer with the given unconstrained `weight` `(out, in, k, k)` (`k =
    /// geometry.kernel`) and `bias` `(out,)`, named `name` in error messages (`""` for none).
    /// The tensors are used as they are.
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes, as
    /// [`Self::validate`].
    pub fn from_tensors(
        name: impl Into<String>,
        weight: Tensor,
        bias: Option<Tensor>,
        geometry: ConvGeometry,
    ) -> Result<Self> {
        let layer = Self {
            weight,
            bias,
            geometry,
            name: name.into(),
        };
        layer.validate()?;
        Ok(layer)
    }

    /// The parameter prefix of the layer (`icnn.Wzs.0.1`; the name given to
    /// [`Self::from_tensors`]), empty for a layer built at the root of its builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the layer's own tensors, as [`Conv2d::validate`], and that it has input
    /// channels: the effective kernel and bias divide by `fan_in = n_in·k·k`, so a layer with
    /// none would have an infinite (or NaN) bias.
    ///
    /// # Errors
    /// [`IcnnError::Shape`] naming the layer and the expected and given shapes (no value is
    /// read).
    pub fn validate(&self) -> Result<()> {
        let (w, b, g) = (&self.weight, self.bias.as_ref(), self.geometry);
        check_conv_layer("PosConv2d", w, b, g, &self.name)?;
        check_has_inputs(|| describe_conv("PosConv2d", w, g, &self.name), self.n_in())
    }

    /// Input channels (0 when `weight` is not 4-D, as [`Conv2d::n_in`]).
    pub fn n_in(&self) -> usize {
        conv_channels(&self.weight, 1)
    }

    /// Output channels (0 when `weight` is not 4-D, as [`Conv2d::n_in`]).
    pub fn n_out(&self) -> usize {
        conv_channels(&self.weight, 0)
    }

    /// `n_in·k·k`, the reference's `fan_in` (0 when `weight` is not 4-D, as
    /// [`Conv2d::n_in`]).
    pub fn fan_in(&self) -> usize {
        conv_fan_in(&self.weight)
    }

    /// The effective non-negative kernel `softplus(W)/fan_in`, shape `(out, in, k, k)`.
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn effective_weight(&self) -> Result<Tensor> {
        self.validate()?;
        self.effective_weight_unchecked()
    }

    /// The effective bias `b/fan_in`, shape `(out,)`.
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn effective_bias(&self) -> Result<Option<Tensor>> {
        self.validate()?;
        self.effective_bias_unchecked()
    }

    fn effective_weight_unchecked(&self) -> Result<Tensor> {
        Ok(softplus(&self.weight)?.affine(1.0 / self.fan_in() as f64, 0.0)?)
    }

    fn effective_bias_unchecked(&self) -> Result<Option<Tensor>> {
        Ok(match &self.bias {
            Some(b) => Some(b.affine(1.0 / self.fan_in() as f64, 0.0)?),
            None => None,
        })
    }

    /// `(conv(x, softplus(W)) + b)/fan_in` for `x` `(B, n_in, H, W)`.
    ///
    /// # Errors
    /// As [`Conv2d::forward`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.validate()?;
        check_images(
            || describe_conv("PosConv2d", &self.weight, self.geometry, &self.name),
            x,
            self.n_in(),
            &self.weight,
            self.geometry,
        )?;
        let y = conv(x, &self.effective_weight_unchecked()?, self.geometry)?;
        add_channel_bias(y, self.effective_bias_unchecked()?.as_ref())
    }
}

/// The `weight` `(n_out, n_in, k, k)` and, when `bias` is true, `bias` `(n_out,)` of a conv
/// layer created (or loaded) under `vb` with PyTorch's default init `U(±1/√fan_in)`,
/// `fan_in = n_in·k·k` (weight drawn first).
fn conv_parameters<R: Rng + ?Sized>(
    vb: &VarBuilder,
    (n_in, n_out): (usize, usize),
    geometry: ConvGeometry,
    bias: bool,
    rng: &mut R,
) -> Result<(Tensor, Option<Tensor>)> {
    let k = geometry.kernel;
    let fan_in = n_in.saturating_mul(k).saturating_mul(k);
    let weight = params::linear_default(vb, (n_out, n_in, k, k), "weight", fan_in, rng)?;
    let bias = if bias {
        Some(params::linear_default(vb, n_out, "bias", fan_in, rng)?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// `n_in·k·k` of a conv weight `(out, n_in, k, k)` read from its dims (also for `out = 0`),
/// 0 for a weight of another rank.
fn conv_fan_in(weight: &Tensor) -> usize {
    match *weight.dims() {
        [_, n_in, kh, kw] => n_in.saturating_mul(kh).saturating_mul(kw),
        _ => 0,
    }
}

/// `y + b` with `b` `(C,)` broadcast over `(B, C, H, W)`.
pub(crate) fn add_channel_bias(y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    Ok(match b {
        Some(b) => crate::gemm_conv::add_channel_bias(&y, b)?,
        None => y,
    })
}

/// The convolution `conv(x, kernel)` (no bias) with the given geometry.
///
/// Strided convolutions are computed on an explicitly zero-padded input cropped to the rows
/// and columns the windows read, with no implicit padding: candle's backward of a strided
/// `conv2d` derives one output padding from the height only and fails on inputs whose two
/// axes need different ones (e.g. 4×5 with stride 2). The values are the same.
pub(crate) fn conv(x: &Tensor, kernel: &Tensor, g: ConvGeometry) -> Result<Tensor> {
    if g.stride == 1 {
        return crate::gemm_conv::conv2d_gemm(x, kernel, g.padding, 1);
    }
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = g.output_hw((h, w))?;
    let used = |n_out: usize| (n_out - 1) * g.stride + g.kernel;
    let mut xp = x.clone();
    if g.padding > 0 {
        xp = xp
            .pad_with_zeros(2, g.padding, g.padding)?
            .pad_with_zeros(3, g.padding, g.padding)?;
    }
    let xp = xp.narrow(2, 0, used(ho))?.narrow(3, 0, used(wo))?;
    crate::gemm_conv::conv2d_gemm(&xp, kernel, 0, g.stride)
}

/// A convolution kernel prepared for repeated forward and adjoint applications.
#[derive(Debug, Clone)]
pub(crate) struct PreparedConv {
    /// `(out, in, k, k)`.
    pub kernel: Tensor,
    /// For stride-1 convolutions with `padding ≤ k − 1`: the kernel flipped in space with its
    /// channel axes swapped, `(in, out, k, k)`; the adjoint is then a plain convolution with
    /// padding `k − 1 − p` (faster than candle's transposed convolution).
    pub adjoint_kernel: Option<Tensor>,
    pub geometry: ConvGeometry,
    /// `(H, W)` of the input, so that the adjoint restores it exactly.
    pub input_hw: (usize, usize),
}

impl PreparedConv {
    pub(crate) fn new(
        kernel: Tensor,
        geometry: ConvGeometry,
        input_hw: (usize, usize),
    ) -> Result<Self> {
        let adjoint_kernel = if geometry.adjoint_is_flipped_conv() {
            Some(kernel.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?)
        } else {
            None
        };
        Ok(Self {
            kernel,
            adjoint_kernel,
            geometry,
            input_hw,
        })
    }

    pub(crate) fn detach(&self) -> Self {
        Self {
            kernel: self.kernel.detach(),
            adjoint_kernel: self.adjoint_kernel.as_ref().map(Tensor::detach),
            geometry: self.geometry,
            input_hw: self.input_hw,
        }
    }

    /// `conv(x, K)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv(x, &self.kernel, self.geometry)
    }

    /// The adjoint `Kᵀ y`: `(B, out, H', W') → (B, in, H, W)`.
    pub(crate) fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        let g = self.geometry;
        if let Some(k) = &self.adjoint_kernel {
            return crate::gemm_conv::conv2d_gemm(y, k, g.kernel - 1 - g.padding, 1);
        }
        // Transposed convolution; `output_padding` restores rows/columns that the forward
        // stride dropped. candle takes one output padding for both axes: use the larger one
        // and cut the extra row/column (it does not change the others).
        let (_, _, ho, wo) = y.dims4()?;
        let (h, w) = self.input_hw;
        let base = |n_out: usize| (n_out - 1) * g.stride + g.kernel;
        let pad_needed = |n: usize, n_out: usize| -> Result<usize> {
            let b = base(n_out);
            if n + 2 * g.padding < b {
                return Err(IcnnError::Shape(format!(
                    "adjoint of convolution {g:?}: output {n_out} does not match input {n}"
                )));
            }
            Ok(n + 2 * g.padding - b)
        };
        let op = pad_needed(h, ho)?.max(pad_needed(w, wo)?);
        let x = crate::gemm_conv::conv_transpose2d_gemm(y, &self.kernel, g.padding, op, g.stride)?;
        let (_, _, hx, wx) = x.dims4()?;
        Ok(if hx != h || wx != w {
            x.narrow(2, 0, h)?.narrow(3, 0, w)?
        } else {
            x
        })
    }
}
