//! The last checkpoint a training run wrote or resumed from, which the flow trainer
//! ([`super::Trainer`]) and the image trainer (`image::train`) keep for their errors: a
//! non-finite step and an interrupt name its path, a failed write
//! ([`CpflowError::CheckpointWrite`]) of the checkpoint, `metrics.jsonl`,
//! `model.safetensors` or `report.json` its iteration and path. The VAE trainer
//! (`vae::train`) keeps it counted in epochs for its failed writes
//! ([`CpflowError::EpochCheckpointWrite`]). Checkpoints are replaced atomically, so a failed
//! write leaves it intact.

use std::path::PathBuf;

use crate::error::{CpflowError, Result};

/// The path and iteration (for the VAE: epochs done) of the last checkpoint a run wrote or
/// resumed from (none yet: `Default`).
#[derive(Clone, Debug, Default)]
pub(crate) struct LastCheckpoint(Option<(PathBuf, usize)>);

impl LastCheckpoint {
    /// The checkpoint at `path` of iteration `iteration` (the one a run resumes from).
    pub fn at(path: PathBuf, iteration: usize) -> Self {
        LastCheckpoint(Some((path, iteration)))
    }

    /// Its path, if there is one.
    pub fn path(&self) -> Option<PathBuf> {
        self.0.as_ref().map(|(p, _)| p.clone())
    }

    /// Takes the outcome of writing the checkpoint of iteration `iteration` to `path`: a
    /// success makes it the last one; a failure is [`CpflowError::CheckpointWrite`], naming
    /// this last one while its file is still there.
    pub fn record_write(
        &mut self,
        written: Result<()>,
        path: PathBuf,
        iteration: usize,
    ) -> Result<()> {
        match written {
            Ok(()) => {
                self.0 = Some((path, iteration));
                Ok(())
            }
            Err(e) => Err(self.failed_write("the checkpoint", iteration, e)),
        }
    }

    /// Takes the outcome of writing another file of the run (`what`: "metrics.jsonl",
    /// "model.safetensors", "report.json") at iteration `iteration`: a failure is
    /// [`CpflowError::CheckpointWrite`] naming the file and this last checkpoint (which the
    /// write did not touch), so that the message says where the run is saved and the CLI
    /// the command that continues it.
    pub fn written<T>(&self, what: &'static str, iteration: usize, write: Result<T>) -> Result<T> {
        write.map_err(|e| self.failed_write(what, iteration, e))
    }

    /// [`Self::written`] for a trainer counted in epochs (the VAE's, whose last checkpoint
    /// holds the epochs done): a failure of `write` of `what` at `epoch` is
    /// [`CpflowError::EpochCheckpointWrite`] naming this last checkpoint while its file is
    /// still there.
    #[cfg(feature = "vae")]
    pub fn written_at_epoch<T>(
        &self,
        what: &'static str,
        epoch: usize,
        write: Result<T>,
    ) -> Result<T> {
        write.map_err(|cause| CpflowError::EpochCheckpointWrite {
            what,
            epoch,
            saved: self.on_disk(),
            cause: Box::new(cause),
        })
    }

    /// The failed write of `what` at `iteration`, naming this last checkpoint while its file
    /// is still there.
    fn failed_write(
        &self,
        what: &'static str,
        iteration: usize,
        cause: CpflowError,
    ) -> CpflowError {
        CpflowError::CheckpointWrite {
            what,
            iteration,
            saved: self.on_disk(),
            cause: Box::new(cause),
        }
    }

    /// Its iteration (or epoch) and path while its file is still there (a failed write
    /// names only a checkpoint that can resume the run).
    fn on_disk(&self) -> Option<(usize, PathBuf)> {
        self.0
            .clone()
            .filter(|(p, _)| p.is_file())
            .map(|(p, it)| (it, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Result<()> {
        Err(CpflowError::Internal("disk full".into()))
    }

    /// A write becomes the last checkpoint; a failed one names it while its file exists,
    /// and nothing once it is gone (or before any was written).
    #[test]
    fn a_failed_write_names_the_last_checkpoint_on_disk() {
        let dir = std::env::temp_dir().join(format!("cpflow-last-ck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.safetensors");
        let mut last = LastCheckpoint::default();
        let saved = |e: CpflowError| match e {
            CpflowError::CheckpointWrite {
                iteration, saved, ..
            } => (iteration, saved),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            saved(last.record_write(failed(), path.clone(), 2).unwrap_err()),
            (2, None)
        );
        std::fs::write(&path, b"x").unwrap();
        last.record_write(Ok(()), path.clone(), 3).unwrap();
        assert_eq!(last.path(), Some(path.clone()));
        assert_eq!(
            saved(last.record_write(failed(), path.clone(), 5).unwrap_err()),
            (5, Some((3, path.clone())))
        );
        // The failed write left the last one as it was.
        assert_eq!(last.path(), Some(path.clone()));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            saved(last.record_write(failed(), path.clone(), 6).unwrap_err()),
            (6, None)
        );
        // Another file's failed write names it and the last checkpoint, which it leaves.
        std::fs::write(&path, b"x").unwrap();
        let err = LastCheckpoint::at(path.clone(), 7)
            .written("metrics.jsonl", 9, failed())
            .unwrap_err();
        assert!(
            matches!(&err, CpflowError::CheckpointWrite { what: "metrics.jsonl", iteration: 9, saved: Some((7, p)), .. } if *p == path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "writing metrics.jsonl at iteration 9 failed (internal error: disk full); the run \
                 is saved at iteration 7 (the last checkpoint, {})",
                path.display()
            )
        );
        assert_eq!(
            LastCheckpoint::default()
                .written("report.json", 1, Ok(3))
                .unwrap(),
            3
        );
        assert_eq!(
            LastCheckpoint::at(path.clone(), 7).path(),
            Some(path.clone())
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
