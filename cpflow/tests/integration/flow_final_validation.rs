//! The end-of-run validation of a flow run is in `metrics.jsonl` (and the report's
//! history): in the line of the last step when that step logged, else in a validation-only
//! line. It used to appear only in `report.json` (`val_nll` at `val_iteration`) and the log.

use crate::flow_common::*;
use candle_core::Device;
use cpflow::metrics::read_metrics;
use cpflow::{
    Control, Dataset, FloatType, Flow, FlowConfig, FnObserver, MetricsRecord, Moment, NllEstimator,
    RunOptions, TrainConfig, Trainer,
};

/// 10 steps, exact validation after steps 1, 5 and 9 (`val_every = 4`), a line every
/// `log_every` steps.
fn config(log_every: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        max_iterations: 10,
        lr_schedule: cpflow::LrSchedule::Constant,
        val_every: 4,
        val_estimator: NllEstimator::Exact,
        train_slq_every: 0,
        log_every,
        restore_best: true,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn trainer(dir: &std::path::Path, log_every: usize) -> Trainer {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2))
        .with_float(FloatType::F64)
        .with_init_seed(5);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    Trainer::new(flow, config(log_every))
        .unwrap()
        .with_options(RunOptions {
            out_dir: Some(dir.to_path_buf()),
            progress_bar: false,
            ..RunOptions::default()
        })
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-final-val-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// `(iteration, val_nll)` of the records that have a validation.
fn validations(recs: &[MetricsRecord]) -> Vec<(usize, f64)> {
    recs.iter()
        .filter_map(|r| r.val_nll.map(|v| (r.iteration, v)))
        .collect()
}

/// The run ends at 10, not a validation point: its final validation fills the line of step
/// 10, once, and is the report's when the last weights are kept; the history says the same.
#[test]
fn the_final_validation_fills_the_line_of_the_last_step() {
    let dir = tmpdir("fill");
    let (train, val) = (Dataset::new(data(64, 2, 1)), Dataset::new(data(32, 2, 2)));
    let mut tr = trainer(&dir, 1);
    let rep = tr.fit(&train, Some(&val)).unwrap();
    let recs = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let its: Vec<usize> = recs.iter().map(|r| r.iteration).collect();
    assert_eq!(its, (1..=10).collect::<Vec<_>>(), "one line per step");
    let vals = validations(&recs);
    let at: Vec<usize> = vals.iter().map(|v| v.0).collect();
    assert_eq!(at, [1, 5, 9, 10], "{vals:?}");
    let last = &recs[9];
    assert!(
        last.loss.is_finite() && last.lr.is_finite(),
        "the step's own line: {last:?}"
    );
    // The kept weights' validation is one of the metrics' (the lowest: the trainer keeps the
    // weights of the lowest validation NLL, the last ones included).
    let lowest = vals
        .iter()
        .fold((0, f64::INFINITY), |m, v| if v.1 < m.1 { *v } else { m });
    assert_eq!(
        (rep.best_iteration, rep.best_val_nll),
        (Some(lowest.0), Some(lowest.1))
    );
    assert_eq!(
        validations(&rep.history),
        vals,
        "the history holds the same"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An observer stops the run after step 6, which logged no line (`log_every = 4`: lines
/// after steps 1, 5 and 9): the final validation of step 6 gets a line of its own, whose
/// step numbers are null.
#[test]
fn a_final_validation_without_its_step_line_gets_its_own_line() {
    let dir = tmpdir("own");
    let (train, val) = (Dataset::new(data(64, 2, 1)), Dataset::new(data(32, 2, 2)));
    let mut tr = trainer(&dir, 4);
    let mut stop = FnObserver::new(3, |t: &Trainer, m: Moment| {
        Ok(if m == Moment::Periodic && t.state().iteration >= 6 {
            Control::Stop
        } else {
            Control::Continue
        })
    });
    let rep = tr
        .fit_observed(&train, Some(&val), &mut [&mut stop])
        .unwrap();
    assert_eq!(rep.iterations, 6);
    let recs = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let its: Vec<usize> = recs.iter().map(|r| r.iteration).collect();
    assert_eq!(its, [1, 5, 6], "{recs:?}");
    let only = &recs[2];
    assert!(only.val_nll.is_some_and(f64::is_finite), "{only:?}");
    assert!(only.loss.is_nan() && only.lr.is_nan() && only.grad_norm.is_nan());
    assert_eq!((only.epoch, only.cg_converged), (tr.state().epoch, None));
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(
        text.lines().last().unwrap().contains(r#""loss":null"#),
        "{text}"
    );
    assert_eq!(validations(&rep.history), validations(&recs));
    std::fs::remove_dir_all(&dir).ok();
}
