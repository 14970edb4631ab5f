//! The advice `cpflow train` adds to a checkpoint that could not be written.

use std::path::PathBuf;

use super::with_checkpoint_hint;
use crate::CpflowError;

fn write_failed(saved: Option<(usize, PathBuf)>) -> CpflowError {
    CpflowError::CheckpointWrite {
        iteration: 200,
        saved,
        cause: Box::new(CpflowError::Internal("no space left".into())),
    }
}

/// With a checkpoint: the iteration that failed, the one saved and the command that
/// continues the run; without one: start again. Other errors pass unchanged.
#[test]
fn a_failed_checkpoint_write_says_where_the_run_is_and_how_to_continue() {
    let out = PathBuf::from("runs/my run");
    let saved = Some((100, out.join("checkpoint.safetensors")));
    let m = with_checkpoint_hint(write_failed(saved), &out).to_string();
    for part in [
        "writing the checkpoint at iteration 200 failed (internal error: no space left)",
        "the run is saved at iteration 100 (the last checkpoint, runs/my run/checkpoint.safetensors)",
        "Free disk space",
        "`cpflow train --out 'runs/my run' --resume`",
    ] {
        assert!(m.contains(part), "{part}: {m}");
    }
    let m = with_checkpoint_hint(write_failed(None), &out).to_string();
    assert!(
        m.contains("no earlier checkpoint was written")
            && m.contains("start the run again with `--overwrite`")
            && !m.contains("--resume"),
        "{m}"
    );
    let other = CpflowError::Checkpoint("corrupt".into());
    assert_eq!(
        with_checkpoint_hint(other, &out).to_string(),
        "checkpoint error: corrupt"
    );
}
