//! Training image flows as the authors' `train_img.py` (images-vae.md §2.4–2.7), with a
//! validation split taken from the training images and the test set scored once, at the end.
//!
//! [`run_image_training`] runs the loop: a fresh uniform dequantisation of every batch, the
//! data-dependent initialisation on the first batch, the CG-surrogate loss in bits/dim, Adam
//! with gradient clipping, an exponential moving average of the weights ([`crate::image::ema`]),
//! validation by SLQ on the EMA weights, `metrics.jsonl`, atomic resumable checkpoints, and at
//! the end the test score with the EMA weights: SLQ bits/dim with its standard error over
//! images, and exact log-dets on a subset with the SLQ error measured there.
//!
//! Files written to the output directory: `checkpoint.safetensors` (current weights, EMA,
//! Adam, RNG and progress; resumable), `model.safetensors` (the EMA weights, loadable by
//! [`crate::image::ImageFlow::load`]; rewritten at each validation and at the end),
//! `metrics.jsonl` ([`ImageMetricsRecord`] lines; a fresh run truncates it, a resume cuts it
//! back to the checkpoint's iteration, then appends; every point of the validation curve is in
//! the line of its iteration, the end-of-run one and one a resume redoes too, in a
//! validation-only line when its iteration has no step line, e.g. `max_minutes = 0`)
//! and `report.json` ([`ImageTrainReport`]).

mod checkpoint;
mod config;
mod data;
mod eval_progress;
mod evaluate;
mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Deserializer, Serialize};

use crate::train::TrainStepStats;

pub use checkpoint::{
    EMA_PREFIX, IMAGE_TRAIN_FORMAT_VERSION, IMAGE_TRAIN_METADATA_KEY, ImageTrainCheckpoint,
    ImageTrainCheckpointMeta, load_image_checkpoint, save_image_checkpoint,
};
pub use config::{
    ConvArch, EmaConfig, ImageDataConfig, ImageDataset, ImageExperimentConfig, ImageModelConfig,
    ImageTestConfig, ImageTrainConfig, reference_image_surrogate,
};
pub use data::{ImageData, ImageSet, dequantize_levels};
#[cfg(feature = "datasets")]
pub use data::{load_image_data, load_image_test_set};
pub use eval_progress::{
    EvalPass, EvalProgress, exact_bpd_per_image_with_monitor, score_test_set_with_monitor,
};
pub use evaluate::{
    BpdEstimate, ExactComparison, ImageTestReport, PerImageBpd, exact_bpd_per_image,
    score_test_set, slq_bpd, slq_bpd_per_image,
};
pub use run::{TEST_SEED_SALT, VAL_SEED_SALT, run_image_training};

/// Reads an `f64` that JSON may hold as `null` (serde_json writes NaN as `null`; standard
/// errors of one image are NaN).
pub(crate) fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Where and how a run writes.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
/// use cpflow::candle::Device;
/// use cpflow::image::{ImageData, ImageModelConfig, ImageRunOptions, ImageSet, ImageTrainConfig};
/// use cpflow::image::run_image_training;
/// use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// let shape = ImageShape::new(1, 4, 4);
/// let set = |n: usize, k: usize| {
///     ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect())
/// };
/// let data = ImageData::new(set(4, 37)?, set(2, 53)?, set(2, 71)?)?;
/// let flow = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1], ..Default::default() }
///     .flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig { max_iterations: Some(2), batch_size: 2, ..Default::default() };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-image-opts-{}", std::process::id()));
/// // An interrupt that is already set pauses the run after its first step, checkpointed…
/// let stop = Arc::new(AtomicBool::new(true));
/// let mut opts = ImageRunOptions {
///     out_dir: Some(dir.clone()),
///     interrupt: Some(stop.clone()),
///     ..Default::default()
/// };
/// let paused = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts);
/// assert!(matches!(paused, Err(cpflow::CpflowError::Interrupted { iteration: 1, .. })));
/// assert!(dir.join("checkpoint.safetensors").exists());
/// // … and `resume` finishes it.
/// stop.store(false, Ordering::Relaxed);
/// opts.resume = true;
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts)?;
/// assert_eq!(report.iterations, 2);
/// assert!(dir.join("model.safetensors").exists() && dir.join("report.json").exists());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ImageRunOptions {
    /// Output directory (checkpoint, model, metrics, report); `None`: nothing is written.
    pub out_dir: Option<PathBuf>,
    /// Continue from `out_dir/checkpoint.safetensors`.
    pub resume: bool,
    /// Show a progress bar (feature `progress`).
    pub progress_bar: bool,
    /// A flag that, once set (by a signal handler, another thread), pauses the run after the
    /// step in progress: the checkpoint is written and [`run_image_training`] returns
    /// [`crate::CpflowError::Interrupted`]; `resume` continues the run. Once training has
    /// ended it skips the test score instead (see `training_ended`).
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Set by the run once training has ended (the final validation, the model file and the
    /// test score follow): whoever watches `interrupt` can say what an interrupt stops now.
    /// An interrupt from then on skips the test score once the model file is written
    /// ([`crate::CpflowError::EvaluationInterrupted`]); `resume` on the finished run scores it.
    pub training_ended: Option<Arc<AtomicBool>>,
}

/// One point of the validation curve.
///
/// ```
/// # use cpflow::candle::Device;
/// # use cpflow::image::{ImageData, ImageModelConfig, ImageSet, ImageTrainConfig};
/// # use cpflow::image::run_image_training;
/// # use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// // Two steps of a one-block flow on 4×4 images (4 training, 2 validation, 2 test images).
/// let shape = ImageShape::new(1, 4, 4);
/// let set = |n: usize, k: usize| {
///     ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect())
/// };
/// let data = ImageData::new(set(4, 37)?, set(2, 53)?, set(2, 71)?)?;
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1], ..Default::default() };
/// let flow = model.flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig {
///     max_iterations: Some(2),
///     batch_size: 2,
///     val_every: 1,
///     ..Default::default()
/// };
/// let dir =
///     std::env::temp_dir().join(format!("cpflow-doc-image-valpoint-{}", std::process::id()));
/// let opts = cpflow::image::ImageRunOptions { out_dir: Some(dir.clone()), ..Default::default() };
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts)?;
/// // Validated after each step; the last point is the end of the run.
/// let last = report.val_curve.last().unwrap();
/// assert_eq!((last.iteration, last.val.images), (2, 2));
/// assert!(last.val.bpd.is_finite() && last.train_time_s > 0.0);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValPoint {
    /// Optimiser steps done.
    pub iteration: usize,
    /// Training-step seconds so far (the clock of `max_minutes`).
    pub train_time_s: f64,
    /// SLQ bpd of the validation images, EMA weights.
    pub val: BpdEstimate,
}

/// Progress of a run (saved in checkpoints).
///
/// ```
/// # use cpflow::candle::Device;
/// # use cpflow::image::{ImageData, ImageModelConfig, ImageSet, ImageTrainConfig};
/// # use cpflow::image::run_image_training;
/// # use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// // Two steps of a one-block flow on 4×4 images (4 training, 2 validation, 2 test images).
/// let shape = ImageShape::new(1, 4, 4);
/// let set = |n: usize, k: usize| {
///     ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect())
/// };
/// let data = ImageData::new(set(4, 37)?, set(2, 53)?, set(2, 71)?)?;
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1], ..Default::default() };
/// let flow = model.flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig { max_iterations: Some(2), batch_size: 2, ..Default::default() };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-image-state-{}", std::process::id()));
/// let opts = cpflow::image::ImageRunOptions { out_dir: Some(dir.clone()), ..Default::default() };
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts)?;
/// let path = dir.join("checkpoint.safetensors");
/// let ckpt = cpflow::image::train::load_image_checkpoint(&path, &Device::Cpu)?;
/// let state = &ckpt.meta.state;
/// // Two batches of 2 images make one epoch of the 4 training images.
/// assert_eq!((state.iteration, state.epoch, state.epoch_batch, state.samples_seen), (2, 1, 0, 4));
/// assert_eq!(state.val_curve, report.val_curve);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageTrainState {
    /// Optimiser steps done.
    pub iteration: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Batches of the current epoch done (of the checkpoint's batch size: a resume with
    /// another one in the middle of an epoch starts a new epoch, and says so).
    pub epoch_batch: usize,
    /// Training images seen: the run's epochs are `samples_seen / n_train` (the report's and
    /// the metrics' `epoch`, and what `epochs` limits), whatever batch sizes the run used.
    pub samples_seen: u64,
    /// Seconds spent in training steps (the clock of `max_minutes`).
    pub train_time_s: f64,
    /// The validation curve so far.
    pub val_curve: Vec<ValPoint>,
    /// Totals over every training step of the run, across resumes (the report's loss and CG
    /// statistics; the same [`TrainStepStats`] as the vector and VAE trainers keep). A
    /// checkpoint written before they were kept resumes with none, and so does one written
    /// by the image trainer's older totals (key `step_totals`), which did not count CG
    /// systems: its report then covers the steps since the resume
    /// ([`ImageTrainReport::step_stats_since_iteration`]).
    #[serde(default, alias = "step_totals", deserialize_with = "whole_step_stats")]
    pub step_stats: TrainStepStats,
    /// The number of training images the run trains on (epochs and the position in the
    /// current one count them): a resume on another number is refused
    /// ([`ImageTrainState::check_training_images`]). `None` in checkpoints written before it
    /// was kept (a resume then records the images it trains on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
}

impl ImageTrainState {
    /// Refuses to continue the run on `n_train` training images when it was trained on
    /// another number: its epochs, its position in the current epoch and the shuffles of its
    /// epochs belong to its own images. Accepts anything when the number is not recorded (a
    /// checkpoint written before it was).
    ///
    /// ```
    /// use cpflow::image::ImageTrainState;
    /// let state = ImageTrainState { iteration: 40, n_train: Some(1000), ..Default::default() };
    /// assert!(state.check_training_images(1000).is_ok());
    /// let e = state.check_training_images(800).unwrap_err().to_string();
    /// assert!(e.contains("trained on 1000 training images") && e.contains("800"), "{e}");
    /// // An older checkpoint does not say: nothing to compare.
    /// assert!(ImageTrainState::default().check_training_images(800).is_ok());
    /// ```
    pub fn check_training_images(&self, n_train: usize) -> crate::Result<()> {
        match self.n_train {
            Some(n) if n != n_train => Err(crate::CpflowError::InvalidInput(format!(
                "the run was trained on {n} training images (after the validation split and \
                 data.n_train), the data now hold {n_train}: a resumed run's epochs and its \
                 position in the current one count its own images, so it can only continue \
                 on the same ones (resume with the run's data, or start a new run)"
            ))),
            _ => Ok(()),
        }
    }
}

/// Reads [`ImageTrainState::step_stats`]; statistics written by the image trainer's older
/// totals (CG steps without any CG system counted: that version did not count systems) are
/// dropped, so that every number of the report covers the same steps.
fn whole_step_stats<'de, D: Deserializer<'de>>(d: D) -> Result<TrainStepStats, D::Error> {
    let stats = TrainStepStats::deserialize(d)?;
    if stats.cg_steps > 0 && stats.cg_systems == 0 {
        tracing::info!(
            steps = stats.steps,
            "the checkpoint's step statistics do not count CG systems (an older image \
             checkpoint): the report's loss and CG numbers cover the steps after this resume"
        );
        return Ok(TrainStepStats::default());
    }
    Ok(stats)
}

/// Why a run stopped.
///
/// ```
/// use cpflow::image::ImageStopReason;
/// # use cpflow::candle::Device;
/// # use cpflow::image::{ImageData, ImageModelConfig, ImageSet, ImageTrainConfig};
/// # use cpflow::image::run_image_training;
/// # use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// // Two steps of a one-block flow on 4×4 images (4 training, 2 validation, 2 test images).
/// let shape = ImageShape::new(1, 4, 4);
/// let set = |n: usize, k: usize| {
///     ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect())
/// };
/// let data = ImageData::new(set(4, 37)?, set(2, 53)?, set(2, 71)?)?;
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1], ..Default::default() };
/// let flow = model.flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig { max_iterations: Some(2), batch_size: 2, ..Default::default() };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-image-stop-{}", std::process::id()));
/// let opts = cpflow::image::ImageRunOptions { out_dir: Some(dir.clone()), ..Default::default() };
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts)?;
/// assert_eq!(report.stop_reason, ImageStopReason::IterationLimit);
/// assert_eq!(report.stop_reason.to_string(), "iteration_limit");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageStopReason {
    /// `epochs` or `max_iterations` reached.
    IterationLimit,
    /// `max_minutes` of training steps spent.
    TimeBudget,
}

impl std::fmt::Display for ImageStopReason {
    /// The name `report.json` uses (`iteration_limit`, `time_budget`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageStopReason::IterationLimit => "iteration_limit",
            ImageStopReason::TimeBudget => "time_budget",
        })
    }
}

/// One line of `metrics.jsonl`: the last step's numbers, and the validation when the run
/// validated at its iteration. A validation at an iteration whose step wrote no line (a run
/// that made no step, `max_minutes = 0`, validates its initialised model; a resume may end
/// at a step without a line) has a line of its own, whose step numbers (`loss`, `lr`,
/// `grad_norm`, `cg_iterations`, `cg_converged_fraction`, `step_s`) are `null` (read back
/// as NaN) and `cg_max_iterations` 0.
///
/// ```
/// use cpflow::image::ImageMetricsRecord;
/// # use cpflow::candle::Device;
/// # use cpflow::image::{ImageData, ImageModelConfig, ImageSet, ImageTrainConfig};
/// # use cpflow::image::run_image_training;
/// # use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// // Two steps of a one-block flow on 4×4 images (4 training, 2 validation, 2 test images).
/// let shape = ImageShape::new(1, 4, 4);
/// let set = |n: usize, k: usize| {
///     ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect())
/// };
/// let data = ImageData::new(set(4, 37)?, set(2, 53)?, set(2, 71)?)?;
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1], ..Default::default() };
/// let flow = model.flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig {
///     max_iterations: Some(2),
///     batch_size: 2,
///     log_every: 1,
///     ..Default::default()
/// };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-image-metrics-{}", std::process::id()));
/// let opts = cpflow::image::ImageRunOptions { out_dir: Some(dir.clone()), ..Default::default() };
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts)?;
/// let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
/// let lines: Vec<ImageMetricsRecord> =
///     text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
/// assert_eq!(lines.iter().map(|r| r.iteration).collect::<Vec<_>>(), vec![1, 2]);
/// assert!(lines.iter().all(|r| r.loss.is_finite() && r.cg_converged_fraction == 1.0));
/// assert_eq!(lines[1].loss, report.final_loss);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageMetricsRecord {
    /// Optimiser steps done.
    pub iteration: usize,
    /// Epochs done: training images seen / training images.
    pub epoch: f64,
    /// The surrogate training loss of the last step in the reference's bits/dim units: **not
    /// a bpd** (each block contributes its CG surrogate ≈ `D`, not its log-det).
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    /// SLQ bpd of the last training batch with the current weights (every
    /// `train_slq_every` steps).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub train_bpd_slq: Option<f64>,
    /// Learning rate of the last step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Gradient norm before clipping.
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// Mean CG iterations per system (image × block) in the last step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub cg_iterations: f64,
    /// Largest CG iteration count of one system in the last step.
    pub cg_max_iterations: usize,
    /// Systems that met the CG tolerance / systems, over all steps since the previous line
    /// (of this call; the flow's `cg_converged` counts the same window), 1 when they solved
    /// none.
    #[serde(deserialize_with = "f64_or_nan")]
    pub cg_converged_fraction: f64,
    /// Validation SLQ bpd (EMA weights), when validated at this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_bpd: Option<f64>,
    /// Its standard error over images.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_bpd_std_err: Option<f64>,
    /// Mean seconds per training step since the previous line.
    #[serde(deserialize_with = "f64_or_nan")]
    pub step_s: f64,
    /// Training-step seconds so far (the clock of `max_minutes`).
    pub train_time_s: f64,
    /// Wall-clock seconds since this process started the run.
    pub elapsed_s: f64,
}

/// The outcome of [`run_image_training`] (also written as `report.json`).
///
/// ```
/// use cpflow::image::ImageTrainReport;
/// # use cpflow::candle::Device;
/// # use cpflow::image::{ImageData, ImageModelConfig, ImageSet, ImageTrainConfig};
/// # use cpflow::image::run_image_training;
/// # use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// // Two steps of a one-block flow on 4×4 images (4 training, 2 validation, 2 test images).
/// let shape = ImageShape::new(1, 4, 4);
/// let set = |n: usize, k: usize| {
///     ImageSet::new(shape, (0..n * 16).map(|i| (i * k % 256) as u8).collect())
/// };
/// let data = ImageData::new(set(4, 37)?, set(2, 53)?, set(2, 71)?)?;
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1], ..Default::default() };
/// let flow = model.flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig { max_iterations: Some(2), batch_size: 2, ..Default::default() };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-image-report-{}", std::process::id()));
/// let opts = cpflow::image::ImageRunOptions { out_dir: Some(dir.clone()), ..Default::default() };
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts)?;
/// assert_eq!((report.iterations, report.cp_flow_blocks, report.n_train), (2, 1, 4));
/// let test = report.test.as_ref().unwrap();
/// assert_eq!(test.slq.images, 2);
/// // `report.json` holds the same report.
/// let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
/// assert_eq!(serde_json::from_str::<ImageTrainReport>(&json)?, report);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTrainReport {
    /// Parameters of the flow (init flags excluded).
    pub parameters: usize,
    /// CP-Flow blocks (0: the baseline).
    pub cp_flow_blocks: usize,
    /// Training / validation / test images.
    pub n_train: usize,
    /// Validation images (from the training set).
    pub n_val: usize,
    /// Test images available (see `test` for how many were scored).
    pub n_test: usize,
    /// Optimiser steps done in total (over resumes).
    pub iterations: usize,
    /// Epochs done: training images seen / training images.
    pub epochs: f64,
    /// Why the run stopped.
    pub stop_reason: ImageStopReason,
    /// Surrogate loss of the run's last step (not a bpd; NaN when no step was recorded).
    #[serde(deserialize_with = "f64_or_nan")]
    pub final_loss: f64,
    /// Mean CG iterations per system over the steps of the run (across resumes; see
    /// `step_stats_since_iteration`).
    pub mean_cg_iterations: f64,
    /// Fraction of the CG systems of the run's steps that met the tolerance (1: all;
    /// `None`: no CG systems, e.g. the baseline flow without CP-Flow blocks, or a report
    /// written before it existed). Below 1, CG stopped at `train.surrogate.cg_max_iters` on
    /// some systems: their gradient was approximate.
    #[serde(default)]
    pub cg_converged: Option<f64>,
    /// Largest CG iteration count of one system over the steps of the run.
    pub max_cg_iterations: usize,
    /// Steps of the run that left at least one CG system unconverged (their gradient was
    /// approximate; 0 in reports written before it existed).
    #[serde(default)]
    pub cg_unconverged_steps: usize,
    /// Present when `final_loss` and the CG numbers cover only the steps after this
    /// iteration: the run was resumed there from a checkpoint written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_stats_since_iteration: Option<usize>,
    /// Mean seconds per training step over the run (`train_time_s` / `iterations`).
    pub mean_step_s: f64,
    /// Validation SLQ bpd (EMA weights) along the run, the last point at the end.
    pub val_curve: Vec<ValPoint>,
    /// The test score (EMA weights, once, at the end); `None` without test images.
    pub test: Option<ImageTestReport>,
    /// Training-step seconds in total (over resumes).
    pub train_time_s: f64,
    /// Seconds of validation, monitoring and the test score in this call.
    pub eval_time_s: f64,
    /// Wall-clock seconds of the run: this call's, plus the training-step seconds of the
    /// earlier calls up to the checkpoint it resumed from (a resume of a finished run adds
    /// only its own call's).
    pub wall_time_s: f64,
    /// Wall-clock seconds of this call alone (0 in reports written before it existed).
    #[serde(default)]
    pub invocation_wall_time_s: f64,
}

#[cfg(test)]
mod tests {
    use super::ImageStopReason;

    /// The summary line prints the name `report.json` stores.
    #[test]
    fn stop_reasons_print_their_report_names() {
        for r in [ImageStopReason::IterationLimit, ImageStopReason::TimeBudget] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.to_string());
        }
    }
}
