//! Exact log-determinants of batches of dense SPD matrices by Cholesky (faer).

use std::any::Any;

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::{Mat, MatRef, Par, Side};
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
    check_finite(system, h)?;
    let llt = h
        .llt(Side::Lower)
        .map_err(|_| LogdetError::NotPositiveDefinite { system })?;
    log_det_from_factor(system, llt.L())
}

/// `NonFiniteInput` for the first NaN or ±Inf of `h`. A NaN or ±Inf in the lower triangle
/// would make the Cholesky fail (or give a NaN pivot), which is not a spectral property of
/// the matrix; one in the upper triangle, which the Cholesky does not read, would be
/// ignored, though the matrix it belongs to has no log-determinant. The lower triangle is
/// searched first (its entries are the ones used).
fn check_finite(system: usize, h: MatRef<'_, f64>) -> Result<(), LogdetError> {
    let d = h.nrows();
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
    Ok(())
}

/// `2 Σ_i log L_ii` of a Cholesky factor, `NotPositiveDefinite` for a pivot that is not
/// positive and finite.
fn log_det_from_factor(system: usize, l: MatRef<'_, f64>) -> Result<f64, LogdetError> {
    let mut s = 0.0;
    for i in 0..l.nrows() {
        let lii = l[(i, i)];
        if !(lii > 0.0 && lii.is_finite()) {
            return Err(LogdetError::NotPositiveDefinite { system });
        }
        s += lii.ln();
    }
    Ok(2.0 * s)
}

/// [`logdet_one`] for a batch of matrices of one size, with the factor's matrix and the
/// factorisation's work space made once for the batch instead of per matrix (what
/// `MatRef::llt` allocates and zero-fills each time: at d = 63, with the finiteness check
/// below, about a third of the log-det pass of a tabular flow's exact evaluation). The
/// arithmetic is `Llt::new`'s (faer 0.24): the lower triangle copied into a matrix whose
/// strict upper triangle is zero, `cholesky_in_place` with the global parallelism and
/// default parameters; so the values are the same bits.
struct BatchCholesky {
    l: Mat<f64>,
    mem: MemBuffer,
    par: Par,
}

impl BatchCholesky {
    fn new(d: usize) -> Self {
        let par = faer::get_global_parallelism();
        let scratch = cholesky_in_place_scratch::<f64>(d, par, Default::default());
        Self {
            l: Mat::zeros(d, d),
            mem: MemBuffer::new(scratch),
            par,
        }
    }

    /// `log det h` (`h` of the batch's size).
    fn logdet(
        &mut self,
        system: usize,
        h: MatRef<'_, f64>,
        finite: bool,
    ) -> Result<f64, LogdetError> {
        // A whole-matrix scan in memory order first; the ordered search only to name the
        // first non-finite entry.
        if !finite {
            check_finite(system, h)?;
        }
        self.l.copy_from_triangular_lower(h);
        let factored = cholesky_in_place(
            self.l.as_mut(),
            Default::default(),
            self.par,
            MemStack::new(&mut self.mem),
            Default::default(),
        );
        let out = match factored {
            Ok(_) => log_det_from_factor(system, self.l.as_ref()),
            Err(_) => Err(LogdetError::NotPositiveDefinite { system }),
        };
        // Back to a zero strict upper triangle, as a fresh factor's matrix starts.
        let d = self.l.nrows();
        for col in 1..d {
            for row in 0..col {
                self.l[(row, col)] = 0.0;
            }
        }
        out
    }
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
    let mut chol = BatchCholesky::new(dim);
    for i in 0..batch {
        let block = &data[i * dim * dim..(i + 1) * dim * dim];
        // A row-major view: the Cholesky reads its lower triangle, as in `exact_logdet`.
        let h = MatRef::from_row_major_slice(block, dim, dim);
        let finite = block.iter().all(|v| v.is_finite());
        out.push(chol.logdet(i, h, finite)?);
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
    if b == 0 {
        // No cast of an empty tensor: candle's CUDA backend launches the conversion on 0
        // threads, which CUDA refuses.
        return exact_logdet_flat(&[], b, d);
    }
    let host = matrices
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    exact_logdet_flat(&host, b, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A random SPD `d × d` matrix `G Gᵀ + d·I`, row-major, made slightly asymmetric in its
    /// strict upper triangle (which the factorisation must not read).
    fn spd(rng: &mut StdRng, d: usize) -> Vec<f64> {
        let g: Vec<f64> = (0..d * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut h = vec![0.0; d * d];
        for r in 0..d {
            for c in 0..d {
                let s: f64 = (0..d).map(|k| g[r * d + k] * g[c * d + k]).sum();
                h[r * d + c] =
                    s + if r == c { d as f64 } else { 0.0 } + if c > r { 0.25 } else { 0.0 };
            }
        }
        h
    }

    /// The batch path (one factor matrix and work space for the batch) gives the bits of
    /// `exact_logdet` (faer's `Llt::new` per matrix) on every matrix, also after a matrix
    /// that failed to factor, and the same errors (the first non-finite entry, the lower
    /// triangle first; a matrix that is not positive definite).
    #[test]
    fn batch_factorisation_matches_one_factorisation_per_matrix() {
        let mut rng = StdRng::seed_from_u64(5);
        for d in [1usize, 2, 7, 33, 63] {
            let mats: Vec<Vec<f64>> = (0..6).map(|_| spd(&mut rng, d)).collect();
            let flat: Vec<f64> = mats.concat();
            let got = exact_logdet_flat(&flat, 6, d).unwrap();
            let want = exact_logdet(
                &mats
                    .iter()
                    .map(|m| Mat::from_fn(d, d, |r, c| m[r * d + c]))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "d = {d}"
            );
            if d < 2 {
                continue;
            }
            // Matrix 2 indefinite: an error naming it (the batch stops there, as before).
            let mut bad = flat.clone();
            bad[2 * d * d] = -1.0;
            assert!(matches!(
                exact_logdet_flat(&bad, 6, d),
                Err(LogdetError::NotPositiveDefinite { system: 2 })
            ));
            // NaN above the diagonal of matrix 3, Inf below it in matrix 4: matrix 3's.
            let mut nan = flat.clone();
            nan[3 * d * d + 1] = f64::NAN;
            nan[4 * d * d + d] = f64::INFINITY;
            assert!(matches!(
                exact_logdet_flat(&nan, 6, d),
                Err(LogdetError::NonFiniteInput {
                    system: 3,
                    row: 0,
                    col: 1,
                    ..
                })
            ));
            // In one matrix the lower triangle's entry is named first.
            nan[3 * d * d + d] = f64::INFINITY;
            assert!(matches!(
                exact_logdet_flat(&nan, 6, d),
                Err(LogdetError::NonFiniteInput {
                    system: 3,
                    row: 1,
                    col: 0,
                    ..
                })
            ));
        }
    }

    /// A factor matrix used after a failed factorisation gives the values of a fresh one.
    #[test]
    fn a_failed_factorisation_leaves_nothing_behind() {
        let mut rng = StdRng::seed_from_u64(9);
        let d = 9;
        let good = spd(&mut rng, d);
        let mut indefinite = spd(&mut rng, d);
        indefinite[4 * d + 4] = -50.0;
        let mut chol = BatchCholesky::new(d);
        let h = |m: &[f64]| MatRef::from_row_major_slice(m, d, d).to_owned();
        let fresh = chol.logdet(0, h(&good).as_ref(), true).unwrap();
        assert!(chol.logdet(1, h(&indefinite).as_ref(), true).is_err());
        let after = chol.logdet(2, h(&good).as_ref(), true).unwrap();
        assert_eq!(fresh.to_bits(), after.to_bits());
    }
}
