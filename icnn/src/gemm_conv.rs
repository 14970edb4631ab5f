//! CPU convolutions as im2col/col2im + matrix products, with hand-written backward passes.
//!
//! candle 0.11's CPU `conv2d` is about 3× slower than PyTorch's, its `conv_transpose2d` (a
//! direct loop) 2× slower still, and its conv backward uses `conv_transpose2d` for the input
//! gradient (`docs/reference/images-vae.md` §6). Here, with `cols(x_b)` the `(C·kh·kw, P)`
//! patch matrix of image `b` (`P = H_out·W_out` positions) and `K` the flattened kernel:
//! - [`conv2d_gemm`]: `y_b = K (C_out × C_in·kh·kw) · cols(x_b)`, written straight into the
//!   `(B, C_out, H_out, W_out)` output;
//! - [`conv_transpose2d_gemm`]: `y_b = col2im(Kᵀ (C_out·kh·kw × C_in) · x_b (C_in × H·W))`.
//!
//! Both are candle custom ops whose backward passes are the same three bilinear kernels
//! (convolution, its adjoint, the kernel gradient `Σ_b g_b · cols(x_b)ᵀ`), each again a
//! custom op, so the backward of either convolution is two products per image plus one
//! im2col or col2im, and double backward works when candle keeps the graph. Gradients are
//! computed only for arguments candle tracks (a data batch gets no input gradient).
//!
//! The products use faer (`host_gemm`: AVX-512 where the CPU has it) one image at a time, the
//! batch split among rayon's tasks (`batch_split.rs`: kernel gradients over a fixed number
//! of tasks, so the same bits for any thread count) with one reused patch buffer per task
//! (`C·kh·kw·P` elements, 3.6 MB for 32 channels, 5×5, 28×20 in f64). Folding the whole batch into one
//! product, as [`im2col()`] + a matmul would, materialises `kh·kw` copies of the input
//! (358 MB for batch 100 of the same layer) and was measured 1.4–3× slower, mostly in page
//! faults and memory traffic.
//!
//! Variants and cheaper forms (each with the same values as the plain composition):
//! - [`conv2d_gemm_biased`], [`conv_transpose2d_gemm_biased`]: the products start from a
//!   per-channel bias (no pass and no gradient accumulation of its own);
//! - [`gated_conv2d_gemm`], [`gated_conv_transpose2d_gemm`]: a biased convolution and the gate
//!   `h ⊙ σ(g)` as one op that keeps the pre-activation for its backward;
//! - [`conv2d_gemm_headed`]: a biased convolution and a caller's [`ConvHead`] (a reduction of
//!   its output, such as a likelihood) as one op that keeps the convolution output for its
//!   backward, so that output is never a tensor of candle's graph;
//! - a kernel covering the whole unpadded input (a 1×1 output, or a transposed convolution of
//!   a 1×1 input) is a dense layer: one matrix product for the batch;
//! - a stride-1 transposed convolution with no more input than output channels runs as the
//!   convolution with the flipped, transposed kernel (fewer patch rows, a deeper product);
//! - a pointwise (1×1, stride 1, unpadded) convolution multiplies the image itself (no im2col);
//! - a stride-1 "same" 3×3 or 5×5 convolution in f64 with at least 32 channels on both sides
//!   (forward, adjoint and kernel gradient) runs by Winograd's `F(4×4, r×r)` (`winograd.rs`):
//!   6.25× fewer multiply-adds than the direct form for 5×5, 2.2–3.9× faster than im2col on
//!   the VAE's 28×20 and 14×10 layers (f32 keeps im2col).
//!
//! Only CPU f32/f64 tensors take this path; any other device or dtype falls back to candle's
//! own `conv2d` / `conv_transpose2d` (so CUDA keeps working).

mod batch_split;
mod biased;
mod channel_bias;
mod checks;
mod cook_toom;
mod forms;
mod gate;
mod gated_conv;
mod headed;
mod im2col;
mod ops;
mod sandwich;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod thread_count_tests;
mod winograd;
mod winograd_backward;
mod winograd_plan;

pub(crate) use batch_split::{
    product_parallelism, reduce_over_batch, reduction_tasks, split_batch, sum_in_order,
};
pub use headed::ConvHead;
pub use im2col::{Col2Im, Im2Col, PatchGeometry};
pub(crate) use ops::{adjoint_cpu, forward_cpu, kernel_grad_cpu};

use crate::{IcnnError, Result};
use candle_core::{DType, Tensor};
use checks::{
    check_bias, check_even, conv_geometry, dims4, same_kind, takes_gemm_path, transposed_geometry,
};
use forms::{dense_conv, dense_transposed, flipped_conv_padding, flipped_transposed};
use std::sync::Arc;

/// `im2col` as a public tensor op: `(B, C, H, W)` → `(B·out_h·out_w, C·kh·kw)` for the patch
/// grid of `geometry` (CPU, f32/f64; tracked by autodiff, backward is [`col2im`]). Times the
/// flattened kernel transposed it is a convolution with the batch folded into the rows; the
/// convolutions of this module do not use it (see the module docs).
pub fn im2col(x: &Tensor, geometry: PatchGeometry) -> Result<Tensor> {
    Ok(im2col::apply_im2col(x, geometry)?)
}

/// `col2im`, the adjoint of [`im2col()`]: scatter-adds `(B·out_h·out_w, C·kh·kw)` patches into
/// `(B, C, H, W)` (CPU, f32/f64; tracked by autodiff, backward is [`im2col()`]).
pub fn col2im(cols: &Tensor, geometry: PatchGeometry) -> Result<Tensor> {
    Ok(im2col::apply_col2im(cols, geometry)?)
}

/// 2-D convolution with the semantics and layouts of candle's
/// `Tensor::conv2d(kernel, padding, stride, 1, 1)` (dilation 1, one group): `x` is
/// `(B, C_in, H, W)`, `kernel` `(C_out, C_in, kh, kw)` (`kh ≠ kw` allowed), the output
/// `(B, C_out, H_out, W_out)` with `H_out = (H + 2·padding − kh) / stride + 1` (same for W),
/// contiguous.
///
/// On CPU f32/f64 it runs im2col + a matrix product per image (see the module docs),
/// differentiable w.r.t. `x` and `kernel` by candle's autodiff; otherwise it calls candle's
/// `conv2d`.
///
/// # Errors
/// [`IcnnError::Shape`] when a tensor is not 4-D, the kernel window is empty (`kh = 0` or
/// `kw = 0`), the channel counts disagree, the kernel does not fit in the padded input, or
/// the kernel has another dtype or device than `x`;
/// [`IcnnError::InvalidConfig`] for stride 0; candle errors otherwise.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::conv2d_gemm;
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 3.0 * 6.0 * 5.0, &dev)?.reshape((2, 3, 6, 5))?;
/// let k = Tensor::arange(0f64, 4.0 * 3.0 * 3.0 * 3.0, &dev)?.reshape((4, 3, 3, 3))?;
/// let y = conv2d_gemm(&x, &k, 1, 2)?;
/// assert_eq!(y.dims(), &[2, 4, 3, 3]);
/// let reference = x.conv2d(&k, 1, 2, 1, 1)?;
/// let err = (y - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-9);
/// # Ok(())
/// # }
/// ```
pub fn conv2d_gemm(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let g = conv_geometry("conv2d_gemm", x, kernel, padding, stride)?;
    if !takes_gemm_path(x, kernel) {
        return Ok(x.conv2d(kernel, padding, stride, 1, 1)?);
    }
    if g.is_full_window() {
        return dense_conv(x, kernel);
    }
    Ok(ops::conv_forward(x, kernel, g)?)
}

/// [`conv2d_gemm`] plus a per-channel `bias (C_out,)`: the same values as
/// `add_channel_bias(&conv2d_gemm(x, kernel, padding, stride)?, bias)`. On CPU f32/f64 the
/// products start from the bias (one custom op, no pass or gradient accumulation of its own);
/// otherwise candle's `conv2d` and `broadcast_add`.
///
/// A kernel that covers the whole unpadded input (a 1×1 output) is a dense layer, and runs as
/// one matrix product with the batch folded in, as does [`conv2d_gemm`].
///
/// # Errors
/// As [`conv2d_gemm`], and [`IcnnError::Shape`] when `bias` is not `(C_out,)` or has another
/// dtype or device than `x`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::{add_channel_bias, conv2d_gemm, conv2d_gemm_biased};
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 3.0 * 6.0 * 5.0, &dev)?.reshape((2, 3, 6, 5))?;
/// let k = Tensor::arange(0f64, 4.0 * 3.0 * 3.0 * 3.0, &dev)?.reshape((4, 3, 3, 3))?;
/// let b = Tensor::new(&[1f64, -2.0, 0.5, 3.0], &dev)?;
/// let y = conv2d_gemm_biased(&x, &k, &b, 1, 2)?;
/// let reference = add_channel_bias(&conv2d_gemm(&x, &k, 1, 2)?, &b)?;
/// let err = (y - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-9);
/// # Ok(())
/// # }
/// ```
pub fn conv2d_gemm_biased(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let op = "conv2d_gemm_biased";
    biased_conv(op, x, kernel, bias, (padding, stride), Then::Nothing)
}

/// `y + bias` with `bias (C,)` broadcast over the channels of `y (B, C, H, W)`: the bias of
/// a convolution. The same values as `y.broadcast_add(&bias.reshape((1, C, 1, 1))?)`; on CPU
/// f32/f64 the backward sums the gradient per channel in one contiguous pass (candle's
/// `broadcast_add` back-propagates with a strided reduction over three axes, several times
/// slower); any other device or dtype falls back to `broadcast_add`.
///
/// # Errors
/// [`IcnnError::Shape`] when `y` is not 4-D, or `bias` is not `(C,)` or has another dtype or
/// device than `y`; candle errors otherwise.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use icnn::gemm_conv::add_channel_bias;
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let y = Tensor::arange(0f64, 2.0 * 3.0 * 2.0 * 2.0, &dev)?.reshape((2, 3, 2, 2))?;
/// let b = Var::from_tensor(&Tensor::new(&[1f64, 2.0, 3.0], &dev)?)?;
/// let out = add_channel_bias(&y, &b)?;
/// let reference = y.broadcast_add(&b.reshape((1, 3, 1, 1))?)?;
/// let err = (&out - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert_eq!(err, 0.0);
/// // d/db Σ out = B·H·W = 8 for every channel.
/// let grads = out.sum_all()?.backward()?;
/// let gb = grads.get(&b).expect("bias gradient").to_vec1::<f64>()?;
/// assert_eq!(gb, vec![8.0, 8.0, 8.0]);
/// # Ok(())
/// # }
/// ```
pub fn add_channel_bias(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = dims4(y, "add_channel_bias input")?;
    if bias.dims() != [c] {
        return Err(IcnnError::Shape(format!(
            "add_channel_bias: bias has shape {:?}, expected ({c},) for input {:?}",
            bias.shape(),
            y.shape()
        )));
    }
    same_kind("add_channel_bias", "bias", bias, y)?;
    if !takes_gemm_path(y, bias) {
        return Ok(y.broadcast_add(&bias.reshape((1, c, 1, 1))?)?);
    }
    Ok(channel_bias::channel_bias_add(y, bias)?)
}

/// The gate of a gated convolution: `h ⊙ σ(g)` for `y = [h; g]` `(B, 2n, H, W)` (the two
/// branches stacked along the channel axis), shape `(B, n, H, W)`. On CPU f32/f64 one custom
/// op, one pass forward and one pass backward (first derivatives only); any other device or
/// dtype composes candle's `narrow`, `sigmoid` and `mul`.
///
/// # Errors
/// [`IcnnError::Shape`] when `y` is not 4-D or has an odd number of channels; candle errors
/// otherwise.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::gated_product;
///
/// # fn main() -> icnn::Result<()> {
/// // h = 2, g = 0: 2·σ(0) = 1.
/// let y = Tensor::new(&[2f64, 0.0], &Device::Cpu)?.reshape((1, 2, 1, 1))?;
/// assert_eq!(gated_product(&y)?.flatten_all()?.to_vec1::<f64>()?, vec![1.0]);
/// # Ok(())
/// # }
/// ```
pub fn gated_product(y: &Tensor) -> Result<Tensor> {
    let (_, c2, _, _) = dims4(y, "gated_product input")?;
    if c2 % 2 != 0 {
        return Err(IcnnError::Shape(format!(
            "gated_product: {c2} channels do not split into [h; g]"
        )));
    }
    if !(crate::takes_host_kernels(y.device()) && matches!(y.dtype(), DType::F32 | DType::F64)) {
        let n = c2 / 2;
        let g = candle_nn::ops::sigmoid(&y.narrow(1, n, n)?)?;
        return Ok((y.narrow(1, 0, n)? * g)?);
    }
    Ok(y.contiguous()?.apply_op1(gate::Gate)?)
}

/// 2-D transposed convolution with the semantics and layouts of candle's
/// `Tensor::conv_transpose2d(kernel, padding, output_padding, stride, 1)` (dilation 1): `x` is
/// `(B, C_in, H, W)`, `kernel` `(C_in, C_out, kh, kw)` (`kh ≠ kw` allowed), the output
/// `(B, C_out, H_out, W_out)` with `H_out = (H − 1)·stride − 2·padding + kh + output_padding`
/// (same for W; the output padding adds rows/columns at the bottom/right), contiguous.
///
/// On CPU f32/f64 it runs a matrix product + col2im per image (see the module docs),
/// differentiable w.r.t. `x` and `kernel` by candle's autodiff; otherwise it calls candle's
/// `conv_transpose2d`.
///
/// # Errors
/// [`IcnnError::Shape`] when a tensor is not 4-D, the kernel window is empty (`kh = 0` or
/// `kw = 0`), the channel counts disagree, the output would be empty, or the kernel has
/// another dtype or device than `x`;
/// [`IcnnError::InvalidConfig`] for stride 0; candle errors otherwise.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::conv_transpose2d_gemm;
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 4.0 * 3.0 * 3.0, &dev)?.reshape((2, 4, 3, 3))?;
/// let k = Tensor::arange(0f64, 4.0 * 3.0 * 5.0 * 5.0, &dev)?.reshape((4, 3, 5, 5))?;
/// // (3 − 1)·2 − 2·2 + 5 + 1 = 6
/// let y = conv_transpose2d_gemm(&x, &k, 2, 1, 2)?;
/// assert_eq!(y.dims(), &[2, 3, 6, 6]);
/// let reference = x.conv_transpose2d(&k, 2, 1, 2, 1)?;
/// let err = (y - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-9);
/// # Ok(())
/// # }
/// ```
pub fn conv_transpose2d_gemm(
    x: &Tensor,
    kernel: &Tensor,
    padding: usize,
    output_padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let op = "conv_transpose2d_gemm";
    let g = transposed_geometry(op, x, kernel, padding, output_padding, stride)?;
    if !takes_gemm_path(x, kernel) {
        return Ok(x.conv_transpose2d(kernel, padding, output_padding, stride, 1)?);
    }
    if g.is_full_window() {
        return dense_transposed(x, kernel);
    }
    if let Some(pad) = flipped_conv_padding(&g, kernel, output_padding)? {
        return conv2d_gemm(x, &flipped_transposed(kernel)?, pad, 1);
    }
    Ok(ops::conv_adjoint(x, kernel, g)?)
}

/// [`conv_transpose2d_gemm`] plus a per-channel `bias (C_out,)`: the same values as
/// `add_channel_bias(&conv_transpose2d_gemm(..)?, bias)`. On CPU f32/f64 the output starts
/// from the bias (one custom op); otherwise candle's `conv_transpose2d` and `broadcast_add`.
/// A 1×1 input without padding runs as one matrix product with the batch folded in, as does
/// [`conv_transpose2d_gemm`].
///
/// # Errors
/// As [`conv_transpose2d_gemm`], and [`IcnnError::Shape`] when `bias` is not `(C_out,)` or
/// has another dtype or device than `x`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::{add_channel_bias, conv_transpose2d_gemm, conv_transpose2d_gemm_biased};
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 4.0 * 3.0 * 3.0, &dev)?.reshape((2, 4, 3, 3))?;
/// let k = Tensor::arange(0f64, 4.0 * 3.0 * 5.0 * 5.0, &dev)?.reshape((4, 3, 5, 5))?;
/// let b = Tensor::new(&[1f64, -2.0, 0.5], &dev)?;
/// let y = conv_transpose2d_gemm_biased(&x, &k, &b, 2, 1, 2)?;
/// let reference = add_channel_bias(&conv_transpose2d_gemm(&x, &k, 2, 1, 2)?, &b)?;
/// let err = (y - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-9);
/// # Ok(())
/// # }
/// ```
pub fn conv_transpose2d_gemm_biased(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    output_padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let op = "conv_transpose2d_gemm_biased";
    let sizes = (padding, output_padding, stride);
    biased_conv_transpose(op, x, kernel, bias, sizes, Then::Nothing)
}

/// A gated convolution: `h ⊙ σ(g)` for `[h; g] = conv2d_gemm_biased(x, kernel, bias, padding,
/// stride)` (`kernel` `(2n, C_in, kh, kw)`, `bias` `(2n,)`), shape `(B, n, H_out, W_out)`. The
/// same values as [`gated_product`] of [`conv2d_gemm_biased`]; on CPU f32/f64 one custom op
/// that keeps the pre-activation `[h; g]` for its backward instead of making it a tracked
/// tensor (no zero fill and addition of its gradient by candle). First derivatives only.
///
/// # Errors
/// As [`conv2d_gemm_biased`], and [`IcnnError::Shape`] for an odd number of output channels.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::{conv2d_gemm_biased, gated_conv2d_gemm, gated_product};
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 3.0 * 6.0 * 5.0, &dev)?.reshape((2, 3, 6, 5))?;
/// let k = (Tensor::arange(0f64, 4.0 * 3.0 * 3.0 * 3.0, &dev)?.reshape((4, 3, 3, 3))? * 1e-3)?;
/// let b = Tensor::new(&[0.1f64, -0.2, 0.3, 0.0], &dev)?;
/// let y = gated_conv2d_gemm(&x, &k, &b, 1, 2)?;
/// assert_eq!(y.dims(), &[2, 2, 3, 3]);
/// let reference = gated_product(&conv2d_gemm_biased(&x, &k, &b, 1, 2)?)?;
/// let err = (y - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn gated_conv2d_gemm(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let op = "gated_conv2d_gemm";
    biased_conv(op, x, kernel, bias, (padding, stride), Then::Gate)
}

/// The transposed counterpart of [`gated_conv2d_gemm`]: `h ⊙ σ(g)` for `[h; g] =
/// conv_transpose2d_gemm_biased(x, kernel, bias, padding, output_padding, stride)` (`kernel`
/// `(C_in, 2n, kh, kw)`), one custom op on CPU f32/f64.
///
/// # Errors
/// As [`conv_transpose2d_gemm_biased`], and [`IcnnError::Shape`] for an odd number of output
/// channels.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::{conv_transpose2d_gemm_biased, gated_conv_transpose2d_gemm, gated_product};
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 4.0 * 3.0 * 3.0, &dev)?.reshape((2, 4, 3, 3))?;
/// let k = (Tensor::arange(0f64, 4.0 * 2.0 * 5.0 * 5.0, &dev)?.reshape((4, 2, 5, 5))? * 1e-3)?;
/// let b = Tensor::new(&[0.1f64, -0.2], &dev)?;
/// let y = gated_conv_transpose2d_gemm(&x, &k, &b, 2, 1, 2)?;
/// assert_eq!(y.dims(), &[2, 1, 6, 6]);
/// let reference = gated_product(&conv_transpose2d_gemm_biased(&x, &k, &b, 2, 1, 2)?)?;
/// let err = (y - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn gated_conv_transpose2d_gemm(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    output_padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let op = "gated_conv_transpose2d_gemm";
    let sizes = (padding, output_padding, stride);
    biased_conv_transpose(op, x, kernel, bias, sizes, Then::Gate)
}

/// `head(conv2d_gemm_biased(x, kernel, bias, padding, stride))` for a caller's [`ConvHead`]
/// (see its example), as one custom op on CPU f32/f64 whose convolution output is not a
/// tensor of candle's graph: the op keeps it for its backward, where the head turns the
/// output gradient into the convolution output's gradient. For a large output that only
/// feeds a reduction this saves candle's zero fill, allocation and addition of its gradient
/// (the VAE's 256-way likelihood head). Elsewhere, and for a kernel covering the whole
/// input, it is [`ConvHead::composed`] of [`conv2d_gemm_biased`]. First derivatives only.
///
/// # Errors
/// As [`conv2d_gemm_biased`], and the head's errors.
pub fn conv2d_gemm_headed(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
    head: Arc<dyn ConvHead>,
) -> Result<Tensor> {
    let op = "conv2d_gemm_headed";
    biased_conv(op, x, kernel, bias, (padding, stride), Then::Head(head))
}

/// What follows the biased map in the `*_biased`, `gated_*` and `*_headed` convolutions.
#[derive(Clone)]
enum Then {
    /// `A x + b` itself.
    Nothing,
    /// The gate `h ⊙ σ(g)` of `[h; g] = A x + b`.
    Gate,
    /// A caller's head `head(A x + b)`.
    Head(Arc<dyn ConvHead>),
}

impl Then {
    /// Applied to an already computed `A x + b` (the fallbacks and the dense forms).
    fn composed(self, y: Tensor) -> Result<Tensor> {
        match self {
            Then::Nothing => Ok(y),
            Then::Gate => gated_product(&y),
            Then::Head(head) => Ok(head.composed(&y)?),
        }
    }

    /// The one-op form on the CPU.
    fn fused(
        self,
        x: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        map: biased::BiasedMap,
    ) -> Result<Tensor> {
        Ok(match self {
            Then::Nothing => biased::conv_biased(x, k, bias, map)?,
            Then::Gate => gated_conv::gated_conv(x, k, bias, map)?,
            Then::Head(head) => headed::headed_conv(x, k, bias, map, head)?,
        })
    }
}

/// [`conv2d_gemm_biased`] / [`gated_conv2d_gemm`]: `(padding, stride)`.
fn biased_conv(
    op: &str,
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    (padding, stride): (usize, usize),
    then: Then,
) -> Result<Tensor> {
    let g = conv_geometry(op, x, kernel, padding, stride)?;
    let c_out = kernel.dim(0)?;
    check_bias(op, bias, c_out, x)?;
    if matches!(then, Then::Gate) {
        check_even(op, c_out)?;
    }
    if !(takes_gemm_path(x, kernel) && takes_gemm_path(x, bias)) || g.is_full_window() {
        let y = conv2d_gemm(x, kernel, padding, stride)?;
        return then.composed(add_channel_bias(&y, bias)?);
    }
    then.fused(x, kernel, bias, biased::BiasedMap::Conv(g))
}

/// [`conv_transpose2d_gemm_biased`] / [`gated_conv_transpose2d_gemm`]:
/// `(padding, output_padding, stride)`.
fn biased_conv_transpose(
    op: &str,
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    (padding, output_padding, stride): (usize, usize, usize),
    then: Then,
) -> Result<Tensor> {
    let g = transposed_geometry(op, x, kernel, padding, output_padding, stride)?;
    check_bias(op, bias, g.channels, x)?;
    if matches!(then, Then::Gate) {
        check_even(op, g.channels)?;
    }
    if !(takes_gemm_path(x, kernel) && takes_gemm_path(x, bias)) || g.is_full_window() {
        let y = conv_transpose2d_gemm(x, kernel, padding, output_padding, stride)?;
        return then.composed(add_channel_bias(&y, bias)?);
    }
    if let Some(pad) = flipped_conv_padding(&g, kernel, output_padding)? {
        let flipped = flipped_transposed(kernel)?;
        return biased_conv(op, x, &flipped, bias, (pad, 1), then);
    }
    then.fused(x, kernel, bias, biased::BiasedMap::Transposed(g))
}
