//! `cpflow vae` whose `metrics.jsonl` or `report.json` cannot be written (a directory at the
//! log's path; the report's temporary file's name taken by one, as a full disk would fail
//! it): the message names the file, the epoch, the intact last checkpoint and the command
//! that continues the run, which then ends it from that checkpoint.

use crate::cli_common::{cpflow, cpflow_fails, shared_data, temp_dir, tiny_vae_config};
use std::process::{Command, Stdio};

/// The end of the message of a failed write in run `r` saved after `epoch` epochs.
fn saved_and_resume(r: &str, epoch: usize) -> String {
    format!(
        "the run is saved after epoch {epoch} (the last checkpoint, {r}/checkpoint.safetensors). \
         Free disk space (or fix what the error names) and continue the run with \
         `cpflow vae --out {r} --resume`"
    )
}

/// After a first epoch, the resume given a second cannot open `metrics.jsonl`, then (the log
/// back) cannot write `report.json` once the second epoch is done: each message names the
/// file and the checkpoint to continue from; the last resume ends the run of 2 epochs.
#[test]
fn failed_vae_log_and_report_writes_say_how_to_continue_and_the_resume_ends_the_run() {
    let dir = temp_dir("vae-log-write");
    let cfg = dir.join("vae.toml");
    std::fs::write(&cfg, tiny_vae_config("frey-faces", &shared_data())).unwrap();
    let run = dir.join("run");
    let (c, r) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    cpflow(&["vae", "--config", c, "--out", r, "--no-progress"]);

    let metrics = run.join("metrics.jsonl");
    let kept = run.join("metrics.kept");
    std::fs::rename(&metrics, &kept).unwrap();
    std::fs::create_dir(&metrics).unwrap();
    let more = [
        "vae",
        "--out",
        r,
        "--resume",
        "--epochs",
        "2",
        "--no-progress",
    ];
    let stderr = cpflow_fails(&more);
    let want = format!(
        "Error: writing metrics.jsonl at epoch 2 failed (I/O error on {}: ",
        metrics.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&saved_and_resume(r, 1)),
        "{stderr}"
    );
    std::fs::remove_dir(&metrics).unwrap();
    std::fs::rename(&kept, &metrics).unwrap();

    // The report's temporary file: its name is taken as soon as the process that writes it
    // is known, long before it is written (data load, an epoch, the test scores).
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(more)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let blocker = run.join(format!(".report.json.tmp-{}", child.id()));
    std::fs::create_dir(&blocker).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let want = format!(
        "Error: writing report.json at epoch 2 failed (I/O error on {}: ",
        blocker.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&saved_and_resume(r, 2)),
        "{stderr}"
    );
    std::fs::remove_dir(&blocker).unwrap();
    let resumed = cpflow(&["vae", "--out", r, "--resume", "--no-progress"]);
    assert!(
        resumed.starts_with("Gaussian posterior") && resumed.contains(": 2 epochs (max-epochs)"),
        "{resumed}"
    );
    let log = std::fs::read_to_string(&metrics).unwrap();
    let epochs: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2]);
}
