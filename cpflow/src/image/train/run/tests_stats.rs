//! An image run's step statistics across resumes, and a failed checkpoint write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use icnn::ImageShape;

use super::super::{
    IMAGE_TRAIN_METADATA_KEY, ImageData, ImageModelConfig, ImageRunOptions, ImageSet,
    ImageTrainConfig, ImageTrainReport, load_image_checkpoint, run_image_training,
};
use crate::config::SurrogateParams;
use crate::error::CpflowError;
use crate::image::config::ImageFlowConfig;

/// A one-block flow on 4×4 images: 8 training, 2 validation, 2 test images.
pub(super) fn setup() -> (ImageFlowConfig, ImageData) {
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
pub(super) fn config(iterations: usize) -> ImageTrainConfig {
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

pub(super) fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs to `iterations`, resuming when `resume`; with `pause`, the interrupt flag is set
/// from the start, so that the run pauses after its first step.
pub(super) fn run(
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

type Stats = (u64, u64, usize, usize, Option<u64>, Option<usize>);

fn stats(r: &ImageTrainReport) -> Stats {
    (
        r.final_loss.to_bits(),
        r.mean_cg_iterations.to_bits(),
        r.max_cg_iterations,
        r.cg_unconverged_steps,
        r.cg_converged.map(f64::to_bits),
        r.step_stats_since_iteration,
    )
}

/// Rewrites the training metadata of the checkpoint at `path` (its tensors unchanged) as
/// `edit` changes its JSON: a checkpoint as an older version wrote it.
pub(super) fn rewrite_checkpoint_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let ck = load_image_checkpoint(path, &Device::Cpu).unwrap();
    let mut json = serde_json::to_value(&ck.meta).unwrap();
    edit(&mut json);
    let weights = crate::image::ImageCheckpointMeta {
        format_version: crate::image::IMAGE_FORMAT_VERSION,
        flow: ck.meta.flow.clone(),
    };
    let info = HashMap::from([
        (
            crate::image::IMAGE_METADATA_KEY.to_string(),
            serde_json::to_string(&weights).unwrap(),
        ),
        (IMAGE_TRAIN_METADATA_KEY.to_string(), json.to_string()),
    ]);
    let tensors: Vec<_> = ck.tensors.into_iter().collect();
    let bytes = crate::named_vars::serialize_finite(tensors, info).unwrap();
    crate::checkpoint::write_atomic(path, &bytes).unwrap();
}

/// Paused after one step and resumed, the run reports the uninterrupted run's statistics,
/// its unconverged steps and converged fraction included; from a checkpoint without them or
/// with the image trainer's older totals (no CG systems counted), the report says they cover
/// the steps after the resume, and every CG number covers those.
#[test]
fn resumed_image_runs_report_the_whole_runs_statistics() {
    let (a, b) = (temp_dir("whole"), temp_dir("split"));
    let whole = run(&a, 3, false, false).unwrap();
    assert_eq!(whole.cg_unconverged_steps, 3, "{whole:?}");
    // One CG iteration never meets 1e-8: no system converged.
    assert_eq!(whole.cg_converged, Some(0.0), "{whole:?}");
    assert_eq!(whole.max_cg_iterations, 1, "{whole:?}");
    assert!(matches!(
        run(&b, 3, false, true),
        Err(CpflowError::Interrupted { iteration: 1, .. })
    ));
    assert_eq!(stats(&run(&b, 3, true, false).unwrap()), stats(&whole));
    // Older checkpoints, as they were written: no statistics at all, or the image
    // trainer's own totals (`step_totals`, without CG systems), and no image count.
    let older: [(&str, Option<serde_json::Value>); 2] = [
        ("none", None),
        (
            "totals",
            Some(serde_json::json!({
                "steps": 1, "last_loss": 2.5, "cg_mean_sum": 1.0, "cg_steps": 1,
                "cg_max": 1, "cg_unconverged_steps": 1
            })),
        ),
    ];
    for (name, totals) in older {
        let c = temp_dir(&format!("old-{name}"));
        assert!(run(&c, 3, false, true).is_err());
        let path = c.join("checkpoint.safetensors");
        let ck = load_image_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(
            (ck.meta.state.step_stats.steps, ck.meta.state.n_train),
            (1, Some(8))
        );
        rewrite_checkpoint_json(&path, |j| {
            let state = j["state"].as_object_mut().unwrap();
            assert!(state.remove("step_stats").is_some() && state.remove("n_train").is_some());
            if let Some(t) = totals {
                state.insert("step_totals".into(), t);
            }
        });
        let ck = load_image_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(
            (ck.meta.state.step_stats.steps, ck.meta.state.n_train),
            (0, None)
        );
        let r = run(&c, 3, true, false).unwrap();
        assert_eq!(
            (r.step_stats_since_iteration, r.cg_unconverged_steps),
            (Some(1), 2),
            "{name}"
        );
        assert_eq!(r.cg_converged, Some(0.0), "{name}");
        // The resume recorded the images it trains on.
        let ck = load_image_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(ck.meta.state.n_train, Some(8), "{name}");
        std::fs::remove_dir_all(c).ok();
    }
    for d in [a, b] {
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
