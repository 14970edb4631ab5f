//! The end-of-run validation of a flow run in `metrics.jsonl`, as the image trainer puts
//! its own there (`image/train/run/metrics_line.rs`): it is made after the line of the last
//! step was written, so it goes into that line when it is the file's last and has no
//! validation yet, or into a validation-only line when the iteration has no line. Every
//! validation of the report (`val_nll`, `val_iteration`) is then in the metrics.

use std::path::Path;

use crate::checkpoint::write_atomic;
use crate::error::{CpflowError, Result};
use crate::metrics::MetricsRecord;

/// What [`add_validation`] did with the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineUpdate {
    /// The validation is now in the last line, the line of its iteration.
    Added,
    /// The file has no line of the iteration (missing, empty, or its last line is of an
    /// earlier iteration): the validation needs a line of its own.
    NoLine,
    /// Left as it was: the last line already has a validation, is of a later iteration or
    /// is not a flow record.
    Left,
}

/// Sets `val_nll` of the file's last line when it is the line of `iteration` and has no
/// validation yet (the file is replaced atomically; the lines before are kept byte for
/// byte).
pub(super) fn add_validation(path: &Path, iteration: usize, val_nll: f64) -> Result<LineUpdate> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LineUpdate::NoLine),
        Err(e) => return Err(CpflowError::io(path, e)),
    };
    let body = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    if body.is_empty() {
        return Ok(LineUpdate::NoLine);
    }
    let start = body.rfind('\n').map_or(0, |i| i + 1);
    let Ok(mut rec) = serde_json::from_str::<MetricsRecord>(&body[start..]) else {
        return Ok(LineUpdate::Left);
    };
    if rec.iteration < iteration {
        return Ok(LineUpdate::NoLine);
    }
    if rec.iteration != iteration || rec.val_nll.is_some() {
        return Ok(LineUpdate::Left);
    }
    rec.val_nll = Some(val_nll);
    let out = format!("{}{}\n", &body[..start], serde_json::to_string(&rec)?);
    write_atomic(path, out.as_bytes())?;
    tracing::debug!(iteration, "final validation added to its metrics line");
    Ok(LineUpdate::Added)
}

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
