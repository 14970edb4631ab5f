//! The trainer: Adam, learning-rate schedules, validation with early stopping, SLQ
//! monitoring, progress bar, metrics file and atomic checkpoints with exact resume. The loop
//! itself is in `train/fit.rs`; observers ([`crate::observer`]) watch it.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::adam::Adam;
use crate::checkpoint::{
    BEST_PREFIX, CheckpointMeta, FORMAT_VERSION, naming_file, read_checked, save_checkpoint,
};
use crate::config::TrainConfig;
use crate::error::{CpflowError, Result};
use crate::flow::Flow;
use crate::metrics::MetricsRecord;
use crate::rng::FlowRng;
use crate::train_state::TrainState;

pub use crate::evaluate::{
    Dataset, NllEstimate, mean_nll, mean_nll_with, nll_estimate, nll_estimate_with,
};

pub(crate) mod cg_tally;
mod chunked_step;
pub use chunked_step::{EXACT_STEP_CHUNK_ROWS, STEP_CHUNK_ROWS};
mod fit;
pub(crate) mod last_checkpoint;
use last_checkpoint::LastCheckpoint;
mod step_stats;
pub use step_stats::TrainStepStats;

/// Where a run writes (all optional).
///
/// ```
/// use std::sync::{Arc, atomic::AtomicBool};
/// use cpflow::{RunOptions, StopReason};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// let config = TrainConfig {
///     batch_size: 8, max_iterations: 4, val_every: 0, train_slq_every: 0, log_every: 2,
///     lr_schedule: LrSchedule::Constant, ..Default::default()
/// };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-run-options-{}", std::process::id()));
/// let options = RunOptions { out_dir: Some(dir.clone()), ..Default::default() };
/// let second = Flow::new(flow.config().clone(), &Device::Cpu)?;
/// let mut trainer = Trainer::new(flow, config.clone())?.with_options(options);
/// trainer.fit(&train, None)?;
/// for file in ["checkpoint.safetensors", "metrics.jsonl", "model.safetensors"] {
///     assert!(dir.join(file).is_file(), "{file}");
/// }
/// std::fs::remove_dir_all(&dir).ok();
/// // A set interrupt flag pauses the run after the step in progress.
/// let flag = Arc::new(AtomicBool::new(true));
/// let options = RunOptions { interrupt: Some(flag), ..Default::default() };
/// let mut trainer = Trainer::new(second, config)?.with_options(options);
/// let report = trainer.fit(&train, None)?;
/// assert_eq!((report.stop_reason, report.iterations), (StopReason::Paused, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Output directory: `checkpoint.safetensors` (resumable), `metrics.jsonl`,
    /// `model.safetensors` (final model).
    pub out_dir: Option<PathBuf>,
    /// Show a progress bar (feature `progress`; ignored without it).
    pub progress_bar: bool,
    /// Once set (e.g. by a Ctrl-C handler), the run pauses after the step in progress:
    /// [`StopReason::Paused`], checkpoint written as for an observer's pause. The image and
    /// VAE trainers' run options have the same field.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Why a training call ended.
///
/// ```
/// use cpflow::StopReason;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// let config = TrainConfig {
///     batch_size: 8, max_iterations: 4, val_every: 0, train_slq_every: 0, log_every: 2,
///     lr_schedule: LrSchedule::Constant, ..Default::default()
/// };
/// let mut trainer = Trainer::new(flow, config)?;
/// // At most 3 steps in this call: the run is not finished.
/// assert_eq!(trainer.fit_steps(&train, None, 3)?.stop_reason, StopReason::StepLimit);
/// // The next call does the 4th and last step.
/// let report = trainer.fit(&train, None)?;
/// assert_eq!((report.stop_reason, report.iterations), (StopReason::MaxIterations, 4));
/// // Reports serialise it in snake case.
/// assert_eq!(serde_json::to_string(&StopReason::MaxIterations)?, r#""max_iterations""#);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// `max_iterations` steps were done in total.
    MaxIterations,
    /// Early stopping on the validation NLL.
    EarlyStopping,
    /// An observer asked to stop (e.g. a wall-clock budget).
    Observer,
    /// The per-call step limit of [`Trainer::fit_steps`] was reached: the run is not finished.
    StepLimit,
    /// An observer paused the run ([`crate::observer::Control::Pause`], e.g. on an interrupt):
    /// the run is not finished.
    Paused,
}

/// Summary of a [`Trainer::fit`] call.
///
/// ```
/// use cpflow::StopReason;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// let config = TrainConfig {
///     batch_size: 8, max_iterations: 4, val_every: 0, train_slq_every: 0, log_every: 2,
///     lr_schedule: LrSchedule::Constant, ..Default::default()
/// };
/// let report = Trainer::new(flow, config)?.fit(&train, None)?;
/// assert_eq!((report.iterations, report.stop_reason), (4, StopReason::MaxIterations));
/// assert!(report.final_loss.is_finite() && report.best_val_nll.is_none()); // no validation
/// // d = 2: CG needs at most 2 iterations and meets its tolerance on every system.
/// assert!(report.mean_cg_iterations > 0.0 && report.mean_cg_iterations <= 2.0);
/// assert_eq!((report.cg_converged, report.cg_unconverged_steps), (Some(1.0), 0));
/// // Records after steps 1 and 3 (`log_every` counts steps from 0) and after the last one.
/// let its: Vec<usize> = report.history.iter().map(|r| r.iteration).collect();
/// assert_eq!(its, [1, 3, 4]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Optimiser steps done in total (including before a resume): the steps actually run,
    /// not the configured maximum.
    pub iterations: usize,
    /// Loss of the run's last step (surrogate: not an NLL; NaN when no step was counted,
    /// see [`TrainStepStats::counted_from`]).
    pub final_loss: f64,
    /// The best validation NLL of the run (of `val_estimator`): that of the weights the
    /// trainer now holds when `restore_best` is set and the run finished; with
    /// `restore_best = false` the trainer holds the last weights, which may not be these.
    pub best_val_nll: Option<f64>,
    /// Iteration of the best validation NLL.
    pub best_iteration: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Why this call ended.
    pub stop_reason: StopReason,
    /// Wall-clock seconds of this call.
    pub wall_time_s: f64,
    /// Mean CG iterations per system over the steps of the run (every call and resume:
    /// [`TrainState::step_stats`]; a run resumed from a checkpoint written before they were
    /// kept counts the steps since the resume, see [`TrainStepStats::counted_from`]).
    pub mean_cg_iterations: f64,
    /// Fraction of the CG systems of the run's steps that met the tolerance (1: all;
    /// `None`: no CG systems, e.g. the exact objective). Below 1, CG stopped at
    /// `train.surrogate.cg_max_iters` on some systems: their gradient was approximate (the
    /// trainer warned).
    pub cg_converged: Option<f64>,
    /// Steps of the run whose CG left at least one system unconverged.
    pub cg_unconverged_steps: usize,
    /// The metrics records written during this call.
    pub history: Vec<MetricsRecord>,
}

/// Trains a [`Flow`].
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
///
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// let config = TrainConfig {
///     batch_size: 8, max_iterations: 5, val_every: 0, train_slq_every: 0,
///     lr_schedule: LrSchedule::Constant, ..Default::default()
/// };
/// let mut trainer = Trainer::new(flow, config)?;
/// let report = trainer.fit(&train, None)?;
/// assert_eq!(report.iterations, 5);
/// # Ok(())
/// # }
/// ```
pub struct Trainer {
    flow: Flow,
    config: TrainConfig,
    adam: Adam,
    rng: FlowRng,
    state: TrainState,
    best: Option<Vec<(String, Tensor)>>,
    options: RunOptions,
    perm: Option<(u64, Vec<u32>)>,
    /// The last checkpoint written (or resumed from) by this trainer, and its iteration.
    last_checkpoint: LastCheckpoint,
    /// After a finished run restored the best weights: the last weights, put back before
    /// training goes on (so that continuing in-process follows the same trajectory as a
    /// resume from the final checkpoint).
    last_weights: Option<Vec<(String, Tensor)>>,
    /// Iteration and NLL of the last validation.
    last_val: Option<(usize, f64)>,
    /// How the next call starts `metrics.jsonl`.
    metrics_start: MetricsStart,
    /// Validation NLL and iteration of the weights held after the run finished.
    kept: Option<(usize, f64)>,
}

/// How a training call starts the metrics file of its output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricsStart {
    /// A new run: a fresh file (an older run's file is replaced).
    Create,
    /// Resumed from a checkpoint: lines past the checkpoint's iteration (written before a
    /// kill, they will be written again) are cut off, then the run appends.
    CutBack,
    /// A later call of the same trainer: append.
    Append,
}

fn aux_rng(seed: u64, iteration: usize, salt: u64) -> FlowRng {
    FlowRng::seed_from_u64(
        seed ^ salt ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(iteration as u64 + 1),
    )
}

impl Trainer {
    /// A new run: Adam over the flow's variables (sorted by name), RNG from `config.seed`.
    pub fn new(flow: Flow, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let adam = Adam::new(flow.named_vars(), config.adam.clone())?;
        let rng = FlowRng::seed_from_u64(config.seed);
        let state = TrainState::new(config.adam.lr);
        Ok(Trainer {
            flow,
            config,
            adam,
            rng,
            state,
            best: None,
            options: RunOptions::default(),
            perm: None,
            last_checkpoint: LastCheckpoint::default(),
            last_weights: None,
            last_val: None,
            metrics_start: MetricsStart::Create,
            kept: None,
        })
    }

    /// Set output options (checkpoint directory, progress bar).
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Continue a run from a checkpoint written by a trainer. `config` replaces the saved
    /// training configuration when given (e.g. more iterations, another batch size); the
    /// optimiser state, RNG, schedule and early-stopping state come from the checkpoint. The
    /// final checkpoint of a finished run holds its *last* weights, so resuming it with more
    /// iterations continues the same trajectory. A new batch size (or data size) starts a new
    /// epoch at the first batch that no longer fits the current one.
    pub fn resume(path: &Path, device: &Device, config: Option<TrainConfig>) -> Result<Self> {
        let (ck, flow) = read_checked(path, device)?;
        let bad = |what: &str| {
            CpflowError::Checkpoint(format!(
                "{} has no {what}: not a training checkpoint",
                path.display()
            ))
        };
        let saved = ck
            .meta
            .train
            .clone()
            .ok_or_else(|| bad("training configuration"))?;
        let state = ck.meta.state.clone().ok_or_else(|| bad("training state"))?;
        let adam_state = ck.meta.adam.clone().ok_or_else(|| bad("optimiser state"))?;
        let rng_state = ck.meta.rng.clone().ok_or_else(|| bad("RNG state"))?;
        // Every number the resume uses, read from the file: refused naming it.
        let in_file = |e| naming_file(path, e);
        saved.validate().map_err(in_file)?;
        state.validate(saved.adam.lr).map_err(in_file)?;
        check_adam_steps(&adam_state, &flow, state.iteration).map_err(in_file)?;
        let config = config.unwrap_or(saved);
        config.validate()?;
        flow.set_weights(&ck.tensors, "").map_err(in_file)?;
        let mut adam = Adam::new(flow.named_vars(), config.adam.clone())?;
        adam.load_state(&adam_state, &ck.tensors).map_err(in_file)?;
        let best = if ck.tensors.keys().any(|k| k.starts_with(BEST_PREFIX)) {
            let mut v = Vec::new();
            for (name, _) in flow.named_vars() {
                let key = format!("{BEST_PREFIX}{name}");
                let t = ck
                    .tensors
                    .get(&key)
                    .ok_or_else(|| CpflowError::Checkpoint(format!("missing {key}")))
                    .map_err(in_file)?;
                v.push((name, t.clone()));
            }
            Some(v)
        } else {
            None
        };
        let rng = FlowRng::from_state(&rng_state).map_err(in_file)?;
        let resumed_at = state.iteration;
        Ok(Trainer {
            flow,
            config,
            adam,
            rng,
            state,
            best,
            options: RunOptions::default(),
            perm: None,
            last_checkpoint: LastCheckpoint::at(path.to_path_buf(), resumed_at),
            last_weights: None,
            last_val: None,
            metrics_start: MetricsStart::CutBack,
            kept: None,
        })
    }

    /// The model.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// Consume the trainer, returning the model.
    pub fn into_flow(self) -> Flow {
        self.flow
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The progress state.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The iteration whose weights the flow holds: the last one, except after a run that
    /// ended by keeping the best validated weights of an earlier iteration (`restore_best`).
    pub fn weights_iteration(&self) -> usize {
        self.kept.map_or(self.state.iteration, |(it, _)| it)
    }

    /// The checkpoint path of the run (when an output directory is set).
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.options
            .out_dir
            .as_ref()
            .map(|d| d.join("checkpoint.safetensors"))
    }

    /// Write a resumable checkpoint (weights, optimiser, RNG, progress, best weights).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.write_checkpoint(path, self.flow.weight_tensors())
    }

    /// [`Trainer::save_checkpoint`] with the given model weights (the last ones, when the
    /// flow holds the best).
    fn write_checkpoint(&self, path: &Path, weights: Vec<(String, Tensor)>) -> Result<()> {
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            flow: self.flow.config().clone(),
            train: Some(self.config.clone()),
            state: Some(self.state.clone()),
            adam: Some(self.adam.state()),
            rng: Some(self.rng.state()),
        };
        let mut tensors = weights;
        tensors.extend(self.adam.state_tensors());
        if let Some(best) = &self.best {
            tensors.extend(
                best.iter()
                    .map(|(k, t)| (format!("{BEST_PREFIX}{k}"), t.clone())),
            );
        }
        save_checkpoint(path, &meta, tensors)
    }

    fn checkpoint_if_configured(&mut self) -> Result<()> {
        if self.checkpoint_path().is_some() {
            self.write_run_checkpoint(self.flow.weight_tensors())?;
        }
        Ok(())
    }

    /// Writes the run's checkpoint (when an output directory is set) with the given model
    /// weights. A failed write says at which iteration, and where the run is saved: the
    /// last checkpoint, which a failed write leaves as it was ([`save_checkpoint`] replaces
    /// it atomically).
    fn write_run_checkpoint(&mut self, weights: Vec<(String, Tensor)>) -> Result<()> {
        let Some(path) = self.checkpoint_path() else {
            return Ok(());
        };
        let iteration = self.state.iteration;
        let written = self.write_checkpoint(&path, weights);
        self.last_checkpoint.record_write(written, path, iteration)
    }

    /// The next mini-batch (shuffled epochs; the last partial batch is kept).
    fn next_batch(&mut self, data: &Dataset) -> Result<(Tensor, Option<Tensor>)> {
        let n = data.len();
        let bs = self.config.batch_size;
        let nb = n.div_ceil(bs);
        if self.state.epoch_batch == 0 {
            self.state.epoch_seed = self.rng.random::<u64>();
        }
        let seed = self.state.epoch_seed;
        if self
            .perm
            .as_ref()
            .is_none_or(|(s, p)| *s != seed || p.len() != n)
        {
            let mut p: Vec<u32> = (0..n as u32).collect();
            p.shuffle(&mut FlowRng::seed_from_u64(seed));
            self.perm = Some((seed, p));
        }
        let start = self.state.epoch_batch * bs;
        if start >= n {
            // Resumed with a larger batch or smaller data than the checkpoint's: what is
            // left of this epoch is gone, start the next one.
            self.state.epoch += 1;
            self.state.epoch_batch = 0;
            return self.next_batch(data);
        }
        let perm = self.perm.as_ref().map(|(_, p)| p.as_slice()).unwrap_or(&[]);
        let idx = &perm[start..(start + bs).min(n)];
        let idx = Tensor::from_slice(idx, idx.len(), data.x.device())?;
        let x = data.x.index_select(&idx, 0)?;
        let c = match &data.context {
            Some(c) => Some(c.index_select(&idx, 0)?),
            None => None,
        };
        self.state.epoch_batch += 1;
        if self.state.epoch_batch >= nb {
            self.state.epoch += 1;
            self.state.epoch_batch = 0;
        }
        Ok((x, c))
    }
}

/// Refuses the optimiser state `adam` of a checkpoint for `flow` at `iteration` when its
/// scalars are out of range ([`crate::AdamParams::validate`], key `adam.params`) or a step
/// count is not that of a variable of the flow, or is 0 or past the iteration (Adam's bias
/// correction uses it; an unknown name would be dropped silently).
fn check_adam_steps(adam: &crate::adam::AdamState, flow: &Flow, iteration: usize) -> Result<()> {
    adam.params.validate("adam.params")?;
    let vars: std::collections::HashSet<String> =
        flow.named_vars().into_iter().map(|(k, _)| k).collect();
    for (name, &step) in &adam.steps {
        if !vars.contains(name) {
            return Err(CpflowError::Checkpoint(format!(
                "its optimiser state counts steps of {name}, which is no variable of the model"
            )));
        }
        if step == 0 || step > iteration as u64 {
            return Err(CpflowError::Checkpoint(format!(
                "its optimiser state counts {step} steps of {name}, outside 1..={iteration} \
                 (the iterations done)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests_log_write;
#[cfg(test)]
mod tests_run_stats;
