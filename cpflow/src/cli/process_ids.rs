//! Process ids in the names of hidden files (`.NAME.tmp-PID`, `.NAME.bak-PID`) and whether
//! their process still runs: for the clean-up of files that a stopped command left behind
//! (`run_dir`'s leftover temporary files, `output_files`' stale backups): one scan of a
//! directory for such files ([`files_of_other_processes`]), which both use.

use std::path::{Path, PathBuf};

use crate::checkpoint::hidden_file_prefix;

/// The largest process id Linux allows (`PID_MAX_LIMIT`, 2^22 on 64-bit systems): the bound
/// when `/proc/sys/kernel/pid_max` cannot be read.
pub(crate) const PID_MAX_LIMIT: u32 = 1 << 22;

/// The process id that `suffix` names, if it is one this system writes: plain digits without
/// a sign or a leading zero, from 1 to `pid_max`.
pub(crate) fn process_id(suffix: &str, pid_max: u32) -> Option<u32> {
    if suffix.is_empty() || suffix.starts_with('0') || !suffix.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    suffix.parse::<u32>().ok().filter(|&pid| pid <= pid_max)
}

/// The largest process id of this system: `/proc/sys/kernel/pid_max`, else Linux's limit.
pub(crate) fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

/// Whether process `pid` is running (`/proc/PID`): `None` where this cannot be told (no
/// `/proc`).
pub(crate) fn process_running(pid: u32) -> Option<bool> {
    Path::new("/proc/self")
        .exists()
        .then(|| Path::new(&format!("/proc/{pid}")).exists())
}

/// A hidden file `.NAME.TAG-PID` that process `PID` wrote beside the file `NAME`, found by
/// [`files_of_other_processes`]. Sorted by file, then process id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ProcessFile {
    /// The file it belongs to, `DIR/NAME`.
    pub(crate) file: PathBuf,
    /// The process id that its name ends in.
    pub(crate) pid: u32,
    /// The hidden file itself, `DIR/.NAME.TAG-PID`.
    pub(crate) hidden: PathBuf,
    /// Whether it is a plain file (not a directory or a symbolic link).
    pub(crate) plain: bool,
}

/// The hidden files `.NAME.TAG-PID` in `dir` (named as
/// [`hidden_file_prefix`] names them) of the files whose `NAME` `ours` accepts, whose `PID`
/// is a process id of this system ([`process_id`], at most `pid_max`) other than this
/// process's, sorted; entries of any type, and none when `dir` cannot be read. Names that
/// are not UTF-8 are not ours. Whether their processes run is [`process_running`].
pub(crate) fn files_of_other_processes(
    dir: &Path,
    tag: &str,
    ours: impl Fn(&str) -> bool,
    pid_max: u32,
) -> Vec<ProcessFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let separator = format!(".{tag}-");
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(entry_name) = entry_name.to_str() else {
            continue;
        };
        let Some((name, suffix)) = entry_name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(separator.as_str()))
        else {
            continue;
        };
        let Some(pid) = process_id(suffix, pid_max) else {
            continue;
        };
        let file = dir.join(name);
        // The name as the writers build it, checked again from the file's name (`..tmp-12`
        // names no file).
        let (_, prefix) = hidden_file_prefix(&file, tag);
        if ours(name) && entry_name.starts_with(&prefix) && pid != std::process::id() {
            found.push(ProcessFile {
                file,
                pid,
                hidden: entry.path(),
                plain: entry.file_type().is_ok_and(|t| t.is_file()),
            });
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_process_ids_up_to_pid_max_are_ours() {
        assert_eq!(process_id("123", 32768), Some(123));
        assert_eq!(process_id("32768", 32768), Some(32768));
        for not_ours in [
            "+123", "0123", "0", "", "12a", "-1", " 12", "20240101", "32769",
        ] {
            assert_eq!(process_id(not_ours, 32768), None, "{not_ours:?}");
        }
        assert!(pid_max() >= std::process::id() && pid_max() <= PID_MAX_LIMIT);
        // This process runs (where /proc tells).
        assert_ne!(process_running(std::process::id()), Some(false));
    }

    /// The scan finds `.NAME.TAG-PID` of the names `ours` accepts, with `TAG` the given tag
    /// and `PID` a process id other than this process's, sorted by file and process id; it
    /// tells plain files from others. Not found: another tag, a suffix that is not a process
    /// id, a name without the leading dot, one that names no file (`..tmp-12`), a name
    /// `ours` refuses.
    #[test]
    fn the_scan_finds_hidden_files_of_other_processes() {
        let d = std::env::temp_dir().join(format!("cpflow-process-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(".b.csv.tmp-7")).unwrap();
        for name in [
            ".b.csv.tmp-12",
            ".a.csv.tmp-30",
            ".a.csv.tmp-4",
            ".a.csv.tmp-4.tmp-5",
            ".a.csv.bak-12",
            ".a.csv.tmp-012",
            ".a.csv.tmp-20240101",
            ".a.csv.tmp-x1",
            "a.csv.tmp-12",
            "..tmp-12",
            ".notes.txt.tmp-12",
            &format!(".a.csv.tmp-{}", std::process::id()),
        ] {
            std::fs::write(d.join(name), b"x").unwrap();
        }
        let ours = |n: &str| n.ends_with(".csv") || n.ends_with(".tmp-4");
        let found: Vec<(PathBuf, u32, PathBuf, bool)> =
            files_of_other_processes(&d, "tmp", ours, 1 << 20)
                .into_iter()
                .map(|f| (f.file, f.pid, f.hidden, f.plain))
                .collect();
        let hidden = |n: &str, pid: u32| (d.join(n), pid, d.join(format!(".{n}.tmp-{pid}")));
        let expected: Vec<(PathBuf, u32, PathBuf, bool)> = [
            (hidden("a.csv", 4), true),
            (hidden("a.csv", 30), true),
            (hidden("a.csv.tmp-4", 5), true),
            (hidden("b.csv", 7), false),
            (hidden("b.csv", 12), true),
        ]
        .into_iter()
        .map(|((f, p, h), plain)| (f, p, h, plain))
        .collect();
        assert_eq!(found, expected);
        let backups = files_of_other_processes(&d, "bak", |n| n == "a.csv", 1 << 20);
        assert_eq!(backups.len(), 1);
        assert_eq!(backups[0].hidden, d.join(".a.csv.bak-12"));
        assert!(files_of_other_processes(&d.join("missing"), "tmp", ours, 1 << 20).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
