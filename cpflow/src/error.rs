//! The crate's error type.

use thiserror::Error;

/// Errors returned by the `cpflow` library.
///
/// Error policy (see `docs/ARCHITECTURE.md`, Conventions): errors of other crates are kept as
/// the [`source`](std::error::Error::source), never flattened to a string, and no message
/// repeats its source's text — print a whole chain with `{:#}` of `anyhow` or by walking
/// `source()`. The one exception is [`CpflowError::Io`]: its message ends with the
/// operating system's reason ("No such file or directory"), which a plain `{e}` would
/// otherwise lose, so it has no `source()` (the [`std::io::Error`] is its `cause` field).
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{CpflowError, Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::tabular(2, 1, pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f32, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// // The ActNorm layers need their data-dependent initialisation first.
/// assert!(matches!(flow.log_prob_exact(&x), Err(CpflowError::NotInitialized)));
/// flow.initialize(&x)?;
/// // A batch of another dimension is invalid input, named in the message.
/// let wrong = Tensor::zeros((2, 3), cpflow::candle::DType::F32, &Device::Cpu)?;
/// match flow.log_prob_exact(&wrong) {
///     Err(CpflowError::InvalidInput(msg)) => assert!(msg.contains('3'), "{msg}"),
///     other => panic!("expected InvalidInput, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CpflowError {
    /// An error from the candle tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error from the ICNN crate.
    #[error(transparent)]
    Icnn(#[from] icnn::IcnnError),
    /// An error from the Krylov solvers.
    #[error(transparent)]
    Krylov(#[from] krylov::KrylovError),
    /// An error from the log-determinant estimators.
    #[error(transparent)]
    Logdet(#[from] logdet::LogdetError),
    /// An error from the convex solvers used for inversion.
    #[error(transparent)]
    ConvexOpt(#[from] convex_opt::ConvexOptError),
    /// An error from the toy densities (unknown name, invalid argument).
    #[error(transparent)]
    Toy(#[from] crate::toy::ToyError),
    /// File-system error (checkpoints, metrics). The message names the file and the cause:
    /// `I/O error on run/model.safetensors: No such file or directory (os error 2)`. The
    /// cause is in the message, not the error chain (`source()` is `None`), so a plain `{e}`
    /// and a printed chain (anyhow's `{:#}`, the command line's report) both show it once.
    ///
    /// ```
    /// use cpflow::CpflowError;
    /// let path = std::path::Path::new("no/such/model.safetensors");
    /// let e = cpflow::Flow::load(path, &cpflow::candle::Device::Cpu).unwrap_err();
    /// assert!(matches!(&e, CpflowError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound));
    /// assert!(e.to_string().starts_with("I/O error on no/such/model.safetensors: "), "{e}");
    /// assert!(std::error::Error::source(&e).is_none());
    /// ```
    #[error("I/O error on {path}: {cause}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error (shown in the message).
        cause: std::io::Error,
    },
    /// JSON (de)serialisation error.
    #[error("JSON (de)serialisation failed")]
    Json(#[from] serde_json::Error),
    /// safetensors (de)serialisation error.
    #[error("safetensors (de)serialisation failed")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// Invalid input data (NaN/Inf, wrong dimension, empty batch, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Invalid configuration value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A data-dependent layer was used before its initialisation.
    #[error(
        "not initialised: run the data-dependent ActNorm initialisation on a batch of data first \
         (`Flow::initialize(&batch)`, `ImageFlow::initialize`, or a layer's own `initialize`)"
    )]
    NotInitialized,
    /// The Hessian of a CP-Flow block's potential is not positive definite at a point where
    /// the flow is finite (its Cholesky failed in the exact log-det): the potential is not
    /// strongly convex there, which a built-in ICNN cannot be but a custom potential can.
    #[error(
        "the potential of layer {layer} is not strongly convex at row {row} of the evaluated \
         chunk: its Hessian there has no log-determinant (a custom potential must be convex \
         in x)"
    )]
    NotConvex {
        /// The layer of the flow (counting ActNorms, from 0; for an image flow, its index in
        /// `ImageFlow::layers`, counting logit, ActNorm, squeeze and factor-out layers).
        layer: usize,
        /// The row within the chunk of rows evaluated at once.
        row: usize,
        /// The log-det's error.
        #[source]
        source: logdet::LogdetError,
    },
    /// A loss or gradient became NaN or infinite during training.
    #[error("non-finite {what} at training step {step}; {}", checkpoint_note(.checkpoint))]
    NonFinite {
        /// What was non-finite ("loss", "gradient of <param>", …).
        what: String,
        /// The 1-based optimiser step at which it happened (the `iteration` that step's line of
        /// `metrics.jsonl` would have had); for a validation, the last step before it.
        step: usize,
        /// The last checkpoint written by this run (weights from before the failure), if any.
        checkpoint: Option<std::path::PathBuf>,
    },
    /// Training was interrupted (the run's interrupt flag was set) and paused after a step;
    /// resuming from the checkpoint continues it.
    #[error("interrupted after training step {iteration}; {}", saved_note(.checkpoint))]
    Interrupted {
        /// Optimiser steps done.
        iteration: usize,
        /// The checkpoint that holds the run at that step (`None`: no output directory).
        checkpoint: Option<std::path::PathBuf>,
    },
    /// The run's interrupt flag was set after training had ended: the evaluation that follows
    /// it stopped before `skipped` (the trained run is saved; nothing was scored wrongly).
    #[error("interrupted after training, before {skipped}; {}", files_note(.saved))]
    EvaluationInterrupted {
        /// What was not done ("the test score", …).
        skipped: String,
        /// The files that hold the trained run (model, best weights, checkpoint); empty
        /// without an output directory.
        saved: Vec<std::path::PathBuf>,
    },
    /// A checkpoint is malformed or incompatible with the model.
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    /// Writing a flow or image-flow run's checkpoint, a `metrics.jsonl` line (or opening or
    /// cutting back the file at the start), `model.safetensors` or `report.json` failed (a
    /// full disk, permissions). The checkpoint is replaced atomically and the other files do
    /// not touch it: the last one written before, if any, is intact and resumes the run
    /// (which writes the log, the model and the report again).
    #[error(
        "writing {what} at iteration {iteration} failed ({cause}); {}",
        last_checkpoint_note(.saved)
    )]
    CheckpointWrite {
        /// What could not be written ("the checkpoint", "metrics.jsonl",
        /// "model.safetensors", "report.json").
        what: &'static str,
        /// The iteration of the run when the write failed (for the checkpoint: the
        /// iteration it was to hold).
        iteration: usize,
        /// The iteration and path of the last checkpoint, intact (`None`: none was written).
        saved: Option<(usize, std::path::PathBuf)>,
        /// Why the write failed.
        cause: Box<CpflowError>,
    },
    /// Writing a VAE run's checkpoint, its best weights, its `metrics.jsonl` line or its
    /// `report.json` after an epoch (or when pausing within one) failed:
    /// [`CpflowError::CheckpointWrite`] for a trainer counted in epochs. The checkpoint and
    /// the best weights are replaced atomically: the last checkpoint written before, if any,
    /// is intact and resumes the run (which writes the log and the report again).
    #[error(
        "writing {what} at epoch {epoch} failed ({cause}); {}",
        last_epoch_checkpoint_note(.saved)
    )]
    EpochCheckpointWrite {
        /// What could not be written ("the checkpoint", "the best weights", "metrics.jsonl",
        /// "report.json").
        what: &'static str,
        /// The epoch whose file could not be written (the one in progress, when pausing
        /// within it).
        epoch: usize,
        /// The epochs completed in the last checkpoint, intact, and its path (`None`: the
        /// run wrote none).
        saved: Option<(usize, std::path::PathBuf)>,
        /// Why the write failed.
        cause: Box<CpflowError>,
    },
    /// A saved random-generator state cannot be decoded (its seed is not hexadecimal).
    #[error("bad RNG state in the checkpoint: the seed is not hexadecimal")]
    RngSeed(#[source] hex::FromHexError),
    /// An internal invariant failed (a bug in this crate; please report it).
    #[error("internal error: {0}")]
    Internal(String),
    /// A dataset could not be read (missing, truncated or malformed file).
    #[cfg(feature = "datasets")]
    #[error(transparent)]
    Dataset(#[from] crate::datasets::DatasetError),
}

/// The first `shown` items joined by `, `, then "and N more" for the rest (error messages that
/// name what is wrong without listing thousands of entries).
pub(crate) fn first_few<T: std::fmt::Display>(items: &[T], shown: usize) -> String {
    let mut s = items
        .iter()
        .take(shown)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > shown {
        s.push_str(&format!(" and {} more", items.len() - shown));
    }
    s
}

fn checkpoint_note(checkpoint: &Option<std::path::PathBuf>) -> String {
    match checkpoint {
        Some(p) => format!("the last good checkpoint is {}", p.display()),
        None => "no checkpoint was written before it".to_string(),
    }
}

fn last_checkpoint_note(saved: &Option<(usize, std::path::PathBuf)>) -> String {
    match saved {
        Some((it, p)) => format!(
            "the run is saved at iteration {it} (the last checkpoint, {})",
            p.display()
        ),
        None => "no earlier checkpoint was written".to_string(),
    }
}

fn last_epoch_checkpoint_note(saved: &Option<(usize, std::path::PathBuf)>) -> String {
    match saved {
        // A checkpoint of a run paused within its first epoch.
        Some((0, p)) => format!(
            "the run is saved within epoch 1 (the last checkpoint, {})",
            p.display()
        ),
        Some((e, p)) => format!(
            "the run is saved after epoch {e} (the last checkpoint, {})",
            p.display()
        ),
        None => last_checkpoint_note(&None),
    }
}

fn saved_note(checkpoint: &Option<std::path::PathBuf>) -> String {
    match checkpoint {
        Some(p) => format!("the run is saved in {}", p.display()),
        None => "nothing was saved (no output directory)".to_string(),
    }
}

fn files_note(saved: &[std::path::PathBuf]) -> String {
    if saved.is_empty() {
        return "nothing was saved (no output directory)".to_string();
    }
    let names: Vec<String> = saved.iter().map(|p| p.display().to_string()).collect();
    format!("saved: {}", names.join(", "))
}

impl CpflowError {
    /// This error with an [`CpflowError::InvalidInput`] message prefixed by what the input was
    /// (`"training set: data has 3 columns, …"`); other errors as they are.
    pub(crate) fn about(self, what: &str) -> Self {
        match self {
            CpflowError::InvalidInput(m) => CpflowError::InvalidInput(format!("{what}: {m}")),
            other => other,
        }
    }

    pub(crate) fn io(path: &std::path::Path, cause: std::io::Error) -> Self {
        CpflowError::Io {
            path: path.display().to_string(),
            cause,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, CpflowError>;

#[cfg(test)]
mod tests {
    use super::CpflowError;
    use std::error::Error;

    /// Walks the chain of `e` and returns the first message that repeats its source's text,
    /// and the length of the chain.
    pub(crate) fn repeated_message(e: &(dyn Error + 'static)) -> (Option<String>, usize) {
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
        let io = || std::io::Error::other("disk full");
        let e = CpflowError::io(std::path::Path::new("/tmp/ck.safetensors"), io());
        // The cause is in the message, not the chain: printed once either way.
        assert_eq!(e.to_string(), "I/O error on /tmp/ck.safetensors: disk full");
        assert_eq!(repeated_message(&e), (None, 1));
        assert_eq!(
            crate::exit_report::error_report(&e),
            "Error: I/O error on /tmp/ck.safetensors: disk full"
        );
        let chained = anyhow::Error::new(e).context("saving the run");
        assert_eq!(
            format!("{chained:#}"),
            "saving the run: I/O error on /tmp/ck.safetensors: disk full"
        );

        // Three crates deep: cpflow → krylov operator → icnn → candle.
        let icnn = icnn::IcnnError::from(candle_core::Error::Msg("hvp shape".into()));
        let e = CpflowError::from(krylov::KrylovError::operator(icnn));
        let (repeat, depth) = repeated_message(&e);
        assert_eq!(repeat, None);
        assert_eq!(depth, 2, "transparent layers add no level");
        assert_eq!(e.source().unwrap().to_string(), "hvp shape");

        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let e = CpflowError::from(json);
        assert_eq!(repeated_message(&e), (None, 2));

        let e = CpflowError::RngSeed(hex::decode("zz").unwrap_err());
        assert_eq!(repeated_message(&e), (None, 2));

        let e = CpflowError::from("nope".parse::<crate::toy::Toy>().unwrap_err());
        assert!(e.to_string().contains("unknown toy density `nope`"), "{e}");
    }

    #[cfg(feature = "datasets")]
    #[test]
    fn dataset_errors_keep_the_decoder_error_as_source() {
        use crate::datasets::DatasetError;
        // A gzip stream cut short: Truncated, with flate2's error as the source.
        let data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
        let mut out = Vec::new();
        let e = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut out)
            .unwrap_err();
        let e = DatasetError::decoding(std::path::Path::new("t10k.gz"), "gzip stream", e);
        assert!(matches!(e, DatasetError::Truncated { .. }), "{e:?}");
        assert_eq!(repeated_message(&e), (None, 2));
        // An I/O error has its reason in its message and no source (as CpflowError::Io).
        let e = DatasetError::io(
            std::path::Path::new("x.npy"),
            std::io::Error::other("denied"),
        );
        assert_eq!(e.to_string(), "I/O error on x.npy: denied");
        assert_eq!(repeated_message(&e), (None, 1));
    }

    #[cfg(feature = "toy-images")]
    #[test]
    fn toy_image_errors_keep_the_decoder_error_as_source() {
        let dir = std::env::temp_dir().join(format!("cpflow-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a.png");
        std::fs::write(&path, b"plain text").unwrap();
        let e = crate::toy::ImageDensity::from_file(&path).unwrap_err();
        let source = e.source().expect("the decoder's error is the source");
        assert!(
            matches!(
                e,
                crate::toy::ToyError::Image {
                    source: crate::image_file::ImageFileError::UnknownFormat,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.to_string().contains(&source.to_string()), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
