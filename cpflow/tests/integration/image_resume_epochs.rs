//! Image runs resumed with another batch size count their epochs in images seen (the epoch
//! limit too), and every point of the validation curve is in `metrics.jsonl` exactly once:
//! the end-of-run validation at a step that is no validation step, and the validation a
//! resume redoes after an interrupt stopped it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use cpflow::FloatType;
use cpflow::image::train::load_image_checkpoint;
use cpflow::image::{
    ImageMetricsRecord, ImageRunOptions, ImageTrainConfig, ImageTrainReport, run_image_training,
};

use crate::image_train::{read_metrics, temp_dir, tiny_data, tiny_flow, tiny_train};

/// A run of `cfg` on the 12 tiny training images, written into `dir`.
fn run(
    dir: &Path,
    cfg: ImageTrainConfig,
    opts: ImageRunOptions,
) -> cpflow::Result<ImageTrainReport> {
    let opts = ImageRunOptions {
        out_dir: Some(dir.to_path_buf()),
        ..opts
    };
    run_image_training(
        &tiny_flow(FloatType::F32),
        &cfg,
        &tiny_data(2, 2),
        &Device::Cpu,
        &opts,
    )
}

fn by_epochs(epochs: usize, batch_size: usize) -> ImageTrainConfig {
    ImageTrainConfig {
        epochs: Some(epochs),
        max_iterations: None,
        batch_size,
        ..tiny_train(0)
    }
}

fn resume() -> ImageRunOptions {
    ImageRunOptions {
        resume: true,
        ..Default::default()
    }
}

fn epochs_logged(dir: &Path) -> Vec<(usize, f64)> {
    read_metrics(&dir.join("metrics.jsonl"))
        .iter()
        .map(|r| (r.iteration, r.epoch))
        .collect()
}

/// 2 epochs in batches of 4 (6 steps), resumed for 4 epochs in batches of 6: 4 more steps,
/// 4.00 epochs (before: the limit was 4 × 2 batches of 6 = 8 steps, so 2 more steps and
/// "4.00 epochs" from the batch counter after 3 epochs of images). The other way, 2 epochs in
/// batches of 6 (4 steps) resumed for 3 in batches of 4: 3 more steps (before: 9 in all,
/// 5 epochs of images for 3).
#[test]
fn a_new_batch_size_keeps_the_epoch_limit_in_images() {
    let (a, b) = (temp_dir("epochs-up"), temp_dir("epochs-down"));
    let r = run(&a, by_epochs(2, 4), Default::default()).unwrap();
    assert_eq!((r.iterations, r.epochs), (6, 2.0));
    let r = run(&a, by_epochs(4, 6), resume()).unwrap();
    assert_eq!((r.iterations, r.epochs), (10, 4.0));
    let logged = epochs_logged(&a);
    assert_eq!(&logged[6..], &[(7, 2.5), (8, 3.0), (9, 3.5), (10, 4.0)]);
    let r = run(&b, by_epochs(2, 6), Default::default()).unwrap();
    assert_eq!((r.iterations, r.epochs), (4, 2.0));
    let r = run(&b, by_epochs(3, 4), resume()).unwrap();
    assert_eq!((r.iterations, r.epochs), (7, 3.0));
    let state = load_image_checkpoint(&b.join("checkpoint.safetensors"), &Device::Cpu)
        .unwrap()
        .meta
        .state;
    assert_eq!(
        (state.epoch, state.epoch_batch, state.samples_seen),
        (3, 0, 36)
    );
    for d in [a, b] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// 4 steps of 4 images (1 epoch and 4 images of the second), resumed with batches of 6 to
/// 6 steps: the second epoch is left (the batch size no longer tiles it), a new one starts,
/// and the epochs count the 28 images seen: 28/12 (before: the batch counter read the
/// checkpoint's one batch of 4 as one of 6 and said 2.5 epochs).
#[test]
fn a_new_batch_size_mid_epoch_starts_a_new_epoch_and_counts_images() {
    let dir = temp_dir("epochs-mid");
    let cfg = |iters, batch_size| ImageTrainConfig {
        batch_size,
        ..tiny_train(iters)
    };
    let r = run(&dir, cfg(4, 4), Default::default()).unwrap();
    assert_eq!(r.epochs, 16.0 / 12.0);
    let r = run(&dir, cfg(6, 6), resume()).unwrap();
    assert_eq!(r.iterations, 6);
    assert_eq!(r.epochs, 28.0 / 12.0);
    assert_eq!(
        &epochs_logged(&dir)[4..],
        &[(5, 22.0 / 12.0), (6, 28.0 / 12.0)]
    );
    let state = load_image_checkpoint(&dir.join("checkpoint.safetensors"), &Device::Cpu)
        .unwrap()
        .meta
        .state;
    // Epoch 1 was left after one batch; epoch 2 took the two batches of 6.
    assert_eq!(
        (state.epoch, state.epoch_batch, state.samples_seen),
        (3, 0, 28)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The validation points of the metrics (iteration, bpd, standard error).
fn validations_logged(recs: &[ImageMetricsRecord]) -> Vec<(usize, f64, f64)> {
    recs.iter()
        .filter_map(|r| Some((r.iteration, r.val_bpd?, r.val_bpd_std_err?)))
        .collect()
}

fn curve(r: &ImageTrainReport) -> Vec<(usize, f64, f64)> {
    r.val_curve
        .iter()
        .map(|p| (p.iteration, p.val.bpd, p.val.std_err))
        .collect()
}

/// 3 steps validated every 2: the end-of-run validation at step 3 is in the curve and, now,
/// in the metrics line of step 3 (before: only in the report).
#[test]
fn the_end_of_run_validation_is_in_the_metrics() {
    let dir = temp_dir("val-end");
    let cfg = ImageTrainConfig {
        val_every: 2,
        ..tiny_train(3)
    };
    let r = run(&dir, cfg, Default::default()).unwrap();
    assert_eq!(curve(&r).iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        validations_logged(&read_metrics(&dir.join("metrics.jsonl"))),
        curve(&r)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An interrupt set from the start stops the validation after step 1 (`val_every = 1`); the
/// resume redoes it: its metrics equal an uninterrupted run's (timings aside), the line of
/// step 1 with its validation (before: the line had none, or with `log_every = 0` there was
/// no line of step 1 at all).
#[test]
fn a_validation_redone_on_resume_is_in_the_metrics() {
    let (a, b) = (temp_dir("val-redo-a"), temp_dir("val-redo-b"));
    let cfg = ImageTrainConfig {
        val_every: 1,
        log_every: 0,
        ..tiny_train(3)
    };
    let full = run(&a, cfg.clone(), Default::default()).unwrap();
    let stop = ImageRunOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        ..Default::default()
    };
    match run(&b, cfg.clone(), stop) {
        Err(cpflow::CpflowError::Interrupted { iteration, .. }) => assert_eq!(iteration, 1),
        other => panic!("expected an interrupt after step 1, got {other:?}"),
    }
    let resumed = run(&b, cfg, resume()).unwrap();
    assert_eq!(curve(&resumed), curve(&full));
    let log = |d: &Path| {
        let mut recs = read_metrics(&d.join("metrics.jsonl"));
        for r in &mut recs {
            (r.step_s, r.train_time_s, r.elapsed_s) = (0.0, 0.0, 0.0);
        }
        recs
    };
    assert_eq!(log(&b), log(&a));
    assert_eq!(validations_logged(&log(&b)), curve(&full));
    for d in [a, b] {
        std::fs::remove_dir_all(d).ok();
    }
}
