//! Process ids in the names of hidden files (`.NAME.tmp-PID`, `.NAME.bak-PID`) and whether
//! their process still runs: for the clean-up of files that a stopped command left behind
//! (`run_dir`'s leftover temporary files, `output_files`' stale backups).

use std::path::Path;

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
}
