//! Output files renamed into place as one unit (`sample --output S --log-prob L`). Every file
//! is first written in full to a temporary file beside it and synced ([`StagedFile`]); only
//! then are they renamed onto their paths, in order. If a rename fails, the files already
//! renamed are put back as they were: a file that was there is kept as a hidden backup beside
//! it (`.NAME.bak-PID`, a hard link where the filesystem has them) until every rename has
//! succeeded, and a file that was not there is removed. A failed command thus leaves all the
//! old files (or none) and no temporary or backup file. What no program can undo: a crash or
//! a power loss between two renames. The backup then stays beside its file, and the first
//! file is the new one while the later ones are old. The next command that replaces the same
//! file removes such a backup once its own files are in place, with a warning naming it, when
//! it is surely stale ([`stale_backups`]): its name ends in a process id of this system, that
//! process no longer runs, and it is older than any command can be between its renames (10
//! minutes). Otherwise it is kept: silently when its name is not one of ours (a user's
//! `.s.csv.bak-20240101`) or its process runs; with a warning naming it when its process is
//! not seen but it is recent (a command on another machine or in another container sharing
//! the directory may still be between its renames) or where processes cannot be seen (no
//! `/proc`).

use anyhow::{Context, Result, anyhow};
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{dir_of, hidden_file_beside, sync_dir, write_synced};

mod stale_backups;
use stale_backups::remove_stale_backups;

/// A complete, synced temporary file beside `path`, waiting to be renamed onto it by
/// [`finish_together`]. Dropped before that (an error elsewhere), it removes the temporary
/// file.
pub struct StagedFile {
    path: PathBuf,
    tmp: PathBuf,
    what: &'static str,
    renamed: bool,
}

impl StagedFile {
    /// Takes charge of the temporary file `tmp` of `path` (holding `what`, for messages).
    pub(super) fn new(path: PathBuf, tmp: PathBuf, what: &'static str) -> Self {
        StagedFile {
            path,
            tmp,
            what,
            renamed: false,
        }
    }

    /// Stages `bytes` as `what` for `path`: writes them to its temporary file and syncs it
    /// (the one write of the file). On an error the temporary file is removed.
    pub fn write_bytes(path: &Path, what: &'static str, bytes: &[u8]) -> Result<Self> {
        let staged = StagedFile::new(path.to_path_buf(), hidden_file_beside(path, "tmp"), what);
        write_synced(&staged.tmp, bytes).with_context(|| {
            format!(
                "writing the {what} to {} (the temporary file of {})",
                staged.tmp.display(),
                path.display()
            )
        })?;
        Ok(staged)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A file still to be finished: called, it completes and syncs its temporary file.
pub type PendingFile<'a> = Box<dyn FnOnce() -> Result<StagedFile> + 'a>;

/// Finishes `files` as one unit: stages every one, in order (an error there removes the
/// temporary files and leaves every path as it was), then renames them onto their paths,
/// putting the renamed ones back as they were if a later rename fails (module doc).
pub fn finish_together(files: Vec<PendingFile<'_>>) -> Result<()> {
    let staged = files
        .into_iter()
        .map(|stage| stage())
        .collect::<Result<Vec<_>>>()?;
    rename_together(staged, &mut Filesystem)
}

/// The filesystem steps of [`rename_together`]; the tests make one of them fail.
trait RenameSteps {
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn hard_link(&mut self, original: &Path, link: &Path) -> io::Result<()> {
        std::fs::hard_link(original, link)
    }
    /// The age from which a backup of a process that is gone is removed (the tests give 0).
    fn stale_backup_age(&self) -> std::time::Duration {
        stale_backups::MIN_AGE
    }
}

/// The real filesystem.
struct Filesystem;

impl RenameSteps for Filesystem {}

/// How the file a staged file replaces was kept.
enum Previous {
    /// There was none, or it need not be kept (the last file: its rename is atomic).
    None,
    /// A hard link to it: its path still holds it until the rename.
    Linked(PathBuf),
    /// Moved aside (no hard links on this filesystem): its path is empty until the rename.
    Moved(PathBuf),
}

impl Previous {
    fn backup(&self) -> Option<&Path> {
        match self {
            Previous::None => None,
            Previous::Linked(b) | Previous::Moved(b) => Some(b),
        }
    }
}

/// Renames every staged file onto its path, in order; if one fails, undoes the renames
/// before it. Backups are removed (and the directories synced) once all have succeeded.
fn rename_together(mut files: Vec<StagedFile>, fs: &mut dyn RenameSteps) -> Result<()> {
    let mut kept: Vec<Previous> = Vec::with_capacity(files.len());
    for i in 0..files.len() {
        let keep_previous = i + 1 < files.len();
        match rename_one(&files[i], keep_previous, fs) {
            Ok(previous) => {
                files[i].renamed = true;
                kept.push(previous);
            }
            Err(e) if i == 0 => return Err(e),
            Err(e) => {
                let undone = undo(&files[..i], kept, fs);
                return Err(e.context(format!("the output files were not written ({undone})")));
            }
        }
    }
    for backup in kept.iter().filter_map(Previous::backup) {
        if let Err(e) = std::fs::remove_file(backup) {
            tracing::warn!(backup = %backup.display(), error = %e, "could not remove a backup");
        }
    }
    sync_directories(&files);
    for f in &files {
        remove_stale_backups(&f.path, fs.stale_backup_age());
    }
    Ok(())
}

/// Renames `f` onto its path, first keeping the file there (if any) as a backup when
/// `keep_previous` (a later rename may fail). On an error nothing of `f`'s path has changed.
fn rename_one(f: &StagedFile, keep_previous: bool, fs: &mut dyn RenameSteps) -> Result<Previous> {
    let previous = match std::fs::symlink_metadata(&f.path) {
        Ok(m) if keep_previous && !m.is_dir() => back_up(&f.path, fs)?,
        _ => Previous::None,
    };
    if let Err(e) = fs.rename(&f.tmp, &f.path) {
        let mut msg = format!(
            "renaming {} to {} (the {})",
            f.tmp.display(),
            f.path.display(),
            f.what
        );
        match &previous {
            Previous::None => {}
            Previous::Linked(b) => {
                let _ = std::fs::remove_file(b);
            }
            Previous::Moved(b) => {
                if let Err(back) = fs.rename(b, &f.path) {
                    msg.push_str(&format!(
                        "; putting the previous {} back failed too ({back}): it is kept as {}",
                        f.path.display(),
                        b.display()
                    ));
                }
            }
        }
        return Err(anyhow!(e).context(msg));
    }
    Ok(previous)
}

/// Keeps the file at `path` as `.NAME.bak-PID` beside it: a hard link, or (on a filesystem
/// without them) the file moved there.
fn back_up(path: &Path, fs: &mut dyn RenameSteps) -> Result<Previous> {
    let backup = hidden_file_beside(path, "bak");
    // A backup of this process id can only be left by a killed earlier run.
    let _ = std::fs::remove_file(&backup);
    if fs.hard_link(path, &backup).is_ok() {
        return Ok(Previous::Linked(backup));
    }
    fs.rename(path, &backup).with_context(|| {
        format!(
            "keeping the previous {} as {} until the other output files are in place",
            path.display(),
            backup.display()
        )
    })?;
    Ok(Previous::Moved(backup))
}

/// Puts the renamed `files` back as they were (`kept`: what each replaced), last first;
/// returns what was done, for the error (`S was put back as it was`).
fn undo(files: &[StagedFile], kept: Vec<Previous>, fs: &mut dyn RenameSteps) -> String {
    let mut done = Vec::new();
    for (f, previous) in files.iter().zip(kept).rev() {
        let p = f.path.display();
        done.push(match previous.backup() {
            Some(b) => match fs.rename(b, &f.path) {
                Ok(()) => format!("{p} was put back as it was"),
                Err(e) => format!(
                    "putting the previous {p} back failed ({e}): it is kept as {}",
                    b.display()
                ),
            },
            None => match std::fs::remove_file(&f.path) {
                Ok(()) => format!("the new {p} was removed"),
                Err(e) => format!("removing the new {p} failed ({e})"),
            },
        });
    }
    done.join("; ")
}

/// Syncs the directories of `files` (best effort: the renames are durable once their
/// entries are on disk; a directory cannot be opened for syncing on every platform).
fn sync_directories(files: &[StagedFile]) {
    let mut dirs: Vec<&Path> = files.iter().map(|f| dir_of(&f.path)).collect();
    dirs.dedup();
    for d in dirs {
        sync_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output_files::{RowType, RowValues, RowsWriter};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpflow-together-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The names in `dir`, sorted (hidden temporary and backup files included).
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// A one-column CSV writer of `values` (all rows written), labelled `what`.
    fn rows(path: &Path, values: &[f64], what: &'static str) -> RowsWriter {
        let mut w = RowsWriter::create_labelled(path, 1, values.len(), RowType::F64, what).unwrap();
        w.write(RowValues::F64(values)).unwrap();
        w
    }

    /// The real filesystem, except that renaming onto `fail_onto` fails, and so does a rename
    /// onto `fail_restore_of` from anything but its temporary file (putting a backup back);
    /// without `links`, hard links are unsupported.
    struct Injected {
        fail_onto: PathBuf,
        fail_restore_of: Option<PathBuf>,
        links: bool,
    }

    impl RenameSteps for Injected {
        fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
            let restoring = self.fail_restore_of.as_deref() == Some(to)
                && from != hidden_file_beside(to, "tmp");
            if to == self.fail_onto || restoring {
                return Err(io::Error::other("injected rename failure"));
            }
            std::fs::rename(from, to)
        }
        fn hard_link(&mut self, original: &Path, link: &Path) -> io::Result<()> {
            if self.links {
                std::fs::hard_link(original, link)
            } else {
                Err(io::Error::new(io::ErrorKind::Unsupported, "no hard links"))
            }
        }
    }

    /// An old pair `s.csv`, `lp.csv` in a fresh directory `name`: `(dir, s, lp)`.
    fn old_pair(name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = temp(name);
        let (s, lp) = (dir.join("s.csv"), dir.join("lp.csv"));
        std::fs::write(&s, "old s\n").unwrap();
        std::fs::write(&lp, "old lp\n").unwrap();
        (dir, s, lp)
    }

    /// The second rename (onto the log-prob file) fails: the samples file already renamed is
    /// put back as it was (from a hard-linked or a moved backup), or removed if there was
    /// none; no temporary or backup file is left. The old code renamed the samples and left
    /// them beside the old log-densities.
    #[test]
    fn a_failed_second_rename_puts_the_first_file_back() {
        for links in [true, false] {
            let (dir, s, lp) = old_pair(&format!("rename-{links}"));
            let staged = vec![
                rows(&s, &[1.0, 2.0], "samples").stage().unwrap(),
                rows(&lp, &[-1.0, -2.0], "log-densities").stage().unwrap(),
            ];
            let mut fs = Injected {
                fail_onto: lp.clone(),
                fail_restore_of: None,
                links,
            };
            let err = format!("{:#}", rename_together(staged, &mut fs).unwrap_err());
            assert!(err.contains("injected rename failure"), "{err}");
            assert!(
                err.contains(&format!("{} was put back as it was", s.display())),
                "{err}"
            );
            assert!(err.contains("(the log-densities)"), "{err}");
            assert_eq!((read(&s), read(&lp)), ("old s\n".into(), "old lp\n".into()));
            assert_eq!(names(&dir), ["lp.csv", "s.csv"], "links: {links}");

            // No previous samples file: the new one is removed.
            std::fs::remove_file(&s).unwrap();
            let staged = vec![
                rows(&s, &[1.0], "samples").stage().unwrap(),
                rows(&lp, &[-1.0], "log-densities").stage().unwrap(),
            ];
            let err = format!("{:#}", rename_together(staged, &mut fs).unwrap_err());
            assert!(
                err.contains(&format!("the new {} was removed", s.display())),
                "{err}"
            );
            assert_eq!(names(&dir), ["lp.csv"]);
            assert_eq!(read(&lp), "old lp\n");
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    /// If putting the previous samples file back fails too, the error says where it is kept
    /// (the backup is not removed).
    #[test]
    fn a_backup_that_cannot_be_put_back_is_kept_and_named() {
        let (dir, s, lp) = old_pair("restore");
        let staged = vec![
            rows(&s, &[1.0], "samples").stage().unwrap(),
            rows(&lp, &[-1.0], "log-densities").stage().unwrap(),
        ];
        let mut fs = Injected {
            fail_onto: lp.clone(),
            fail_restore_of: Some(s.clone()),
            links: true,
        };
        let err = format!("{:#}", rename_together(staged, &mut fs).unwrap_err());
        let backup = hidden_file_beside(&s, "bak");
        assert!(
            err.contains(&format!("it is kept as {}", backup.display())),
            "{err}"
        );
        assert_eq!(read(&backup), "old s\n");
        assert_eq!(read(&lp), "old lp\n");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A write error while finishing the second file (a full disk: its temporary file is
    /// `/dev/full`) leaves the old pair untouched and no temporary file: nothing is renamed
    /// before both files are complete. The old code had renamed the new samples already.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_of_the_second_file_leaves_the_old_pair() {
        let (dir, s, lp) = old_pair("late-write");
        std::os::unix::fs::symlink("/dev/full", hidden_file_beside(&lp, "tmp")).unwrap();
        let samples = rows(&s, &[1.0, 2.0], "samples");
        let log_densities = rows(&lp, &[-1.0, -2.0], "log-densities");
        let err = finish_together(vec![
            Box::new(move || samples.stage()),
            Box::new(move || log_densities.stage()),
        ])
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("writing log-densities to"), "{err}");
        assert_eq!((read(&s), read(&lp)), ("old s\n".into(), "old lp\n".into()));
        assert_eq!(names(&dir), ["lp.csv", "s.csv"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Both renames succeed: the new pair replaces the old one, and no backup is left.
    #[test]
    fn a_pair_replaces_the_old_pair_and_leaves_no_backup() {
        let (dir, s, lp) = old_pair("ok");
        let samples = rows(&s, &[1.0, 2.5], "samples");
        let log_densities = rows(&lp, &[-1.0, -2.0], "log-densities");
        finish_together(vec![
            Box::new(move || samples.stage()),
            Box::new(move || log_densities.stage()),
        ])
        .unwrap();
        assert_eq!(
            (read(&s), read(&lp)),
            ("1\n2.5\n".into(), "-1\n-2\n".into())
        );
        assert_eq!(names(&dir), ["lp.csv", "s.csv"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The real filesystem, backups of processes that are gone taken as stale at any age.
    struct StaleAtOnce;

    impl RenameSteps for StaleAtOnce {
        fn stale_backup_age(&self) -> std::time::Duration {
            std::time::Duration::ZERO
        }
    }

    /// A backup left by a command that stopped between its renames (its process is gone) is
    /// kept while it is recent (the command may run where `/proc` cannot see it), then
    /// removed once the next pair is in place (here: stale at any age). A running process's
    /// backup (pid 1), other hidden files and a user's date-stamped backup stay. The old code
    /// removed the recent backup and the user's file.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_stale_backup_goes_once_the_next_pair_is_in_place() {
        let (dir, s, lp) = old_pair("stale");
        let gone = stale_backups::ended_process_id();
        let stale = dir.join(format!(".s.csv.bak-{gone}"));
        let others = [".s.csv.bak-1", ".s.csv.bak-20240101", ".s.csv.bak-x1"];
        for f in others.iter().map(|n| dir.join(n)).chain([stale.clone()]) {
            std::fs::write(f, "older s\n").unwrap();
        }
        let pair = |x: f64| {
            vec![
                rows(&s, &[x], "samples").stage().unwrap(),
                rows(&lp, &[-x], "log-densities").stage().unwrap(),
            ]
        };
        let stale_name = format!(".s.csv.bak-{gone}");
        let mut with_stale: Vec<&str> = others.to_vec();
        with_stale.extend([stale_name.as_str(), "lp.csv", "s.csv"]);
        with_stale.sort();
        rename_together(pair(1.0), &mut Filesystem).unwrap();
        assert_eq!(names(&dir), with_stale);
        rename_together(pair(2.0), &mut StaleAtOnce).unwrap();
        assert_eq!(
            names(&dir),
            [others[0], others[1], others[2], "lp.csv", "s.csv"]
        );
        assert_eq!((read(&s), read(&lp)), ("2\n".into(), "-2\n".into()));
        std::fs::remove_dir_all(&dir).ok();
    }
}
