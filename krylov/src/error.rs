//! The error type of the crate.

/// Errors returned by the Krylov solvers, the operators and the vector backends.
///
/// Non-convergence is **not** an error: [`crate::cg()`] reports it in
/// [`crate::CgResult::converged`]. Errors are reserved for invalid input (shapes, parameters),
/// failures of a user operator, and backend (candle) failures.
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator, KrylovError};
/// use nalgebra::{DMatrix, dmatrix};
/// let op = DenseNalgebraOperator::new(vec![dmatrix![2.0, 0.0; 0.0, 2.0]])?;
/// // A right-hand side with a NaN is refused, naming the system and the entry.
/// let b = DMatrix::<f64>::from_column_slice(2, 1, &[1.0, f64::NAN]);
/// match cg(&op, &b, &CgParams::default()) {
///     Err(KrylovError::NonFiniteInput { system: 0, index: 1, .. }) => {}
///     other => panic!("unexpected {other:?}"),
/// }
/// // A batch of two systems for an operator of one.
/// let b2 = DMatrix::<f64>::zeros(2, 2);
/// let err = cg(&op, &b2, &CgParams::default()).unwrap_err();
/// assert!(matches!(err, KrylovError::ShapeMismatch { expected: (1, 2), found: (2, 2), .. }));
/// # Ok::<(), KrylovError>(())
/// ```
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
    /// An input vector holds a non-finite entry (NaN or ±Inf), e.g. the right-hand side of
    /// [`crate::cg()`]: no tolerance relative to it is meaningful, so the solve is refused
    /// instead of reporting a meaningless convergence.
    #[error("{context}: entry {index} of system {system} is {value:e}, not finite")]
    NonFiniteInput {
        /// Which input was checked.
        context: &'static str,
        /// System (batch index).
        system: usize,
        /// Entry inside the system.
        index: usize,
        /// The offending value (NaN or ±Inf).
        value: f64,
    },
    /// Two tensors that are combined have different dtypes (feature `candle`): e.g. a right-hand
    /// side in `F64` for an `F32` operator, or an operator that returned the wrong dtype.
    #[cfg(feature = "candle")]
    #[error("dtype mismatch in {context}: expected {expected:?}, found {found:?}")]
    DTypeMismatch {
        /// What was being checked.
        context: &'static str,
        /// The dtype required (that of the operator or of the right-hand side).
        expected: candle_core::DType,
        /// The dtype found.
        found: candle_core::DType,
    },
    /// A tensor holds integers (or another non-float dtype) where real numbers are expected
    /// (feature `candle`): e.g. a `U32` batch of matrices given to
    /// [`crate::DenseTensorOperator::new`].
    #[cfg(feature = "candle")]
    #[error("{context}: expected a floating-point dtype, found {found:?}")]
    NotFloat {
        /// What was being checked.
        context: &'static str,
        /// The dtype found.
        found: candle_core::DType,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The Jacobi preconditioner was requested but the operator cannot provide its diagonal.
    #[error(
        "the Jacobi preconditioner needs the operator diagonal, which this operator does not provide (wrap it in `WithDiagonal`)"
    )]
    MissingDiagonal,
    /// [`crate::Preconditioner::Supplied`] with an operator that supplies no `M⁻¹`.
    #[error(
        "the supplied preconditioner was asked for, but this operator gives no M⁻¹ r (wrap it in `WithPreconditioner`)"
    )]
    MissingPreconditioner,
    /// The Jacobi preconditioner met a diagonal entry that is not strictly positive and finite,
    /// or one so small that its inverse overflows the element type (e.g. `1e-310` in f64,
    /// `1e-39` in f32).
    #[error(
        "Jacobi preconditioner: diagonal entry {index} of system {system} is {value:e}, not > 0 \
         with a finite inverse"
    )]
    NonPositiveDiagonal {
        /// System (batch index).
        system: usize,
        /// Row inside the system.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A user-supplied operator failed; its error is the [`source`](std::error::Error::source).
    /// Build it with [`KrylovError::operator`].
    #[error("the linear operator failed")]
    Operator(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// An error from candle (feature `candle`).
    #[cfg(feature = "candle")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl KrylovError {
    /// Wraps the error of a user operator, keeping it as the source.
    ///
    /// ```
    /// use krylov::KrylovError;
    /// use std::error::Error;
    /// let io = std::io::Error::other("device lost");
    /// let e = KrylovError::operator(io);
    /// assert_eq!(e.to_string(), "the linear operator failed");
    /// assert_eq!(e.source().unwrap().to_string(), "device lost");
    /// ```
    pub fn operator<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Self::Operator(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::KrylovError;
    use std::error::Error;

    /// Walks the chain of `e` and returns the first message that repeats its source's text,
    /// and the length of the chain.
    fn repeated_message(e: &(dyn Error + 'static)) -> (Option<String>, usize) {
        let mut depth = 0;
        let mut cur = Some(e);
        while let Some(err) = cur {
            depth += 1;
            if let Some(src) = err.source()
                && err.to_string().contains(&src.to_string())
            {
                return (Some(err.to_string()), depth);
            }
            cur = err.source();
        }
        (None, depth)
    }

    #[test]
    fn operator_errors_keep_their_source_and_print_it_once() {
        let e = KrylovError::operator(std::io::Error::other("device lost"));
        assert_eq!(repeated_message(&e), (None, 2));
        assert_eq!(e.source().unwrap().to_string(), "device lost");
        // The old form (`operator failed: {inner}` with the inner error also the source) is
        // what the walk catches.
        #[derive(Debug, thiserror::Error)]
        #[error("operator failed: {0}")]
        struct Repeating(#[source] std::io::Error);
        let bad = Repeating(std::io::Error::other("device lost"));
        assert_eq!(
            repeated_message(&bad).0.as_deref(),
            Some("operator failed: device lost")
        );
    }

    /// Floats in messages are printed in exponent form: a subnormal diagonal entry printed
    /// with `{}` was a 330-character `0.000…`.
    #[test]
    fn float_values_print_in_exponent_form() {
        let e = KrylovError::NonPositiveDiagonal {
            system: 0,
            index: 1,
            value: 1e-320,
        };
        let msg = e.to_string();
        assert!(msg.contains("is 1e-320, not > 0"), "{msg}");
        assert!(msg.len() < 120, "{} characters: {msg}", msg.len());
        let nan = KrylovError::NonFiniteInput {
            context: "cg right-hand side",
            system: 0,
            index: 2,
            value: f64::NAN,
        };
        assert_eq!(
            nan.to_string(),
            "cg right-hand side: entry 2 of system 0 is NaN, not finite"
        );
    }

    #[cfg(feature = "candle")]
    #[test]
    fn candle_errors_are_transparent() {
        let e = KrylovError::from(candle_core::Error::Msg("bad shape".into()));
        assert_eq!(e.to_string(), "bad shape");
        assert_eq!(repeated_message(&e).0, None);
    }
}
