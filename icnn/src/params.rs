//! Creating parameters in a [`candle_nn::VarBuilder`] from host-drawn, seeded values, and
//! reading and writing the networks' one-element flag variables.
//!
//! candle's RNG cannot be seeded, so initial values are drawn on the host from the caller's
//! `rand` RNG and written into the freshly created variables. A parameter that already
//! exists in the builder's backend (a `VarMap` that was filled before, or a safetensors file)
//! is returned as is. The random draws are made in both cases, so the values of the other
//! parameters do not depend on which parameters were already present.

use candle_core::{DType, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::Rng;

use crate::error::{IcnnError, Result};

/// Get the tensor `name` under `vb`; when it does not exist yet, create it and fill it with
/// `values` (row-major, length = number of elements of `shape`).
pub(crate) fn get_or_init(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
    values: Vec<f64>,
) -> Result<Tensor> {
    let shape = shape.into();
    if !vb.dtype().is_float() {
        // An integer network built and then failed at its first batch with a misleading
        // "all rows are the same point".
        return Err(IcnnError::InvalidConfig(format!(
            "parameter {name}: the VarBuilder's dtype is {:?}; networks need floating-point \
             parameters (f32 or f64)",
            vb.dtype()
        )));
    }
    if vb.contains_tensor(name) {
        return Ok(vb.get(shape, name)?);
    }
    let t = vb.get_with_hints(shape.clone(), name, Init::Const(0.0))?;
    let src = Tensor::from_vec(values, shape, vb.device())?.to_dtype(vb.dtype())?;
    // `t` shares its storage with the variable held by the backend: write in place.
    write_in_place(&t, &src)?;
    Ok(t)
}

/// Overwrite the storage of `dst` (a variable's tensor) with `src` (same shape).
pub(crate) fn write_in_place(dst: &Tensor, src: &Tensor) -> Result<()> {
    let src = src
        .to_dtype(dst.dtype())?
        .to_device(dst.device())?
        .reshape(dst.shape())?
        .contiguous()?;
    if dst.rank() == 0 {
        // slice_set needs rank >= 1: go through a reshaped view of the same storage.
        let d = dst.reshape(1)?;
        d.slice_set(&src.reshape(1)?, 0, 0)?;
    } else {
        dst.slice_set(&src, 0, 0)?;
    }
    Ok(())
}

/// Most elements one parameter may have (2³²: 32 GiB in f64); a larger one is a
/// configuration error, not an allocation to attempt (a width of `usize::MAX / 2` panicked
/// with "capacity overflow").
const MAX_PARAMETER_ELEMENTS: usize = 1 << 32;

/// The number of elements of `shape` for the parameter `name`, refusing a shape whose count
/// overflows or exceeds [`MAX_PARAMETER_ELEMENTS`].
fn parameter_elements(shape: &Shape, name: &str) -> Result<usize> {
    shape
        .dims()
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|n| *n <= MAX_PARAMETER_ELEMENTS)
        .ok_or_else(|| {
            IcnnError::InvalidConfig(format!(
                "parameter {name} of shape {:?} would have more than {MAX_PARAMETER_ELEMENTS} \
                 elements: check the widths and dimensions of the configuration",
                shape.dims()
            ))
        })
}

/// `n` draws from `U(−bound, bound)`.
pub(crate) fn uniform_values<R: Rng + ?Sized>(rng: &mut R, n: usize, bound: f64) -> Vec<f64> {
    (0..n)
        .map(|_| (2.0 * rng.random::<f64>() - 1.0) * bound)
        .collect()
}

/// PyTorch's default `nn.Linear` init: `U(−1/√n_in, 1/√n_in)` for weights and biases.
pub(crate) fn linear_default<R: Rng + ?Sized>(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
    n_in: usize,
    rng: &mut R,
) -> Result<Tensor> {
    uniform(vb, shape, name, 1.0 / (n_in.max(1) as f64).sqrt(), rng)
}

/// A parameter drawn from `U(−bound, bound)` (the public form, with its checks of `bound`,
/// is [`crate::init::uniform`]).
pub(crate) fn uniform<R: Rng + ?Sized>(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
    bound: f64,
    rng: &mut R,
) -> Result<Tensor> {
    let shape = shape.into();
    let values = uniform_values(rng, parameter_elements(&shape, name)?, bound);
    get_or_init(vb, shape, name, values)
}

/// The value of the one-element flag variable `flag` (an ActNorm's `initialized`): set when
/// its element is not 0 (any dtype; an empty tensor reads as unset).
pub(crate) fn read_flag(flag: &Tensor) -> Result<bool> {
    let v = flag.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(v.first().copied().unwrap_or(0.0) != 0.0)
}

/// Writes `value` (1 or 0) into the one-element flag variable `flag`, in place.
pub(crate) fn write_flag(flag: &Tensor, value: bool) -> Result<()> {
    let t = Tensor::new(&[if value { 1.0f64 } else { 0.0 }], flag.device())?;
    write_in_place(flag, &t)
}

/// A parameter filled with a constant.
pub(crate) fn constant(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
    value: f64,
) -> Result<Tensor> {
    let shape = shape.into();
    let values = vec![value; parameter_elements(&shape, name)?];
    get_or_init(vb, shape, name, values)
}
