//! The error type of the crate.

use candle_core::DType;

/// Errors returned by the solvers and the potentials of this crate.
///
/// Failing to converge is **not** an error: the solvers report it per sample in
/// [`crate::InversionResult::converged`]. Errors are reserved for invalid input (shapes,
/// non-finite values, parameters), failures of the potential, and backend failures.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{
///     invert_lbfgs_batched, invert_newton_cg, BatchedLbfgsParams, ConvexOptError, FnPotential,
///     InversionOptions, NewtonCgParams,
/// };
/// // Φ(x) = ½‖x‖², without Hessian-vector products.
/// let pot = FnPotential::new(|x: &Tensor| Ok(((x.sqr()?.sum(1)? * 0.5)?, x.clone())));
/// let opts = InversionOptions::default().with_x0(Tensor::zeros((1, 2), DType::F64, &Device::Cpu)?);
/// let y = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu)?;
/// let err = invert_newton_cg(&pot, &y, &opts, &NewtonCgParams::default()).unwrap_err();
/// assert!(matches!(err, ConvexOptError::Unsupported("hvp")));
/// // A NaN target is refused before any evaluation, naming its row.
/// let nan = Tensor::new(&[[1.0f64, 0.0], [f64::NAN, 0.0]], &Device::Cpu)?;
/// let opts2 = InversionOptions::default();
/// let err = invert_lbfgs_batched(&pot, &nan, &opts2, &BatchedLbfgsParams::default()).unwrap_err();
/// assert!(matches!(err, ConvexOptError::NonFiniteRow { context: "targets y", row: 1 }));
/// // Non-convergence is not an error unless asked for.
/// let res = invert_lbfgs_batched(&pot, &y, &opts.clone().with_max_iterations(0), &BatchedLbfgsParams::default())?;
/// let err = res.into_converged().unwrap_err();
/// assert!(matches!(err, ConvexOptError::NotConverged { failed: 1, total: 1, .. }));
/// # Ok::<(), ConvexOptError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvexOptError {
    /// An input that has no rows holds a NaN or an infinity (e.g. the initial point of
    /// [`crate::minimize_lbfgs`], a [`crate::QuadraticPotential`]'s matrix), or the flat
    /// solver's summed potential overflowed at the initial point with every row finite.
    #[error("non-finite values in {0}")]
    NonFinite(&'static str),
    /// Row `row` (the first such row) of a batch input is not finite: the targets `y` or the
    /// initial point `x0` of an inversion hold a NaN or ±Inf in that row (every solver, before
    /// any evaluation), or the potential or its gradient is not finite at the initial point of
    /// that row for a solver that cannot stop that row alone ([`crate::invert_lbfgs_flat`],
    /// one problem for the whole batch; the per-row solvers report such a row as
    /// [`crate::Termination::NonFinite`] instead).
    #[error("non-finite values in {context} of row {row} (the first such row)")]
    NonFiniteRow {
        /// What was not finite.
        context: &'static str,
        /// The first offending row of the batch.
        row: usize,
    },
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
    /// A tensor's dtype differs from the one required: the targets `y` from the dtype the
    /// potential computes in (e.g. `f64` targets for an `f32` potential; see
    /// [`crate::BatchedPotential::expected_dtype`]), an initial point `x0` from the targets',
    /// a potential's value or gradient (contexts `potential value`, `potential gradient`)
    /// from the points it was evaluated at.
    #[error("dtype mismatch in {context}: expected {expected:?}, found {found:?}")]
    DTypeMismatch {
        /// What was being checked.
        context: &'static str,
        /// The dtype required (the potential's for `y`, the targets' for `x0`, the points'
        /// for a potential's outputs).
        expected: DType,
        /// The dtype found.
        found: DType,
    },
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The potential does not provide an optional operation (e.g. Hessian-vector products).
    #[error("the potential does not support `{0}`")]
    Unsupported(&'static str),
    /// A user-defined potential failed with its own error type (the
    /// [`source`](std::error::Error::source)). Build it with [`ConvexOptError::potential`].
    #[error("the potential failed")]
    Potential(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
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
    /// An error reported by argmin (the [`source`](std::error::Error::source); errors of the
    /// potential are passed through as their own variant instead).
    #[error("argmin failed")]
    Argmin(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
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
            Err(e) => Self::Argmin(e.into()),
        }
    }
}

/// `x` as a parameter message prints it: plainly when that is short (`0.3`, `-1`, `NaN`,
/// `inf`, magnitudes in `[1e-3, 1e6)`), in exponent form otherwise (`1e-9`, `1e-320`): with
/// `{}` an absolute tolerance of 1e-9 printed as `0.000000001` and a subnormal as hundreds
/// of digits.
pub(crate) fn short_float(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-3..1e6).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::ConvexOptError;
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
    fn wrapped_errors_keep_their_sources_and_print_each_message_once() {
        let e = ConvexOptError::potential(std::io::Error::other("network weights missing"));
        assert_eq!(repeated_message(&e), (None, 2));
        assert_eq!(e.source().unwrap().to_string(), "network weights missing");

        let e = ConvexOptError::from(krylov::KrylovError::operator(std::io::Error::other("x")));
        assert_eq!(repeated_message(&e), (None, 2));

        // An argmin error with context: the chain keeps both the context and the cause.
        let inner = argmin::core::Error::new(std::io::Error::other("line search diverged"))
            .context("L-BFGS step 3");
        let e = ConvexOptError::from_argmin(inner);
        assert!(matches!(e, ConvexOptError::Argmin(_)));
        let (repeat, depth) = repeated_message(&e);
        assert_eq!(repeat, None);
        assert!(depth >= 3, "argmin failed → context → cause, got {depth}");

        // A ConvexOptError raised inside argmin comes back as itself.
        let own = argmin::core::Error::new(ConvexOptError::NonFinite("y"));
        assert!(matches!(
            ConvexOptError::from_argmin(own),
            ConvexOptError::NonFinite("y")
        ));
    }
}
