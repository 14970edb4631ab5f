//! `cpflow sample --log-prob FILE`: the exact log-density of every sample, beside the samples.
//!
//! The samples are drawn by `sample_and_log_prob` ([`crate::Flow::sample_and_log_prob`],
//! [`crate::image::ImageFlow::sample_and_log_prob`]) on the chunks and RNG stream the plain
//! command uses, so they are those of `sample` bit for bit; the log-densities are
//! `log_prob_exact` of them (nats), one per sample in the samples' order, written as one
//! column of `f64` (`<f8`; an f32 model's values widened exactly) through the same atomic
//! [`RowsWriter`] as the samples: nothing is left on an error or an interrupt. The two files
//! are renamed into place as one unit ([`finish_together`]): a failed command leaves the
//! previous samples and log-densities (or neither) as they were.

use anyhow::{Result, bail};
use candle_core::{DType, Tensor};
use std::path::{Path, PathBuf};

use crate::cli::SampleArgs;
use crate::cli::output_files::{PendingFile, RowType, RowValues, RowsWriter, finish_together};
use crate::cli::run_dir::resolved;

/// The `--log-prob` file being written: one `f64` per sample, streamed chunk by chunk.
pub(super) struct LogProbFile {
    out: RowsWriter,
    path: PathBuf,
}

impl LogProbFile {
    /// Opens `--log-prob` for `n` values (if given; its path checked by [`check_args`] when
    /// the arguments were read). Call it before anything is computed.
    pub(super) fn open(a: &SampleArgs, n: usize) -> Result<Option<Self>> {
        let Some(path) = a.log_prob.as_deref() else {
            return Ok(None);
        };
        Ok(Some(LogProbFile {
            out: RowsWriter::create_labelled(path, 1, n, RowType::F64, "log-densities")?,
            path: path.to_path_buf(),
        }))
    }

    /// Appends the log-densities `lp` (`(len,)`, any float type) of a chunk of samples.
    pub(super) fn write(&mut self, lp: &Tensor) -> Result<()> {
        let values = lp.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        self.out.write(RowValues::F64(&values))
    }
}

/// Finishes the samples file (`samples`) and the `--log-prob` file (if one is open) as one
/// unit ([`finish_together`]); returns the words for the summary line
/// (` and their log-densities to PATH`, or nothing).
pub(super) fn finish_with_samples(
    samples: PendingFile<'_>,
    file: Option<LogProbFile>,
) -> Result<String> {
    let mut files = vec![samples];
    let words = match file {
        Some(f) => {
            let words = format!(" and their log-densities to {}", f.path.display());
            files.push(Box::new(move || f.out.stage()));
            words
        }
        None => String::new(),
    };
    finish_together(files)?;
    Ok(words)
}

/// `--log-prob` with a VAE: refused (no closed-form density), naming `cpflow eval`.
pub(super) fn refuse_for_vae(a: &SampleArgs, model: &Path) -> Result<()> {
    if a.log_prob.is_none() {
        return Ok(());
    }
    let what = if a.reconstruct {
        "--reconstruct decodes posterior samples of test images"
    } else {
        "its samples are decoded prior latents"
    };
    let dir = crate::checkpoint::dir_of(model);
    bail!(
        "--log-prob is not available for a VAE ({what}): the density of its images, \
         p(x) = ∫ p(x | z) p(z) dz, has no closed form, so no exact log-density can be \
         written; `cpflow eval --model {} --is-samples K` estimates the test NLL by \
         importance sampling",
        dir.display()
    )
}

/// Refuses a `--log-prob` path (if given) that is not `.npy`/`.csv` or that is the
/// `--output` file.
pub(super) fn check_args(a: &SampleArgs) -> Result<()> {
    match a.log_prob.as_deref() {
        Some(path) => check_path(path, &a.output),
        None => Ok(()),
    }
}

/// Refuses a `--log-prob` path that is not `.npy`/`.csv` or that is the `--output` file.
fn check_path(path: &Path, output: &Path) -> Result<()> {
    let lower = path.to_string_lossy().to_ascii_lowercase();
    if !(lower.ends_with(".npy") || lower.ends_with(".csv")) {
        bail!(
            "--log-prob writes one log-density per sample as rows: name the file `….npy` or \
             `….csv`, not {}",
            path.display()
        );
    }
    if resolved(path)? == resolved(output)? {
        bail!(
            "--log-prob {} is the --output file: give the log-densities a file of their own \
             (e.g. samples.npy and logp.npy)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_path;
    use std::path::Path;

    /// Bad extensions and two spellings of the `--output` file are refused, naming the flag.
    #[test]
    fn log_prob_paths_are_checked() {
        let ok = check_path(Path::new("lp.csv"), Path::new("s.npy"));
        assert!(ok.is_ok(), "{ok:?}");
        for bad in ["lp.txt", "lp", "lp.npy.bak"] {
            let e = check_path(Path::new(bad), Path::new("s.npy")).unwrap_err();
            assert!(e.to_string().contains("--log-prob") && e.to_string().contains(bad));
        }
        let tmp = std::env::temp_dir();
        let a = tmp.join("cpflow-lp-check/s.npy");
        let b = tmp.join("cpflow-lp-check/../cpflow-lp-check/./s.npy");
        let e = check_path(&b, &a).unwrap_err().to_string();
        assert!(e.contains("is the --output file"), "{e}");
        let e = check_path(Path::new("./s.NPY"), Path::new("s.NPY")).unwrap_err();
        assert!(e.to_string().contains("--output"));
    }
}
