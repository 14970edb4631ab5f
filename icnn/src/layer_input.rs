//! The input checks of the public layers ([`Linear`](crate::Linear),
//! [`PosLinear`](crate::PosLinear), [`ActNorm`](crate::ActNorm), [`Conv2d`](crate::Conv2d),
//! [`PosConv2d`](crate::PosConv2d)): rank, feature (or channel) count, dtype and device of the
//! input against the layer's parameters, compared before candle sees the input (it would
//! report its own matmul or broadcast mismatch). Only dims, dtype and device are compared: no
//! value is read, and the layer's description is formatted on the error path only. The
//! networks check the device of their inputs here too ([`check_device`]).

use candle_core::Tensor;

use crate::conv_layers::ConvGeometry;
use crate::error::{IcnnError, Result};

/// Whether `x` has the dtype and the device of `param`.
pub(crate) fn same_dtype_and_device(x: &Tensor, param: &Tensor) -> bool {
    x.dtype() == param.dtype() && x.device().same_device(param.device())
}

/// The [`IcnnError::Shape`] of a layer given `x` where it expects `expected` (a shape such as
/// `(B, 3)`) of `param`'s dtype, on `param`'s device.
fn mismatch(layer: String, expected: &str, x: &Tensor, param: &Tensor) -> IcnnError {
    IcnnError::Shape(format!(
        "{layer}: expected an input of shape {expected}, {:?}, on {:?}; got shape {:?}, {:?}, \
         on {:?}",
        param.dtype(),
        param.device().location(),
        x.dims(),
        x.dtype(),
        x.device().location()
    ))
}

/// Checks that `x` is `(B, features)` with the dtype and device of `param`; otherwise an
/// [`IcnnError::Shape`] that starts with `layer()` and names the expected and the given shape.
pub(crate) fn check_rows(
    layer: impl FnOnce() -> String,
    x: &Tensor,
    features: usize,
    param: &Tensor,
) -> Result<()> {
    if matches!(*x.dims(), [_, f] if f == features) && same_dtype_and_device(x, param) {
        return Ok(());
    }
    Err(mismatch(layer(), &format!("(B, {features})"), x, param))
}

/// Checks that `x` is `(B, channels, H, W)` with the dtype and device of `param`, and that the
/// `H×W` image padded by `geometry.padding` holds the `k×k` kernel; otherwise an
/// [`IcnnError::Shape`] that starts with `layer()` and names the expected and the given shape.
pub(crate) fn check_images(
    layer: impl FnOnce() -> String,
    x: &Tensor,
    channels: usize,
    param: &Tensor,
    geometry: ConvGeometry,
) -> Result<()> {
    // A padded size that overflows holds any kernel (as in `gemm_conv::conv_geometry`).
    let fits = |n: usize| {
        geometry
            .padding
            .checked_mul(2)
            .and_then(|p| p.checked_add(n))
            .is_none_or(|padded| padded >= geometry.kernel)
    };
    if matches!(*x.dims(), [_, c, h, w] if c == channels && fits(h) && fits(w))
        && same_dtype_and_device(x, param)
    {
        return Ok(());
    }
    let min = geometry
        .kernel
        .saturating_sub(geometry.padding.saturating_mul(2));
    let expected = if min > 0 {
        format!("(B, {channels}, H, W) with H, W ≥ {min}")
    } else {
        format!("(B, {channels}, H, W)")
    };
    Err(mismatch(layer(), &expected, x, param))
}

/// `x` (the input named `what`) must be on the device of `param` (a parameter of a
/// network): otherwise an [`IcnnError::Shape`] naming both devices, before candle sees `x`.
pub(crate) fn check_device(what: &str, x: &Tensor, param: &Tensor) -> Result<()> {
    if x.device().same_device(param.device()) {
        return Ok(());
    }
    Err(IcnnError::Shape(format!(
        "{what} on {:?} but the parameters are on {:?}",
        x.device().location(),
        param.device().location()
    )))
}
