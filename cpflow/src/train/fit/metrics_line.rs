//! The end-of-run validation of a flow run in `metrics.jsonl`, as the image trainer puts
//! its own there (`image/train/run/metrics_line.rs`): it is made after the line of the last
//! step was written, so it goes into that line when it is the file's last and has no
//! validation yet, or into a validation-only line when the iteration has no line
//! (`metrics::record_late_validation`). Every validation of the report (`val_nll`,
//! `val_iteration`) is then in the metrics.

use crate::metrics::MetricsRecord;

/// The line of a validation at an iteration without a step line: the validation, the epoch
/// and the clock; the step's numbers (loss, learning rate, gradient norm, CG iterations,
/// samples per second) are NaN, written as `null`, and `cg_converged` is absent.
pub(super) fn validation_only_record(
    iteration: usize,
    epoch: usize,
    val_nll: f64,
    elapsed_s: f64,
) -> MetricsRecord {
    MetricsRecord {
        iteration,
        epoch,
        loss: f64::NAN,
        lr: f64::NAN,
        grad_norm: f64::NAN,
        cg_iterations: f64::NAN,
        cg_converged: None,
        train_nll_slq: None,
        val_nll: Some(val_nll),
        samples_per_sec: f64::NAN,
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
    fn add_validation(path: &Path, iteration: usize, val_nll: f64) -> Result<LineUpdate> {
        add_validation_to_last_line::<MetricsRecord>(path, iteration, val_nll)
    }

    fn line(iteration: usize, val: Option<f64>) -> String {
        let rec = MetricsRecord {
            iteration,
            epoch: 0,
            loss: 3.0,
            lr: 1e-3,
            grad_norm: 0.5,
            cg_iterations: 2.0,
            cg_converged: Some(1.0),
            train_nll_slq: None,
            val_nll: val,
            samples_per_sec: 100.0,
            elapsed_s: 1.0,
        };
        serde_json::to_string(&rec).unwrap()
    }

    /// Only the last line, only its own iteration, only once; the lines before are kept
    /// byte for byte; a missing line is told apart from one left as it is; a
    /// validation-only line reads back with its step numbers NaN.
    #[test]
    fn the_final_validation_goes_into_the_last_line_of_its_iteration_once() {
        let dir =
            std::env::temp_dir().join(format!("cpflow-flow-metrics-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        use LineUpdate::*;
        assert_eq!(add_validation(&path, 2, 3.25).unwrap(), NoLine, "no file");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(add_validation(&path, 0, 3.25).unwrap(), NoLine, "no line");
        let before = format!("{}\n{}\n", line(1, Some(4.0)), line(2, None));
        std::fs::write(&path, &before).unwrap();
        assert_eq!(
            add_validation(&path, 1, 3.25).unwrap(),
            Left,
            "not the last line"
        );
        assert_eq!(
            add_validation(&path, 3, 3.25).unwrap(),
            NoLine,
            "no line of 3"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert_eq!(add_validation(&path, 2, 3.25).unwrap(), Added);
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            format!("{}\n{}\n", line(1, Some(4.0)), line(2, Some(3.25)))
        );
        assert_eq!(
            add_validation(&path, 2, 1.0).unwrap(),
            Left,
            "already there"
        );
        let only = validation_only_record(7, 1, 3.5, 1.5);
        let text = serde_json::to_string(&only).unwrap();
        assert!(
            text.contains(r#""loss":null"#) && !text.contains("cg_converged"),
            "{text}"
        );
        let back: MetricsRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.iteration, back.epoch, back.val_nll, back.elapsed_s),
            (7, 1, Some(3.5), 1.5)
        );
        assert!(back.loss.is_nan() && back.lr.is_nan() && back.samples_per_sec.is_nan());
        std::fs::remove_dir_all(&dir).ok();
    }
}
