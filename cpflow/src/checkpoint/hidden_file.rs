//! The hidden files written beside an output while it is replaced: `.NAME.TAG-PID` (the
//! temporary file of [`super::write_atomic`] and of the command line's staged outputs, tag
//! `tmp`; the backup of a file replaced with others as one unit, tag `bak`). One place builds
//! the name, so that every writer's leftovers read the same and can be recognised: the
//! command line removes the `tmp` files of dead processes beside a run's own files when it
//! takes the run directory's lock (`cli::run_dir`), and stale backups when it replaces the
//! file they back up.

use std::path::{Path, PathBuf};

/// The name of `path`'s file when it has none (`..`, `/`): the hidden files are then
/// `.output.TAG-PID`.
const NO_NAME: &str = "output";

/// The directory of `path`: its parent, or `.` when it has none (`/`) or an empty one (a
/// bare file name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The directory of `path` ([`dir_of`]) and the start `.NAME.TAG-` of its hidden `TAG`
/// files, to which a process id is appended.
pub(crate) fn hidden_file_prefix(path: &Path, tag: &str) -> (PathBuf, String) {
    let dir = dir_of(path).to_path_buf();
    let name = path
        .file_name()
        .map_or_else(|| NO_NAME.into(), |n| n.to_string_lossy().into_owned());
    (dir, format!(".{name}.{tag}-"))
}

/// The hidden file `.NAME.TAG-PID` beside `path`, `PID` this process's id.
pub(crate) fn hidden_file_beside(path: &Path, tag: &str) -> PathBuf {
    let (dir, prefix) = hidden_file_prefix(path, tag);
    dir.join(format!("{prefix}{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_files_are_named_after_their_file_and_process() {
        let pid = std::process::id();
        assert_eq!(
            hidden_file_beside(Path::new("out/s.npy"), "tmp"),
            PathBuf::from(format!("out/.s.npy.tmp-{pid}"))
        );
        assert_eq!(
            hidden_file_beside(Path::new("s.npy"), "bak"),
            PathBuf::from(format!("./.s.npy.bak-{pid}"))
        );
        assert_eq!(dir_of(Path::new("out/s.npy")), Path::new("out"));
        assert_eq!(dir_of(Path::new("s.npy")), Path::new("."));
        assert_eq!(dir_of(Path::new("/")), Path::new("."));
        assert_eq!(
            hidden_file_prefix(Path::new("/"), "tmp"),
            (PathBuf::from("."), ".output.tmp-".to_string())
        );
    }
}
