//! [`BatchVectors`] for `faer::Mat<T>`: a `d × B` matrix, one system per **column**.

use faer::Mat;

use crate::real::{Real, kernels};
use crate::vectors::{check_len, check_same_shape};
use crate::{BatchVectors, KrylovError};

macro_rules! impl_faer {
    ($t:ty) => {
        impl BatchVectors for Mat<$t> {
            fn n_systems(&self) -> usize {
                self.ncols()
            }

            fn system_dim(&self) -> usize {
                self.nrows()
            }

            fn zeros_like(&self) -> Result<Self, KrylovError> {
                Ok(Mat::zeros(self.nrows(), self.ncols()))
            }

            fn from_host_like(like: &Self, data: &[f64]) -> Result<Self, KrylovError> {
                let (d, b) = (like.nrows(), like.ncols());
                check_len("Mat::from_host_like (B·d values)", b * d, data.len())?;
                Ok(Mat::from_fn(d, b, |i, j| data[j * d + i] as $t))
            }

            fn to_host(&self) -> Result<Vec<f64>, KrylovError> {
                let mut out = Vec::with_capacity(self.nrows() * self.ncols());
                for j in 0..self.ncols() {
                    out.extend(self.col_as_slice(j).iter().map(|v| *v as f64));
                }
                Ok(out)
            }

            fn dots(&self, other: &Self) -> Result<Vec<f64>, KrylovError> {
                check_same_shape("Mat::dots", self, other)?;
                Ok((0..self.ncols())
                    .map(|j| kernels::dot(self.col_as_slice(j), other.col_as_slice(j)))
                    .collect())
            }

            fn norms_inf(&self) -> Result<Vec<f64>, KrylovError> {
                Ok((0..self.ncols())
                    .map(|j| kernels::norm_inf(self.col_as_slice(j)))
                    .collect())
            }

            fn axpby_masked(
                &mut self,
                a: &[f64],
                b: &[f64],
                x: &Self,
                active: &[bool],
            ) -> Result<(), KrylovError> {
                check_same_shape("Mat::axpby_masked", self, x)?;
                let n = self.ncols();
                check_len("axpby_masked (a)", n, a.len())?;
                check_len("axpby_masked (b)", n, b.len())?;
                check_len("axpby_masked (active)", n, active.len())?;
                for j in (0..n).filter(|&j| active[j]) {
                    kernels::axpby(a[j], b[j], x.col_as_slice(j), self.col_as_slice_mut(j));
                }
                Ok(())
            }

            fn scale_per_system(&mut self, alphas: &[f64]) -> Result<(), KrylovError> {
                check_len("scale_per_system", self.ncols(), alphas.len())?;
                for (j, a) in alphas.iter().enumerate() {
                    if *a != 1.0 {
                        kernels::scale(*a, self.col_as_slice_mut(j));
                    }
                }
                Ok(())
            }

            fn mul_elementwise(&self, other: &Self) -> Result<Self, KrylovError> {
                check_same_shape("Mat::mul_elementwise", self, other)?;
                Ok(Mat::from_fn(self.nrows(), self.ncols(), |i, j| {
                    self[(i, j)] * other[(i, j)]
                }))
            }

            fn unit_roundoff(&self) -> f64 {
                <$t as Real>::EPSILON
            }

            /// The column kernels accumulate dot products in f64 (`kernels::dot`).
            fn reduction_min_positive(&self) -> f64 {
                f64::MIN_POSITIVE
            }
        }
    };
}

impl_faer!(f32);
impl_faer!(f64);
