//! Dense batches of matrices as [`BatchOperator`]s on the host backends.

use faer::{Accum, Mat, Par};
use nalgebra::DMatrix;

use crate::operator::check_operator_shape;
use crate::real::Real;
use crate::vectors::check_len;
use crate::{BatchOperator, KrylovError};

fn check_square(dims: impl Iterator<Item = (usize, usize)>) -> Result<usize, KrylovError> {
    let mut d0 = None;
    for (r, c) in dims {
        let d = *d0.get_or_insert(r);
        if r != d || c != d {
            return Err(KrylovError::ShapeMismatch {
                context: "dense operator: every matrix must be d × d",
                expected: (d, d),
                found: (r, c),
            });
        }
    }
    Ok(d0.unwrap_or(0))
}

/// A batch of dense `d × d` matrices `H_i` acting on `nalgebra::DMatrix<T>` batches
/// (`d × B`, one system per column). Inactive systems are skipped (their output column is 0).
/// An operator of no matrices applies to an empty batch (`d × 0`) of any `d`, giving an empty
/// batch, as [`BatchOperator::batch_shape`] promises.
///
/// ```
/// use krylov::{BatchOperator, DenseNalgebraOperator};
/// use nalgebra::DMatrix;
/// let op = DenseNalgebraOperator::new(vec![DMatrix::<f64>::identity(2, 2) * 2.0]).unwrap();
/// let y = op.apply(&DMatrix::from_element(2, 1, 1.0), &[true]).unwrap();
/// assert_eq!(y[(0, 0)], 2.0);
/// let empty = DenseNalgebraOperator::<f64>::new(vec![]).unwrap();
/// assert_eq!(empty.apply(&DMatrix::zeros(3, 0), &[]).unwrap().shape(), (3, 0));
/// ```
#[derive(Clone, Debug)]
pub struct DenseNalgebraOperator<T: Real + nalgebra::Scalar> {
    matrices: Vec<DMatrix<T>>,
    dim: usize,
}

impl<T: Real + nalgebra::Scalar> DenseNalgebraOperator<T> {
    /// One matrix per system; all must be `d × d` with the same `d`.
    pub fn new(matrices: Vec<DMatrix<T>>) -> Result<Self, KrylovError> {
        let dim = check_square(matrices.iter().map(|m| (m.nrows(), m.ncols())))?;
        Ok(Self { matrices, dim })
    }

    /// The matrices.
    pub fn matrices(&self) -> &[DMatrix<T>] {
        &self.matrices
    }
}

impl<T: Real + nalgebra::Scalar + nalgebra::RealField> BatchOperator<DMatrix<T>>
    for DenseNalgebraOperator<T>
{
    fn apply(&self, x: &DMatrix<T>, active: &[bool]) -> Result<DMatrix<T>, KrylovError> {
        // `x` is `d × B` as `batch_shape` says, or empty for an operator of no matrices
        // (which cannot know `d`): the output has the shape of `x`.
        check_operator_shape("DenseNalgebraOperator::apply", self, x)?;
        check_len(
            "DenseNalgebraOperator::apply (active)",
            self.matrices.len(),
            active.len(),
        )?;
        let mut y = DMatrix::from_element(x.nrows(), x.ncols(), T::ZERO);
        for (j, h) in self.matrices.iter().enumerate().filter(|(j, _)| active[*j]) {
            y.column_mut(j)
                .gemv(T::lossy_from_f64(1.0), h, &x.column(j), T::ZERO);
        }
        Ok(y)
    }

    fn diagonal(&self) -> Option<Result<DMatrix<T>, KrylovError>> {
        let (d, b) = (self.dim, self.matrices.len());
        Some(Ok(DMatrix::from_fn(d, b, |i, j| self.matrices[j][(i, i)])))
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        Some((self.matrices.len(), self.dim))
    }
}

/// A batch of dense `d × d` matrices `H_i` acting on `faer::Mat<T>` batches (`d × B`, one
/// system per column). Inactive systems are skipped (their output column is 0). An operator of
/// no matrices applies to an empty batch (`d × 0`) of any `d`, giving an empty batch.
///
/// ```
/// use krylov::{BatchOperator, DenseFaerOperator};
/// use faer::Mat;
/// let op = DenseFaerOperator::new(vec![Mat::<f64>::identity(2, 2)]).unwrap();
/// let y = op.apply(&Mat::from_fn(2, 1, |i, _| i as f64), &[true]).unwrap();
/// assert_eq!(y[(1, 0)], 1.0);
/// let empty = DenseFaerOperator::<f64>::new(vec![]).unwrap();
/// assert_eq!(empty.apply(&Mat::zeros(3, 0), &[]).unwrap().shape(), (3, 0));
/// ```
#[derive(Clone, Debug)]
pub struct DenseFaerOperator<T> {
    matrices: Vec<Mat<T>>,
    dim: usize,
}

impl<T> DenseFaerOperator<T> {
    /// One matrix per system; all must be `d × d` with the same `d`.
    pub fn new(matrices: Vec<Mat<T>>) -> Result<Self, KrylovError> {
        let dim = check_square(matrices.iter().map(|m| (m.nrows(), m.ncols())))?;
        Ok(Self { matrices, dim })
    }

    /// The matrices.
    pub fn matrices(&self) -> &[Mat<T>] {
        &self.matrices
    }
}

macro_rules! impl_dense_faer {
    ($t:ty) => {
        impl BatchOperator<Mat<$t>> for DenseFaerOperator<$t> {
            fn apply(&self, x: &Mat<$t>, active: &[bool]) -> Result<Mat<$t>, KrylovError> {
                // `x` is `d × B` as `batch_shape` says, or empty for an operator of no
                // matrices (which cannot know `d`): the output has the shape of `x`.
                check_operator_shape("DenseFaerOperator::apply", self, x)?;
                let mut y = Mat::<$t>::zeros(x.nrows(), x.ncols());
                check_len(
                    "DenseFaerOperator::apply (active)",
                    self.matrices.len(),
                    active.len(),
                )?;
                for (j, h) in self.matrices.iter().enumerate().filter(|(j, _)| active[*j]) {
                    faer::linalg::matmul::matmul(
                        y.col_mut(j),
                        Accum::Replace,
                        h.as_ref(),
                        x.col(j),
                        1.0,
                        Par::Seq,
                    );
                }
                Ok(y)
            }

            fn diagonal(&self) -> Option<Result<Mat<$t>, KrylovError>> {
                let (d, b) = (self.dim, self.matrices.len());
                Some(Ok(Mat::from_fn(d, b, |i, j| self.matrices[j][(i, i)])))
            }

            fn batch_shape(&self) -> Option<(usize, usize)> {
                Some((self.matrices.len(), self.dim))
            }
        }
    };
}

impl_dense_faer!(f32);
impl_dense_faer!(f64);
