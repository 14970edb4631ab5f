//! The full-covariance Gaussian baseline of a tabular benchmark: `N(μ, Σ)` fitted by maximum
//! likelihood to the training rows and scored on any rows.
//!
//! MAF (Papamakarios et al., 2017, Table 1) reports this model on each of its files, so it
//! calibrates data that was rebuilt rather than read from those files (BSDS300 here, see
//! [`super::load_bsds300`]): a Gaussian test NLL far from
//! [`TabularDataset::maf_gaussian_test_nll`](super::TabularDataset::maf_gaussian_test_nll)
//! means the data differ, and with them every number scored on them. It is also the floor any
//! flow has to beat.

use nalgebra::DMatrix;

use super::Matrix;
use crate::evaluate::NllEstimate;
use crate::image::mean_and_std_err;

/// Rows per block of the covariance and scoring products.
const BLOCK_ROWS: usize = 4096;

/// Why a Gaussian could not be fitted or scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GaussianBaselineError {
    /// Fewer than two training rows, or no columns.
    #[error("a Gaussian needs at least 2 training rows of at least 1 column, got {rows} × {cols}")]
    TooFewRows {
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// A NaN or infinite value.
    #[error("row {row}, column {col} is not finite ({value})")]
    NonFinite {
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
        /// The value.
        value: f64,
    },
    /// Rows of another width than the Gaussian's dimension (for row-major values: a
    /// trailing partial row of `found` values).
    #[error("rows of {found} columns given for a Gaussian of dimension {expected}")]
    DimensionMismatch {
        /// The Gaussian's dimension.
        expected: usize,
        /// The rows' width (the partial row's length).
        found: usize,
    },
    /// The sample covariance is singular (a constant column, or fewer rows than columns).
    #[error("the training covariance is not positive definite (a constant or dependent column?)")]
    SingularCovariance,
}

/// `N(μ, Σ)` with the maximum-likelihood mean and covariance (divisor `n`) of training rows.
///
/// ```
/// use cpflow::datasets::{GaussianBaseline, Matrix};
/// // Two columns: x and x + noise, 4 rows.
/// let train = Matrix::new(4, 2, vec![0.0f64, 0.1, 1.0, 0.9, 2.0, 2.2, 3.0, 2.8])?;
/// let g = GaussianBaseline::fit(&train)?;
/// assert_eq!(g.mean(), &[1.5, 1.5]);
/// // At the mean the NLL is ½ log det(2πΣ).
/// let at_mean = g.nll(&Matrix::new(1, 2, vec![1.5, 1.5])?)?[0];
/// assert!((at_mean - 0.5 * (2.0 * std::f64::consts::PI).ln() * 2.0 - 0.5 * g.log_det_cov()).abs() < 1e-12);
/// // Mean and standard error over rows (a `cpflow::NllEstimate`, as a flow's scores).
/// let s = g.mean_nll(&train)?;
/// assert_eq!((s.n, s.non_finite), (4, 0));
/// // On its own training rows the ML Gaussian's mean NLL is its entropy: ½ d (1 + ln 2π) + ½ log det Σ.
/// let entropy = 0.5 * 2.0 * (1.0 + (2.0 * std::f64::consts::PI).ln()) + 0.5 * g.log_det_cov();
/// assert!((s.mean - entropy).abs() < 1e-12);
/// // A constant column has no density.
/// let flat = Matrix::new(3, 2, vec![1.0f64, 5.0, 2.0, 5.0, 3.0, 5.0])?;
/// assert!(GaussianBaseline::fit(&flat).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct GaussianBaseline {
    mean: Vec<f64>,
    /// Lower Cholesky factor of `Σ`.
    chol: DMatrix<f64>,
    /// `½ (d log 2π + log det Σ)`.
    log_norm: f64,
}

impl GaussianBaseline {
    /// Fits the mean and covariance of `train` (two passes, f64 sums).
    pub fn fit<T: Copy + Into<f64>>(train: &Matrix<T>) -> Result<Self, GaussianBaselineError> {
        Self::fit_rows(train.data(), train.cols())
    }

    /// [`GaussianBaseline::fit`] of row-major `values` with `dim` columns (a trailing partial
    /// row is refused as [`GaussianBaselineError::DimensionMismatch`]).
    ///
    /// ```
    /// use cpflow::datasets::GaussianBaseline;
    /// let g = GaussianBaseline::fit_rows(&[0.0f32, 1.0, 2.0, 4.0], 1)?;
    /// assert_eq!(g.mean(), &[1.75]);
    /// assert!(GaussianBaseline::fit_rows(&[0.0f32, 1.0, 2.0], 2).is_err());
    /// # Ok::<(), cpflow::datasets::GaussianBaselineError>(())
    /// ```
    pub fn fit_rows<T: Copy + Into<f64>>(
        values: &[T],
        dim: usize,
    ) -> Result<Self, GaussianBaselineError> {
        let d = dim;
        if d == 0 || values.len() < 2 * d {
            return Err(GaussianBaselineError::TooFewRows {
                rows: values.len().checked_div(d).unwrap_or(0),
                cols: d,
            });
        }
        check_whole_rows(values, d)?;
        let n = values.len() / d;
        let mut mean = vec![0.0; d];
        for (i, row) in values.chunks_exact(d).enumerate() {
            for (col, (m, &v)) in mean.iter_mut().zip(row).enumerate() {
                let v: f64 = v.into();
                if !v.is_finite() {
                    return Err(GaussianBaselineError::NonFinite {
                        row: i,
                        col,
                        value: v,
                    });
                }
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = DMatrix::zeros(d, d);
        for start in (0..n).step_by(BLOCK_ROWS) {
            let block = centred_block(values, &mean, start, n.min(start + BLOCK_ROWS));
            cov.gemm(1.0, &block, &block.transpose(), 1.0);
        }
        cov /= n as f64;
        let chol = cov
            .cholesky()
            .ok_or(GaussianBaselineError::SingularCovariance)?
            .unpack();
        // Pivots below √(d·ε) of the largest: singular to working precision (rounding can
        // leave a dependent column a tiny positive pivot).
        let diag = chol.diagonal();
        let largest = diag.max();
        if diag.min() <= largest * (d as f64 * f64::EPSILON).sqrt() {
            return Err(GaussianBaselineError::SingularCovariance);
        }
        let log_det: f64 = 2.0 * diag.iter().map(|v| v.ln()).sum::<f64>();
        let log_norm = 0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det);
        Ok(Self {
            mean,
            chol,
            log_norm,
        })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The fitted mean `μ`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// `log det Σ`.
    pub fn log_det_cov(&self) -> f64 {
        2.0 * self.log_norm - self.dim() as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// The values of `rows`, refused unless they have [`GaussianBaseline::dim`] columns.
    fn values_of<'a, T: Copy>(
        &self,
        rows: &'a Matrix<T>,
    ) -> Result<&'a [T], GaussianBaselineError> {
        if rows.cols() != self.dim() {
            return Err(GaussianBaselineError::DimensionMismatch {
                expected: self.dim(),
                found: rows.cols(),
            });
        }
        Ok(rows.data())
    }

    /// `−log N(x; μ, Σ)` of every row of `rows`.
    pub fn nll<T: Copy + Into<f64>>(
        &self,
        rows: &Matrix<T>,
    ) -> Result<Vec<f64>, GaussianBaselineError> {
        self.nll_rows(self.values_of(rows)?)
    }

    /// [`GaussianBaseline::nll`] of row-major `values` with [`GaussianBaseline::dim`] columns.
    pub fn nll_rows<T: Copy + Into<f64>>(
        &self,
        values: &[T],
    ) -> Result<Vec<f64>, GaussianBaselineError> {
        check_whole_rows(values, self.dim())?;
        let n = values.len() / self.dim();
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(BLOCK_ROWS) {
            let end = n.min(start + BLOCK_ROWS);
            let mut block = centred_block(values, &self.mean, start, end);
            if let Some(col) = block.iter().position(|v| !v.is_finite()) {
                let (k, i) = (col % self.dim(), col / self.dim());
                let value: f64 = values[(start + i) * self.dim() + k].into();
                return Err(GaussianBaselineError::NonFinite {
                    row: start + i,
                    col: k,
                    value,
                });
            }
            // Columns of `block` are rows; whiten them: L w = x − μ.
            self.chol.solve_lower_triangular_mut(&mut block);
            out.extend(
                block
                    .column_iter()
                    .map(|w| self.log_norm + 0.5 * w.norm_squared()),
            );
        }
        Ok(out)
    }

    /// Mean and standard error of [`GaussianBaseline::nll`] over `rows` (at least one; the
    /// standard error is `None` for one row, as for a flow's [`NllEstimate`]).
    pub fn mean_nll<T: Copy + Into<f64>>(
        &self,
        rows: &Matrix<T>,
    ) -> Result<NllEstimate, GaussianBaselineError> {
        self.mean_nll_rows(self.values_of(rows)?)
    }

    /// [`GaussianBaseline::mean_nll`] of row-major `values` with [`GaussianBaseline::dim`]
    /// columns.
    pub fn mean_nll_rows<T: Copy + Into<f64>>(
        &self,
        values: &[T],
    ) -> Result<NllEstimate, GaussianBaselineError> {
        let nll = self.nll_rows(values)?;
        let n = nll.len();
        if n == 0 {
            return Err(GaussianBaselineError::TooFewRows {
                rows: 0,
                cols: self.dim(),
            });
        }
        let (mean, std_err) = mean_and_std_err(&nll);
        Ok(NllEstimate {
            mean,
            std_err: (n > 1).then_some(std_err),
            n,
            non_finite: nll.iter().filter(|v| !v.is_finite()).count(),
            first_non_finite: nll.iter().position(|v| !v.is_finite()),
        })
    }
}

/// Refuses `values` that are not whole rows of `dim` columns.
fn check_whole_rows<T>(values: &[T], dim: usize) -> Result<(), GaussianBaselineError> {
    if !values.len().is_multiple_of(dim) {
        return Err(GaussianBaselineError::DimensionMismatch {
            expected: dim,
            found: values.len() % dim,
        });
    }
    Ok(())
}

/// Rows `start..end` of the row-major `values` (rows of `mean.len()` columns) minus `mean`,
/// as the columns of a `d × (end − start)` matrix.
fn centred_block<T: Copy + Into<f64>>(
    values: &[T],
    mean: &[f64],
    start: usize,
    end: usize,
) -> DMatrix<f64> {
    let d = mean.len();
    let mut block = DMatrix::zeros(d, end - start);
    for (j, row) in values[start * d..end * d].chunks_exact(d).enumerate() {
        for (k, (&v, mu)) in row.iter().zip(mean).enumerate() {
            block[(k, j)] = v.into() - mu;
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DVector;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};

    /// Rows `x = A z + b` with standard normal `z`: covariance `A Aᵀ`.
    fn sample(n: usize, a: &DMatrix<f64>, b: &[f64], seed: u64) -> Matrix<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let d = b.len();
        let mut data = Vec::with_capacity(n * d);
        for _ in 0..n {
            let z = DVector::from_fn(d, |_, _| StandardNormal.sample(&mut rng));
            let x = a * z;
            data.extend(x.iter().zip(b).map(|(x, b)| x + b));
        }
        Matrix::new(n, d, data).unwrap()
    }

    #[test]
    fn nll_matches_the_closed_form_density() {
        // Three rows of two columns, fitted by hand: μ = (1, 2), Σ = [[2/3, 1/3], [1/3, 2/3]].
        let train = Matrix::new(3, 2, vec![0.0f64, 1.0, 1.0, 3.0, 2.0, 2.0]).unwrap();
        let g = GaussianBaseline::fit(&train).unwrap();
        assert_eq!(g.mean(), &[1.0, 2.0]);
        let (s11, s12, s22): (f64, f64, f64) = (2.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0);
        let det = s11 * s22 - s12 * s12;
        assert!((g.log_det_cov() - det.ln()).abs() < 1e-14);
        let x = [0.5f64, -1.0];
        let (u, v) = (x[0] - 1.0, x[1] - 2.0);
        let quad = (s22 * u * u - 2.0 * s12 * u * v + s11 * v * v) / det;
        let want = (2.0 * std::f64::consts::PI).ln() + 0.5 * det.ln() + 0.5 * quad;
        let got = g.nll(&Matrix::new(1, 2, x.to_vec()).unwrap()).unwrap()[0];
        assert!((got - want).abs() < 1e-13, "{got} vs {want}");
    }

    #[test]
    fn recovers_a_known_gaussian() {
        // d = 5, Σ = A Aᵀ with a lower-triangular A: test NLL → entropy ½ d (1 + ln 2π) + ½ log det Σ.
        let d = 5;
        let a = DMatrix::from_fn(d, d, |i, j| {
            if i == j {
                1.0 + i as f64 * 0.5
            } else if i > j {
                0.3 * (i + j) as f64 / d as f64
            } else {
                0.0
            }
        });
        let b: Vec<f64> = (0..d).map(|i| i as f64 - 2.0).collect();
        let log_det: f64 = 2.0 * a.diagonal().iter().map(|v| v.ln()).sum::<f64>();
        let entropy = 0.5 * d as f64 * (1.0 + (2.0 * std::f64::consts::PI).ln()) + 0.5 * log_det;
        let g = GaussianBaseline::fit(&sample(50_000, &a, &b, 1)).unwrap();
        // log det Σ of 50,000 rows: relative error of each variance ~ √(2/n) ≈ 0.006.
        assert!(
            (g.log_det_cov() - log_det).abs() < 0.05,
            "{}",
            g.log_det_cov()
        );
        let test = g.mean_nll(&sample(20_000, &a, &b, 2)).unwrap();
        // The NLL of a Gaussian has standard deviation √(d/2) ≈ 1.58: s.e. ≈ 0.011 at 20,000
        // rows; 5 s.e. plus the fit's error above.
        assert!(
            (test.mean - entropy).abs() < 0.08,
            "{} vs {entropy}",
            test.mean
        );
        assert!(
            (test.std_err.unwrap() - (d as f64 / 2.0).sqrt() / (20_000f64).sqrt()).abs() < 0.001
        );
        // Blocks: more rows than BLOCK_ROWS scored in pieces equal one-at-a-time scoring.
        let rows = sample(BLOCK_ROWS + 3, &a, &b, 3);
        let all = g.nll(&rows).unwrap();
        let last = Matrix::new(1, d, rows.row(BLOCK_ROWS + 2).to_vec()).unwrap();
        assert_eq!(all[BLOCK_ROWS + 2], g.nll(&last).unwrap()[0]);
    }

    #[test]
    fn refuses_bad_input() {
        let one = Matrix::new(1, 2, vec![1.0f64, 2.0]).unwrap();
        assert_eq!(
            GaussianBaseline::fit(&one).unwrap_err(),
            GaussianBaselineError::TooFewRows { rows: 1, cols: 2 }
        );
        let nan = Matrix::new(3, 2, vec![1.0f64, 2.0, f64::NAN, 1.0, 0.0, 0.5]).unwrap();
        assert!(matches!(
            GaussianBaseline::fit(&nan).unwrap_err(),
            GaussianBaselineError::NonFinite { row: 1, col: 0, .. }
        ));
        let g = GaussianBaseline::fit(
            &Matrix::new(3, 2, vec![1.0f64, 2.0, 0.0, 1.0, 0.0, 0.5]).unwrap(),
        )
        .unwrap();
        let wide = Matrix::new(1, 3, vec![0.0f64; 3]).unwrap();
        assert_eq!(
            g.nll(&wide).unwrap_err(),
            GaussianBaselineError::DimensionMismatch {
                expected: 2,
                found: 3
            }
        );
        let inf = Matrix::new(2, 2, vec![0.0f32, 0.0, 1.0, f32::INFINITY]).unwrap();
        assert!(matches!(
            g.nll(&inf).unwrap_err(),
            GaussianBaselineError::NonFinite { row: 1, col: 1, .. }
        ));
        // Two identical columns: singular.
        let dup = Matrix::new(3, 2, vec![1.0f64, 1.0, 2.0, 2.0, 4.0, 4.0]).unwrap();
        assert_eq!(
            GaussianBaseline::fit(&dup).unwrap_err(),
            GaussianBaselineError::SingularCovariance
        );
    }
}
