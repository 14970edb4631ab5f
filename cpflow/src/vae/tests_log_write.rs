//! The VAE's `metrics.jsonl` and `report.json` that cannot be written: the error names the
//! file, the epoch and the intact last checkpoint (as a failed checkpoint write does), and a
//! resume once the file can be written ends the run as one uninterrupted run does.

use std::path::{Path, PathBuf};

use super::tests::{epoch_records, fake_data, tiny_run_config};
use super::*;
use crate::CpflowError;
use crate::checkpoint::hidden_file_beside;

/// A fresh scratch directory for `name`.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-vae-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn resume() -> VaeRunOptions {
    VaeRunOptions {
        resume: true,
        ..Default::default()
    }
}

/// `err` is the failed write of `what` at `epoch`, with the run saved after `saved` epochs in
/// `run`'s checkpoint; its message says so.
fn assert_write_failed(err: &CpflowError, what: &str, epoch: usize, saved: usize, run: &Path) {
    let ckpt = run.join("checkpoint.safetensors");
    match err {
        CpflowError::EpochCheckpointWrite {
            what: w,
            epoch: e,
            saved: Some((s, p)),
            ..
        } if (*w, *e, *s) == (what, epoch, saved) && *p == ckpt => {}
        other => panic!("expected {what} at epoch {epoch} to fail, {saved} saved: {other:?}"),
    }
    let msg = err.to_string();
    let want = format!("writing {what} at epoch {epoch} failed (I/O error on ");
    let saved = format!(
        "the run is saved after epoch {saved} (the last checkpoint, {})",
        ckpt.display()
    );
    assert!(msg.starts_with(&want) && msg.ends_with(&saved), "{msg}");
}

/// `report` as JSON, its one wall-clock number zeroed.
fn timeless(report: &VaeReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap();
    v["seconds_per_epoch"] = 0.0.into();
    v
}

/// A run of 1 epoch given a second, with a directory at `metrics.jsonl`'s path: the resume
/// fails before training, naming the file, epoch 2 and the checkpoint of epoch 1. Then the
/// finished run's `report.json` cannot be written (its temporary file's name taken): the
/// error names it and the checkpoint of epoch 2. Each resume once the file can be written
/// ends as the uninterrupted run of 2 epochs (report and epoch lines).
#[test]
fn failed_metrics_and_report_writes_name_the_checkpoint_and_resume() {
    let dir = scratch("resume");
    let data = fake_data();
    let mut cfg = tiny_run_config(PosteriorKind::Gaussian, 2, 4);
    let full_dir = dir.join("full");
    let full = run_vae_on(&cfg, &data, &full_dir, &VaeRunOptions::default()).unwrap();

    let run = dir.join("blocked");
    cfg.train.epochs = 1;
    run_vae_on(&cfg, &data, &run, &VaeRunOptions::default()).unwrap();
    cfg.train.epochs = 2;
    let metrics = run.join("metrics.jsonl");
    let kept = run.join("metrics.kept");
    std::fs::rename(&metrics, &kept).unwrap();
    std::fs::create_dir(&metrics).unwrap();
    let err = run_vae_on(&cfg, &data, &run, &resume()).unwrap_err();
    assert_write_failed(&err, "metrics.jsonl", 2, 1, &run);
    std::fs::remove_dir(&metrics).unwrap();
    std::fs::rename(&kept, &metrics).unwrap();

    let blocker = hidden_file_beside(&run.join("report.json"), "tmp");
    std::fs::create_dir(&blocker).unwrap();
    let err = run_vae_on(&cfg, &data, &run, &resume()).unwrap_err();
    assert_write_failed(&err, "report.json", 2, 2, &run);
    std::fs::remove_dir(&blocker).unwrap();
    let report = run_vae_on(&cfg, &data, &run, &resume()).unwrap();
    assert_eq!(timeless(&report), timeless(&full));
    assert_eq!(epoch_records(&run), epoch_records(&full_dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full disk under `metrics.jsonl` (a link to `/dev/full`, which takes no bytes): the first
/// epoch's line cannot be written; no checkpoint holds the run yet, and the error says so.
#[cfg(target_os = "linux")]
#[test]
fn a_metrics_line_on_a_full_disk_names_the_file_and_the_epoch() {
    let run = scratch("full-disk");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::symlink("/dev/full", run.join("metrics.jsonl")).unwrap();
    let cfg = tiny_run_config(PosteriorKind::Gaussian, 2, 4);
    let err = run_vae_on(&cfg, &fake_data(), &run, &VaeRunOptions::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            CpflowError::EpochCheckpointWrite {
                what: "metrics.jsonl",
                epoch: 1,
                saved: None,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("writing metrics.jsonl at epoch 1 failed (I/O error on ")
            && msg.contains("metrics.jsonl: No space left on device")
            && msg.ends_with("no earlier checkpoint was written"),
        "{msg}"
    );
    assert!(!run.join("checkpoint.safetensors").exists());
    let _ = std::fs::remove_dir_all(&run);
}
