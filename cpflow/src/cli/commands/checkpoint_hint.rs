//! The advice that `cpflow train` and `cpflow vae` add to a checkpoint that could not be
//! written during training.

use std::path::Path;

use crate::CpflowError;
use crate::cli::shell_words::resume_command;

/// A checkpoint, `metrics.jsonl` line, model or report that could not be written during or at
/// the end of training ([`CpflowError::CheckpointWrite`], [`CpflowError::EpochCheckpointWrite`]:
/// the message names the file, the iteration or epoch, and where the run is saved) with the
/// command that continues the run from its last checkpoint
/// (`cpflow <command> --out <out> --resume`), once the cause (a full disk, permissions) is
/// fixed; or, without one, how to start again. Other errors as they are.
pub(super) fn with_checkpoint_hint(e: CpflowError, command: &str, out: &Path) -> anyhow::Error {
    match e {
        e @ (CpflowError::CheckpointWrite { saved: Some(_), .. }
        | CpflowError::EpochCheckpointWrite { saved: Some(_), .. }) => anyhow::anyhow!(
            "{e}. Free disk space (or fix what the error names) and continue the run with `{}`",
            resume_command(command, out)
        ),
        e @ (CpflowError::CheckpointWrite { saved: None, .. }
        | CpflowError::EpochCheckpointWrite { saved: None, .. }) => anyhow::anyhow!(
            "{e}. Free disk space (or fix what the error names) and start the run again with \
             `--overwrite`"
        ),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::with_checkpoint_hint;
    use crate::CpflowError;

    fn write_failed(what: &'static str, saved: Option<(usize, PathBuf)>) -> CpflowError {
        CpflowError::EpochCheckpointWrite {
            what,
            epoch: 3,
            saved,
            cause: Box::new(CpflowError::Internal("no space left".into())),
        }
    }

    /// A VAE's: the epoch whose write failed, the epochs saved and `cpflow vae`'s resume
    /// command; without a checkpoint, start again.
    #[test]
    fn a_failed_vae_checkpoint_write_says_the_epochs_and_how_to_continue() {
        let out = PathBuf::from("runs/my vae");
        let saved = Some((2, out.join("checkpoint.safetensors")));
        let m = with_checkpoint_hint(write_failed("the checkpoint", saved), "vae", &out);
        assert_eq!(
            m.to_string(),
            "writing the checkpoint at epoch 3 failed (internal error: no space left); the \
             run is saved after epoch 2 (the last checkpoint, runs/my vae/checkpoint.safetensors). \
             Free disk space (or fix what the error names) and continue the run with \
             `cpflow vae --out 'runs/my vae' --resume`"
        );
        let saved = Some((0, out.join("checkpoint.safetensors")));
        let m = with_checkpoint_hint(write_failed("the best weights", saved), "vae", &out);
        let m = m.to_string();
        assert!(
            m.starts_with("writing the best weights at epoch 3 failed")
                && m.contains("the run is saved within epoch 1 (the last checkpoint"),
            "{m}"
        );
        let m = with_checkpoint_hint(write_failed("the checkpoint", None), "vae", &out);
        let m = m.to_string();
        assert!(
            m.contains("no earlier checkpoint was written")
                && m.contains("start the run again with `--overwrite`")
                && !m.contains("--resume"),
            "{m}"
        );
    }

    fn iteration_write_failed(saved: Option<(usize, PathBuf)>) -> CpflowError {
        iteration_file_write_failed("the checkpoint", saved)
    }

    fn iteration_file_write_failed(
        what: &'static str,
        saved: Option<(usize, PathBuf)>,
    ) -> CpflowError {
        CpflowError::CheckpointWrite {
            what,
            iteration: 200,
            saved,
            cause: Box::new(CpflowError::Internal("no space left".into())),
        }
    }

    /// `cpflow train`'s, with a checkpoint: the iteration that failed, the one saved and the command that
    /// continues the run; without one: start again. Other errors pass unchanged.
    #[test]
    fn a_failed_checkpoint_write_says_where_the_run_is_and_how_to_continue() {
        let out = PathBuf::from("runs/my run");
        let saved = Some((100, out.join("checkpoint.safetensors")));
        let m = with_checkpoint_hint(iteration_write_failed(saved), "train", &out).to_string();
        for part in [
            "writing the checkpoint at iteration 200 failed (internal error: no space left)",
            "the run is saved at iteration 100 (the last checkpoint, runs/my run/checkpoint.safetensors)",
            "Free disk space",
            "`cpflow train --out 'runs/my run' --resume`",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
        let m = with_checkpoint_hint(iteration_write_failed(None), "train", &out).to_string();
        assert!(
            m.contains("no earlier checkpoint was written")
                && m.contains("start the run again with `--overwrite`")
                && !m.contains("--resume"),
            "{m}"
        );
        // Another file of the run: named, with the same advice.
        let saved = Some((200, out.join("checkpoint.safetensors")));
        let failed = iteration_file_write_failed("report.json", saved);
        assert_eq!(
            with_checkpoint_hint(failed, "train", &out).to_string(),
            "writing report.json at iteration 200 failed (internal error: no space left); the \
             run is saved at iteration 200 (the last checkpoint, runs/my run/checkpoint.safetensors). \
             Free disk space (or fix what the error names) and continue the run with \
             `cpflow train --out 'runs/my run' --resume`"
        );
        let other = CpflowError::Checkpoint("corrupt".into());
        assert_eq!(
            with_checkpoint_hint(other, "train", &out).to_string(),
            "checkpoint error: corrupt"
        );
    }
}
