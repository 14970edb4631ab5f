//! The input checks of the public layers ([`Linear`](crate::Linear),
//! [`PosLinear`](crate::PosLinear), [`ActNorm`](crate::ActNorm), [`Conv2d`](crate::Conv2d),
//! [`PosConv2d`](crate::PosConv2d)): rank, feature (or channel) count, dtype and device of the
//! input against the layer's parameters, compared before candle sees the input (it would
//! report its own matmul or broadcast mismatch). Only dims, dtype and device are compared: no
//! value is read, and the layer's description is formatted on the error path only. The
//! networks check the device of their inputs here too ([`check_device`]).
//!
//! The layers' own tensors are checked here as well ([`check_weight`], [`check_bias`]): a
//! weight of another rank or kernel size, a non-float weight, or a bias whose shape, dtype or
//! device does not agree with the weight is an [`IcnnError::Shape`] naming the layer.

use candle_core::Tensor;

use crate::conv_geometry::ConvGeometry;
use crate::error::{IcnnError, Result};

/// Whether `x` has the dtype and the device of `param`.
pub(crate) fn same_dtype_and_device(x: &Tensor, param: &Tensor) -> bool {
    x.dtype() == param.dtype() && x.device().same_device(param.device())
}

/// `"{layer} at `{name}`"`: a layer's description with its parameter prefix appended (the
/// [`candle_nn::VarBuilder`] path it was built under), or `layer` alone for an unnamed layer.
/// Appended rather than inserted, so that messages still start with the description.
pub(crate) fn with_name(layer: String, name: &str) -> String {
    if name.is_empty() {
        layer
    } else {
        format!("{layer} at `{name}`")
    }
}

/// Checks that a layer's `weight` has a floating-point dtype and the shape `expected_dims`
/// (`None` for "any size" on that axis); otherwise an [`IcnnError::Shape`] that starts with
/// `layer()` and names `expected()` (e.g. `(out, in)`) and the given shape and dtype.
pub(crate) fn check_weight(
    layer: impl FnOnce() -> String,
    weight: &Tensor,
    expected_dims: &[Option<usize>],
    expected: impl FnOnce() -> String,
) -> Result<()> {
    let dims = weight.dims();
    let shape_ok = dims.len() == expected_dims.len()
        && dims
            .iter()
            .zip(expected_dims)
            .all(|(d, e)| e.is_none_or(|e| e == *d));
    if shape_ok && weight.dtype().is_float() {
        return Ok(());
    }
    Err(IcnnError::Shape(format!(
        "{}: expected a weight of shape {} (rank {}) of a floating-point dtype; got shape \
         {dims:?}, {:?}",
        layer(),
        expected(),
        expected_dims.len(),
        weight.dtype()
    )))
}

/// Checks that `bias` (when there is one) is `(n_out,)` with the dtype and device of `weight`;
/// otherwise an [`IcnnError::Shape`] that starts with `layer()` and names the expected and the
/// given shape, dtype and device.
pub(crate) fn check_bias(
    layer: impl FnOnce() -> String,
    bias: Option<&Tensor>,
    n_out: usize,
    weight: &Tensor,
) -> Result<()> {
    let Some(b) = bias else {
        return Ok(());
    };
    if matches!(*b.dims(), [n] if n == n_out) && same_dtype_and_device(b, weight) {
        return Ok(());
    }
    Err(IcnnError::Shape(format!(
        "{}: expected a bias of shape ({n_out},), {:?}, on {:?} like the weight; got shape \
         {:?}, {:?}, on {:?}",
        layer(),
        weight.dtype(),
        weight.device().location(),
        b.dims(),
        b.dtype(),
        b.device().location()
    )))
}

/// The size of a dense weight `(out, in)` along `axis` (0: outputs, 1: inputs), 0 for any
/// other rank: the layers' sizes must not panic on a weight a caller replaced with one of
/// another rank.
pub(crate) fn dense_size(weight: &Tensor, axis: usize) -> usize {
    match *weight.dims() {
        [out, n_in] => [out, n_in][axis],
        _ => 0,
    }
}

/// The checks of [`Linear::validate`](crate::Linear::validate) and
/// [`PosLinear::validate`](crate::PosLinear::validate) for the layer `kind` named `name`:
/// `weight` is `(out, in)` of a float dtype, then `extra` (given the layer's description:
/// `PosLinear` needs inputs), then `bias` is `(out,)` like the weight.
pub(crate) fn check_dense_layer(
    kind: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    name: &str,
    extra: impl FnOnce(&dyn Fn() -> String) -> Result<()>,
) -> Result<()> {
    check_weight(
        || with_name(kind.to_string(), name),
        weight,
        &[None, None],
        || "(out, in)".into(),
    )?;
    let layer = || describe_dense(kind, weight, name);
    extra(&layer)?;
    check_bias(layer, bias, dense_size(weight, 0), weight)
}

/// `"{kind} ({in} → {out}) at `name`"`, a dense layer in error messages.
pub(crate) fn describe_dense(kind: &str, weight: &Tensor, name: &str) -> String {
    let layer = format!(
        "{kind} ({} → {})",
        dense_size(weight, 1),
        dense_size(weight, 0)
    );
    with_name(layer, name)
}

/// The size of a convolution weight along `axis` (0: output, 1: input channels) for a 4-D
/// weight, 0 for any other rank: the layers' sizes must not panic on a weight a caller
/// replaced with one of another rank.
pub(crate) fn conv_channels(weight: &Tensor, axis: usize) -> usize {
    match *weight.dims() {
        [out, n_in, _, _] => [out, n_in][axis],
        _ => 0,
    }
}

/// The checks of [`Conv2d::validate`](crate::Conv2d::validate) and
/// [`PosConv2d::validate`](crate::PosConv2d::validate) for the layer `kind` named `name`:
/// the geometry's kernel size and stride are positive ([`check_conv_geometry`]), `weight` is
/// `(out, in, k, k)` with `k = geometry.kernel`, `bias` is `(out,)` like it.
pub(crate) fn check_conv_layer(
    kind: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geometry: ConvGeometry,
    name: &str,
) -> Result<()> {
    let layer = || describe_conv(kind, weight, geometry, name);
    check_conv_geometry(layer, geometry)?;
    let k = geometry.kernel;
    check_weight(
        || with_name(kind.to_string(), name),
        weight,
        &[None, None, Some(k), Some(k)],
        || format!("(out, in, {k}, {k})"),
    )?;
    check_bias(layer, bias, conv_channels(weight, 0), weight)
}

/// Checks that a conv layer's kernel size and stride are positive; otherwise an
/// [`IcnnError::Shape`] that starts with `layer()`. (A kernel size 0 means a weight
/// `(out, in, 0, 0)` whose convolution has no window; a stride 0 no output grid.)
pub(crate) fn check_conv_geometry(
    layer: impl FnOnce() -> String,
    geometry: ConvGeometry,
) -> Result<()> {
    if geometry.kernel > 0 && geometry.stride > 0 {
        return Ok(());
    }
    Err(IcnnError::Shape(format!(
        "{}: the kernel size and stride must be positive, got kernel {} and stride {}",
        layer(),
        geometry.kernel,
        geometry.stride
    )))
}

/// Checks that a positive layer ([`PosLinear`](crate::PosLinear),
/// [`PosConv2d`](crate::PosConv2d)) has inputs: its effective weight and bias are divided by
/// its fan-in (`n_in`, or `n_in·k·k`), so with none its bias would be `±∞` or NaN. Otherwise
/// an [`IcnnError::Shape`] that starts with `layer()`.
pub(crate) fn check_has_inputs(layer: impl FnOnce() -> String, n_in: usize) -> Result<()> {
    if n_in > 0 {
        return Ok(());
    }
    Err(IcnnError::Shape(format!(
        "{}: a positive layer with no inputs: its effective weight and bias divide by the \
         fan-in, which is 0",
        layer()
    )))
}

/// `"{kind} ({in} → {out} channels, k×k, stride s, padding p) at `name`"`, a convolution
/// layer in error messages.
pub(crate) fn describe_conv(kind: &str, weight: &Tensor, g: ConvGeometry, name: &str) -> String {
    let (n_in, n_out) = (conv_channels(weight, 1), conv_channels(weight, 0));
    describe_conv_sizes(kind, (n_in, n_out), g, name)
}

/// [`describe_conv`] of a layer of `n_in → n_out` channels that has no weight yet.
pub(crate) fn describe_conv_sizes(
    kind: &str,
    (n_in, n_out): (usize, usize),
    g: ConvGeometry,
    name: &str,
) -> String {
    let layer = format!(
        "{kind} ({n_in} → {n_out} channels, {k}×{k}, stride {}, padding {})",
        g.stride,
        g.padding,
        k = g.kernel
    );
    with_name(layer, name)
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
