//! Gated convolutions (`lib/sylvester/models/layers.py`): `out = conv_h(x) ⊙ σ(conv_g(x))`,
//! two independent convolutions with biases, the `h` branch linear (the reference passes
//! `activation=None` everywhere).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use icnn::gemm_conv::{
    ConvHead, conv_transpose2d_gemm_biased, conv2d_gemm_biased, gated_conv_transpose2d_gemm,
    gated_conv2d_gemm,
};
use rand::Rng;

use crate::error::{CpflowError, Result};

/// A new variable `name` in `varmap`, filled with `U(−bound, bound)` draws from `rng`
/// (PyTorch's default `Conv2d`/`Linear` initialisation has `bound = 1/√fan_in`).
pub(crate) fn uniform_var<R: Rng + ?Sized>(
    varmap: &VarMap,
    name: &str,
    shape: &[usize],
    bound: f64,
    dtype: DType,
    device: &Device,
    rng: &mut R,
) -> Result<Tensor> {
    // Checked: the encoder and decoder are public, so a shape can come from any widths
    // (`Vae::new` refuses oversized models before it gets here).
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= icnn::MAX_MODEL_PARAMETERS)
        .ok_or_else(|| {
            CpflowError::InvalidConfig(format!(
                "VAE variable {name} of shape {} would have more than {} elements: \
                 check the widths of the architecture",
                super::shape_text::tuple_text(shape),
                icnn::MAX_MODEL_PARAMETERS
            ))
        })?;
    let values: Vec<f64> = (0..n)
        .map(|_| (2.0 * rng.random::<f64>() - 1.0) * bound)
        .collect();
    let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
    let var = Var::from_tensor(&t)?;
    let mut data = match varmap.data().lock() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    if data.contains_key(name) {
        return Err(CpflowError::InvalidConfig(format!(
            "variable {name} exists twice in the VAE"
        )));
    }
    data.insert(name.to_string(), var.clone());
    Ok(var.as_tensor().clone())
}

/// Shape of one convolution: kernel `(kh, kw)`, stride, padding and (transposed only)
/// output padding, all as in PyTorch.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::vae::{ConvShape, GatedConv};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let up = ConvShape::square(5, 2, 2).with_output_padding(1);
/// assert_eq!((up.kh, up.kw, up.stride, up.padding, up.output_padding), (5, 5, 2, 2, 1));
/// // A transposed convolution with this shape doubles the size: (7 − 1)·2 − 2·2 + 5 + 1 = 14.
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let vm = VarMap::new();
/// let g = GatedConv::transposed(&vm, "dec", 2, 3, up, DType::F64, &Device::Cpu, &mut rng)?;
/// let x = Tensor::zeros((1, 2, 7, 7), DType::F64, &Device::Cpu)?;
/// assert_eq!(g.forward(&x)?.dims(), &[1, 3, 14, 14]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub padding: usize,
    /// Extra rows/columns on one side of a transposed convolution's output.
    pub output_padding: usize,
}

impl ConvShape {
    /// A square `k × k` kernel.
    pub const fn square(k: usize, stride: usize, padding: usize) -> Self {
        ConvShape {
            kh: k,
            kw: k,
            stride,
            padding,
            output_padding: 0,
        }
    }

    /// The same with an output padding (transposed convolutions).
    pub const fn with_output_padding(mut self, p: usize) -> Self {
        self.output_padding = p;
        self
    }

    /// The `(height, width)` of a convolution's output on an `hw` map (PyTorch's
    /// `Conv2d` arithmetic; 0 where the kernel does not fit).
    pub(crate) fn conv_output(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let side = |n: usize, k: usize| {
            let padded = n.saturating_add(2 * self.padding);
            if padded < k {
                0
            } else {
                (padded - k) / self.stride.max(1) + 1
            }
        };
        (side(h, self.kh), side(w, self.kw))
    }

    /// The `(height, width)` of a transposed convolution's output on an `hw` map
    /// (PyTorch's `ConvTranspose2d` arithmetic, saturating).
    pub(crate) fn transposed_output(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let side = |n: usize, k: usize| {
            n.saturating_sub(1)
                .saturating_mul(self.stride)
                .saturating_add(k + self.output_padding)
                .saturating_sub(2 * self.padding)
        };
        (side(h, self.kh), side(w, self.kw))
    }
}

/// Whether a layer is a convolution or a transposed convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvKind {
    Conv,
    Transposed,
}

/// One convolution (weight + bias) in PyTorch layout.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    shape: ConvShape,
    kind: ConvKind,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn new<R: Rng + ?Sized>(
        varmap: &VarMap,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        shape: ConvShape,
        kind: ConvKind,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        // PyTorch's fan_in is weight.size(1)·kh·kw: n_in for a conv, n_out for a transposed
        // conv (whose weight is (n_in, n_out, kh, kw)).
        let (dims, fan_in) = match kind {
            ConvKind::Conv => ([n_out, n_in, shape.kh, shape.kw], n_in),
            ConvKind::Transposed => ([n_in, n_out, shape.kh, shape.kw], n_out),
        };
        let bound = 1.0 / (fan_in as f64 * shape.kh as f64 * shape.kw as f64).sqrt();
        let weight = uniform_var(
            varmap,
            &format!("{prefix}.weight"),
            &dims,
            bound,
            dtype,
            device,
            rng,
        )?;
        let bias = uniform_var(
            varmap,
            &format!("{prefix}.bias"),
            &[n_out],
            bound,
            dtype,
            device,
            rng,
        )?;
        Ok(Conv {
            weight,
            bias,
            shape,
            kind,
        })
    }

    /// A plain 2-D convolution (`nn.Conv2d`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plain<R: Rng + ?Sized>(
        varmap: &VarMap,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        shape: ConvShape,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        Self::new(
            varmap,
            prefix,
            n_in,
            n_out,
            shape,
            ConvKind::Conv,
            dtype,
            device,
            rng,
        )
    }

    /// `next ∘ self` as one convolution, for `self` a convolution and `next` a pointwise
    /// (1×1, stride 1, unpadded) convolution: the kernel `W₁·W₀` (`W₁` the `(C₂, C₁)`
    /// pointwise kernel, `W₀` the `(C₁, C·kh·kw)` flattened kernel) and the bias
    /// `W₁·b₀ + b₁`. Both are candle ops on the parameters, so gradients reach all four.
    /// `None` when the two do not have those shapes.
    pub(crate) fn then_pointwise(&self, next: &Conv) -> Result<Option<Conv>> {
        let (c_mid, c_in, kh, kw) = self.weight.dims4()?;
        let (c_out, c_mid2, nh, nw) = next.weight.dims4()?;
        let pointwise = ConvShape::square(1, 1, 0);
        if self.kind != ConvKind::Conv
            || next.kind != ConvKind::Conv
            || next.shape != pointwise
            || (c_mid2, nh, nw) != (c_mid, 1, 1)
        {
            return Ok(None);
        }
        let w1 = next.weight.reshape((c_out, c_mid))?;
        let weight = icnn::host_matmul(&w1, &self.weight.reshape((c_mid, c_in * kh * kw))?)?
            .reshape((c_out, c_in, kh, kw))?;
        let bias = (w1.matmul(&self.bias.reshape((c_mid, 1))?)?.squeeze(1)? + &next.bias)?;
        Ok(Some(Conv {
            weight,
            bias,
            shape: self.shape,
            kind: ConvKind::Conv,
        }))
    }

    /// `head(self.forward(x))` as one op on the CPU (`icnn::gemm_conv::conv2d_gemm_headed`):
    /// the convolution output is not a tensor of candle's graph. Convolutions only (an
    /// error for a transposed one).
    pub(crate) fn forward_headed(&self, x: &Tensor, head: Arc<dyn ConvHead>) -> Result<Tensor> {
        let s = self.shape;
        match self.kind {
            ConvKind::Conv => Ok(icnn::gemm_conv::conv2d_gemm_headed(
                x,
                &self.weight,
                &self.bias,
                s.padding,
                s.stride,
                head,
            )?),
            ConvKind::Transposed => Err(CpflowError::InvalidConfig(format!(
                "{}: a transposed convolution has no fused head",
                head.name()
            ))),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.shape;
        // `icnn::gemm_conv`'s im2col + products with hand-written backward (several times
        // faster than candle's CPU convolutions here), starting from the bias: one op.
        Ok(match self.kind {
            ConvKind::Conv => conv2d_gemm_biased(x, &self.weight, &self.bias, s.padding, s.stride)?,
            ConvKind::Transposed => conv_transpose2d_gemm_biased(
                x,
                &self.weight,
                &self.bias,
                s.padding,
                s.output_padding,
                s.stride,
            )?,
        })
    }
}

/// `GatedConv2d` / `GatedConvTranspose2d`: `conv_h(x) ⊙ σ(conv_g(x))`.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::vae::{ConvShape, GatedConv};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let vm = VarMap::new();
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let g = GatedConv::conv(&vm, "enc.0", 1, 4, ConvShape::square(5, 2, 2), DType::F64, &Device::Cpu, &mut rng)?;
/// let x = Tensor::zeros((2, 1, 28, 20), DType::F64, &Device::Cpu)?;
/// assert_eq!(g.forward(&x)?.dims(), &[2, 4, 14, 10]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct GatedConv {
    h: Conv,
    g: Conv,
}

impl GatedConv {
    /// A gated convolution `n_in → n_out` (variables `{prefix}.h.{weight,bias}` and
    /// `{prefix}.g.{weight,bias}`, PyTorch's default initialisation).
    #[allow(clippy::too_many_arguments)]
    pub fn conv<R: Rng + ?Sized>(
        varmap: &VarMap,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        shape: ConvShape,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        Self::build(
            varmap,
            prefix,
            n_in,
            n_out,
            shape,
            ConvKind::Conv,
            dtype,
            device,
            rng,
        )
    }

    /// A gated transposed convolution `n_in → n_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn transposed<R: Rng + ?Sized>(
        varmap: &VarMap,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        shape: ConvShape,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        Self::build(
            varmap,
            prefix,
            n_in,
            n_out,
            shape,
            ConvKind::Transposed,
            dtype,
            device,
            rng,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build<R: Rng + ?Sized>(
        varmap: &VarMap,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        shape: ConvShape,
        kind: ConvKind,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        let p = |b: &str| format!("{prefix}.{b}");
        let h = Conv::new(
            varmap,
            &p("h"),
            n_in,
            n_out,
            shape,
            kind,
            dtype,
            device,
            rng,
        )?;
        let g = Conv::new(
            varmap,
            &p("g"),
            n_in,
            n_out,
            shape,
            kind,
            dtype,
            device,
            rng,
        )?;
        Ok(GatedConv { h, g })
    }

    /// `conv_h(x) ⊙ σ(conv_g(x))` for `x` of shape `(B, C, H, W)`.
    ///
    /// The two convolutions run as one with `2·n_out` output channels (their kernels
    /// concatenated), which halves the passes over `x`, and that convolution, its bias and
    /// the gate are one op (`icnn::gemm_conv::gated_conv2d_gemm`): the pre-activation is no
    /// tensor of candle's graph. The result is the same.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, g) = (&self.h, &self.g);
        let s = h.shape;
        let bias = Tensor::cat(&[&h.bias, &g.bias], 0)?;
        Ok(match h.kind {
            ConvKind::Conv => gated_conv2d_gemm(
                x,
                &Tensor::cat(&[&h.weight, &g.weight], 0)?,
                &bias,
                s.padding,
                s.stride,
            )?,
            ConvKind::Transposed => gated_conv_transpose2d_gemm(
                x,
                &Tensor::cat(&[&h.weight, &g.weight], 1)?,
                &bias,
                s.padding,
                s.output_padding,
                s.stride,
            )?,
        })
    }
}
