//! Backups `.NAME.bak-PID` left beside an output by a command that stopped between its
//! renames ([`super`]'s module doc), removed by the next command that replaces the same file.
//!
//! A backup is removed only when all of these hold, else it is kept (with a warning when it
//! looks like one of ours):
//! - it is not a directory. A backup is whatever was at the output's path, not a directory
//!   (`back_up`: a hard link to it, which for a symbolic link is the link itself, or it moved
//!   aside), so a directory so named is not ours: it is left without a warning, which would
//!   only repeat at every command that replaces the file, about an entry that is not ours;
//! - its suffix is a process id as this system writes them: plain digits, no sign, no
//!   leading zero, at most the kernel's `pid_max` (`/proc/sys/kernel/pid_max`; 2^22, Linux's
//!   largest, where it cannot be read). A user's `.s.csv.bak-20240101` is not ours;
//! - that process does not run here (`/proc/PID`; where `/proc` is missing this cannot be
//!   told and the backup is kept);
//! - the backup is at least [`MIN_AGE`] old. A command makes its backup immediately before
//!   its renames, which take milliseconds, so an older backup is no command's that is still
//!   between them. This matters where `/proc` cannot see the process although it runs: a
//!   directory shared over NFS or with another container, or `/proc` mounted `hidepid`.
//!
//! The age is that of the backup's inode change time (ctime), measured against the ctime of
//! the file this command has just renamed into place: both are stamped by the clock of the
//! filesystem that holds them (a server's over NFS), so clocks that disagree between machines
//! do not matter. A hard link or a rename sets the ctime of the file (checked on ext4: `ln a
//! b`, `mv b c` each set it to the time of the call; the mtime stays the original file's, so
//! it says nothing about when the backup was made). A backup that still shares its inode
//! with the file it was made of (a command that stopped after linking it, before its
//! rename) is made younger again when that file is replaced: it is kept, and removed by a
//! later command; erring towards keeping is the safe side.

use std::path::Path;
use std::time::Duration;

use crate::checkpoint::hidden_file_prefix;
use crate::cli::process_ids::{files_of_other_processes, pid_max, process_running};

/// The age from which a backup of a process that does not run here is taken as left by a
/// command that stopped between its renames (a running command's is milliseconds old).
pub(super) const MIN_AGE: Duration = Duration::from_secs(10 * 60);

/// Removes the stale backups of `path` (module doc), those at least `min_age` old
/// ([`MIN_AGE`]; the tests give less), once `path` has been replaced by this command's file;
/// each removal, and each backup kept although its process is gone, is a warning naming it.
pub(super) fn remove_stale_backups(path: &Path, min_age: Duration) {
    // This command's file was renamed into place just now: its ctime is the filesystem's
    // "now". Without it (no ctime on this platform), nothing is removed.
    let Some(now) = change_time_ns(path) else {
        return;
    };
    for warning in remove_stale_backups_at(path, now, min_age, pid_max()) {
        tracing::warn!("{warning}");
    }
}

/// [`remove_stale_backups`] with the filesystem's time `now` (nanoseconds since the epoch,
/// as [`change_time_ns`] gives them) and the largest process id `pid_max` given (the tests
/// move the clock on); returns the warnings.
fn remove_stale_backups_at(path: &Path, now: i128, min_age: Duration, pid_max: u32) -> Vec<String> {
    // The backups of `path` are named as the writers name them: `.NAME.bak-PID`.
    let (dir, prefix) = hidden_file_prefix(path, "bak");
    let of_path = |name: &str| format!(".{name}.bak-") == prefix;
    let mut warnings = Vec::new();
    for found in files_of_other_processes(&dir, "bak", of_path, pid_max) {
        let (pid, backup) = (found.pid, found.hidden);
        if std::fs::symlink_metadata(&backup).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let (p, b) = (path.display(), backup.display());
        let age = match process_running(pid) {
            Some(true) => continue,
            Some(false) => change_time_ns(&backup).map(|t| now - t),
            None => {
                warnings.push(format!(
                    "{b} may be a backup of {p} left by a command (process {pid}) that stopped \
                     between renaming its output files: remove it once no command of that \
                     process is running"
                ));
                continue;
            }
        };
        match age {
            Some(age) if age >= min_age.as_nanos() as i128 => {
                warnings.push(match std::fs::remove_file(&backup) {
                    Ok(()) => format!(
                        "removed {b}: a backup of {p} from before an earlier command (process \
                         {pid}) that stopped between renaming its output files (the files it \
                         wrote after {p} may have been left older); {p} is now this command's"
                    ),
                    Err(e) => format!(
                        "{b} is a backup of {p} from before an earlier command (process {pid}) \
                         that stopped between renaming its output files; removing it failed \
                         ({e}): remove it by hand"
                    ),
                });
            }
            _ => warnings.push(format!(
                "kept {b}: a backup of {p} made by process {pid}, which does not run here, \
                 less than {} minutes ago (or at a time that cannot be read), so it may belong \
                 to a command on another machine or in another container still writing {p}; \
                 a later command removes it, or remove it by hand once no command writes {p}",
                min_age.as_secs() / 60
            )),
        }
    }
    warnings
}

/// The inode change time (ctime) of the file at `path`, in nanoseconds since the epoch;
/// `None` where it cannot be read (or on a platform without one).
fn change_time_ns(path: &Path) -> Option<i128> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The id of a process that has just ended (not reused within a test).
#[cfg(test)]
pub(super) fn ended_process_id() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpflow-stale-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// With the clock moved on past `MIN_AGE`, a backup of a process that is gone is removed
    /// (warning); made just now, it is kept (warning: a command elsewhere may still be
    /// between its renames). Not ours and kept silently, however old: a user's date-stamped
    /// `.s.csv.bak-20240101`, a signed `+PID`, a leading zero; a running process's backup
    /// (this process, pid 1). The old code removed the fresh one, the `+PID` one and (as no
    /// process 20240101 runs) the user's file.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_old_backup_of_a_gone_process_goes_a_fresh_one_and_users_files_stay() {
        let d = dir("ages");
        let s = d.join("s.csv");
        std::fs::write(&s, "new s\n").unwrap();
        let gone = ended_process_id();
        let backup = d.join(format!(".s.csv.bak-{gone}"));
        let kept = [
            d.join(".s.csv.bak-20240101"),
            d.join(format!(".s.csv.bak-+{gone}")),
            d.join(format!(".s.csv.bak-0{gone}")),
            d.join(".s.csv.bak-1"),
            d.join(format!(".s.csv.bak-{}", std::process::id())),
        ];
        for f in kept.iter().chain([&backup]) {
            std::fs::write(f, "older s\n").unwrap();
        }
        let now = change_time_ns(&s).unwrap();
        // Made now: kept, with a warning naming it.
        let warnings = remove_stale_backups_at(&s, now, MIN_AGE, pid_max());
        assert!(backup.exists());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!("kept {}", backup.display()))
                && warnings[0].contains(&format!("process {gone}, which does not run here")),
            "{warnings:?}"
        );
        // The same one 10 minutes after it was made: removed, with a warning.
        let later = change_time_ns(&backup).unwrap() + MIN_AGE.as_nanos() as i128;
        let warnings = remove_stale_backups_at(&s, later, MIN_AGE, pid_max());
        assert!(!backup.exists());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!("removed {}", backup.display())),
            "{warnings:?}"
        );
        for f in &kept {
            assert!(f.exists(), "{} was removed", f.display());
        }
        std::fs::remove_dir_all(&d).ok();
    }

    /// A directory named as a backup of a process that is gone is not ours (backups are
    /// never directories): left, without a warning, however old. A symbolic link is a backup
    /// of ours (`back_up` hard-links the link itself) and is removed like a file. The old code
    /// tried `remove_file` on the directory and warned "removing it failed … remove it by
    /// hand".
    #[cfg(target_os = "linux")]
    #[test]
    fn a_directory_named_as_a_backup_is_left_silently() {
        let d = dir("directory");
        let s = d.join("s.csv");
        std::fs::write(&s, "new s\n").unwrap();
        let gone = ended_process_id();
        let not_ours = d.join(format!(".s.csv.bak-{gone}"));
        std::fs::create_dir(&not_ours).unwrap();
        std::fs::write(not_ours.join("inside"), "x").unwrap();
        let later = change_time_ns(&not_ours).unwrap() + MIN_AGE.as_nanos() as i128;
        let warnings = remove_stale_backups_at(&s, later, MIN_AGE, pid_max());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(not_ours.join("inside").exists());
        // A link backup of a gone process is removed (the link, not its target).
        let gone = ended_process_id();
        let link = d.join(format!(".s.csv.bak-{gone}"));
        std::os::unix::fs::symlink(&s, &link).unwrap();
        let later = change_time_ns(&link).unwrap() + MIN_AGE.as_nanos() as i128;
        let warnings = remove_stale_backups_at(&s, later, MIN_AGE, pid_max());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!("removed {}", link.display())),
            "{warnings:?}"
        );
        assert!(std::fs::symlink_metadata(&link).is_err() && s.exists());
        assert!(not_ours.is_dir());
        std::fs::remove_dir_all(&d).ok();
    }
}
