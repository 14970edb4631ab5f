//! An image run's step statistics across resumes, and a failed checkpoint write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use icnn::ImageShape;

use super::super::{
    ImageData, ImageModelConfig, ImageRunOptions, ImageSet, ImageStepTotals, ImageTrainConfig,
    ImageTrainReport, load_image_checkpoint, run_image_training, save_image_checkpoint,
};
use crate::config::SurrogateParams;
use crate::error::CpflowError;
use crate::image::config::ImageFlowConfig;

fn setup() -> (ImageFlowConfig, ImageData) {
    let shape = ImageShape::new(1, 4, 4);
    let set = |n: usize, k: usize| {
        ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect()).unwrap()
    };
    let data = ImageData::new(set(8, 37), set(2, 53), set(2, 71)).unwrap();
    let model = ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1],
        ..Default::default()
    };
    (model.flow_config(shape, 0.05).unwrap(), data)
}

/// CG capped at one iteration with a tight tolerance: steps leave systems unconverged.
fn config(iterations: usize) -> ImageTrainConfig {
    ImageTrainConfig {
        max_iterations: Some(iterations),
        batch_size: 2,
        surrogate: SurrogateParams {
            cg_atol: 1e-8,
            cg_rtol: 0.0,
            cg_max_iters: Some(1),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs to `iterations`, resuming when `resume`; with `pause_after`, the interrupt flag is
/// set from the start, so that the run pauses after its first step.
fn run(
    dir: &std::path::Path,
    iterations: usize,
    resume: bool,
    pause: bool,
) -> crate::Result<ImageTrainReport> {
    let (flow, data) = setup();
    let opts = ImageRunOptions {
        out_dir: Some(dir.to_path_buf()),
        resume,
        interrupt: Some(Arc::new(AtomicBool::new(pause))),
        ..Default::default()
    };
    run_image_training(&flow, &config(iterations), &data, &Device::Cpu, &opts)
}

fn stats(r: &ImageTrainReport) -> (u64, u64, usize, usize, Option<usize>) {
    (
        r.final_loss.to_bits(),
        r.mean_cg_iterations.to_bits(),
        r.max_cg_iterations,
        r.cg_unconverged_steps,
        r.step_stats_since_iteration,
    )
}

/// Paused after one step and resumed, the run reports the uninterrupted run's statistics,
/// its unconverged steps included; from a checkpoint without them (an older one), the
/// report says they cover the steps after the resume.
#[test]
fn resumed_image_runs_report_the_whole_runs_statistics() {
    let (a, b, c) = (temp_dir("whole"), temp_dir("split"), temp_dir("old"));
    let whole = run(&a, 3, false, false).unwrap();
    assert_eq!(whole.cg_unconverged_steps, 3, "{whole:?}");
    assert!(matches!(
        run(&b, 3, false, true),
        Err(CpflowError::Interrupted { iteration: 1, .. })
    ));
    assert_eq!(stats(&run(&b, 3, true, false).unwrap()), stats(&whole));
    // An older checkpoint: no step totals.
    assert!(run(&c, 3, false, true).is_err());
    let path = c.join("checkpoint.safetensors");
    let mut ck = load_image_checkpoint(&path, &Device::Cpu).unwrap();
    assert_eq!(ck.meta.state.step_totals.steps, 1);
    ck.meta.state.step_totals = ImageStepTotals::default();
    save_image_checkpoint(&path, &ck.meta, ck.tensors.into_iter().collect()).unwrap();
    let r = run(&c, 3, true, false).unwrap();
    assert_eq!(
        (r.step_stats_since_iteration, r.cg_unconverged_steps),
        (Some(1), 2)
    );
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A checkpoint that cannot be written fails naming the iteration and the checkpoint saved
/// before.
#[test]
fn a_failed_image_checkpoint_write_names_the_saved_iteration() {
    let d = temp_dir("ckpt-write");
    assert!(run(&d, 3, false, true).is_err());
    let path = d.join("checkpoint.safetensors");
    let blocker = crate::checkpoint::hidden_file_beside(&path, "tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let (flow, data) = setup();
    let opts = ImageRunOptions {
        out_dir: Some(d.clone()),
        resume: true,
        interrupt: Some(flag.clone()),
        ..Default::default()
    };
    let err = run_image_training(&flow, &config(3), &data, &Device::Cpu, &opts).unwrap_err();
    assert!(!flag.load(Ordering::Relaxed));
    match &err {
        CpflowError::CheckpointWrite {
            iteration: 3,
            saved: Some((1, p)),
            ..
        } if *p == path => {}
        other => panic!("expected the final write at 3 to fail, 1 saved: {other:?}"),
    }
    std::fs::remove_dir(&blocker).unwrap();
    std::fs::remove_dir_all(d).ok();
}
