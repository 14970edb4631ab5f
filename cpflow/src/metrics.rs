//! Training records: one JSON object per line in `metrics.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{CpflowError, Result};

/// One line of the metrics file.
///
/// A line is written after a step when it logs (every `log_every` steps, at a validation or
/// SLQ monitor step, and after the last step of a call). Every validation of the run is in
/// some line's `val_nll`: the periodic ones in their step's line, and the end-of-run
/// validation of the last weights (`restore_best`: the one `report.json` gives as `val_nll`
/// at `val_iteration` when the last weights are kept) in the line of the last step, or, when
/// that iteration has no line (e.g. a resume of a finished run whose file lost it), in a
/// validation-only line whose step numbers (`loss`, `lr`, `grad_norm`, `cg_iterations`,
/// `samples_per_sec`) are `null` (read back as NaN), as the image trainer's metrics do.
///
/// ```
/// use cpflow::MetricsRecord;
/// let rec = |iteration: usize| MetricsRecord {
///     iteration, epoch: 0, loss: 1.5, lr: 1e-3, grad_norm: 0.1, cg_iterations: 2.0,
///     cg_converged: Some(1.0), train_nll_slq: None, val_nll: None,
///     samples_per_sec: 100.0, elapsed_s: 0.5,
/// };
/// let line = serde_json::to_string(&rec(100)).unwrap();
/// assert!(!line.contains("val_nll")); // absent values are left out of the line
/// assert_eq!(serde_json::from_str::<MetricsRecord>(&line).unwrap(), rec(100));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Optimiser steps done.
    pub iteration: usize,
    /// Epoch.
    pub epoch: usize,
    /// Training loss of the last step (the CG surrogate: **not** an NLL; or the exact NLL
    /// with the exact objective).
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    /// Learning rate used by the last step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Gradient norm before clipping.
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// Mean CG iterations per system in the last step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub cg_iterations: f64,
    /// Fraction of the CG systems of the surrogate (sample × probe × block) that met the
    /// tolerance, over the steps since the previous record (this call's first record: since
    /// the call started, e.g. a resume); 1 when all did. Below 1, CG stopped at
    /// `cg_max_iters` on some systems and their gradient is approximate (the trainer warns).
    /// `None`: no CG systems in the window (the exact objective), or a record written before
    /// this field existed. The VAE's epoch records have the same field (there 1 without
    /// systems).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cg_converged: Option<f64>,
    /// SLQ estimate of the NLL on the last training batch (when the monitor ran).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub train_nll_slq: Option<f64>,
    /// Validation NLL of the weights after this step (`train.val_estimator`), when they
    /// were validated: at a periodic validation, or by the end of the run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_nll: Option<f64>,
    /// Training samples per second since the previous record.
    #[serde(deserialize_with = "f64_or_nan")]
    pub samples_per_sec: f64,
    /// Wall-clock seconds since this process started training.
    pub elapsed_s: f64,
}

/// A number written as `null` (serde_json writes NaN so) reads back as NaN.
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Appends [`MetricsRecord`]s to a JSON-lines file.
///
/// ```
/// use cpflow::MetricsRecord;
/// use cpflow::metrics::{MetricsWriter, read_metrics};
/// # fn main() -> cpflow::Result<()> {
/// let rec = |iteration: usize| MetricsRecord {
///     iteration, epoch: 0, loss: 1.5, lr: 1e-3, grad_norm: 0.1, cg_iterations: 2.0,
///     cg_converged: Some(1.0), train_nll_slq: None, val_nll: None,
///     samples_per_sec: 100.0, elapsed_s: 0.5,
/// };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-metrics-writer-{}", std::process::id()));
/// let path = dir.join("metrics.jsonl");
/// let mut w = MetricsWriter::create(&path)?; // creates the directory, starts a fresh file
/// w.write(&rec(1))?;
/// drop(w);
/// let mut w = MetricsWriter::append(&path)?; // a later call appends
/// w.write(&rec(2))?;
/// assert_eq!(read_metrics(&path)?, [rec(1), rec(2)]);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Open (append; created if missing) `path`.
    pub fn append(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CpflowError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| CpflowError::io(path, e))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Create (or truncate) `path`: a fresh run starts a fresh file.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CpflowError::io(dir, e))?;
        }
        let file = std::fs::File::create(path).map_err(|e| CpflowError::io(path, e))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Write one record (one line) and flush. Any serialisable record works (the VAE
    /// writes its own epoch records).
    pub fn write<T: Serialize>(&mut self, rec: &T) -> Result<()> {
        let line = serde_json::to_string(rec)?;
        writeln!(self.file, "{line}").map_err(|e| CpflowError::io(&self.path, e))?;
        self.file
            .flush()
            .map_err(|e| CpflowError::io(&self.path, e))
    }
}

/// Read a metrics file back (blank lines are skipped; a line that is not a record is an
/// [`CpflowError::InvalidInput`] naming the file and the line, 1-based).
///
/// ```
/// use cpflow::metrics::read_metrics;
/// # fn main() -> cpflow::Result<()> {
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-metrics-{}", std::process::id()));
/// let path = dir.join("metrics.jsonl");
/// std::fs::create_dir_all(&dir).ok();
/// let line = r#"{"iteration":5,"epoch":0,"loss":1.5,"lr":0.001,"grad_norm":0.1,"cg_iterations":2.0,"samples_per_sec":100.0,"elapsed_s":0.5}"#;
/// std::fs::write(&path, format!("{line}\n\n")).unwrap();
/// let recs = read_metrics(&path)?;
/// assert_eq!((recs.len(), recs[0].iteration, recs[0].val_nll), (1, 5, None));
/// // A line that is not a record is refused naming the file and the line.
/// std::fs::write(&path, format!("{line}\n\nnot json\n")).unwrap();
/// let err = read_metrics(&path).unwrap_err().to_string();
/// assert!(err.contains("metrics.jsonl line 3: not a metrics record"), "{err}");
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| CpflowError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                CpflowError::InvalidInput(format!(
                    "{} line {}: not a metrics record ({e})",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// Cuts a metrics file back to a checkpoint before a resume appends to it: every record whose
/// integer field `key` (`"iteration"` for the flow and image trainers, `"epoch"` for the VAE)
/// is above `last` is dropped, with a last line cut short by a kill (no newline, not JSON).
/// Those lines were written after the checkpoint was: the resumed run writes them again, so
/// without the cut they would appear twice, out of order. Other lines are kept as they are.
/// The file is replaced atomically (temporary file, rename) and only when something is
/// dropped; a missing file is left missing. Returns the number of lines dropped.
///
/// ```
/// use cpflow::metrics::truncate_metrics;
/// # fn main() -> cpflow::Result<()> {
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-truncate-metrics-{}", std::process::id()));
/// let path = dir.join("metrics.jsonl");
/// std::fs::create_dir_all(&dir).ok();
/// // Records up to iteration 300 and a line cut short by a kill; the checkpoint is at 200.
/// let text = "{\"iteration\":100}\n{\"iteration\":200}\n{\"iteration\":300}\n{\"itera";
/// std::fs::write(&path, text).unwrap();
/// assert_eq!(truncate_metrics(&path, "iteration", 200)?, 2);
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"iteration\":100}\n{\"iteration\":200}\n");
/// assert_eq!(truncate_metrics(&dir.join("missing.jsonl"), "iteration", 200)?, 0);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn truncate_metrics(path: &Path, key: &str, last: u64) -> Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CpflowError::io(path, e)),
    };
    let mut kept = String::with_capacity(text.len());
    let mut cut = MetricsCut::default();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let record = serde_json::from_str::<serde_json::Value>(line.trim()).ok();
        let position = record.as_ref().and_then(|r| r.get(key)?.as_u64());
        if !line.ends_with('\n') && record.is_none() {
            cut.torn_line = Some(i + 1);
            continue;
        }
        cut.last_seen = position.or(cut.last_seen);
        if position.is_some_and(|p| p > last) {
            cut.after_checkpoint += 1;
            continue;
        }
        if position.is_none() && !line.trim().is_empty() {
            cut.garbled_lines.push(i + 1);
        }
        cut.last_kept = position.or(cut.last_kept);
        kept.push_str(line);
        if !line.ends_with('\n') {
            kept.push('\n');
        }
    }
    let dropped = cut.after_checkpoint + usize::from(cut.torn_line.is_some());
    if dropped > 0 {
        crate::checkpoint::write_atomic(path, kept.as_bytes())?;
        tracing::info!(
            file = %path.display(),
            dropped,
            after = last,
            "cut the metrics back to the checkpoint"
        );
    }
    cut.warn(path, key, last);
    Ok(dropped)
}

/// What [`truncate_metrics`] found in a metrics file beyond the records it keeps.
#[derive(Default)]
struct MetricsCut {
    /// Records after the checkpoint (dropped: the resume writes them again).
    after_checkpoint: usize,
    /// The line number (from 1) of a last line cut short: no newline, not JSON (dropped).
    torn_line: Option<usize>,
    /// Line numbers of lines kept that are not records with the position key (not JSON, or
    /// JSON without it).
    garbled_lines: Vec<usize>,
    /// The position (`key`) of the last record kept.
    last_kept: Option<u64>,
    /// The position of the last whole record, kept or dropped.
    last_seen: Option<u64>,
}

impl MetricsCut {
    /// Warns of a dropped cut-short line that may have held a record up to the checkpoint
    /// at `last` (the resume writes again only the records after it; a line cut short after
    /// a record past the checkpoint, the usual kill, is one of those and is not warned of),
    /// and of kept lines that are not records, naming the file, the lines and what was
    /// dropped.
    fn warn(&self, path: &Path, key: &str, last: u64) {
        let kept_to = match self.last_kept {
            Some(p) => {
                format!("; the last record kept is at {key} {p}, the checkpoint at {key} {last}")
            }
            None => format!("; no record is left (the checkpoint is at {key} {last})"),
        };
        let rewritten = self.last_seen.is_some_and(|p| p >= last);
        if let Some(line) = self.torn_line.filter(|_| !rewritten) {
            let also = match self.after_checkpoint {
                0 => String::new(),
                n => format!(" (and {n} record(s) after the checkpoint's {key} {last})"),
            };
            tracing::warn!(
                "{}: line {line}, its last, is cut short (no newline, not a JSON record): a \
                 partial write (the process was killed, the disk was full, or the file was cut); \
                 dropped it{also}, {} line(s) in all; the record it held, up to the checkpoint, is \
                 lost{kept_to}",
                path.display(),
                self.after_checkpoint + 1
            );
        }
        if !self.garbled_lines.is_empty() {
            let lines: Vec<String> = self.garbled_lines.iter().map(|l| l.to_string()).collect();
            tracing::warn!(
                "{}: line(s) {} are not JSON records with an `{key}` (damaged, e.g. a partial \
                 write followed by more lines): kept as they are, but reading the file back \
                 fails on them; {} other line(s) were dropped (after the checkpoint's {key} \
                 {last}){kept_to}",
                path.display(),
                lines.join(", "),
                self.after_checkpoint
            );
        }
    }
}

/// What [`add_validation_to_last_line`] did with a `metrics.jsonl` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineUpdate {
    /// The validation is now in the last line, the line of its iteration.
    Added,
    /// The file has no line of the iteration (missing, empty, or its last line is of an
    /// earlier iteration): the validation needs a line of its own.
    NoLine,
    /// Left as it was: the last line already has a validation, is of a later iteration or
    /// of another format.
    Left,
}

/// A `metrics.jsonl` line that a validation made after it was written can be added to (the
/// flow's [`MetricsRecord`], the image trainer's record).
pub(crate) trait ValidatedLine: Serialize + serde::de::DeserializeOwned {
    /// The validation's value.
    type Validation;
    /// The iteration of the line.
    fn iteration(&self) -> usize;
    /// Whether the line holds a validation.
    fn has_validation(&self) -> bool;
    /// Puts the validation into the line.
    fn set_validation(&mut self, val: Self::Validation);
}

/// Sets the validation of the file's last line (a `R` record) when it is the line of
/// `iteration` and has none yet; the file is replaced atomically, the lines before it kept
/// byte for byte.
pub(crate) fn add_validation_to_last_line<R: ValidatedLine>(
    path: &Path,
    iteration: usize,
    val: R::Validation,
) -> Result<LineUpdate> {
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
    let Ok(mut rec) = serde_json::from_str::<R>(&body[start..]) else {
        return Ok(LineUpdate::Left);
    };
    if rec.iteration() < iteration {
        return Ok(LineUpdate::NoLine);
    }
    if rec.iteration() != iteration || rec.has_validation() {
        return Ok(LineUpdate::Left);
    }
    rec.set_validation(val);
    let out = format!("{}{}\n", &body[..start], serde_json::to_string(&rec)?);
    crate::checkpoint::write_atomic(path, out.as_bytes())?;
    tracing::debug!(iteration, "validation added to its metrics line");
    Ok(LineUpdate::Added)
}

/// Records a validation made after the `metrics.jsonl` line of its step was written (the
/// flow and image trainers' end-of-run validation, the image trainer's first validation of
/// a resume): into the file's last line when it is the line of `iteration` without a
/// validation ([`add_validation_to_last_line`]); when the file has no line of `iteration`
/// ([`LineUpdate::NoLine`]), appended as the validation-only line `only_line()`. Returns
/// whether it appended that line.
pub(crate) fn record_late_validation<R: ValidatedLine>(
    path: &Path,
    iteration: usize,
    val: R::Validation,
    only_line: impl FnOnce() -> R,
) -> Result<bool> {
    if add_validation_to_last_line::<R>(path, iteration, val)? != LineUpdate::NoLine {
        return Ok(false);
    }
    MetricsWriter::append(path)?.write(&only_line())?;
    Ok(true)
}

impl ValidatedLine for MetricsRecord {
    type Validation = f64;
    fn iteration(&self) -> usize {
        self.iteration
    }
    fn has_validation(&self) -> bool {
        self.val_nll.is_some()
    }
    fn set_validation(&mut self, val: f64) {
        self.val_nll = Some(val);
    }
}

#[cfg(test)]
mod tests {
    use super::{MetricsRecord, read_metrics, record_late_validation, truncate_metrics};

    /// A record written before `cg_converged` existed still parses (as `None`); a record
    /// without CG systems leaves the key out, one with them round-trips.
    #[test]
    fn cg_converged_is_optional_in_old_and_new_records() {
        let old = r#"{"iteration":3,"epoch":0,"loss":1.5,"lr":0.001,"grad_norm":2.0,"cg_iterations":1.75,"val_nll":2.5,"samples_per_sec":100.0,"elapsed_s":0.5}"#;
        let rec: MetricsRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            (rec.iteration, rec.cg_converged, rec.val_nll),
            (3, None, Some(2.5))
        );
        assert!(
            !serde_json::to_string(&rec)
                .unwrap()
                .contains("cg_converged")
        );
        let new = MetricsRecord {
            cg_converged: Some(0.75),
            ..rec
        };
        let line = serde_json::to_string(&new).unwrap();
        assert!(line.contains(r#""cg_converged":0.75"#), "{line}");
        assert_eq!(serde_json::from_str::<MetricsRecord>(&line).unwrap(), new);
    }

    /// Records past the checkpoint and a torn last line go; earlier records, a line that is
    /// not a record, and a missing file are left alone.
    #[test]
    fn metrics_are_cut_back_to_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("cpflow-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        assert_eq!(truncate_metrics(&path, "iteration", 3).unwrap(), 0);
        assert!(!path.exists());
        let lines = [
            r#"{"iteration":1,"loss":0.5}"#,
            "not a record",
            r#"{"iteration":3,"loss":0.25}"#,
            r#"{"iteration":4,"loss":0.125}"#,
            r#"{"iteration":2,"loss":1.0}"#,
        ];
        std::fs::write(&path, format!("{}\n{{\"iterat", lines.join("\n"))).unwrap();
        assert_eq!(truncate_metrics(&path, "iteration", 3).unwrap(), 2);
        let want = [lines[0], lines[1], lines[2], lines[4]].join("\n") + "\n";
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        assert_eq!(truncate_metrics(&path, "iteration", 3).unwrap(), 0);
        assert_eq!(truncate_metrics(&path, "epoch", 0).unwrap(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A late validation goes into its step's last line; without a line of its iteration
    /// it is appended as the validation-only line, and only then; a last line of a later
    /// iteration is left and nothing appended.
    #[test]
    fn a_late_validation_goes_into_its_line_or_a_line_of_its_own() {
        let dir =
            std::env::temp_dir().join(format!("cpflow-late-validation-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let rec = |iteration: usize, loss: f64, val_nll: Option<f64>| MetricsRecord {
            iteration,
            epoch: 0,
            loss,
            lr: 1e-3,
            grad_norm: 0.5,
            cg_iterations: 2.0,
            cg_converged: None,
            train_nll_slq: None,
            val_nll,
            samples_per_sec: 10.0,
            elapsed_s: 1.0,
        };
        let only = |iteration| move || rec(iteration, 0.0, Some(9.0));
        // No file: the validation-only line, in a new file.
        assert!(record_late_validation(&path, 2, 3.5, only(2)).unwrap());
        assert_eq!(read_metrics(&path).unwrap(), [rec(2, 0.0, Some(9.0))]);
        // The last line is of iteration 3 without a validation: it gets it.
        std::fs::write(
            &path,
            format!("{}\n", serde_json::to_string(&rec(3, 1.5, None)).unwrap()),
        )
        .unwrap();
        assert!(!record_late_validation(&path, 3, 2.5, only(3)).unwrap());
        assert_eq!(read_metrics(&path).unwrap(), [rec(3, 1.5, Some(2.5))]);
        // Its validation is there (left), a validation of an earlier iteration is left too.
        assert!(!record_late_validation(&path, 3, 1.0, only(3)).unwrap());
        assert!(!record_late_validation(&path, 1, 1.0, only(1)).unwrap());
        assert_eq!(read_metrics(&path).unwrap(), [rec(3, 1.5, Some(2.5))]);
        // A later iteration has no line: appended after it.
        assert!(record_late_validation(&path, 4, 2.0, only(4)).unwrap());
        assert_eq!(
            read_metrics(&path).unwrap(),
            [rec(3, 1.5, Some(2.5)), rec(4, 0.0, Some(9.0))]
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A damaged line is named with the file and its line (the error was a bare "JSON
    /// (de)serialisation failed").
    #[test]
    fn a_damaged_line_is_named_with_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("cpflow-metrics-line-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let good = r#"{"iteration":5,"epoch":0,"loss":1.5,"lr":0.001,"grad_norm":0.1,"cg_iterations":2.0,"samples_per_sec":100.0,"elapsed_s":0.5}"#;
        std::fs::write(&path, format!("{good}\n{}\n", good.replace("1.5", "\"x\""))).unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} line 2: not a metrics record", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
