//! The crate's error type.

/// Errors returned by the `icnn` crate.
#[derive(Debug, thiserror::Error)]
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
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, IcnnError>;
