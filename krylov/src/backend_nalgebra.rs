//! [`BatchVectors`] for `nalgebra::DMatrix<T>`: a `d × B` matrix, one system per **column**.

use nalgebra::DMatrix;

use crate::real::{Real, kernels};
use crate::vectors::{check_len, check_same_shape};
use crate::{BatchVectors, KrylovError};

fn col<T: Real>(m: &DMatrix<T>, j: usize) -> &[T] {
    let d = m.nrows();
    &m.as_slice()[j * d..(j + 1) * d]
}

/// A mutable column of `m` and an immutable column of `x` (distinct matrices).
fn col_mut<T: Real>(m: &mut DMatrix<T>, j: usize) -> &mut [T] {
    let d = m.nrows();
    &mut m.as_mut_slice()[j * d..(j + 1) * d]
}

impl<T: Real + nalgebra::Scalar> BatchVectors for DMatrix<T> {
    fn n_systems(&self) -> usize {
        self.ncols()
    }

    fn system_dim(&self) -> usize {
        self.nrows()
    }

    fn zeros_like(&self) -> Result<Self, KrylovError> {
        Ok(DMatrix::from_element(self.nrows(), self.ncols(), T::ZERO))
    }

    fn from_host_like(like: &Self, data: &[f64]) -> Result<Self, KrylovError> {
        let (d, b) = (like.nrows(), like.ncols());
        check_len("DMatrix::from_host_like (B·d values)", b * d, data.len())?;
        // Column-major storage with one system per column is exactly system-major.
        Ok(DMatrix::from_iterator(
            d,
            b,
            data.iter().map(|v| T::lossy_from_f64(*v)),
        ))
    }

    fn to_host(&self) -> Result<Vec<f64>, KrylovError> {
        Ok(self.as_slice().iter().map(|v| v.into_f64()).collect())
    }

    fn dots(&self, other: &Self) -> Result<Vec<f64>, KrylovError> {
        check_same_shape("DMatrix::dots", self, other)?;
        Ok((0..self.ncols())
            .map(|j| kernels::dot(col(self, j), col(other, j)))
            .collect())
    }

    fn norms_inf(&self) -> Result<Vec<f64>, KrylovError> {
        Ok((0..self.ncols())
            .map(|j| kernels::norm_inf(col(self, j)))
            .collect())
    }

    fn axpby_masked(
        &mut self,
        a: &[f64],
        b: &[f64],
        x: &Self,
        active: &[bool],
    ) -> Result<(), KrylovError> {
        check_same_shape("DMatrix::axpby_masked", self, x)?;
        let n = self.ncols();
        check_len("axpby_masked (a)", n, a.len())?;
        check_len("axpby_masked (b)", n, b.len())?;
        check_len("axpby_masked (active)", n, active.len())?;
        for j in (0..n).filter(|&j| active[j]) {
            kernels::axpby(a[j], b[j], col(x, j), col_mut(self, j));
        }
        Ok(())
    }

    fn scale_per_system(&mut self, alphas: &[f64]) -> Result<(), KrylovError> {
        check_len("scale_per_system", self.ncols(), alphas.len())?;
        for (j, a) in alphas.iter().enumerate() {
            if *a != 1.0 {
                kernels::scale(*a, col_mut(self, j));
            }
        }
        Ok(())
    }

    fn mul_elementwise(&self, other: &Self) -> Result<Self, KrylovError> {
        check_same_shape("DMatrix::mul_elementwise", self, other)?;
        Ok(self.zip_map(other, |a, b| a * b))
    }

    fn unit_roundoff(&self) -> f64 {
        T::EPSILON
    }

    /// The column kernels accumulate dot products in f64 (`kernels::dot`).
    fn reduction_min_positive(&self) -> f64 {
        f64::MIN_POSITIVE
    }
}
