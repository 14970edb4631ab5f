//! The crate's error type.

/// Errors returned by the `icnn` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IcnnError {
    /// An error from candle (shape mismatch, device error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value is invalid (zero width, odd width for `Icnn3`, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An input tensor does not have the expected shape.
    #[error("shape error: {0}")]
    Shape(String),
    /// The ActNorm data-dependent initialisation cannot use the batch it was given: fewer
    /// than 2 rows, non-finite values, or a layer none of whose units varies over the batch
    /// (every point the same). Nothing is written: an uninitialised network stays
    /// uninitialised (a later call with a usable batch initialises it), an initialised one
    /// keeps its ActNorm parameters.
    #[error("ActNorm initialisation at `{layer}`: {reason}")]
    Initialization {
        /// The ActNorm (its parameter prefix, e.g. `icnn.actnorms.2`) or the input (`input`,
        /// `context`) where the batch was found unusable.
        layer: String,
        /// What is wrong with the batch.
        reason: String,
    },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, IcnnError>;

#[cfg(test)]
mod tests {
    use super::IcnnError;
    use std::error::Error;

    #[test]
    fn candle_errors_are_transparent_and_printed_once() {
        let e = IcnnError::from(candle_core::Error::Msg("shape mismatch".into()));
        assert_eq!(e.to_string(), "shape mismatch");
        let mut cur: Option<&(dyn Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            if let Some(src) = err.source() {
                assert!(
                    !err.to_string().contains(&src.to_string()),
                    "{err} repeats {src}"
                );
            }
            cur = err.source();
        }
    }
}
