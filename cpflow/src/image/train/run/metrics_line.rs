//! A validation made after its step's `metrics.jsonl` line was written (the end-of-run one,
//! or the first one of a resume when an interrupt stopped it) goes into that line, so every
//! point of the report's validation curve is in the metrics exactly once.

use std::path::Path;

use super::super::ImageMetricsRecord;
use super::super::evaluate::BpdEstimate;
use crate::checkpoint::write_atomic;
use crate::error::{CpflowError, Result};

/// Sets `val_bpd` and `val_bpd_std_err` of the file's last line when it is the line of
/// `iteration` and has no validation yet (the file is replaced atomically); returns whether
/// it did. A missing file, another last line (a run that made no step; a checkpoint written
/// by a version that logged no line at an interrupted validation) or one of another format
/// is left as it is.
pub(super) fn add_validation(path: &Path, iteration: usize, val: &BpdEstimate) -> Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CpflowError::io(path, e)),
    };
    let body = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    let start = body.rfind('\n').map_or(0, |i| i + 1);
    let Ok(mut rec) = serde_json::from_str::<ImageMetricsRecord>(&body[start..]) else {
        return Ok(false);
    };
    if rec.iteration != iteration || rec.val_bpd.is_some() {
        return Ok(false);
    }
    rec.val_bpd = Some(val.bpd);
    rec.val_bpd_std_err = Some(val.std_err);
    let out = format!("{}{}\n", &body[..start], serde_json::to_string(&rec)?);
    write_atomic(path, out.as_bytes())?;
    tracing::debug!(iteration, "validation added to its metrics line");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    /// byte for byte.
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
        assert!(!add_validation(&path, 2, &val).unwrap(), "no file");
        let before = format!("{}\n{}\n", line(1, Some(4.0)), line(2, None));
        std::fs::write(&path, &before).unwrap();
        assert!(
            !add_validation(&path, 1, &val).unwrap(),
            "not the last line"
        );
        assert!(!add_validation(&path, 3, &val).unwrap(), "no line of 3");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert!(add_validation(&path, 2, &val).unwrap());
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            format!("{}\n{}\n", line(1, Some(4.0)), {
                let mut r: ImageMetricsRecord = serde_json::from_str(&line(2, None)).unwrap();
                (r.val_bpd, r.val_bpd_std_err) = (Some(3.25), Some(0.125));
                serde_json::to_string(&r).unwrap()
            })
        );
        assert!(!add_validation(&path, 2, &val).unwrap(), "already there");
        std::fs::remove_dir_all(&dir).ok();
    }
}
