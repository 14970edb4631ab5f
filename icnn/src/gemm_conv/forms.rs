//! Cheaper equivalent forms of some convolutions (`gemm_conv.rs`): a kernel that covers its
//! whole input is a dense layer, and a stride-1 transposed convolution is the convolution with
//! the flipped, transposed kernel.

use super::PatchGeometry;
use crate::{Result, host_matmul};
use candle_core::Tensor;

/// A convolution whose kernel covers the whole unpadded input: `y (B, C_o) = x (B, C·H·W) ·
/// K (C_o, C·H·W)ᵀ`, one product for the batch (per image it would be a matrix-vector
/// product that reads the whole kernel), [`host_matmul()`].
pub(super) fn dense_conv(x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let (b, c_out) = (x.dim(0)?, kernel.dim(0)?);
    let y = host_matmul(&x.flatten_from(1)?, &kernel.flatten_from(1)?.t()?)?;
    Ok(y.reshape((b, c_out, 1, 1))?)
}

/// A transposed convolution of a 1×1 input without padding: `y (B, C_o·kh·kw) =
/// x (B, C) · K (C, C_o·kh·kw)`, one product for the batch.
pub(super) fn dense_transposed(x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let (b, c_in) = (x.dim(0)?, x.dim(1)?);
    let (_, c_out, kh, kw) = kernel.dims4()?;
    let y = host_matmul(
        &x.reshape((b, c_in))?,
        &kernel.reshape((c_in, c_out * kh * kw))?,
    )?;
    Ok(y.reshape((b, c_out, kh, kw))?)
}

/// The padding `k − 1 − p` under which a transposed convolution is the convolution with the
/// flipped, transposed kernel ([`flipped_transposed`]), where that form is the cheaper one:
/// stride 1, no output padding, a square kernel, `p < k`, and no more input than output
/// channels (its patch matrix has `C_in·k²` rows against the adjoint form's `C_out·k²`, and
/// its product an inner dimension `C_in·k²` against `C_in`). `None` otherwise.
pub(super) fn flipped_conv_padding(
    g: &PatchGeometry,
    kernel: &Tensor,
    output_padding: usize,
) -> Result<Option<usize>> {
    let (c_in, c_out, _, _) = kernel.dims4()?;
    let fits =
        g.stride == 1 && output_padding == 0 && g.kh == g.kw && g.padding < g.kh && c_in <= c_out;
    Ok(fits.then(|| g.kh - 1 - g.padding))
}

/// `(C_in, C_out, kh, kw) → (C_out, C_in, kh, kw)` flipped in both spatial axes: the kernel of
/// the convolution that equals a stride-1 transposed convolution (candle ops, so gradients
/// flow back to `kernel`; the same flip as `conv_layers::PreparedConv`'s adjoint kernel).
pub(super) fn flipped_transposed(kernel: &Tensor) -> Result<Tensor> {
    Ok(kernel
        .contiguous()?
        .flip(&[2, 3])?
        .transpose(0, 1)?
        .contiguous()?)
}
