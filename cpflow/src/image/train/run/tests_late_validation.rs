//! Every validation of an image run is in `metrics.jsonl`, also one at an iteration whose
//! step wrote no line: a run that made no step (`max_minutes = 0`), a resume that ends at a
//! step that logged none.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;

use super::super::{ImageMetricsRecord, ImageRunOptions, ImageTrainReport, run_image_training};
use super::tests_stats::{config, setup, temp_dir};

fn train(
    dir: &std::path::Path,
    cfg: &super::super::ImageTrainConfig,
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
    run_image_training(&flow, cfg, &data, &Device::Cpu, &opts)
}

/// The validations of the metrics file: (iteration, bpd, standard error) bits.
fn logged(dir: &std::path::Path) -> Vec<(usize, u64, u64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<ImageMetricsRecord>(l).unwrap())
        .filter_map(|r| {
            Some((
                r.iteration,
                r.val_bpd?.to_bits(),
                r.val_bpd_std_err?.to_bits(),
            ))
        })
        .collect()
}

/// The report's validation curve, as [`logged`] has it.
fn curve(r: &ImageTrainReport) -> Vec<(usize, u64, u64)> {
    let pts = r.val_curve.iter();
    pts.map(|p| (p.iteration, p.val.bpd.to_bits(), p.val.std_err.to_bits()))
        .collect()
}

#[test]
fn a_run_without_steps_logs_its_validation() {
    let d = temp_dir("late-val-no-step");
    let cfg = super::super::ImageTrainConfig {
        max_iterations: None,
        max_minutes: Some(0.0),
        ..config(0)
    };
    let r = train(&d, &cfg, false, false).unwrap();
    assert_eq!((r.iterations, r.val_curve.len()), (0, 1), "{r:?}");
    assert_eq!(logged(&d), curve(&r));
    // The line has no step: its step numbers are null.
    let text = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert!(
        text.contains("\"loss\":null") && text.contains("\"iteration\":0"),
        "{text}"
    );
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn a_resume_ending_at_a_step_without_a_line_logs_its_validation() {
    let d = temp_dir("late-val-resume");
    // Paused after step 1, which logs no line (log_every = 20, no validation due) …
    assert!(train(&d, &config(3), false, true).is_err());
    assert!(logged(&d).is_empty());
    // … and resumed with the run ending there: the end-of-run validation at 1.
    let r = train(&d, &config(1), true, false).unwrap();
    assert_eq!((r.iterations, r.val_curve.len()), (1, 1), "{r:?}");
    assert_eq!(logged(&d), curve(&r));
    std::fs::remove_dir_all(d).ok();
}
