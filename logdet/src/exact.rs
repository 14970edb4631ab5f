//! Exact log-determinants of batches of dense SPD matrices by Cholesky (faer).

use std::any::Any;

use faer::{Mat, MatRef, Side};
use krylov::Real;

use crate::LogdetError;

fn logdet_one(system: usize, h: MatRef<'_, f64>) -> Result<f64, LogdetError> {
    let d = h.nrows();
    if h.ncols() != d {
        return Err(LogdetError::ShapeMismatch {
            system,
            expected: (d, d),
            found: (d, h.ncols()),
        });
    }
    // A NaN or ±Inf in the lower triangle would make the Cholesky fail (or give a NaN
    // pivot), which is not a spectral property of the matrix; one in the upper triangle, which
    // the Cholesky does not read, would be ignored, though the matrix it belongs to has no
    // log-determinant. The lower triangle is searched first (its entries are the ones used).
    let lower = (0..d).flat_map(|col| (col..d).map(move |row| (row, col)));
    let upper = (0..d).flat_map(|col| (0..col).map(move |row| (row, col)));
    for (row, col) in lower.chain(upper) {
        let value = h[(row, col)];
        if !value.is_finite() {
            return Err(LogdetError::NonFiniteInput {
                system,
                row,
                col,
                value,
            });
        }
    }
    let llt = h
        .llt(Side::Lower)
        .map_err(|_| LogdetError::NotPositiveDefinite { system })?;
    let l = llt.L();
    let mut s = 0.0;
    for i in 0..d {
        let lii = l[(i, i)];
        if !(lii > 0.0 && lii.is_finite()) {
            return Err(LogdetError::NotPositiveDefinite { system });
        }
        s += lii.ln();
    }
    Ok(2.0 * s)
}

/// `log det H_i` for a batch of symmetric positive definite matrices, by Cholesky
/// (`log det H = 2 Σ_k log L_kk`).
///
/// Only the **lower triangle** (entries `(i, j)` with `i ≥ j`) of each matrix is factorised:
/// symmetry is assumed, not checked, and the values of the strict upper triangle are not used.
/// [`exact_logdet_flat`] and `exact_logdet_tensor` use the same triangle, so the three agree on
/// any input. A NaN or ±Inf entry **anywhere** in a matrix (the upper triangle included: such a
/// matrix has no log-determinant, whatever its lower triangle) gives
/// [`LogdetError::NonFiniteInput`] naming the system and the entry (checked before the
/// factorisation, the lower triangle first, so the first such system in batch order); a
/// finite matrix that is not numerically positive definite gives
/// [`LogdetError::NotPositiveDefinite`] naming its batch index; matrices must all be square of
/// the same size. `f32` matrices (the other
/// [`krylov::Real`] type, as the krylov operators accept) are converted to `f64` and
/// factorised in `f64`.
///
/// ```
/// use faer::Mat;
/// let h = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 2.0 } else { 1.0 }); // det 3
/// let ld = logdet::exact_logdet(&[h]).unwrap();
/// assert!((ld[0] - 3f64.ln()).abs() < 1e-14);
///
/// let not_pd = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 });
/// let err = logdet::exact_logdet(&[Mat::identity(2, 2), not_pd]).unwrap_err();
/// assert!(err.to_string().contains("system 1"));
///
/// let nan = Mat::<f64>::from_fn(2, 2, |i, j| if (i, j) == (1, 0) { f64::NAN } else { 1.0 });
/// let err = logdet::exact_logdet(&[Mat::identity(2, 2), nan]).unwrap_err();
/// assert!(matches!(err, logdet::LogdetError::NonFiniteInput { system: 1, row: 1, col: 0, .. }));
/// // Above the diagonal too, though the Cholesky would not read it.
/// let inf = Mat::<f64>::from_fn(2, 2, |i, j| match (i, j) {
///     (0, 1) => f64::INFINITY,
///     _ => if i == j { 2.0 } else { 0.0 },
/// });
/// let err = logdet::exact_logdet(&[inf]).unwrap_err();
/// assert!(matches!(err, logdet::LogdetError::NonFiniteInput { system: 0, row: 0, col: 1, .. }));
///
/// let h32 = Mat::<f32>::from_fn(2, 2, |i, j| if i == j { 2.0 } else { 1.0 });
/// assert!((logdet::exact_logdet(&[h32]).unwrap()[0] - 3f64.ln()).abs() < 1e-14);
/// ```
pub fn exact_logdet<T: Real>(matrices: &[Mat<T>]) -> Result<Vec<f64>, LogdetError> {
    let d = matrices.first().map(|m| m.nrows()).unwrap_or(0);
    matrices
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m.nrows() != d {
                return Err(LogdetError::ShapeMismatch {
                    system: i,
                    expected: (d, d),
                    found: (m.nrows(), m.ncols()),
                });
            }
            match (m as &dyn Any).downcast_ref::<Mat<f64>>() {
                Some(m64) => logdet_one(i, m64.as_ref()),
                // Lower precision: factorised in f64, like `exact_logdet_tensor`. The whole
                // matrix is converted: the upper triangle is checked for NaN/Inf too.
                None => {
                    let m64 =
                        Mat::<f64>::from_fn(m.nrows(), m.ncols(), |r, c| m[(r, c)].into_f64());
                    logdet_one(i, m64.as_ref())
                }
            }
        })
        .collect()
}

/// [`exact_logdet`] on a flat `(B, d, d)` row-major buffer (matrix `i` occupies
/// `data[i·d·d .. (i+1)·d·d]`, row by row). As in [`exact_logdet`], only the lower triangle
/// of each (row-major) matrix, `data[i·d·d + r·d + c]` with `r ≥ c`, is factorised, and a
/// NaN or ±Inf anywhere is refused.
///
/// Errors: [`LogdetError::WrongLength`] when `data.len() ≠ B·d·d`,
/// [`LogdetError::SizeOverflow`] when `B·d·d` overflows `usize`, and those of
/// [`exact_logdet`] (`row` and `col` of [`LogdetError::NonFiniteInput`] index the row-major
/// matrix).
///
/// ```
/// let data = [4.0, 0.0, 0.0, 1.0, /* system 1: */ 1.0, 0.0, 0.0, 1.0];
/// let ld = logdet::exact_logdet_flat(&data, 2, 2).unwrap();
/// assert!((ld[0] - 4f64.ln()).abs() < 1e-14 && ld[1].abs() < 1e-14);
/// ```
pub fn exact_logdet_flat(data: &[f64], batch: usize, dim: usize) -> Result<Vec<f64>, LogdetError> {
    let expected = batch
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(dim))
        .ok_or_else(|| LogdetError::SizeOverflow {
            context: "exact_logdet_flat: flat batch of matrices (B, d, d)",
            dims: vec![batch, dim, dim],
        })?;
    if data.len() != expected {
        return Err(LogdetError::WrongLength {
            expected,
            found: data.len(),
        });
    }
    // With `dim = 0` any `batch` matches an empty slice: the result must still be allocatable
    // (`usize::MAX` empty matrices had the collect below push zeros until memory ran out).
    let mut out = Vec::new();
    out.try_reserve_exact(batch)
        .map_err(|_| LogdetError::SizeOverflow {
            context: "exact_logdet_flat: one log-det per matrix",
            dims: vec![batch, dim, dim],
        })?;
    for i in 0..batch {
        let block = &data[i * dim * dim..(i + 1) * dim * dim];
        // A row-major view: the Cholesky reads its lower triangle, as in `exact_logdet`.
        let h = MatRef::from_row_major_slice(block, dim, dim);
        out.push(logdet_one(i, h)?);
    }
    Ok(out)
}

/// [`exact_logdet`] on a `(B, d, d)` candle tensor (any float dtype, any device). The tensor is
/// copied to the host and factorised in `f64`. Returns one value per system. Only the lower
/// triangle of each matrix (`h[i][r][c]` with `r ≥ c`) is factorised, and a NaN or ±Inf
/// anywhere is refused, as in [`exact_logdet`].
///
/// ```
/// use candle_core::{Device, DType, Tensor};
/// let h = (Tensor::eye(3, DType::F32, &Device::Cpu).unwrap() * 2.0).unwrap().unsqueeze(0).unwrap();
/// let ld = logdet::exact_logdet_tensor(&h).unwrap();
/// assert!((ld[0] - 3.0 * 2f64.ln()).abs() < 1e-6);
/// ```
#[cfg(feature = "candle")]
pub fn exact_logdet_tensor(matrices: &candle_core::Tensor) -> Result<Vec<f64>, LogdetError> {
    let (b, d, d2) = matrices
        .dims3()
        .map_err(|_| LogdetError::WrongTensorShape {
            expected: "(B, d, d)",
            found: matrices.dims().to_vec(),
        })?;
    if d != d2 {
        return Err(LogdetError::WrongTensorShape {
            expected: "(B, d, d) with square matrices",
            found: matrices.dims().to_vec(),
        });
    }
    if !matrices.dtype().is_float() {
        // A u32 identity cast to f64 would give a log-det, of matrices nobody meant.
        return Err(LogdetError::NotFloat {
            found: format!("{:?}", matrices.dtype()),
        });
    }
    let host = matrices
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    exact_logdet_flat(&host, b, d)
}
