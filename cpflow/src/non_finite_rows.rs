//! Rows that overflow in the log-det passes. A point far outside the data (a row like
//! `[1e308, 0.5]` in f64) can overflow a block's forward pass or its Jacobian: an ActNorm
//! scale above 1 takes it to `±∞`, and the network's Hessian at it holds `∞ − ∞`. The exact
//! and SLQ passes ([`crate::Flow::log_prob_exact`], [`crate::Flow::log_prob_slq`] and the
//! image flow's) give such a row a NaN log-det, so a NaN log-density, and compute the other
//! rows of its batch as without it, as a row whose `z` merely overflows gets `−∞` from the
//! prior on its own. A finite Jacobian that is not positive definite at a point whose forward
//! pass is finite is still an error: that is a broken model, not an overflow.

use candle_core::{DType, Tensor};
use logdet::LogdetError;

use crate::error::{CpflowError, Result};

/// Per row of `t` (`(B, …)`, rank ≥ 2): whether it holds a NaN or `±∞`.
pub(crate) fn non_finite_rows(t: &Tensor) -> Result<Vec<bool>> {
    if t.dim(0)? == 0 {
        return Ok(Vec::new());
    }
    // `t − t` is 0 where `t` is finite and NaN elsewhere: the row sums cannot overflow.
    let sums = t
        .sub(t)?
        .flatten_from(1)?
        .to_dtype(DType::F64)?
        .sum(1)?
        .to_vec1::<f64>()?;
    Ok(sums.into_iter().map(|s| s != 0.0).collect())
}

/// Per row of a block's input `h`: whether the row has already lost its value before the
/// block, its input holding a NaN or `±∞` or its log-det so far `ld` not finite. A failure of
/// such a row's log-det in the block is its own (NaN), not the batch's. [`crate::Flow`] and
/// the image flow decide it by this one rule.
pub(crate) fn rows_without_value(h: &Tensor, ld: &[f64]) -> Result<Vec<bool>> {
    Ok(non_finite_rows(h)?
        .into_iter()
        .zip(ld)
        .map(|(bad, l)| bad || !l.is_finite())
        .collect())
}

/// A block's log-det failure named as the potential of layer `layer` not being strongly
/// convex at a row ([`CpflowError::NotConvex`]); other errors pass unchanged.
pub(crate) fn name_not_convex(layer: usize, e: CpflowError) -> CpflowError {
    match e {
        CpflowError::Logdet(source @ LogdetError::NotPositiveDefinite { system }) => {
            CpflowError::NotConvex {
                layer,
                row: system,
                source,
            }
        }
        e => e,
    }
}

/// `tolerate[i] || row i of z is not finite`: the rows whose log-det may fail on their own
/// after a block that produced `z`.
pub(crate) fn or_non_finite_rows(tolerate: &[bool], z: &Tensor) -> Result<Vec<bool>> {
    Ok(non_finite_rows(z)?
        .into_iter()
        .zip(tolerate)
        .map(|(bad, t)| bad || *t)
        .collect())
}

/// `log det H_b` for each matrix of the `(B, d, d)` batch `hess` (host Cholesky in f64, as
/// `logdet::exact_logdet_tensor`), with NaN for a matrix that holds a NaN or `±∞`, and for one
/// whose factorisation fails where `tolerate[b]` (its row has no finite forward pass). Any
/// other matrix that is not numerically positive definite is
/// [`LogdetError::NotPositiveDefinite`], naming its index in the batch.
pub(crate) fn exact_logdet_rows(hess: &Tensor, tolerate: &[bool]) -> Result<Vec<f64>> {
    let (b, d, d2) = hess.dims3()?;
    if d != d2 || tolerate.len() != b {
        return Err(CpflowError::Internal(format!(
            "exact_logdet_rows: {:?} matrices with {} flags",
            hess.dims(),
            tolerate.len()
        )));
    }
    let host = hess.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    (0..b)
        .map(|k| {
            let m = &host[k * d * d..(k + 1) * d * d];
            if m.iter().any(|v| !v.is_finite()) {
                return Ok(f64::NAN);
            }
            match logdet::exact_logdet_flat(m, 1, d) {
                Ok(ld) => Ok(ld[0]),
                Err(LogdetError::NotPositiveDefinite { .. }) if tolerate[k] => Ok(f64::NAN),
                Err(LogdetError::NotPositiveDefinite { .. }) => {
                    Err(LogdetError::NotPositiveDefinite { system: k }.into())
                }
                Err(e) => Err(e.into()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `[diag(2, 4), a NaN matrix, [[1, 2], [2, 1]] (indefinite), diag(1, e)]` in `dtype`.
    fn batch(dtype: DType) -> Tensor {
        let e = 1f64.exp();
        #[rustfmt::skip]
        let v = vec![
            2.0, 0.0, 0.0, 4.0,
            1.0, f64::NAN, f64::NAN, 1.0,
            1.0, 2.0, 2.0, 1.0,
            1.0, 0.0, 0.0, e,
        ];
        Tensor::from_vec(v, (4, 2, 2), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn non_finite_matrices_get_nan_and_an_indefinite_finite_one_is_an_error() {
        for (dtype, tol) in [(DType::F64, 1e-14), (DType::F32, 1e-6)] {
            let h = batch(dtype);
            // The indefinite matrix of a row whose forward pass is finite: an error naming it.
            let err = exact_logdet_rows(&h, &[false; 4]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CpflowError::Logdet(LogdetError::NotPositiveDefinite { system: 2 })
                ),
                "{err:?}"
            );
            // Tolerated (its row overflowed before): NaN, the others unchanged.
            let ld = exact_logdet_rows(&h, &[false, false, true, false]).unwrap();
            assert!((ld[0] - 8f64.ln()).abs() < tol, "{ld:?}");
            assert!(ld[1].is_nan() && ld[2].is_nan(), "{ld:?}");
            assert!((ld[3] - 1.0).abs() < tol, "{ld:?}");
        }
    }

    #[test]
    fn non_finite_rows_finds_nan_and_infinite_entries() {
        let t = Tensor::new(
            &[
                [1.0f32, f32::INFINITY],
                [0.0, 2.0],
                [f32::NAN, 0.0],
                [f32::MAX, f32::MAX],
            ],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(non_finite_rows(&t).unwrap(), [true, false, true, false]);
        let z = Tensor::new(&[[1.0f64], [f64::NEG_INFINITY], [0.0]], &Device::Cpu).unwrap();
        assert_eq!(
            or_non_finite_rows(&[false, false, true], &z).unwrap(),
            [false, true, true]
        );
        let empty = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
        assert!(non_finite_rows(&empty).unwrap().is_empty());
    }
}
