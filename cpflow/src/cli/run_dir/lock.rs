//! The lock of a run directory: every command that writes into one (`train`, `vae`, `ot`,
//! `import-reference`) holds an exclusive lock on its `.cpflow.lock` while it runs, and
//! refuses a directory whose lock another process holds, `--overwrite` or not (an `ot` or an
//! `import-reference --overwrite` wrote beside, or replaced, the files of a `train` that was
//! still running).

use anyhow::{Context, Result};
use std::path::Path;

/// The file whose lock a command that writes into a run directory holds.
pub const LOCK_FILE: &str = ".cpflow.lock";

/// The refusal of `out`, held by another process through `path`.
fn in_use(out: &Path, path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is in use by another cpflow process (it holds the lock on {}): wait for it to \
         end (Ctrl-C stops a run and saves it), or give another --out",
        out.display(),
        path.display()
    )
}

/// Takes the run directory for this process: an exclusive lock on `out/.cpflow.lock`
/// (creating `out`), held until the returned file is dropped (or the process ends, however
/// it ends). A second command on the same `--out` (a `--resume` or `--overwrite` while the
/// run goes on, an `ot` or an `import-reference` into it) is refused instead of writing into
/// the same files. Once locked, the temporary files that killed commands left beside the
/// run's files are removed ([`super::leftover_temps`]). Call it once every check has passed,
/// before anything in `out` changes. On a file system without locks it warns and goes on
/// (and removes nothing).
pub fn lock_run_dir(out: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // This process is now the only cpflow command writing the run's files here: the
            // temporary files of those that earlier commands, killed while writing them,
            // left behind can go.
            super::leftover_temps::remove_leftover_temp_files(out);
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(in_use(out, &path)),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot lock the run directory; a second cpflow process on it would not be refused"
            );
            Ok(file)
        }
    }
}

/// Whether another process holds `out`'s run lock (a run going on there). Probes without
/// creating the lock file; a file system without locks answers no.
pub fn held_by_another_process(out: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(out.join(LOCK_FILE))
    else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Refuses `out` when another process holds its lock, before anything is read or written:
/// the same refusal as [`lock_run_dir`]'s, said before the checks that take time (reading
/// weights or data). The lock itself is taken later, by [`lock_run_dir`].
pub fn refuse_held_dir(out: &Path) -> Result<()> {
    if held_by_another_process(out) {
        return Err(in_use(out, &out.join(LOCK_FILE)));
    }
    Ok(())
}
