//! The error type of the crate.

use krylov::KrylovError;

/// Errors of the log-determinant routines.
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
    /// A tensor has the wrong rank or shape.
    #[error("expected a tensor of shape {expected}, found {found:?}")]
    WrongTensorShape {
        /// Description of the expected shape.
        expected: &'static str,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The small tridiagonal eigenproblem of the quadrature produced non-finite values.
    #[error(
        "Lanczos quadrature of system {system} failed: non-finite Lanczos coefficients or Ritz values"
    )]
    QuadratureFailed {
        /// Batch index.
        system: usize,
    },
    /// An error from the Krylov solvers (or the operator they call).
    #[error(transparent)]
    Krylov(#[from] KrylovError),
    /// An error from candle (feature `candle`).
    #[cfg(feature = "candle")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
