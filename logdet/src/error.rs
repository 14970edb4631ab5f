//! The error type of the crate.

use krylov::KrylovError;

/// Errors of the log-determinant routines.
///
/// ```
/// use faer::Mat;
/// use logdet::{exact_logdet, exact_logdet_flat, LogdetError};
/// // System 1 is indefinite (eigenvalues 3 and −1): Cholesky fails and names it.
/// let spd = Mat::<f64>::identity(2, 2);
/// let indefinite = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 });
/// let err = exact_logdet(&[spd, indefinite]).unwrap_err();
/// assert!(matches!(err, LogdetError::NotPositiveDefinite { system: 1 }));
/// // Flat data of the wrong length for (B, d, d) = (2, 2, 2).
/// let err = exact_logdet_flat(&[1.0; 7], 2, 2).unwrap_err();
/// assert!(matches!(err, LogdetError::WrongLength { expected: 8, found: 7 }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogdetError {
    /// The matrix of system `system` is not (numerically) positive definite: its Cholesky
    /// factorisation failed.
    #[error("matrix of system {system} is not positive definite (Cholesky failed)")]
    NotPositiveDefinite {
        /// Batch index of the offending matrix.
        system: usize,
    },
    /// The matrix of system `system` holds a NaN or ±Inf (anywhere: the exact log-det
    /// factorises the lower triangle, but refuses a non-finite entry above it too): its
    /// log-determinant is undefined, whatever its spectrum would be.
    /// Checked before the Cholesky factorisation, so such a matrix is never reported as
    /// [`LogdetError::NotPositiveDefinite`].
    #[error("matrix of system {system} has a non-finite entry {value} at ({row}, {col})")]
    NonFiniteInput {
        /// Batch index of the offending matrix.
        system: usize,
        /// Row of the entry.
        row: usize,
        /// Column of the entry.
        col: usize,
        /// The offending value (NaN or ±Inf).
        value: f64,
    },
    /// The matrix of system `system` is not square, or not of the common size.
    #[error("matrix of system {system} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Batch index of the offending matrix.
        system: usize,
        /// Expected `(d, d)`.
        expected: (usize, usize),
        /// Found shape.
        found: (usize, usize),
    },
    /// Flat data has the wrong length for the declared `(B, d, d)`.
    #[error("flat batch of matrices: expected {expected} values for (B, d, d), found {found}")]
    WrongLength {
        /// `B·d·d`.
        expected: usize,
        /// Length passed.
        found: usize,
    },
    /// The element count of a requested shape does not fit in memory (`usize` overflow, or more
    /// than `isize::MAX` bytes): e.g. `exact_logdet_flat(data, B, d)` with a huge `B·d·d`.
    #[error("{context}: the element count of shape {dims:?} overflows")]
    SizeOverflow {
        /// What was being sized.
        context: &'static str,
        /// The dimensions whose product overflows.
        dims: Vec<usize>,
    },
    /// A tensor has the wrong rank or shape.
    #[error("expected a tensor of shape {expected}, found {found:?}")]
    WrongTensorShape {
        /// Description of the expected shape.
        expected: &'static str,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor holds integers (or another non-float dtype) where real numbers are expected:
    /// the matrices of `exact_logdet_tensor`, the `like` tensor of `probes_like`.
    #[error("expected a floating-point tensor, found a tensor of dtype {found}")]
    NotFloat {
        /// The dtype found, as candle names it.
        found: String,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The quadrature of `system` met non-finite Lanczos coefficients (the operator produced
    /// NaN or ±Inf), or the small tridiagonal eigenproblem failed.
    #[error(
        "Lanczos quadrature of system {system} failed: non-finite Lanczos coefficients or Ritz values"
    )]
    QuadratureFailed {
        /// Batch index.
        system: usize,
    },
    /// The Lanczos coefficients of `system` do not form a tridiagonal matrix: `alphas`
    /// diagonal values need at least `alphas − 1` off-diagonal ones.
    #[error(
        "Lanczos quadrature of system {system}: {alphas} diagonal coefficients need at least \
         {alphas}−1 off-diagonal ones, found {betas}"
    )]
    CoefficientCountMismatch {
        /// Batch index.
        system: usize,
        /// Number of diagonal coefficients `α`.
        alphas: usize,
        /// Number of off-diagonal coefficients `β` passed.
        betas: usize,
    },
    /// Stochastic Lanczos quadrature found a Ritz value that is not (numerically) positive:
    /// the operator of `system` is not positive definite on the Krylov space, so its
    /// log-determinant is undefined or not determined at the working precision (the SLQ
    /// counterpart of [`LogdetError::NotPositiveDefinite`]). The Ritz values of an SPD
    /// operator lie in `[λ_min, λ_max]` up to round-off `O(u·‖H‖)`; a Ritz value at or below
    /// `threshold = RITZ_ROUNDOFF_FACTOR·u·largest` ([`crate::RITZ_ROUNDOFF_FACTOR`], `u` the
    /// unit roundoff of the Lanczos vectors) is negative, zero, or round-off.
    #[error(
        "operator of system {system} is not (numerically) positive definite: Lanczos Ritz value \
         {ritz_value:e} is at or below the round-off level {threshold:e} of the largest \
         |Ritz value| {largest:e}"
    )]
    NonPositiveRitzValue {
        /// Batch index.
        system: usize,
        /// The smallest Ritz value.
        ritz_value: f64,
        /// The round-off level it was compared with.
        threshold: f64,
        /// The largest Ritz value in absolute value (the scale of the threshold).
        largest: f64,
    },
    /// The Lanczos tridiagonal of `system` is empty although its start vector is not zero:
    /// no Lanczos step was taken (or the coefficients were truncated), so there is no
    /// quadrature of `vᵀ log(H) v`. Only a zero start vector (`‖v‖ = 0`) has an empty
    /// tridiagonal, with the exact value 0.
    #[error(
        "Lanczos quadrature of system {system}: the tridiagonal is empty (no Lanczos step) but \
         the start vector is not zero (‖v‖ = {norm:e}); vᵀ log(H) v needs at least one step"
    )]
    EmptyTridiagonal {
        /// Batch index.
        system: usize,
        /// `‖v‖` of the start vector (`> 0`, may be `+∞`).
        norm: f64,
    },
    /// The quadrature value `‖v‖² · Σ_j τ_j² log θ_j` of `system` is beyond the f64 range:
    /// a start vector of huge norm (SLQ's own probes never are).
    #[error(
        "Lanczos quadrature of system {system} overflows: ‖v‖² = {norm_sq:e} times the Gauss \
         sum {gauss_sum:e} is beyond the f64 range"
    )]
    QuadratureOverflow {
        /// Batch index.
        system: usize,
        /// `‖v‖²` (may itself be `+∞`).
        norm_sq: f64,
        /// `Σ_j τ_j² log θ_j`.
        gauss_sum: f64,
    },
    /// A probe product `vᵀ H_i v` of the Hutchinson estimator is not finite: the operator of
    /// `system` produced NaN or ±Inf.
    #[error("Hutchinson sample of system {system} is {value}: the operator produced NaN or Inf")]
    NonFiniteSample {
        /// Batch index.
        system: usize,
        /// The non-finite sample.
        value: f64,
    },
    /// An error from the Krylov solvers (or the operator they call).
    #[error(transparent)]
    Krylov(#[from] KrylovError),
    /// An error from candle (feature `candle`).
    #[cfg(feature = "candle")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

#[cfg(test)]
mod tests {
    use super::LogdetError;
    use krylov::KrylovError;
    use std::error::Error;

    /// Walks the chain of `e`: no message repeats its source's text. Returns the depth.
    fn assert_chain_has_no_repeats(e: &(dyn Error + 'static)) -> usize {
        let mut depth = 0;
        let mut cur = Some(e);
        while let Some(err) = cur {
            let msg = err.to_string();
            if let Some(src) = err.source() {
                let inner = src.to_string();
                assert!(
                    !msg.contains(&inner),
                    "`{msg}` repeats its source `{inner}`"
                );
            }
            depth += 1;
            cur = err.source();
        }
        depth
    }

    #[test]
    fn wrapped_krylov_errors_print_each_message_once() {
        let e = LogdetError::from(KrylovError::operator(std::io::Error::other("hvp failed")));
        // Transparent: the krylov message, then the operator's own error.
        assert_eq!(e.to_string(), "the linear operator failed");
        assert_eq!(assert_chain_has_no_repeats(&e), 2);
        assert_eq!(e.source().unwrap().to_string(), "hvp failed");
    }
}
