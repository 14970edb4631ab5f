//! A flow run's `metrics.jsonl` and `model.safetensors` that cannot be written: the error
//! names the file, the iteration and the intact last checkpoint (as a failed checkpoint
//! write does), and a resume once the file can be written ends the run as one uninterrupted
//! run does.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::checkpoint::hidden_file_beside;
use crate::config::{LrSchedule, TrainConfig};
use crate::error::CpflowError;
use crate::evaluate::Dataset;
use crate::flow::Flow;
use crate::flow_config::FlowConfig;
use crate::metrics::{MetricsRecord, read_metrics};
use crate::potential::PotentialConfig;
use crate::train::{RunOptions, StopReason, TrainReport, Trainer};

/// 40 rows of a 2-D cloud.
fn data() -> Dataset {
    let v: Vec<f64> = (0..80)
        .map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0)
        .collect();
    Dataset::new(Tensor::from_vec(v, (40, 2), &Device::Cpu).unwrap())
}

/// 8 steps, a record every 4 (after steps 1 and 5) and after the last.
fn config() -> TrainConfig {
    TrainConfig {
        batch_size: 8,
        max_iterations: 8,
        val_every: 0,
        train_slq_every: 0,
        log_every: 4,
        lr_schedule: LrSchedule::Constant,
        ..Default::default()
    }
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: Some(out.to_path_buf()),
        ..Default::default()
    }
}

fn new_trainer(out: &Path) -> Trainer {
    let pot = PotentialConfig::Icnn3(icnn::Icnn3Config {
        dim: 2,
        width: 4,
        depth: 2,
        ..Default::default()
    });
    let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu).unwrap();
    Trainer::new(flow, config())
        .unwrap()
        .with_options(options(out))
}

fn resumed(out: &Path) -> Trainer {
    Trainer::resume(&out.join("checkpoint.safetensors"), &Device::Cpu, None)
        .unwrap()
        .with_options(options(out))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-log-write-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

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

/// The report's numbers, compared by bits (the same steps give the same sums).
fn numbers(r: &TrainReport) -> (usize, StopReason, u64, u64, Option<u64>, usize) {
    (
        r.iterations,
        r.stop_reason,
        r.final_loss.to_bits(),
        r.mean_cg_iterations.to_bits(),
        r.cg_converged.map(f64::to_bits),
        r.cg_unconverged_steps,
    )
}

/// `dir`'s metrics records without their wall-clock numbers.
fn records(dir: &Path) -> Vec<MetricsRecord> {
    let mut recs = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    for r in &mut recs {
        (r.samples_per_sec, r.elapsed_s) = (0.0, 0.0);
    }
    recs
}

/// A run paused after 5 steps (a logging point) whose resume meets a directory at
/// `metrics.jsonl`'s path: it fails before training, naming the file and the checkpoint of
/// iteration 5. The next resume trains to the end and cannot write `model.safetensors` (its
/// temporary file's name taken): the error names it and the final checkpoint. The resume
/// once the file can be written ends as the uninterrupted run: the same numbers, log and
/// model.
#[test]
fn failed_metrics_and_model_writes_name_the_checkpoint_and_resume() {
    let train = data();
    let full_dir = temp_dir("full");
    let full = new_trainer(&full_dir).fit(&train, None).unwrap();
    let dir = temp_dir("blocked");
    new_trainer(&dir).fit_steps(&train, None, 5).unwrap();

    let metrics = dir.join("metrics.jsonl");
    let kept = dir.join("metrics.kept");
    std::fs::rename(&metrics, &kept).unwrap();
    std::fs::create_dir(&metrics).unwrap();
    let err = resumed(&dir).fit(&train, None).unwrap_err();
    assert_write_failed(&err, "metrics.jsonl", 5, 5, &dir);
    std::fs::remove_dir(&metrics).unwrap();
    std::fs::rename(&kept, &metrics).unwrap();

    let model = dir.join("model.safetensors");
    let blocker = hidden_file_beside(&model, "tmp");
    std::fs::create_dir(&blocker).unwrap();
    let err = resumed(&dir).fit(&train, None).unwrap_err();
    assert_write_failed(&err, "model.safetensors", 8, 8, &dir);
    std::fs::remove_dir(&blocker).unwrap();
    assert!(!model.exists());

    let report = resumed(&dir).fit(&train, None).unwrap();
    assert_eq!(numbers(&report), numbers(&full));
    assert_eq!(records(&dir), records(&full_dir));
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(full_dir.join("model.safetensors")).unwrap()
    );
    for d in [full_dir, dir] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A full disk under `metrics.jsonl` (a link to `/dev/full`, which takes no bytes): the first
/// record (after step 1) cannot be written; no checkpoint holds the run yet, and the error
/// says so.
#[cfg(target_os = "linux")]
#[test]
fn a_metrics_line_on_a_full_disk_names_the_file_and_the_iteration() {
    let dir = temp_dir("full-disk");
    std::os::unix::fs::symlink("/dev/full", dir.join("metrics.jsonl")).unwrap();
    let err = new_trainer(&dir).fit(&data(), None).unwrap_err();
    assert!(
        matches!(
            &err,
            CpflowError::CheckpointWrite {
                what: "metrics.jsonl",
                iteration: 1,
                saved: None,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("writing metrics.jsonl at iteration 1 failed (I/O error on ")
            && msg.contains("metrics.jsonl: No space left on device")
            && msg.ends_with("no earlier checkpoint was written"),
        "{msg}"
    );
    assert!(!dir.join("checkpoint.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}
