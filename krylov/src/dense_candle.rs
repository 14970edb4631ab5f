//! A `(B, d, d)` tensor of dense matrices as a [`BatchOperator`] on `(B, d)` tensors
//! (feature `candle`).

use candle_core::Tensor;

use crate::vectors::check_len;
use crate::{BatchOperator, KrylovError};

/// A batch of dense matrices stored as one `(B, d, d)` tensor (any float dtype, any device),
/// acting on `(B, d)` tensors: `y_i = H_i x_i` by one batched matmul.
///
/// When at most a quarter of the systems are active, only the active rows are gathered
/// (`index_select`), multiplied and scattered back (`index_add` into zeros; inactive output
/// rows are 0), so converged systems cost no matmul work. With more active systems the
/// gather (a copy of `n_active·d²` matrix entries) costs more than it saves (measured on CPU,
/// B = 1024, d = 43: gathering half the rows took 2.1× the full product), so the full batched
/// product is computed and the inactive output rows hold `H_i x_i` (ignored by the solvers).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use krylov::{BatchOperator, DenseTensorOperator};
/// let h = (Tensor::eye(3, candle_core::DType::F32, &Device::Cpu).unwrap() * 2.0).unwrap()
///     .unsqueeze(0).unwrap();
/// let op = DenseTensorOperator::new(h).unwrap();
/// let x = Tensor::ones((1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let y = op.apply(&x, &[true]).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![2.0, 2.0, 2.0]]);
/// ```
#[derive(Clone, Debug)]
pub struct DenseTensorOperator {
    matrices: Tensor,
}

impl DenseTensorOperator {
    /// Wraps a `(B, d, d)` tensor of a float dtype. Errors: another rank
    /// ([`KrylovError::WrongRank`]), non-square matrices ([`KrylovError::ShapeMismatch`]), an
    /// integer dtype ([`KrylovError::NotFloat`]).
    pub fn new(matrices: Tensor) -> Result<Self, KrylovError> {
        let dims = matrices.dims();
        if dims.len() != 3 {
            return Err(KrylovError::WrongRank {
                context: "DenseTensorOperator (B, d, d)",
                expected: 3,
                found: dims.to_vec(),
            });
        }
        if dims[1] != dims[2] {
            return Err(KrylovError::ShapeMismatch {
                context: "DenseTensorOperator: matrices must be square",
                expected: (dims[1], dims[1]),
                found: (dims[1], dims[2]),
            });
        }
        if !matrices.dtype().is_float() {
            // Integer matrices used to be accepted here and failed only at `apply` (with a
            // dtype mismatch against float vectors).
            return Err(KrylovError::NotFloat {
                context: "DenseTensorOperator (B, d, d)",
                found: matrices.dtype(),
            });
        }
        Ok(Self { matrices })
    }

    /// The `(B, d, d)` tensor.
    pub fn matrices(&self) -> &Tensor {
        &self.matrices
    }
}

impl BatchOperator<Tensor> for DenseTensorOperator {
    fn apply(&self, x: &Tensor, active: &[bool]) -> Result<Tensor, KrylovError> {
        let (b, d, _) = self.matrices.dims3()?;
        if x.rank() != 2 {
            return Err(KrylovError::WrongRank {
                context: "DenseTensorOperator::apply (B, d)",
                expected: 2,
                found: x.dims().to_vec(),
            });
        }
        let (xb, xd) = x.dims2()?;
        if (xb, xd) != (b, d) {
            return Err(KrylovError::ShapeMismatch {
                context: "DenseTensorOperator::apply",
                expected: (b, d),
                found: (xb, xd),
            });
        }
        check_len("DenseTensorOperator::apply (active)", b, active.len())?;
        if x.dtype() != self.matrices.dtype() {
            return Err(KrylovError::DTypeMismatch {
                context: "DenseTensorOperator::apply (vectors vs matrices)",
                expected: self.matrices.dtype(),
                found: x.dtype(),
            });
        }
        let n_active = active.iter().filter(|a| **a).count();
        if 4 * n_active > b {
            return Ok(self.matrices.matmul(&x.unsqueeze(2)?)?.squeeze(2)?);
        }
        let idx: Vec<u32> = active
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .map(|(i, _)| i as u32)
            .collect();
        let zeros = x.zeros_like()?;
        if idx.is_empty() {
            return Ok(zeros);
        }
        let n = idx.len();
        let idx = Tensor::from_vec(idx, n, x.device())?;
        let h = self.matrices.index_select(&idx, 0)?;
        let xa = x.index_select(&idx, 0)?;
        let ya = h.matmul(&xa.unsqueeze(2)?)?.squeeze(2)?;
        Ok(zeros.index_add(&idx, &ya, 0)?)
    }

    fn diagonal(&self) -> Option<Result<Tensor, KrylovError>> {
        let diag = || -> Result<Tensor, KrylovError> {
            let (_, d, _) = self.matrices.dims3()?;
            let eye = Tensor::eye(d, self.matrices.dtype(), self.matrices.device())?;
            Ok(self.matrices.broadcast_mul(&eye.unsqueeze(0)?)?.sum(2)?)
        };
        Some(diag())
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        let dims = self.matrices.dims();
        Some((dims[0], dims[1]))
    }
}
