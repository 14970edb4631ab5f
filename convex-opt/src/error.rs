//! The error type of the crate.

use candle_core::DType;

/// Errors returned by the solvers and the potentials of this crate.
///
/// Failing to converge is **not** an error: the solvers report it per sample in
/// [`crate::InversionResult::converged`]. Errors are reserved for invalid input (shapes,
/// non-finite values, parameters), failures of the potential, and backend failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvexOptError {
    /// An input (the targets `y`, the initial point, or the potential evaluated there) holds a
    /// NaN or an infinity.
    #[error("non-finite values in {0}")]
    NonFinite(&'static str),
    /// Shapes of the inputs disagree, or a tensor has the wrong rank.
    #[error("shape error in {context}: {message}")]
    Shape {
        /// What was being checked.
        context: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The solvers work in `f32` and `f64` only.
    #[error("unsupported dtype {0:?} (expected f32 or f64)")]
    UnsupportedDType(DType),
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The potential does not provide an optional operation (e.g. Hessian-vector products).
    #[error("the potential does not support `{0}`")]
    Unsupported(&'static str),
    /// A user-defined potential failed with its own error type.
    #[error("potential failed: {0}")]
    Potential(Box<dyn std::error::Error + Send + Sync>),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error from the Krylov solver.
    #[error(transparent)]
    Krylov(#[from] krylov::KrylovError),
    /// Raised only by [`crate::InversionResult::into_converged`]: some samples did not reach
    /// their tolerance.
    #[error("{failed} of {total} samples did not converge (max residual {max_residual:e})")]
    NotConverged {
        /// Samples that did not converge.
        failed: usize,
        /// Batch size.
        total: usize,
        /// Largest residual `‖∇Φ(x_i) − y_i‖∞`.
        max_residual: f64,
    },
    /// An error reported by argmin (formatted; errors of the potential are passed through as
    /// their own variant instead).
    #[error("argmin: {0}")]
    Argmin(String),
}

impl ConvexOptError {
    /// Wraps any error of a user potential.
    pub fn potential<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Self::Potential(Box::new(e))
    }

    /// Converts an argmin error back into ours, recovering a `ConvexOptError` raised inside a
    /// cost or gradient evaluation.
    pub(crate) fn from_argmin(e: argmin::core::Error) -> Self {
        match e.downcast::<ConvexOptError>() {
            Ok(inner) => inner,
            Err(e) => Self::Argmin(format!("{e:#}")),
        }
    }
}
