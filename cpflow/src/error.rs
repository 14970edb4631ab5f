//! The crate's error type.

use thiserror::Error;

/// Errors returned by the `cpflow` library.
#[derive(Debug, Error)]
pub enum CpflowError {
    /// An error from the candle tensor library.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// An error from the ICNN crate.
    #[error("icnn error: {0}")]
    Icnn(#[from] icnn::IcnnError),
    /// An error from the Krylov solvers.
    #[error("krylov error: {0}")]
    Krylov(#[from] krylov::KrylovError),
    /// An error from the log-determinant estimators.
    #[error("log-det error: {0}")]
    Logdet(#[from] logdet::LogdetError),
    /// An error from the convex solvers used for inversion.
    #[error("inversion solver error: {0}")]
    ConvexOpt(#[from] convex_opt::ConvexOptError),
    /// File-system error (checkpoints, metrics).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON (de)serialisation error.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// safetensors (de)serialisation error.
    #[error("safetensors error: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// Invalid input data (NaN/Inf, wrong dimension, empty batch, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Invalid configuration value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A data-dependent layer was used before its initialisation.
    #[error(
        "the flow is not initialised: call `Flow::initialize(&batch)` (data-dependent ActNorm init) before using it"
    )]
    NotInitialized,
    /// A loss or gradient became NaN or infinite during training.
    #[error("non-finite {what} at training step {step}; the last good checkpoint is kept")]
    NonFinite {
        /// What was non-finite ("loss", "gradient of <param>", …).
        what: String,
        /// The optimiser step at which it happened.
        step: usize,
    },
    /// A checkpoint is malformed or incompatible with the model.
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
}

impl CpflowError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        CpflowError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, CpflowError>;
