//! A validation made after its step's `metrics.jsonl` line was written (the end-of-run one,
//! or the first one of a resume when an interrupt stopped it) goes into that line, so every
//! point of the report's validation curve is in the metrics exactly once; one whose
//! iteration has no line (a run that made no step, `max_minutes = 0`; a resume at a step
//! that wrote none) gets a line of its own ([`validation_only_record`];
//! `metrics::record_late_validation` does both).

use super::super::ImageMetricsRecord;
use super::super::evaluate::BpdEstimate;
use crate::metrics::ValidatedLine;

impl ValidatedLine for ImageMetricsRecord {
    /// The validation's bits/dim and its standard error.
    type Validation = (f64, f64);
    fn iteration(&self) -> usize {
        self.iteration
    }
    fn has_validation(&self) -> bool {
        self.val_bpd.is_some()
    }
    fn set_validation(&mut self, (bpd, std_err): (f64, f64)) {
        self.val_bpd = Some(bpd);
        self.val_bpd_std_err = Some(std_err);
    }
}

/// The line of a validation at an iteration without a step line: the validation, the
/// epochs and clocks; the step's numbers (loss, learning rate, gradient norm, CG, step
/// time) are NaN, written as `null`, and `cg_max_iterations` is 0.
pub(super) fn validation_only_record(
    iteration: usize,
    epoch: f64,
    val: &BpdEstimate,
    train_time_s: f64,
    elapsed_s: f64,
) -> ImageMetricsRecord {
    ImageMetricsRecord {
        iteration,
        epoch,
        loss: f64::NAN,
        train_bpd_slq: None,
        lr: f64::NAN,
        grad_norm: f64::NAN,
        cg_iterations: f64::NAN,
        cg_max_iterations: 0,
        cg_converged_fraction: f64::NAN,
        val_bpd: Some(val.bpd),
        val_bpd_std_err: Some(val.std_err),
        step_s: f64::NAN,
        train_time_s,
        elapsed_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::metrics::{LineUpdate, add_validation_to_last_line};
    use std::path::Path;

    /// What the trainer's late validation does first ([`crate::metrics::record_late_validation`]).
    fn add_validation(path: &Path, iteration: usize, val: &BpdEstimate) -> Result<LineUpdate> {
        add_validation_to_last_line::<ImageMetricsRecord>(path, iteration, (val.bpd, val.std_err))
    }

    fn line(iteration: usize, val: Option<f64>) -> String {
        let rec = ImageMetricsRecord {
            iteration,
            epoch: 0.5,
            loss: 3.0,
            train_bpd_slq: None,
            lr: 1e-3,
            grad_norm: 0.5,
            cg_iterations: 2.0,
            cg_max_iterations: 3,
            cg_converged_fraction: 1.0,
            val_bpd: val,
            val_bpd_std_err: val.map(|_| 0.1),
            step_s: 0.1,
            train_time_s: 1.0,
            elapsed_s: 1.0,
        };
        serde_json::to_string(&rec).unwrap()
    }

    /// Only the last line, only its own iteration, only once; the lines before are kept
    /// byte for byte; a missing line is told apart from one left as it is.
    #[test]
    fn the_validation_goes_into_the_last_line_of_its_iteration_once() {
        let dir = std::env::temp_dir().join(format!("cpflow-metrics-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let val = BpdEstimate {
            bpd: 3.25,
            std_err: 0.125,
            images: 4,
        };
        use LineUpdate::*;
        assert_eq!(add_validation(&path, 2, &val).unwrap(), NoLine, "no file");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(add_validation(&path, 0, &val).unwrap(), NoLine, "no line");
        let before = format!("{}\n{}\n", line(1, Some(4.0)), line(2, None));
        std::fs::write(&path, &before).unwrap();
        assert_eq!(
            add_validation(&path, 1, &val).unwrap(),
            Left,
            "not the last line"
        );
        assert_eq!(
            add_validation(&path, 3, &val).unwrap(),
            NoLine,
            "no line of 3"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert_eq!(add_validation(&path, 2, &val).unwrap(), Added);
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            format!("{}\n{}\n", line(1, Some(4.0)), {
                let mut r: ImageMetricsRecord = serde_json::from_str(&line(2, None)).unwrap();
                (r.val_bpd, r.val_bpd_std_err) = (Some(3.25), Some(0.125));
                serde_json::to_string(&r).unwrap()
            })
        );
        assert_eq!(
            add_validation(&path, 2, &val).unwrap(),
            Left,
            "already there"
        );
        // A validation-only line reads back, its step numbers NaN.
        let only = validation_only_record(0, 0.0, &val, 0.0, 1.5);
        let back: ImageMetricsRecord =
            serde_json::from_str(&serde_json::to_string(&only).unwrap()).unwrap();
        assert_eq!(
            (back.iteration, back.val_bpd, back.elapsed_s),
            (0, Some(3.25), 1.5)
        );
        assert!(back.loss.is_nan() && back.lr.is_nan() && back.step_s.is_nan());
        std::fs::remove_dir_all(&dir).ok();
    }
}
