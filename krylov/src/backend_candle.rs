//! [`BatchVectors`] for `candle_core::Tensor` of shape `(B, d)`: one system per **row**
//! (feature `candle`).
//!
//! Every operation is a whole-batch tensor operation on the tensor's own device and dtype; only
//! per-system scalars (`B` values) cross to the host, as `f64`. Half-precision tensors (f16,
//! bf16) are reduced in f32. bf16 has f32's range; f16's ends at 65504 (normal numbers from
//! 6.1e-5), so [`crate::cg()`] normalises every f16 right-hand side to a max-norm in `[1, 2)`
//! (exact, a power of two) before the operator sees it (`vectors::power_of_two_scale`).

use candle_core::{DType, Device, Tensor};

use crate::backend_candle_host::orthogonalized_on_host;
use crate::vectors::{check_len, check_same_shape};
use crate::{BatchVectors, KrylovError};

/// A `(B, 1)` tensor of per-system scalars with the dtype and device of `like`.
pub(crate) fn per_system_column(like: &Tensor, values: &[f64]) -> Result<Tensor, KrylovError> {
    if values.is_empty() {
        return empty_like(like, (0, 1));
    }
    let t = Tensor::from_vec(values.to_vec(), (values.len(), 1), like.device())?;
    Ok(t.to_dtype(like.dtype())?)
}

/// An empty tensor of `shape` with the dtype and device of `like`, made without a cast:
/// candle's CUDA backend launches its conversion kernel on 0 threads for an empty tensor,
/// which CUDA refuses (`CUDA_ERROR_INVALID_VALUE`).
fn empty_like(like: &Tensor, shape: (usize, usize)) -> Result<Tensor, KrylovError> {
    Ok(Tensor::zeros(shape, like.dtype(), like.device())?)
}

/// A `(B, 1)` u8 mask (1 = active) on `device`.
pub(crate) fn mask_column(device: &Device, active: &[bool]) -> Result<Tensor, KrylovError> {
    let m: Vec<u8> = active.iter().map(|a| u8::from(*a)).collect();
    Ok(Tensor::from_vec(m, (active.len(), 1), device)?)
}

/// The dtype in which reductions are carried out.
fn reduction_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

fn upcast(t: &Tensor) -> Result<Tensor, KrylovError> {
    let rd = reduction_dtype(t.dtype());
    if rd == t.dtype() {
        Ok(t.clone())
    } else {
        Ok(t.to_dtype(rd)?)
    }
}

fn to_host_f64(t: &Tensor) -> Result<Vec<f64>, KrylovError> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn same_shape(context: &'static str, a: &Tensor, b: &Tensor) -> Result<(), KrylovError> {
    check_same_shape(context, a, b)?;
    if b.rank() != 2 {
        return Err(KrylovError::WrongRank {
            context,
            expected: 2,
            found: b.dims().to_vec(),
        });
    }
    Ok(())
}

/// [`KrylovError::DTypeMismatch`] unless `found` has the dtype of `expected`.
fn check_dtype(
    context: &'static str,
    expected: &Tensor,
    found: &Tensor,
) -> Result<(), KrylovError> {
    if expected.dtype() == found.dtype() {
        Ok(())
    } else {
        Err(KrylovError::DTypeMismatch {
            context,
            expected: expected.dtype(),
            found: found.dtype(),
        })
    }
}

impl BatchVectors for Tensor {
    fn validate(&self) -> Result<(), KrylovError> {
        if self.rank() != 2 {
            return Err(KrylovError::WrongRank {
                context: "batch tensor (B, d)",
                expected: 2,
                found: self.dims().to_vec(),
            });
        }
        if !self.dtype().is_float() {
            // An integer batch used to be solved in integer arithmetic (a `U32` or `I64` b
            // gave truncated iterates, some reported converged) or failed deep inside Lanczos
            // with candle's "unsupported dtype for matmul".
            return Err(KrylovError::NotFloat {
                context: "batch tensor (B, d)",
                found: self.dtype(),
            });
        }
        Ok(())
    }

    fn n_systems(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    fn system_dim(&self) -> usize {
        self.dims().get(1).copied().unwrap_or(0)
    }

    fn zeros_like(&self) -> Result<Self, KrylovError> {
        Ok(Tensor::zeros_like(self)?)
    }

    fn from_host_like(like: &Self, data: &[f64]) -> Result<Self, KrylovError> {
        like.validate()?;
        let (b, d) = (like.n_systems(), like.system_dim());
        check_len("Tensor::from_host_like (B·d values)", b * d, data.len())?;
        if data.is_empty() {
            return empty_like(like, (b, d));
        }
        let t = Tensor::from_vec(data.to_vec(), (b, d), like.device())?;
        Ok(t.to_dtype(like.dtype())?)
    }

    fn to_host(&self) -> Result<Vec<f64>, KrylovError> {
        to_host_f64(self)
    }

    fn dots(&self, other: &Self) -> Result<Vec<f64>, KrylovError> {
        same_shape("Tensor::dots", self, other)?;
        check_dtype("Tensor::dots", self, other)?;
        if self.n_systems() == 0 {
            return Ok(Vec::new());
        }
        if self.system_dim() == 0 {
            return Ok(vec![0.0; self.n_systems()]);
        }
        // A sum propagates NaN (and Inf), unlike a max.
        let p = (upcast(self)? * upcast(other)?)?;
        to_host_f64(&p.sum(1)?)
    }

    fn norms_inf(&self) -> Result<Vec<f64>, KrylovError> {
        self.validate()?;
        let n = self.n_systems();
        // candle refuses to reduce an empty tensor.
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.system_dim() == 0 {
            return Ok(vec![0.0; n]);
        }
        let a = upcast(self)?.abs()?;
        // candle's max compares with `>` and so skips a NaN (unless it comes first); the row
        // sum of the absolute values is NaN exactly when the row holds a NaN (no cancellation),
        // so those rows report NaN, like the host backends (one reduction more, no mask ops).
        // Both reductions come back in one transfer: `(n, 2)` rows of (max, sum).
        let both = to_host_f64(&Tensor::stack(&[a.max(1)?, a.sum(1)?], 1)?)?;
        Ok(both
            .chunks_exact(2)
            .map(|ms| if ms[1].is_nan() { f64::NAN } else { ms[0] })
            .collect())
    }

    fn check_compatible(&self, context: &'static str, found: &Self) -> Result<(), KrylovError> {
        same_shape(context, self, found)?;
        check_dtype(context, self, found)
    }

    fn axpby_masked(
        &mut self,
        a: &[f64],
        b: &[f64],
        x: &Self,
        active: &[bool],
    ) -> Result<(), KrylovError> {
        same_shape("Tensor::axpby_masked", self, x)?;
        check_dtype("Tensor::axpby_masked", self, x)?;
        let n = self.n_systems();
        check_len("axpby_masked (a)", n, a.len())?;
        check_len("axpby_masked (b)", n, b.len())?;
        check_len("axpby_masked (active)", n, active.len())?;
        if !active.iter().any(|v| *v) {
            return Ok(());
        }
        let bx = x.broadcast_mul(&per_system_column(x, b)?)?;
        let new = if a.iter().all(|v| *v == 1.0) {
            (&*self + bx)?
        } else {
            (self.broadcast_mul(&per_system_column(self, a)?)? + bx)?
        };
        *self = if active.iter().all(|v| *v) {
            new
        } else {
            let mask = mask_column(self.device(), active)?.broadcast_as(self.shape())?;
            mask.where_cond(&new, self)?
        };
        Ok(())
    }

    fn scale_per_system(&mut self, alphas: &[f64]) -> Result<(), KrylovError> {
        self.validate()?;
        check_len("scale_per_system", self.n_systems(), alphas.len())?;
        *self = self.broadcast_mul(&per_system_column(self, alphas)?)?;
        Ok(())
    }

    fn mul_elementwise(&self, other: &Self) -> Result<Self, KrylovError> {
        same_shape("Tensor::mul_elementwise", self, other)?;
        check_dtype("Tensor::mul_elementwise", self, other)?;
        Ok((self * other)?)
    }

    fn detached(&self) -> Self {
        self.detach()
    }

    fn unit_roundoff(&self) -> f64 {
        unit_roundoff_of(self.dtype())
    }

    /// Reductions run in `reduction_dtype`: f64 for f64 tensors, f32 otherwise.
    fn reduction_min_positive(&self) -> f64 {
        match reduction_dtype(self.dtype()) {
            DType::F64 => f64::MIN_POSITIVE,
            _ => f64::from(f32::MIN_POSITIVE),
        }
    }

    /// Fused classical Gram–Schmidt: `C = Q w` and `w ← w − Qᵀ C` as two batched matmuls over
    /// the stacked basis `Q` of shape `(B, k, d)`; no host synchronisation.
    fn orthogonalize_against(
        &mut self,
        basis: &[Self],
        active: &[bool],
    ) -> Result<(), KrylovError> {
        self.validate()?;
        check_len(
            "orthogonalize_against (active)",
            self.n_systems(),
            active.len(),
        )?;
        if basis.is_empty() || !active.iter().any(|v| *v) {
            return Ok(());
        }
        for q in basis {
            same_shape("orthogonalize_against (basis)", self, q)?;
            check_dtype("orthogonalize_against (basis)", self, q)?;
        }
        if let Some(new) = orthogonalized_on_host(self, basis, active)? {
            *self = new;
            return Ok(());
        }
        let q = Tensor::stack(basis, 1)?; // (B, k, d)
        let w = self.unsqueeze(2)?; // (B, d, 1)
        let c = q.matmul(&w)?; // (B, k, 1)
        let proj = q.transpose(1, 2)?.contiguous()?.matmul(&c)?.squeeze(2)?; // (B, d)
        let new = (&*self - proj)?;
        *self = if active.iter().all(|v| *v) {
            new
        } else {
            let mask = mask_column(self.device(), active)?.broadcast_as(self.shape())?;
            mask.where_cond(&new, self)?
        };
        Ok(())
    }
}

/// The unit roundoff of candle's float `dtype` (f64 2⁻⁵², f32 2⁻²³, f16 2⁻¹⁰, bf16 2⁻⁷;
/// f32's for the others): what [`BatchVectors::unit_roundoff`] gives for a tensor of it, for
/// callers that have a dtype and no tensor.
///
/// ```
/// use candle_core::DType;
/// assert_eq!(krylov::unit_roundoff_of(DType::F64), f64::EPSILON);
/// assert_eq!(krylov::unit_roundoff_of(DType::F32), f64::from(f32::EPSILON));
/// ```
pub fn unit_roundoff_of(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F16 => 9.765_625e-4,
        DType::BF16 => 7.812_5e-3,
        _ => f64::from(f32::EPSILON),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty batches keep their shape, dtype and device without a cast (the cast of an empty
    /// tensor is what candle's CUDA backend cannot launch; on the CPU the results are those
    /// the cast gave).
    #[test]
    fn empty_batches_are_made_without_a_cast() {
        for dtype in [DType::F32, DType::F64] {
            let like = Tensor::zeros((0, 3), dtype, &Device::Cpu).unwrap();
            let t = Tensor::from_host_like(&like, &[]).unwrap();
            assert_eq!((t.dims(), t.dtype()), (&[0usize, 3][..], dtype));
            let c = per_system_column(&like, &[]).unwrap();
            assert_eq!((c.dims(), c.dtype()), (&[0usize, 1][..], dtype));
            let mut s = like.clone();
            s.scale_per_system(&[]).unwrap();
            assert_eq!((s.dims(), s.dtype()), (&[0usize, 3][..], dtype));
        }
    }
}
