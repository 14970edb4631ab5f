//! A command killed while writing a run's file atomically (`kill -9` during a checkpoint
//! write) left `.checkpoint.safetensors.tmp-PID`, as large as the checkpoint, in the run
//! directory for good: a later `--resume` finished the run and the file stayed. The command
//! that next takes the directory's lock removes such files of processes that no longer run,
//! naming each in an info line; a user's files of similar names, and the temporary files of
//! a process still running, stay.

use crate::cli_common::*;

/// The id of a process that has just ended.
fn ended_process_id() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[cfg(unix)]
#[test]
fn resume_removes_the_temporary_files_of_killed_commands_only() {
    if !std::path::Path::new("/proc/self").exists() {
        return; // whether a process runs cannot be told: nothing is removed
    }
    let dir = temp_dir("leftover-temps");
    let run = dir.join("run");
    train_tiny_toy(&run, &[]);
    let dead = ended_process_id();
    let alive = std::process::id();
    std::fs::create_dir_all(run.join("plots")).unwrap();
    let removed = [
        format!(".checkpoint.safetensors.tmp-{dead}"),
        format!(".report.json.tmp-{dead}"),
        format!("plots/.density.png.tmp-{dead}"),
    ];
    let kept = [
        // A process that still runs (a `sample -o RUN/report.json` in progress).
        format!(".report.json.tmp-{alive}"),
        // Not a process id, or not one of the run's files, or not hidden: a user's.
        ".checkpoint.safetensors.tmp-20240101123".to_string(),
        ".checkpoint.safetensors.tmp-0123".to_string(),
        format!(".notes.txt.tmp-{dead}"),
        format!(".s.npy.tmp-{dead}"),
        format!("checkpoint.safetensors.tmp-{dead}"),
        // A figure's name outside plots/.
        format!(".density.png.tmp-{dead}"),
    ];
    for name in removed.iter().chain(&kept) {
        std::fs::write(run.join(name), b"partial").unwrap();
    }
    let mut args = tiny_toy_args(&run, "4", "16", &[]);
    args.push("--resume".into());
    let log = cpflow_log(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for name in &removed {
        let path = run.join(name);
        assert!(!path.exists(), "{} stayed; log:\n{log}", path.display());
        assert!(
            log.contains(&format!("removed {}", path.display()))
                && log.contains(&format!("left by process {dead}")),
            "no info line names {}:\n{log}",
            path.display()
        );
    }
    for name in &kept {
        assert!(run.join(name).exists(), "{name} was removed; log:\n{log}");
    }
    // The resumed run itself finished, and wrote no temporary file that stayed.
    assert_eq!(read_json(&run.join("report.json"))["iterations"], 4);
}
