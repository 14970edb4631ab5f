//! A `cpflow sample --output S --log-prob L` that stopped between its two renames (a crash,
//! a power loss) leaves the hidden backup `.S.bak-PID` of the previous S beside it. The next
//! `sample` that replaces S removes it once its own files are in place, with a warning that
//! names it (it stayed for good before); a backup of a running process is left alone.

use crate::cli_common::{cpflow_log, temp_dir, tiny_trained_run};

#[cfg(target_os = "linux")]
#[test]
fn the_next_sample_removes_a_stale_backup_and_names_it() {
    let dir = temp_dir("sample-stale-backup");
    let (run, _) = tiny_trained_run(&dir, 1.0, &[]);
    let (s, lp) = (dir.join("s.csv"), dir.join("lp.csv"));
    // Left by a command whose process is gone (above Linux's largest process id, 2^22), and
    // one of a running process (1), which may be finishing the same files.
    let stale = dir.join(".s.csv.bak-4194305");
    let running = dir.join(".s.csv.bak-1");
    std::fs::write(&stale, "0.5,0.5\n").unwrap();
    std::fs::write(&running, "0.5,0.5\n").unwrap();
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
    assert!(!stale.exists(), "{log}");
    assert!(running.exists(), "{log}");
    assert!(
        log.contains(&format!("removed {}", stale.display())) && log.contains("process 4194305"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&s).unwrap().lines().count(), 4);
    assert_eq!(std::fs::read_to_string(&lp).unwrap().lines().count(), 4);
}
