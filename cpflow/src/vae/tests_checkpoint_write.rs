//! The VAE's checkpoint writes that fail (their temporary file's name taken by a directory,
//! as a full disk would fail them): the error names the epoch, what was not written and the
//! intact last checkpoint, from which the run resumes on its trajectory; and the report of
//! a resumed run (paused within epochs, or finished and given more epochs) counts the whole
//! run, as one uninterrupted run with the same seed does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::tests::{epoch_records, tiny_run_config};
use super::*;
use crate::CpflowError;
use crate::checkpoint::hidden_file_beside;

/// The first few images of each split of Frey Faces (the offline copy under shared/data):
/// 16 training images (two steps of 8 an epoch), 4 validation and 4 test images.
fn few_frey_faces() -> VaeData {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let mut data = load_vae_data(VaeDatasetName::FreyFaces, &root, 0).unwrap();
    let size = data.height * data.width;
    for (split, n) in [
        (&mut data.train, 16),
        (&mut data.val, 4),
        (&mut data.test, 4),
    ] {
        *split = VaeImages {
            n,
            pixels: split.pixels[..n * size].to_vec(),
        };
    }
    data
}

/// A fresh scratch directory for `name`.
pub(super) fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-vae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn resume() -> VaeRunOptions {
    VaeRunOptions {
        resume: true,
        ..Default::default()
    }
}

/// The epochs done in `dir`'s checkpoint.
fn checkpoint_epochs(dir: &Path) -> usize {
    let path = dir.join("checkpoint.safetensors");
    let (meta, _) = load_vae_checkpoint(&path, &candle_core::Device::Cpu).unwrap();
    meta.state.unwrap().epoch
}

/// After the first epoch's checkpoint, the second's cannot be written: the error says so,
/// names the first as the run's intact checkpoint, and a resume once the write can succeed
/// ends where the uninterrupted run does. A fresh run whose first best weights cannot be
/// written is saved in its first checkpoint, written before them, and resumes from it.
#[test]
fn a_failed_checkpoint_write_names_the_epoch_and_the_intact_checkpoint() {
    let dir = scratch("ckpt-write");
    let data = few_frey_faces();
    let mut cfg = tiny_run_config(PosteriorKind::Gaussian, 3, 0);
    assert_eq!(cfg.model.network_float, crate::config::FloatType::F64);
    let full_dir = dir.join("full");
    let full = run_vae_on(&cfg, &data, &full_dir, &VaeRunOptions::default()).unwrap();

    let run = dir.join("blocked");
    cfg.train.epochs = 1;
    run_vae_on(&cfg, &data, &run, &VaeRunOptions::default()).unwrap();
    let ckpt = run.join("checkpoint.safetensors");
    let blocker = hidden_file_beside(&ckpt, "tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    cfg.train.epochs = 3;
    let err = run_vae_on(&cfg, &data, &run, &resume()).unwrap_err();
    match &err {
        CpflowError::EpochCheckpointWrite {
            what: "the checkpoint",
            epoch: 2,
            saved: Some((1, p)),
            ..
        } if *p == ckpt => {}
        other => panic!("expected the write at epoch 2 to fail, 1 saved: {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("writing the checkpoint at epoch 2 failed (I/O error on ")
            && msg.contains(&format!(
                "the run is saved after epoch 1 (the last checkpoint, {})",
                ckpt.display()
            )),
        "{msg}"
    );
    assert_eq!(checkpoint_epochs(&run), 1);
    std::fs::remove_dir(&blocker).unwrap();
    let resumed = run_vae_on(&cfg, &data, &run, &resume()).unwrap();
    assert_eq!(resumed.val_curve, full.val_curve);
    assert_eq!(epoch_records(&run), epoch_records(&full_dir));

    // The best weights of a fresh run's first epoch, written after its checkpoint: the run
    // is saved after epoch 1, and the resume writes the best weights from that checkpoint.
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let blocker = hidden_file_beside(&fresh.join("best.safetensors"), "tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let err = run_vae_on(&cfg, &data, &fresh, &VaeRunOptions::default()).unwrap_err();
    let fresh_ckpt = fresh.join("checkpoint.safetensors");
    assert!(
        matches!(
            &err,
            CpflowError::EpochCheckpointWrite {
                what: "the best weights",
                epoch: 1,
                saved: Some((1, p)),
                ..
            } if *p == fresh_ckpt
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("writing the best weights at epoch 1 failed")
            && msg.contains("the run is saved after epoch 1"),
        "{msg}"
    );
    std::fs::remove_dir(&blocker).unwrap();
    let resumed = run_vae_on(&cfg, &data, &fresh, &resume()).unwrap();
    assert_eq!(resumed.val_curve, full.val_curve);
    assert_eq!(resumed.test_neg_elbo, full.test_neg_elbo);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `report` as JSON, its one wall-clock number zeroed.
fn timeless(report: &VaeReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap();
    v["seconds_per_epoch"] = 0.0.into();
    v
}

/// `report`'s seconds per epoch are the run's: those of every epoch in its log (the epochs
/// of earlier sessions too), over its epochs.
fn assert_whole_run_seconds(report: &VaeReport, dir: &Path) {
    let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let seconds: f64 = log
        .lines()
        .map(|l| {
            serde_json::from_str::<VaeEpochRecord>(l)
                .unwrap()
                .train_seconds
        })
        .sum();
    // The same sums, added in another order: equal up to rounding.
    let per_epoch = seconds / report.epochs as f64;
    assert!(
        (report.seconds_per_epoch - per_epoch).abs() <= 1e-9 * per_epoch,
        "{} s/epoch reported, the log's epochs took {per_epoch} s each",
        report.seconds_per_epoch
    );
}

/// One run of 3 epochs against (a) the same run paused within epoch 1, at the end of
/// epoch 1 and within epoch 2, resumed after each, and (b) a finished run of 2 epochs
/// resumed with 3: the reports are the same but for the wall time (epochs, best epoch and
/// −ELBO, validation curve, test scores, stop reason), and each report's seconds per epoch
/// are those of all the run's epochs, not of the last session's.
#[test]
fn a_resumed_run_reports_the_whole_run() {
    let dir = scratch("resume-report");
    let data = few_frey_faces();
    let cfg = tiny_run_config(PosteriorKind::Gaussian, 3, 4);
    let full_dir = dir.join("full");
    let full = run_vae_on(&cfg, &data, &full_dir, &VaeRunOptions::default()).unwrap();
    assert_eq!(
        (full.epochs, full.stop_reason),
        (3, VaeStopReason::MaxEpochs)
    );
    assert_whole_run_seconds(&full, &full_dir);

    // (a) Two steps an epoch: paused after steps 1, 2 (the end of epoch 1) and 3.
    let paused = dir.join("paused");
    let stop = VaeRunOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        ..Default::default()
    };
    for (k, steps) in [1, 2, 3].into_iter().enumerate() {
        let opts = VaeRunOptions {
            resume: k > 0,
            ..stop.clone()
        };
        let err = run_vae_on(&cfg, &data, &paused, &opts).unwrap_err();
        assert!(
            matches!(err, CpflowError::Interrupted { iteration, .. } if iteration == steps),
            "{err}"
        );
    }
    let report = run_vae_on(&cfg, &data, &paused, &resume()).unwrap();
    assert_eq!(timeless(&report), timeless(&full));
    assert_whole_run_seconds(&report, &paused);

    // (b) Finished after 2 epochs, then given a third.
    let longer = dir.join("longer");
    let mut two = cfg.clone();
    two.train.epochs = 2;
    let first = run_vae_on(&two, &data, &longer, &VaeRunOptions::default()).unwrap();
    assert_eq!(first.epochs, 2);
    let report = run_vae_on(&cfg, &data, &longer, &resume()).unwrap();
    assert_eq!(timeless(&report), timeless(&full));
    assert_whole_run_seconds(&report, &longer);
    let _ = std::fs::remove_dir_all(&dir);
}
