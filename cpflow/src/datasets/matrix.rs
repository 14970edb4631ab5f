//! Host-side data containers: a row-major [`Matrix`] and a train/validation/test [`Split`],
//! plus the column statistics and tail splits that the MAF preprocessing uses.

use candle_core::{DType, Device, Tensor};

use super::DatasetError;

/// A dense row-major matrix on the host: one sample per row.
///
/// ```
/// use cpflow::datasets::{DatasetError, Matrix};
/// let m = Matrix::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// assert_eq!((m.rows(), m.cols()), (2, 3));
/// assert_eq!(m.select_columns(&[2, 0]).data(), &[3.0, 1.0, 6.0, 4.0]);
/// assert_eq!(m.slice_rows(1, 2).row(0), &[4.0, 5.0, 6.0]);
/// assert_eq!(m.map(|v| v * 2.0).row(0), &[2.0, 4.0, 6.0]);
/// // Data that does not fill the shape is refused.
/// assert!(matches!(Matrix::new(2, 2, vec![1.0]), Err(DatasetError::BadShape { .. })));
/// # Ok::<(), DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Copy> Matrix<T> {
    /// Wraps `data` (row-major, `rows * cols` entries).
    ///
    /// ```
    /// use cpflow::datasets::Matrix;
    /// let m = Matrix::new(2, 3, vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    /// assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
    /// ```
    pub fn new(rows: usize, cols: usize, data: Vec<T>) -> Result<Self, DatasetError> {
        match rows.checked_mul(cols) {
            None => {
                return Err(DatasetError::bad_shape(
                    "matrix data",
                    format!("{rows}x{cols} values, but that shape overflows"),
                    format!("{} values", data.len()),
                ));
            }
            Some(n) if n != data.len() => {
                return Err(DatasetError::bad_shape(
                    "matrix data",
                    format!("{rows}x{cols} = {n} values"),
                    format!("{} values", data.len()),
                ));
            }
            Some(_) => {}
        }
        Ok(Self { rows, cols, data })
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The row-major values.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The row-major values, by value.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Row `i`.
    ///
    /// # Panics
    ///
    /// If `i >= rows` (like slice indexing; these accessors take indices the caller computed
    /// from [`Matrix::rows`] and [`Matrix::cols`]).
    pub fn row(&self, i: usize) -> &[T] {
        assert!(
            i < self.rows,
            "row index {i} out of range for a matrix of {} rows",
            self.rows
        );
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Rows `start..end` as a new matrix.
    ///
    /// # Panics
    ///
    /// If `start > end` or `end > rows` (like slice indexing).
    pub fn slice_rows(&self, start: usize, end: usize) -> Self {
        assert!(
            start <= end && end <= self.rows,
            "row range {start}..{end} out of range for a matrix of {} rows",
            self.rows
        );
        Self {
            rows: end - start,
            cols: self.cols,
            data: self.data[start * self.cols..end * self.cols].to_vec(),
        }
    }

    /// Keeps only the columns listed in `keep` (in that order; repeats allowed).
    ///
    /// # Panics
    ///
    /// If an index in `keep` is `>= cols` (like slice indexing), even when there are no rows.
    pub fn select_columns(&self, keep: &[usize]) -> Self {
        if let Some(&c) = keep.iter().find(|&&c| c >= self.cols) {
            panic!(
                "column index {c} out of range for a matrix of {} columns",
                self.cols
            );
        }
        let mut data = Vec::with_capacity(self.rows * keep.len());
        for r in 0..self.rows {
            let row = self.row(r);
            data.extend(keep.iter().map(|&c| row[c]));
        }
        Self {
            rows: self.rows,
            cols: keep.len(),
            data,
        }
    }

    /// Applies `f` to every value.
    pub fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> Matrix<U> {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }
}

impl Matrix<f64> {
    /// Casts to `f32` (the MAF loaders end with `.astype(np.float32)`).
    pub fn to_f32(&self) -> Matrix<f32> {
        self.map(|v| v as f32)
    }

    /// The first NaN or infinity in row-major order: `(row, column, value)`.
    ///
    /// ```
    /// use cpflow::datasets::Matrix;
    /// let m = Matrix::new(2, 3, vec![0.0, 1.0, 2.0, 3.0, f64::NAN, f64::INFINITY])?;
    /// let (row, col, v) = m.first_non_finite().unwrap();
    /// assert_eq!((row, col), (1, 1));
    /// assert!(v.is_nan());
    /// assert_eq!(m.slice_rows(0, 1).first_non_finite(), None);
    /// # Ok::<(), cpflow::datasets::DatasetError>(())
    /// ```
    pub fn first_non_finite(&self) -> Option<(usize, usize, f64)> {
        let i = self.data.iter().position(|v| !v.is_finite())?;
        Some((i / self.cols, i % self.cols, self.data[i]))
    }
}

impl Matrix<f32> {
    /// A `(rows, cols)` tensor of the given float dtype on `device`.
    ///
    /// ```
    /// use cpflow::candle::{DType, Device};
    /// use cpflow::datasets::Matrix;
    /// let m = Matrix::new(2, 2, vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    /// let t = m.to_tensor(DType::F64, &Device::Cpu).unwrap();
    /// assert_eq!(t.dims(), &[2, 2]);
    /// ```
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor, DatasetError> {
        let t = Tensor::from_slice(&self.data, (self.rows, self.cols), device)?;
        Ok(t.to_dtype(dtype)?)
    }
}

/// A train / validation / test split of one dataset, all with the same number of columns.
///
/// ```
/// use cpflow::datasets::{Matrix, Split};
/// let split = Split {
///     train: Matrix::new(3, 2, vec![0.0f64, 1.0, 2.0, 3.0, 4.0, 5.0])?,
///     val: Matrix::new(1, 2, vec![6.0, 7.0])?,
///     test: Matrix::new(1, 2, vec![8.0, 9.0])?,
/// };
/// assert_eq!((split.dim(), split.sizes()), (2, (3, 1, 1)));
/// let single: Split<f32> = split.to_f32(); // the loaders return f32, as MAF's do
/// assert_eq!(single.test.row(0), &[8.0f32, 9.0]);
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Split<T = f32> {
    /// Training rows.
    pub train: Matrix<T>,
    /// Validation rows (early stopping).
    pub val: Matrix<T>,
    /// Test rows (reported numbers).
    pub test: Matrix<T>,
}

impl<T: Copy> Split<T> {
    /// The common dimension.
    pub fn dim(&self) -> usize {
        self.train.cols()
    }

    /// `(train, val, test)` row counts.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.train.rows(), self.val.rows(), self.test.rows())
    }
}

impl Split<f64> {
    /// Casts every part to `f32`.
    pub fn to_f32(&self) -> Split<f32> {
        Split {
            train: self.train.to_f32(),
            val: self.val.to_f32(),
            test: self.test.to_f32(),
        }
    }
}

/// The three parts of a [`Split`] as tensors.
///
/// ```
/// use cpflow::candle::{DType, Device};
/// use cpflow::datasets::{Matrix, Split, TensorSplit};
/// let split = Split {
///     train: Matrix::new(3, 2, vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0])?,
///     val: Matrix::new(1, 2, vec![6.0, 7.0])?,
///     test: Matrix::new(1, 2, vec![8.0, 9.0])?,
/// };
/// let t: TensorSplit = split.to_tensors(DType::F64, &Device::Cpu)?;
/// assert_eq!((t.train.dims(), t.val.dims()), (&[3, 2][..], &[1, 2][..]));
/// assert_eq!(t.test.to_vec2::<f64>()?, [[8.0, 9.0]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TensorSplit {
    /// `(n_train, d)`.
    pub train: Tensor,
    /// `(n_val, d)`.
    pub val: Tensor,
    /// `(n_test, d)`.
    pub test: Tensor,
}

impl Split<f32> {
    /// Converts the three parts to `(n, d)` tensors of `dtype` on `device`.
    pub fn to_tensors(&self, dtype: DType, device: &Device) -> Result<TensorSplit, DatasetError> {
        Ok(TensorSplit {
            train: self.train.to_tensor(dtype, device)?,
            val: self.val.to_tensor(dtype, device)?,
            test: self.test.to_tensor(dtype, device)?,
        })
    }
}

/// `int(0.1 * n)` as Python computes it.
pub(crate) fn tenth(n: usize) -> usize {
    (0.1 * n as f64) as usize
}

/// MAF's tail split: `test = last int(0.1 n)` rows, then `val = last int(0.1 m)` of the
/// remaining `m` rows, `train` = the rest (no shuffling).
///
/// numpy's `x[-0:]` would make *every* row a test row when `int(0.1 n) == 0`; instead this
/// returns an error when any part would be empty.
pub(crate) fn tail_split<T: Copy>(what: &str, data: &Matrix<T>) -> Result<Split<T>, DatasetError> {
    let n = data.rows();
    let n_test = tenth(n);
    let m = n - n_test;
    let n_val = tenth(m);
    if n_test == 0 || n_val == 0 || m - n_val == 0 {
        return Err(DatasetError::bad_shape(
            format!("{what}: rows for a 80/10/10 tail split"),
            "at least 20 rows",
            format!("{n} rows"),
        ));
    }
    Ok(Split {
        train: data.slice_rows(0, m - n_val),
        val: data.slice_rows(m - n_val, m),
        test: data.slice_rows(m, n),
    })
}

/// Column means of one or more matrices stacked vertically (numpy `vstack(...).mean(0)`).
pub(crate) fn column_means(parts: &[&Matrix<f64>]) -> Vec<f64> {
    let cols = parts.first().map_or(0, |m| m.cols());
    let n: usize = parts.iter().map(|m| m.rows()).sum();
    let mut sum = vec![0.0f64; cols];
    for m in parts {
        for r in 0..m.rows() {
            for (s, v) in sum.iter_mut().zip(m.row(r)) {
                *s += v;
            }
        }
    }
    sum.iter().map(|s| s / n as f64).collect()
}

/// Column standard deviations around `means`, dividing by `n - ddof` (numpy's default
/// `ddof = 0`, pandas' default `ddof = 1`). Two-pass, so it is accurate for large means.
pub(crate) fn column_stds(parts: &[&Matrix<f64>], means: &[f64], ddof: usize) -> Vec<f64> {
    let n: usize = parts.iter().map(|m| m.rows()).sum();
    let mut ss = vec![0.0f64; means.len()];
    for m in parts {
        for r in 0..m.rows() {
            for ((s, v), mu) in ss.iter_mut().zip(m.row(r)).zip(means) {
                let d = v - mu;
                *s += d * d;
            }
        }
    }
    let denom = n.saturating_sub(ddof) as f64;
    ss.iter().map(|s| (s / denom).sqrt()).collect()
}

/// `(x - mean) / std` column by column, in place.
pub(crate) fn standardise(m: &mut Matrix<f64>, means: &[f64], stds: &[f64]) {
    let cols = m.cols;
    for row in m.data.chunks_mut(cols.max(1)) {
        for ((v, mu), s) in row.iter_mut().zip(means).zip(stds) {
            *v = (*v - mu) / s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_split_sizes_match_maf() {
        // MINIBOONE: 36,488 rows -> 29,556 / 3,284 / 3,648 (`docs/data/README.md`).
        let m = Matrix::new(36_488, 1, vec![0u8; 36_488]).unwrap();
        let s = tail_split("x", &m).unwrap();
        assert_eq!(s.sizes(), (29_556, 3_284, 3_648));
        let tiny = Matrix::new(5, 1, vec![0u8; 5]).unwrap();
        assert!(tail_split("x", &tiny).is_err());
    }

    #[test]
    fn tail_split_keeps_order() {
        let m = Matrix::new(30, 1, (0..30).collect::<Vec<i32>>()).unwrap();
        let Split {
            train: tr,
            val: va,
            test: te,
        } = tail_split("x", &m).unwrap();
        assert_eq!(te.data(), &[27, 28, 29]);
        // int(0.1 * 27) = 2 validation rows
        assert_eq!(va.data(), &[25, 26]);
        assert_eq!(tr.data().last(), Some(&24));
    }

    #[test]
    fn stats_match_closed_form() {
        let a = Matrix::new(2, 2, vec![1.0, 10.0, 2.0, 20.0]).unwrap();
        let b = Matrix::new(1, 2, vec![3.0, 30.0]).unwrap();
        let mu = column_means(&[&a, &b]);
        assert_eq!(mu, vec![2.0, 20.0]);
        let s0 = column_stds(&[&a, &b], &mu, 0);
        let s1 = column_stds(&[&a, &b], &mu, 1);
        assert!((s0[0] - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert!((s1[1] - 10.0).abs() < 1e-12);
    }

    #[test]
    fn new_checks_shape_and_tensor_roundtrip() {
        assert!(Matrix::new(2, 2, vec![0.0f32; 3]).is_err());
        let m = Matrix::new(2, 3, vec![1.0f32, 2., 3., 4., 5., 6.]).unwrap();
        let t = m.to_tensor(DType::F32, &Device::Cpu).unwrap();
        let back: Vec<Vec<f32>> = t.to_vec2().unwrap();
        assert_eq!(back, vec![vec![1., 2., 3.], vec![4., 5., 6.]]);
        assert_eq!(m.select_columns(&[2, 0]).data(), &[3., 1., 6., 4.]);
    }

    #[test]
    fn new_reports_an_overflowing_shape() {
        // The product used to be printed wrapped: "18446744073709551615x2 = 18446744073709551615".
        let msg = Matrix::new(usize::MAX, 2, vec![1.0f64])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("shape overflows"), "{msg}");
        assert!(!msg.contains(" = "), "{msg}");
        let msg = Matrix::new(2, 2, vec![1.0f64]).unwrap_err().to_string();
        assert!(
            msg.contains("2x2 = 4 values") && msg.contains("found 1 values"),
            "{msg}"
        );
    }

    #[test]
    fn slicing_in_range_works_at_the_edges() {
        let m = Matrix::new(3, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(m.slice_rows(1, 3).data(), &[3, 4, 5, 6]);
        assert_eq!(m.slice_rows(3, 3).rows(), 0);
        assert_eq!(m.select_columns(&[1, 1]).data(), &[2, 2, 4, 4, 6, 6]);
        assert_eq!(m.select_columns(&[]).cols(), 0);
    }

    #[test]
    #[should_panic(expected = "row range 1..5 out of range for a matrix of 2 rows")]
    fn slice_rows_past_the_end_panics_as_documented() {
        Matrix::new(2, 1, vec![1.0f64, 2.0])
            .unwrap()
            .slice_rows(1, 5);
    }

    #[test]
    #[should_panic(expected = "row range 2..1 out of range")]
    fn slice_rows_with_start_after_end_panics_as_documented() {
        Matrix::new(2, 1, vec![1.0f64, 2.0])
            .unwrap()
            .slice_rows(2, 1);
    }

    #[test]
    #[should_panic(expected = "column index 3 out of range for a matrix of 1 columns")]
    fn select_columns_out_of_range_panics_as_documented() {
        Matrix::new(2, 1, vec![1.0f64, 2.0])
            .unwrap()
            .select_columns(&[3]);
    }

    #[test]
    #[should_panic(expected = "column index 1 out of range")]
    fn select_columns_out_of_range_panics_without_rows() {
        Matrix::<f64>::new(0, 1, vec![])
            .unwrap()
            .select_columns(&[1]);
    }

    #[test]
    #[should_panic(expected = "row index 0 out of range for a matrix of 0 rows")]
    fn row_out_of_range_panics_without_columns() {
        // With 0 columns the slice itself would not panic: the check is explicit.
        Matrix::<f64>::new(0, 0, vec![]).unwrap().row(0);
    }
}
