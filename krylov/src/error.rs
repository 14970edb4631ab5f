//! The error type of the crate.

/// Errors returned by the Krylov solvers, the operators and the vector backends.
///
/// Non-convergence is **not** an error: [`crate::cg`] reports it in
/// [`crate::CgResult::converged`]. Errors are reserved for invalid input (shapes, parameters),
/// failures of a user operator, and backend (candle) failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KrylovError {
    /// Two batches (or a batch and an operator) disagree in shape.
    #[error("shape mismatch in {context}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// What was being checked.
        context: &'static str,
        /// Expected `(systems, dim)`.
        expected: (usize, usize),
        /// Found `(systems, dim)`.
        found: (usize, usize),
    },
    /// A per-system scalar slice (or mask) has the wrong length.
    #[error("{context}: expected {expected} per-system values, found {found}")]
    WrongSystemCount {
        /// What was being checked.
        context: &'static str,
        /// Number of systems in the batch.
        expected: usize,
        /// Length of the slice that was passed.
        found: usize,
    },
    /// A tensor does not have the rank this crate expects (`(B, d)` batches, `(B, d, d)` matrices).
    #[error("{context}: expected a rank-{expected} tensor, found shape {found:?}")]
    WrongRank {
        /// What was being checked.
        context: &'static str,
        /// Expected rank.
        expected: usize,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The Jacobi preconditioner was requested but the operator cannot provide its diagonal.
    #[error(
        "the Jacobi preconditioner needs the operator diagonal, which this operator does not provide (wrap it in `WithDiagonal`)"
    )]
    MissingDiagonal,
    /// The Jacobi preconditioner met a diagonal entry that is not strictly positive.
    #[error("Jacobi preconditioner: diagonal entry {index} of system {system} is {value}, not > 0")]
    NonPositiveDiagonal {
        /// System (batch index).
        system: usize,
        /// Row inside the system.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A user-supplied operator failed.
    #[error("operator failed: {0}")]
    Operator(String),
    /// An error from candle (feature `candle`).
    #[cfg(feature = "candle")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
