//! Training records: one JSON object per line in `metrics.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CpflowError, Result};

/// One line of the metrics file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Optimiser steps done.
    pub iteration: usize,
    /// Epoch.
    pub epoch: usize,
    /// Training loss of the last step (the CG surrogate: **not** an NLL; or the exact NLL
    /// with the exact objective).
    pub loss: f64,
    /// Learning rate used by the last step.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean CG iterations per system in the last step.
    pub cg_iterations: f64,
    /// SLQ estimate of the NLL on the last training batch (when the monitor ran).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub train_nll_slq: Option<f64>,
    /// Validation NLL (when a validation ran at this step).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_nll: Option<f64>,
    /// Training samples per second since the previous record.
    pub samples_per_sec: f64,
    /// Wall-clock seconds since this process started training.
    pub elapsed_s: f64,
}

/// Appends [`MetricsRecord`]s to a JSON-lines file.
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

/// Read a metrics file back.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| CpflowError::io(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
