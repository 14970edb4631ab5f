//! An image run's `metrics.jsonl` and `report.json` that cannot be written: the error names
//! the file, the iteration and the intact last checkpoint (as a failed checkpoint write
//! does), and a resume once the file can be written ends the run as one uninterrupted run
//! does.

use std::path::Path;

use super::super::ImageTrainReport;
use super::tests_stats::{run, temp_dir};
use crate::checkpoint::hidden_file_beside;
use crate::error::CpflowError;

/// `err` is the failed write of `what` at `iteration`, with the run saved at `saved` in
/// `dir`'s checkpoint; its message says so.
fn assert_write_failed(err: &CpflowError, what: &str, iteration: usize, saved: usize, dir: &Path) {
    let ckpt = dir.join("checkpoint.safetensors");
    match err {
        CpflowError::CheckpointWrite {
            what: w,
            iteration: i,
            saved: Some((s, p)),
            ..
        } if (*w, *i, *s) == (what, iteration, saved) && *p == ckpt => {}
        other => panic!("expected {what} at {iteration} to fail, {saved} saved: {other:?}"),
    }
    let msg = err.to_string();
    let want = format!("writing {what} at iteration {iteration} failed (I/O error on ");
    let saved = format!(
        "the run is saved at iteration {saved} (the last checkpoint, {})",
        ckpt.display()
    );
    assert!(msg.starts_with(&want) && msg.ends_with(&saved), "{msg}");
}

/// `value` without its wall-clock numbers (every key ending in `_s` or `seconds`, at any
/// depth).
fn timeless(mut value: serde_json::Value) -> serde_json::Value {
    match &mut value {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.ends_with("_s") && !k.ends_with("seconds"));
            for v in m.values_mut() {
                *v = timeless(v.take());
            }
        }
        serde_json::Value::Array(a) => {
            for v in a.iter_mut() {
                *v = timeless(v.take());
            }
        }
        _ => {}
    }
    value
}

/// The lines of `dir`'s `metrics.jsonl`, timeless.
fn metrics_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| timeless(serde_json::from_str(l).unwrap()))
        .collect()
}

/// A run of 4 steps paused after its first: the resume meets a directory at `metrics.jsonl`'s
/// path and fails before training, naming the file and the checkpoint of iteration 1; the
/// next cannot write `report.json` (its temporary file's name taken) and names it and the
/// final checkpoint. The resume once the file can be written ends as the uninterrupted run:
/// the same report (times aside) and log lines.
#[test]
fn failed_metrics_and_report_writes_name_the_checkpoint_and_resume() {
    let full_dir = temp_dir("log-write-full");
    let full = run(&full_dir, 4, false, false).unwrap();
    let dir = temp_dir("log-write-blocked");
    let paused = run(&dir, 4, false, true).unwrap_err();
    assert!(
        matches!(paused, CpflowError::Interrupted { iteration: 1, .. }),
        "{paused:?}"
    );

    let metrics = dir.join("metrics.jsonl");
    let kept = dir.join("metrics.kept");
    std::fs::rename(&metrics, &kept).unwrap();
    std::fs::create_dir(&metrics).unwrap();
    let err = run(&dir, 4, true, false).unwrap_err();
    assert_write_failed(&err, "metrics.jsonl", 1, 1, &dir);
    std::fs::remove_dir(&metrics).unwrap();
    std::fs::rename(&kept, &metrics).unwrap();

    let blocker = hidden_file_beside(&dir.join("report.json"), "tmp");
    std::fs::create_dir(&blocker).unwrap();
    let err = run(&dir, 4, true, false).unwrap_err();
    assert_write_failed(&err, "report.json", 4, 4, &dir);
    std::fs::remove_dir(&blocker).unwrap();

    let report = run(&dir, 4, true, false).unwrap();
    let json = |r: &ImageTrainReport| timeless(serde_json::to_value(r).unwrap());
    assert_eq!(json(&report), json(&full));
    assert_eq!(metrics_lines(&dir), metrics_lines(&full_dir));
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(timeless(on_disk), json(&full));
    for d in [full_dir, dir] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A full disk under `metrics.jsonl` (a link to `/dev/full`, which takes no bytes): the line
/// of the last step cannot be written; no checkpoint holds the run yet, and the error says
/// so.
#[cfg(target_os = "linux")]
#[test]
fn a_metrics_line_on_a_full_disk_names_the_file_and_the_iteration() {
    let dir = temp_dir("log-write-full-disk");
    std::os::unix::fs::symlink("/dev/full", dir.join("metrics.jsonl")).unwrap();
    let err = run(&dir, 2, false, false).unwrap_err();
    assert!(
        matches!(
            &err,
            CpflowError::CheckpointWrite {
                what: "metrics.jsonl",
                iteration: 2,
                saved: None,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("writing metrics.jsonl at iteration 2 failed (I/O error on ")
            && msg.contains("metrics.jsonl: No space left on device")
            && msg.ends_with("no earlier checkpoint was written"),
        "{msg}"
    );
    assert!(!dir.join("checkpoint.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}
