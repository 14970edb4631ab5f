//! Image runs resumed after a kill (the metrics cut back to the checkpoint, the report's times
//! over the whole run) and interrupted once training has ended (the model saved, no test
//! score, no report; resuming the finished run scores it).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use cpflow::FloatType;
use cpflow::image::{ImageMetricsRecord, ImageRunOptions, ImageTrainReport, run_image_training};

use crate::image_train::{read_metrics, temp_dir, tiny_data, tiny_flow, tiny_train};

fn run(dir: &Path, iters: usize, opts: ImageRunOptions) -> cpflow::Result<ImageTrainReport> {
    run_validating_every(2, dir, iters, opts)
}

fn run_validating_every(
    val_every: usize,
    dir: &Path,
    iters: usize,
    opts: ImageRunOptions,
) -> cpflow::Result<ImageTrainReport> {
    let cfg = cpflow::image::ImageTrainConfig {
        val_every,
        ..tiny_train(iters)
    };
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

fn resume() -> ImageRunOptions {
    ImageRunOptions {
        resume: true,
        ..Default::default()
    }
}

/// The log without its timing fields.
fn log(dir: &Path) -> Vec<ImageMetricsRecord> {
    let mut recs = read_metrics(&dir.join("metrics.jsonl"));
    for r in &mut recs {
        (r.step_s, r.train_time_s, r.elapsed_s) = (0.0, 0.0, 0.0);
    }
    recs
}

/// A kill after the checkpoint of step 2, the run having gone on to 4 (simulated by putting
/// that checkpoint back), then a resume to 5: the log equals the uninterrupted run's instead
/// of holding 3–4 twice. The report's training time is the whole run's, its wall time at
/// least that, and a resume of the finished run keeps the training time.
#[test]
fn a_resume_after_a_kill_cuts_the_metrics_back_to_the_checkpoint() {
    let (a, b) = (temp_dir("killed-a"), temp_dir("killed-b"));
    let full = run(&a, 5, Default::default()).unwrap();
    run(&b, 2, Default::default()).unwrap();
    let (ck, ck2) = (b.join("checkpoint.safetensors"), b.join("ck2.safetensors"));
    std::fs::copy(&ck, &ck2).unwrap();
    run(&b, 4, resume()).unwrap();
    std::fs::copy(&ck2, &ck).unwrap();
    let rep = run(&b, 5, resume()).unwrap();
    let its: Vec<usize> = log(&b).iter().map(|r| r.iteration).collect();
    assert_eq!(its, vec![1, 2, 3, 4, 5]);
    assert_eq!(log(&b), log(&a));
    assert!(rep.wall_time_s >= rep.train_time_s && rep.train_time_s > 0.0);
    assert!(rep.invocation_wall_time_s <= rep.wall_time_s);
    // The loss and CG statistics cover every step of the run, across resumes (they used to
    // cover the last invocation's steps only: none at all for a finished run resumed).
    let stats = |r: &ImageTrainReport| (r.final_loss, r.mean_cg_iterations, r.max_cg_iterations);
    assert!(full.final_loss.is_finite() && full.mean_cg_iterations > 0.0);
    assert_eq!(stats(&rep), stats(&full));
    assert!((rep.mean_step_s - rep.train_time_s / 5.0).abs() <= 1e-12 * rep.mean_step_s);
    let again = run(&b, 5, resume()).unwrap();
    assert_eq!(stats(&again), stats(&full));
    assert_eq!(again.mean_step_s, rep.mean_step_s);
    assert_eq!(again.train_time_s, rep.train_time_s);
    assert!(again.wall_time_s >= again.train_time_s);
    assert_eq!(log(&b), log(&a));
    for d in [a, b] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// An interrupt seen once training has ended (here during the last step: the flag is set
/// from the start of a one-step run) skips the test score: the model file and checkpoint
/// are written, the report is not, the run says training ended; resuming the finished run
/// scores it.
#[test]
fn an_interrupt_after_training_skips_the_test_score() {
    let dir = temp_dir("eval-interrupt");
    let ended = Arc::new(AtomicBool::new(false));
    let opts = ImageRunOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        training_ended: Some(ended.clone()),
        ..Default::default()
    };
    match run(&dir, 1, opts) {
        Err(cpflow::CpflowError::EvaluationInterrupted { skipped, saved }) => {
            assert_eq!(skipped, "the test score");
            assert_eq!(
                saved,
                vec![
                    dir.join("model.safetensors"),
                    dir.join("checkpoint.safetensors")
                ]
            );
        }
        other => panic!("expected an interrupt after training, got {other:?}"),
    }
    assert!(ended.load(Ordering::Relaxed));
    assert!(dir.join("model.safetensors").exists());
    assert!(!dir.join("report.json").exists());
    let rep = run(&dir, 1, resume()).unwrap();
    assert_eq!(rep.iterations, 1);
    assert!(rep.test.is_some() && dir.join("report.json").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// An interrupt during a validation stops it at its next chunk (a large model's validation
/// takes minutes): here the flag is set from the start, so the validation after step 1
/// (`val_every = 1`) gives up before its first chunk, the checkpoint of step 1 is written and
/// the run is interrupted with no validation point. The resume validates step 1 first, so the
/// curve and the weights equal an uninterrupted run's. (Before, the validation ran to its end
/// and only then did the run stop.)
#[test]
fn an_interrupt_during_validation_stops_it_and_the_resume_redoes_it() {
    let (a, b) = (temp_dir("val-interrupt-a"), temp_dir("val-interrupt-b"));
    let run1 = |dir: &Path, iters: usize, opts| run_validating_every(1, dir, iters, opts);
    let full = run1(&a, 3, Default::default()).unwrap();
    let opts = ImageRunOptions {
        interrupt: Some(Arc::new(AtomicBool::new(true))),
        ..Default::default()
    };
    match run1(&b, 3, opts) {
        Err(cpflow::CpflowError::Interrupted { iteration, .. }) => assert_eq!(iteration, 1),
        other => panic!("expected an interrupt after step 1, got {other:?}"),
    }
    assert!(
        !b.join("model.safetensors").exists(),
        "no validation: no model file yet"
    );
    let resumed = run1(&b, 3, resume()).unwrap();
    let curve = |r: &ImageTrainReport| -> Vec<(usize, f64, f64)> {
        r.val_curve
            .iter()
            .map(|p| (p.iteration, p.val.bpd, p.val.std_err))
            .collect()
    };
    assert_eq!(curve(&resumed), curve(&full));
    assert_eq!(curve(&full).len(), 3);
    assert_eq!(
        std::fs::read(b.join("model.safetensors")).unwrap(),
        std::fs::read(a.join("model.safetensors")).unwrap()
    );
    for d in [a, b] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A checkpoint whose optimiser state holds a NaN is refused at load, naming the file and
/// the tensor (the model's weights were already refused by `set_weights`). It used to
/// resume, then stop at its first step with a non-finite loss that named this very file as
/// the last good checkpoint.
#[test]
fn a_checkpoint_with_a_non_finite_optimiser_moment_is_refused() {
    let dir = temp_dir("nan-moment");
    run(&dir, 1, Default::default()).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = md.metadata().clone();
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let name = names
        .into_iter()
        .find(|k| k.starts_with("adam.v."))
        .expect("an Adam second moment");
    let t = &tensors[&name];
    let nan = (t.ones_like().unwrap() * f64::NAN).unwrap();
    tensors.insert(name.clone(), nan);
    std::fs::write(&path, safetensors::serialize(tensors, info).unwrap()).unwrap();
    match run(&dir, 2, resume()) {
        Err(cpflow::CpflowError::Checkpoint(msg)) => {
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("tensor {name} holds")), "{msg}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}
