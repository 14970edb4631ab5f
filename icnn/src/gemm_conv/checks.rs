//! Argument checks and patch geometries of the public convolutions (`gemm_conv.rs`).

use super::PatchGeometry;
use super::im2col::elements;
use crate::{IcnnError, Result};
use candle_core::{DType, Tensor};

/// Whether `x` and `kernel` take the gemm path (CPU, both f32 or both f64, non-empty);
/// otherwise the caller falls back to candle's own convolution.
pub(super) fn takes_gemm_path(x: &Tensor, kernel: &Tensor) -> bool {
    crate::takes_host_kernels(x.device())
        && crate::takes_host_kernels(kernel.device())
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

/// The dims of `x` and `kernel`, checked: stride positive, both 4-D, the kernel's window not
/// empty, and `x`'s channels equal the kernel's axis `in_axis` (1 for a convolution, 0 for a
/// transposed one).
///
/// An empty window (`kh = 0` or `kw = 0`) is refused here, before any fallback: such a kernel
/// has no elements, so the ops would hand it to candle, whose output size
/// `dilation·(k − 1)` overflows (a panic with overflow checks, a wrapped size without).
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
    if kd.2 == 0 || kd.3 == 0 {
        return Err(IcnnError::Shape(format!(
            "{op}: the kernel window must not be empty, got {}×{} (kernel {:?})",
            kd.2,
            kd.3,
            kernel.shape()
        )));
    }
    same_kind(op, "kernel", kernel, x)?;
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
    let ((b, c_in, h, w), (c_out, _, kh, kw)) = checked_dims(op, x, kernel, stride, 1)?;
    let padded = |n: usize| padding.checked_mul(2).and_then(|p| p.checked_add(n));
    let fits = |n: usize, k: usize| padded(n).is_none_or(|n| n >= k);
    if !(fits(h, kh) && fits(w, kw)) {
        return Err(IcnnError::Shape(format!(
            "{op}: kernel {kh}×{kw} does not fit in the {h}×{w} input padded by {padding}"
        )));
    }
    let g = PatchGeometry::for_conv(c_in, (h, w), (kh, kw), stride, padding)
        .filter(|g| elements(&[b, c_out, g.out_h, g.out_w]).is_some());
    g.ok_or_else(|| {
        IcnnError::Shape(format!(
            "{op}: the output of a {h}×{w} input padded by {padding} (kernel {kh}×{kw}, stride \
             {stride}, {b} images of {c_out} channels) has more elements than memory can hold"
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
    let ((b, _, h, w), (_, c_out, kh, kw)) = checked_dims(op, x, kernel, stride, 0)?;
    // (n − 1)·s + k + op − 2p: `Err(true)` when it overflows, `Err(false)` when not positive.
    let out_len = |n: usize, k: usize| -> std::result::Result<usize, bool> {
        let Some(n1) = n.checked_sub(1) else {
            return Err(false);
        };
        let full = n1
            .checked_mul(stride)
            .and_then(|v| v.checked_add(k))
            .and_then(|v| v.checked_add(output_padding))
            .ok_or(true)?;
        match padding.checked_mul(2) {
            Some(p2) => full.checked_sub(p2).filter(|&len| len > 0).ok_or(false),
            None => Err(false),
        }
    };
    let (out_h, out_w) = match (out_len(h, kh), out_len(w, kw)) {
        (Ok(out_h), Ok(out_w)) => (out_h, out_w),
        (Err(true), _) | (_, Err(true)) => return Err(overflow(op, h, w, kh, kw, stride)),
        _ => {
            return Err(IcnnError::Shape(format!(
                "{op}: empty output for input {h}×{w}, kernel {kh}×{kw}, \
                 stride {stride}, padding {padding}, output padding {output_padding}"
            )));
        }
    };
    let g = PatchGeometry {
        channels: c_out,
        height: out_h,
        width: out_w,
        kh,
        kw,
        stride,
        padding,
        out_h: h,
        out_w: w,
    };
    if !g.sizes_fit() || elements(&[b, g.image_len()]).is_none() {
        return Err(overflow(op, h, w, kh, kw, stride));
    }
    Ok(g)
}

/// The error of a transposed convolution whose output has more elements than memory can hold.
fn overflow(op: &str, h: usize, w: usize, kh: usize, kw: usize, stride: usize) -> IcnnError {
    IcnnError::Shape(format!(
        "{op}: the output of a {h}×{w} input (kernel {kh}×{kw}, stride {stride}) has more \
         elements than memory can hold"
    ))
}

/// `bias` must be `(channels,)`, of the dtype of the input `x`, on its device.
pub(super) fn check_bias(op: &str, bias: &Tensor, channels: usize, x: &Tensor) -> Result<()> {
    if bias.dims() != [channels] {
        return Err(IcnnError::Shape(format!(
            "{op}: bias has shape {:?}, expected ({channels},)",
            bias.shape()
        )));
    }
    same_kind(op, "bias", bias, x)
}

/// The operand `what` (a kernel or a bias) must have the dtype and device of the input `x`
/// (otherwise candle would report its own dtype or device mismatch).
pub(super) fn same_kind(op: &str, what: &str, operand: &Tensor, x: &Tensor) -> Result<()> {
    if crate::layer_input::same_dtype_and_device(operand, x) {
        return Ok(());
    }
    Err(IcnnError::Shape(format!(
        "{op}: the input is {:?} on {:?} but the {what} is {:?} on {:?}",
        x.dtype(),
        x.device().location(),
        operand.dtype(),
        operand.device().location()
    )))
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
