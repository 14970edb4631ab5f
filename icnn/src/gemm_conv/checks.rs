//! Argument checks and patch geometries of the public convolutions (`gemm_conv.rs`).

use super::PatchGeometry;
use crate::{IcnnError, Result};
use candle_core::{DType, Tensor};

/// Whether `x` and `kernel` take the gemm path (CPU, both f32 or both f64, non-empty);
/// otherwise the caller falls back to candle's own convolution.
pub(super) fn takes_gemm_path(x: &Tensor, kernel: &Tensor) -> bool {
    x.device().is_cpu()
        && kernel.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == kernel.dtype()
        && x.elem_count() > 0
        && kernel.elem_count() > 0
}

/// `dims4` of a tensor, or a shape error naming `what`.
pub(super) fn dims4(t: &Tensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    t.dims4()
        .map_err(|_| IcnnError::Shape(format!("{what} must be 4-D, got {:?}", t.shape())))
}

type Dims4 = (usize, usize, usize, usize);

/// The dims of `x` and `kernel`, checked: stride positive, both 4-D, and `x`'s channels equal
/// the kernel's axis `in_axis` (1 for a convolution, 0 for a transposed one).
fn checked_dims(
    op: &str,
    x: &Tensor,
    kernel: &Tensor,
    stride: usize,
    in_axis: usize,
) -> Result<(Dims4, Dims4)> {
    if stride == 0 {
        return Err(IcnnError::InvalidConfig(format!(
            "{op}: stride must be positive"
        )));
    }
    let xd = dims4(x, &format!("{op} input"))?;
    let kd = dims4(kernel, &format!("{op} kernel"))?;
    let k_in = if in_axis == 0 { kd.0 } else { kd.1 };
    if k_in != xd.1 {
        return Err(IcnnError::Shape(format!(
            "{op}: input has {} channels but kernel {:?} expects {k_in}",
            xd.1,
            kernel.shape()
        )));
    }
    Ok((xd, kd))
}

/// The patch geometry of `conv2d(x, kernel, padding, stride)`, validated.
pub(super) fn conv_geometry(
    op: &str,
    x: &Tensor,
    kernel: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<PatchGeometry> {
    let ((_, c_in, h, w), (_, _, kh, kw)) = checked_dims(op, x, kernel, stride, 1)?;
    PatchGeometry::for_conv(c_in, (h, w), (kh, kw), stride, padding).ok_or_else(|| {
        IcnnError::Shape(format!(
            "{op}: kernel {kh}×{kw} does not fit in the {h}×{w} input padded by {padding}"
        ))
    })
}

/// The patch geometry of `conv_transpose2d(x, kernel, padding, output_padding, stride)`,
/// validated: the output image is the patch "source" (input pixel `(i, j)` spreads kernel
/// window `(ki, kj)` onto output pixel `(i·s − p + ki, j·s − p + kj)`, exactly col2im's map).
pub(super) fn transposed_geometry(
    op: &str,
    x: &Tensor,
    kernel: &Tensor,
    padding: usize,
    output_padding: usize,
    stride: usize,
) -> Result<PatchGeometry> {
    let ((_, _, h, w), (_, c_out, kh, kw)) = checked_dims(op, x, kernel, stride, 0)?;
    // (n − 1)·s + k + op − 2p, or None when not positive.
    let out_len = |n: usize, k: usize| {
        (n.checked_sub(1)? * stride + k + output_padding)
            .checked_sub(2 * padding)
            .filter(|&len| len > 0)
    };
    let (Some(out_h), Some(out_w)) = (out_len(h, kh), out_len(w, kw)) else {
        return Err(IcnnError::Shape(format!(
            "{op}: empty output for input {h}×{w}, kernel {kh}×{kw}, \
             stride {stride}, padding {padding}, output padding {output_padding}"
        )));
    };
    Ok(PatchGeometry {
        channels: c_out,
        height: out_h,
        width: out_w,
        kh,
        kw,
        stride,
        padding,
        out_h: h,
        out_w: w,
    })
}

/// `bias` must be `(channels,)`.
pub(super) fn check_bias(op: &str, bias: &Tensor, channels: usize) -> Result<()> {
    if bias.dims() != [channels] {
        return Err(IcnnError::Shape(format!(
            "{op}: bias has shape {:?}, expected ({channels},)",
            bias.shape()
        )));
    }
    Ok(())
}

/// A gate needs an even number of channels `[h; g]`.
pub(super) fn check_even(op: &str, channels: usize) -> Result<()> {
    if !channels.is_multiple_of(2) {
        return Err(IcnnError::Shape(format!(
            "{op}: {channels} output channels do not split into [h; g]"
        )));
    }
    Ok(())
}
