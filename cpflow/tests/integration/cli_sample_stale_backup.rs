//! A `cpflow sample --output S --log-prob L` that stopped between its two renames (a crash,
//! a power loss) leaves the hidden backup `.S.bak-PID` of the previous S beside it. The next
//! `sample` that replaces S removes it once its own files are in place only when it is surely
//! stale: its process is gone and it is older than any command can be between its renames
//! (10 minutes; removal itself is tested in `output_files/together`'s unit tests, whose
//! clock can be moved on). A recent one is kept with a warning naming it, as its command may
//! be running where `/proc` cannot see it (another container sharing the directory, NFS,
//! `hidepid`); a user's `.S.bak-20240101` and a running process's backup stay untouched.

use crate::cli_common::{cpflow_log, temp_dir, tiny_trained_run};

/// The id of a process that has just ended.
#[cfg(target_os = "linux")]
fn ended_process_id() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// The old code deleted the recent backup of the ended process and the user's date-stamped
/// file (no process 20240101 runs), warning "removed …" for each.
#[cfg(target_os = "linux")]
#[test]
fn the_next_sample_keeps_a_recent_backup_and_a_users_file() {
    let dir = temp_dir("sample-stale-backup");
    let (run, _) = tiny_trained_run(&dir, 1.0, &[]);
    let (s, lp) = (dir.join("s.csv"), dir.join("lp.csv"));
    let gone = ended_process_id();
    let recent = dir.join(format!(".s.csv.bak-{gone}"));
    let users = dir.join(".s.csv.bak-20240101");
    let running = dir.join(".s.csv.bak-1");
    for f in [&recent, &users, &running] {
        std::fs::write(f, "0.5,0.5\n").unwrap();
    }
    let log = cpflow_log(&[
        "sample",
        "-m",
        run.to_str().unwrap(),
        "-n",
        "4",
        "-o",
        s.to_str().unwrap(),
        "--log-prob",
        lp.to_str().unwrap(),
        "--no-progress",
    ]);
    for f in [&recent, &users, &running] {
        assert!(f.exists(), "{} was removed:\n{log}", f.display());
    }
    assert!(!log.contains("removed "), "{log}");
    assert!(
        log.contains(&format!("kept {}", recent.display()))
            && log.contains(&format!("process {gone}, which does not run here")),
        "{log}"
    );
    assert!(
        !log.contains("20240101") && !log.contains("bak-1 "),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&s).unwrap().lines().count(), 4);
    assert_eq!(std::fs::read_to_string(&lp).unwrap().lines().count(), 4);
}
