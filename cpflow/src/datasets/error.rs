//! The error type of the dataset loaders.

use std::path::{Path, PathBuf};

/// A decoder's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading a dataset from disk.
///
/// Messages name the file involved; a missing file also names the `cargo xtask download`
/// command that fetches it.
/// Errors of the libraries that decode a file (gzip, tar, CSV, image) are kept as the
/// [`source`](std::error::Error::source) of [`DatasetError::Truncated`] /
/// [`DatasetError::Corrupt`], not copied into the message.
///
/// ```
/// use cpflow::datasets::{DatasetError, load_miniboone, parse_npy_matrix};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-dataset-error-{}", std::process::id()));
/// // No file: the message names the path and the command that downloads it.
/// let err = load_miniboone(&root).unwrap_err();
/// assert!(matches!(err, DatasetError::MissingFile { dataset: "miniboone", .. }));
/// let msg = err.to_string();
/// assert!(msg.contains("data.npy") && msg.contains("cargo xtask download miniboone --dir"), "{msg}");
/// // Bytes that are not a .npy file.
/// let err = parse_npy_matrix("bad.npy".as_ref(), b"plain text, not numpy").unwrap_err();
/// assert!(matches!(err, DatasetError::Corrupt { .. } | DatasetError::Truncated { .. }), "{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A file the loader needs is not on disk.
    #[error(
        "{dataset}: file {}{} not found; fetch it with `{}` (or place the file there by hand)",
        path.display(),
        relative_path_note(path),
        download_command(path, command)
    )]
    MissingFile {
        /// Dataset name (as used by `cargo xtask download`).
        dataset: &'static str,
        /// The path that was looked for.
        path: PathBuf,
        /// The `cargo xtask download` argument that fetches it.
        command: &'static str,
    },
    /// The file ends before the data its header announces.
    #[error("{}: truncated file: {detail}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was expected and found.
        detail: String,
        /// The decoder's error, when one reported the truncation.
        #[source]
        source: Option<BoxError>,
    },
    /// The file is not in the expected format.
    #[error("{}: corrupt or unsupported file: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
        /// The decoder's error, when one found the problem.
        #[source]
        source: Option<BoxError>,
    },
    /// The data has the wrong number of rows or columns.
    #[error("{what}: bad shape: expected {expected}, found {found}")]
    BadShape {
        /// What was being checked.
        what: String,
        /// The expected shape.
        expected: String,
        /// The shape found.
        found: String,
    },
    /// The data is present only in a form this crate cannot read.
    #[error("{dataset}: {detail}")]
    Unsupported {
        /// Dataset name.
        dataset: &'static str,
        /// What is missing and what to do instead.
        detail: String,
    },
    /// A configuration value is out of range.
    #[error("invalid dataset configuration: {0}")]
    InvalidConfig(String),
    /// An I/O error other than "not found".
    /// The OS's reason is part of the message (no `source()`, so a chain prints it once;
    /// the convention of `crate::CpflowError::Io`).
    #[error("I/O error on {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// Building a tensor failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl DatasetError {
    pub(crate) fn truncated(path: &Path, detail: impl Into<String>) -> Self {
        Self::Truncated {
            path: path.to_path_buf(),
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
            source: None,
        }
    }

    /// [`DatasetError::Corrupt`] caused by a decoder's error (kept as the source).
    pub(crate) fn corrupt_by(
        path: &Path,
        detail: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// A decoder's I/O error: [`DatasetError::Truncated`] when the stream ended early
    /// ([`std::io::ErrorKind::UnexpectedEof`]), else [`DatasetError::Corrupt`]; `detail` names
    /// what was being decoded, the error is kept as the source.
    pub(crate) fn decoding(path: &Path, detail: impl Into<String>, e: std::io::Error) -> Self {
        let (path, detail) = (path.to_path_buf(), detail.into());
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Truncated {
                path,
                detail,
                source: Some(Box::new(e)),
            }
        } else {
            Self::Corrupt {
                path,
                detail,
                source: Some(Box::new(e)),
            }
        }
    }

    pub(crate) fn io(path: &Path, cause: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            cause,
        }
    }

    pub(crate) fn bad_shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self::BadShape {
            what: what.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// The `cargo xtask download` command that puts `path` where a loader looks for it: the
/// data root is the parent of the path's folder named like the download (`<root>/mnist/…`).
pub(crate) fn download_command(path: &Path, command: &str) -> String {
    let root = path
        .ancestors()
        .find(|a| {
            a.file_name()
                .is_some_and(|n| n.to_string_lossy().eq_ignore_ascii_case(command))
        })
        .and_then(Path::parent);
    match root {
        Some(r) => download_command_into(command, r),
        None => format!("cargo xtask download {command}"),
    }
}

/// For a relative `path`, what it was resolved against: ` (relative to the current
/// directory: /abs/path)`; empty for an absolute path. A data root such as a config's
/// `../shared/data` is read from the directory the command runs in, not the config file's.
///
/// ```
/// use std::path::Path;
/// use cpflow::datasets::relative_path_note;
/// assert_eq!(relative_path_note(Path::new("/srv/d/f.npy")), "");
/// let note = relative_path_note(Path::new("d/f.npy"));
/// let cwd = std::env::current_dir().unwrap();
/// assert_eq!(note, format!(" (relative to the current directory: {})", cwd.join("d/f.npy").display()));
/// ```
pub fn relative_path_note(path: &Path) -> String {
    if path.is_absolute() {
        return String::new();
    }
    match std::env::current_dir() {
        Ok(cwd) => format!(
            " (relative to the current directory: {})",
            cwd.join(path).display()
        ),
        Err(_) => " (relative to the current directory, which cannot be read)".into(),
    }
}

/// The `cargo xtask download` command that fetches `command` into the data root `root`:
/// `--dir root` unless it is the download's default ([`super::layout::DEFAULT_ROOT`]).
///
/// ```
/// use std::path::Path;
/// use cpflow::datasets::download_command_into;
/// assert_eq!(download_command_into("gas", Path::new("data")), "cargo xtask download gas");
/// assert_eq!(
///     download_command_into("gas", Path::new("/srv/d")),
///     "cargo xtask download gas --dir /srv/d"
/// );
/// ```
pub fn download_command_into(command: &str, root: &Path) -> String {
    if root == Path::new(super::layout::DEFAULT_ROOT) {
        return format!("cargo xtask download {command}");
    }
    let shown = if root.as_os_str().is_empty() {
        ".".into()
    } else {
        root.display().to_string()
    };
    format!("cargo xtask download {command} --dir {shown}")
}

/// Checks that `path` exists, else returns [`DatasetError::MissingFile`].
pub(crate) fn require_file(
    path: &Path,
    dataset: &'static str,
    command: &'static str,
) -> Result<(), DatasetError> {
    require_file_as(path, path, dataset, command)
}

/// [`require_file`] of the file at `path`, named `shown_as` in the error.
pub(crate) fn require_file_as(
    path: &Path,
    shown_as: &Path,
    dataset: &'static str,
    command: &'static str,
) -> Result<(), DatasetError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(DatasetError::MissingFile {
            dataset,
            path: shown_as.to_path_buf(),
            command,
        })
    }
}

/// Reads a whole file, mapping "not found" to [`DatasetError::MissingFile`].
pub(crate) fn read_file(
    path: &Path,
    dataset: &'static str,
    command: &'static str,
) -> Result<Vec<u8>, DatasetError> {
    require_file(path, dataset, command)?;
    std::fs::read(path).map_err(|e| DatasetError::io(path, e))
}

#[cfg(test)]
mod download_command_tests {
    use super::download_command;
    use std::path::Path;

    /// The default root gives the bare command; any other root (relative, absolute, the
    /// shared folder) is passed as `--dir`, and the folder is matched case-insensitively.
    #[test]
    fn names_the_root_unless_it_is_the_default() {
        let cases = [
            (
                "data/mnist/train-images-idx3-ubyte",
                "mnist",
                "cargo xtask download mnist",
            ),
            (
                "../shared/data/mnist/train-images-idx3-ubyte",
                "mnist",
                "cargo xtask download mnist --dir ../shared/data",
            ),
            (
                "/tmp/x/cifar10/cifar-10-batches-bin/test_batch.bin",
                "cifar10",
                "cargo xtask download cifar10 --dir /tmp/x",
            ),
            (
                "mnist/t10k-labels-idx1-ubyte",
                "mnist",
                "cargo xtask download mnist --dir .",
            ),
            (
                "/r/BSDS300/BSDS300.hdf5",
                "bsds300",
                "cargo xtask download bsds300 --dir /r",
            ),
            ("elsewhere/file.npy", "power", "cargo xtask download power"),
        ];
        for (path, command, expected) in cases {
            assert_eq!(
                download_command(Path::new(path), command),
                expected,
                "{path}"
            );
        }
    }
}
