//! Temporary files `.NAME.tmp-PID` (`crate::checkpoint::hidden_file_prefix`) left in a run
//! directory by a command that was killed while writing its file `NAME` atomically (a
//! `kill -9` during a checkpoint write left `.checkpoint.safetensors.tmp-PID`, as large as
//! the checkpoint, for good). A command that takes the directory's lock ([`super::lock`]) is
//! the only cpflow command writing the run's files there, so it removes them, logging each.
//!
//! A hidden file is removed only when all of these hold, else it stays:
//! - `NAME` is a file that a command which locks the directory writes there (a run's files
//!   and the `cpflow ot` outputs, [`is_run_file`], and the figures in `plots/`,
//!   [`is_plot_file`]): the outputs of `sample` or `eval`, which do not lock, or a user's
//!   files, are never touched;
//! - `PID` is a process id as this system writes them (plain digits, no leading zero, at
//!   most the kernel's `pid_max`), not this process's;
//! - that process does not run (`/proc/PID`; where `/proc` is missing this cannot be told
//!   and nothing is removed): a command still writing such a name (a `sample -o
//!   RUN/report.json`) keeps its file;
//! - it is a plain file (not a directory or a link).

use std::path::{Path, PathBuf};

use super::{TRAIN_RUN, VAE_RUN};
use crate::cli::model_plots::planned_files;
use crate::cli::process_ids::{files_of_other_processes, pid_max, process_running};
use crate::cli::run_kind::is_ot_output;

/// Whether `name` is a file that the commands which lock a run directory (`train`, `vae`,
/// `ot`, `import-reference`) write atomically at its top level: a run's files (those that
/// `--overwrite` removes, [`TRAIN_RUN`] and [`VAE_RUN`]) and `cpflow ot`'s outputs.
fn is_run_file(name: &str) -> bool {
    [&TRAIN_RUN, &VAE_RUN]
        .iter()
        .any(|run| run.removed.contains(&name))
        || is_ot_output(name)
}

/// Whether `name` is one of the figures (or their list) that `train` and `plot` write into
/// the run's `plots/` ([`planned_files`] with every figure).
fn is_plot_file(name: &str) -> bool {
    planned_files(true, true).contains(&name)
}

/// Removes the temporary files that processes no longer running left in the run directory
/// `out` (module doc), logging each removal (info) and each failure to remove one (warning).
/// Called with `out`'s lock held.
pub(super) fn remove_leftover_temp_files(out: &Path) {
    // Without `/proc` (whether a process runs cannot be told), nothing is removed.
    if process_running(std::process::id()).is_none() {
        return;
    }
    let pid_max = pid_max();
    for (dir, ours) in [
        (out.to_path_buf(), is_run_file as fn(&str) -> bool),
        (out.join("plots"), is_plot_file),
    ] {
        for (file, pid, temp) in leftover_temp_files(&dir, ours, pid_max) {
            if process_running(pid) != Some(false) {
                continue;
            }
            let (t, f) = (temp.display(), file.display());
            match std::fs::remove_file(&temp) {
                Ok(()) => tracing::info!(
                    "removed {t}: the temporary file of {f} left by process {pid}, which was \
                     stopped while writing it"
                ),
                Err(e) => tracing::warn!(
                    "{t} is the temporary file of {f} left by process {pid}, which was stopped \
                     while writing it; removing it failed ({e}): remove it by hand"
                ),
            }
        }
    }
}

/// The hidden temporary files in `dir` of the files whose names `ours` accepts, with a suffix
/// that is a process id other than this process's, as `(file, pid, temporary file)`, sorted;
/// plain files only.
fn leftover_temp_files(
    dir: &Path,
    ours: fn(&str) -> bool,
    pid_max: u32,
) -> Vec<(PathBuf, u32, PathBuf)> {
    files_of_other_processes(dir, "tmp", ours, pid_max)
        .into_iter()
        .filter(|f| f.plain)
        .map(|f| (f.file, f.pid, f.hidden))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_temp_files_of_the_run_files_are_found() {
        let d = std::env::temp_dir().join(format!("cpflow-leftover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(".report.json.tmp-77")).unwrap();
        for name in [
            ".checkpoint.safetensors.tmp-12",
            ".ot_d16_curve.csv.tmp-13",
            ".checkpoint.safetensors.tmp-012",
            ".checkpoint.safetensors.tmp-99999999",
            ".checkpoint.safetensors.tmp-x12",
            "checkpoint.safetensors.tmp-12",
            ".notes.txt.tmp-12",
            ".ot_dx.csv.tmp-12",
            ".checkpoint.safetensors.bak-12",
            &format!(".model.safetensors.tmp-{}", std::process::id()),
        ] {
            std::fs::write(d.join(name), b"x").unwrap();
        }
        let found = leftover_temp_files(&d, is_run_file, 1 << 22);
        assert_eq!(
            found,
            vec![
                (
                    d.join("checkpoint.safetensors"),
                    12,
                    d.join(".checkpoint.safetensors.tmp-12")
                ),
                (
                    d.join("ot_d16_curve.csv"),
                    13,
                    d.join(".ot_d16_curve.csv.tmp-13")
                ),
            ]
        );
        // In plots/, only the figures' names.
        assert!(leftover_temp_files(&d, is_plot_file, 1 << 22).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
