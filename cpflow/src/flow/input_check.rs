//! Validation of user batches: rank 2, the expected columns, floating-point and finite
//! values (also after conversion to the flow's dtype), and at least one row where needed.

use candle_core::{DType, Device, Tensor};

use crate::error::{CpflowError, Result};

/// Validate a `(B, cols)` batch: rank 2, `cols` columns, `B ≥ 1`, finite values.
pub(crate) fn check_matrix(
    t: &Tensor,
    cols: usize,
    what: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = check_matrix_rows(t, cols, what, dtype, device)?;
    refuse_empty(&t, what)?;
    Ok(t)
}

/// An error naming `what` when `t` has no rows.
pub(crate) fn refuse_empty(t: &Tensor, what: &str) -> Result<()> {
    if t.dim(0)? == 0 {
        return Err(CpflowError::InvalidInput(format!(
            "{what} is empty (0 rows)"
        )));
    }
    Ok(())
}

/// [`check_matrix`] that accepts `B = 0`.
pub(crate) fn check_matrix_rows(
    t: &Tensor,
    cols: usize,
    what: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if t.rank() != 2 {
        return Err(CpflowError::InvalidInput(format!(
            "{what} must be a (batch, {cols}) matrix, got shape {:?}",
            t.dims()
        )));
    }
    let c = t.dim(1)?;
    if c != cols {
        return Err(CpflowError::InvalidInput(format!(
            "{what} has {c} columns, the flow expects {cols}"
        )));
    }
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    ) {
        return Err(CpflowError::InvalidInput(format!(
            "{what} must hold floating-point values, got {:?}",
            t.dtype()
        )));
    }
    if t.dim(0)? == 0 {
        // No cast and no reduction of an empty tensor: candle's CUDA backend launches its
        // kernels on 0 threads for one (refused by CUDA) and divides by the outputs of a sum.
        return Ok(Tensor::zeros((0, cols), dtype, device)?);
    }
    let t = t.to_device(device)?;
    if !all_finite(&t)? {
        return Err(CpflowError::InvalidInput(format!(
            "{what} contains NaN or infinite values"
        )));
    }
    let t = t.to_dtype(dtype)?;
    if !all_finite(&t)? {
        return Err(CpflowError::InvalidInput(format!(
            "{what} has finite values too large for the flow's {dtype:?}"
        )));
    }
    Ok(t)
}

/// Whether every entry is finite. `t − t` is 0 for a finite entry and NaN for NaN/±Inf, so
/// its sum is NaN exactly when a non-finite value is present, and cannot overflow (a sum of
/// `|t|` would, for large finite f32 inputs).
pub(crate) fn all_finite(t: &Tensor) -> Result<bool> {
    if t.elem_count() == 0 {
        return Ok(true); // no reduction of an empty tensor (`check_matrix_rows`)
    }
    let s = t
        .sub(t)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}
