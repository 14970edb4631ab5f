//! The loop of [`run_image_training`]: batches, steps, EMA, validation, metrics, checkpoints,
//! and the end of a run (final validation, model file, the test score, the report).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::checkpoint::{
    EMA_PREFIX, IMAGE_TRAIN_FORMAT_VERSION, ImageTrainCheckpointMeta, check_resumable,
    load_image_checkpoint, save_image_checkpoint,
};
use super::config::ImageTrainConfig;
use super::data::ImageData;
use super::eval_progress::slq_bpd_until;
use super::evaluate::BpdEstimate;
use super::{
    ImageMetricsRecord, ImageRunOptions, ImageStopReason, ImageTrainReport, ImageTrainState,
    ValPoint,
};
use crate::adam::Adam;
use crate::block::CgReport;
use crate::checkpoint::naming_file;
use crate::error::{CpflowError, Result};
use crate::image::bpd::bits_per_dim;
use crate::image::config::ImageFlowConfig;
use crate::image::ema::ExponentialMovingAverage;
use crate::image::flow::ImageFlow;
use crate::metrics::{MetricsWriter, record_late_validation, truncate_metrics};
use crate::progress::Progress;
use crate::rng::FlowRng;
use crate::train::last_checkpoint::LastCheckpoint;
use std::sync::atomic::{AtomicBool, Ordering};

mod batches;
mod cg_warning;
mod finish;
mod metrics_line;
#[cfg(test)]
mod tests_cg_window;
#[cfg(test)]
mod tests_late_validation;
#[cfg(test)]
mod tests_log_write;
#[cfg(test)]
mod tests_stats;
#[cfg(test)]
mod tests_train_images;

/// Validation seed = `train.seed ^ VAL_SEED_SALT` (the evaluation streams are independent of
/// the training stream, so evaluating never changes the training trajectory; every validation
/// uses the same noise and probes).
pub const VAL_SEED_SALT: u64 = 0x5641_4C00;
/// Test seed = `train.seed ^ TEST_SEED_SALT` (see [`super::score_test_set`]).
pub const TEST_SEED_SALT: u64 = 0x5445_5354;
const TRAIN_SLQ_SALT: u64 = 0x5452_4E00;
/// The run's log and model files, as a failed write names them
/// ([`CpflowError::CheckpointWrite`]).
const METRICS: &str = "metrics.jsonl";
const MODEL: &str = "model.safetensors";

/// Train an image flow (module docs of [`crate::image::train`]).
///
/// A fresh run builds `flow` and initialises it on the first training batch; with
/// `opts.resume` the run continues from `out_dir/checkpoint.safetensors` (its model must be
/// `flow`; `cfg` may extend the limits), drawing the same batches, noise and probes as an
/// uninterrupted run. The run stops at the first of `cfg`'s limits, validates a last time,
/// writes the final checkpoint and `model.safetensors` (EMA weights), scores the test images
/// once with the EMA weights and returns (and writes) the report.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::image::{
///     ImageData, ImageModelConfig, ImageRunOptions, ImageSet, ImageTrainConfig,
///     run_image_training,
/// };
/// use cpflow::icnn::ImageShape;
///
/// # fn main() -> cpflow::Result<()> {
/// let shape = ImageShape::new(1, 4, 4);
/// let levels = |n: usize| (0..n * 16).map(|i| ((i * 37) % 256) as u8).collect::<Vec<u8>>();
/// let data = ImageData::new(
///     ImageSet::new(shape, levels(8))?,
///     ImageSet::new(shape, levels(2))?,
///     ImageSet::new(shape, levels(2))?,
/// )?;
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1, 1], ..Default::default() };
/// let flow = model.flow_config(shape, 0.05)?;
/// let cfg = ImageTrainConfig { max_iterations: Some(2), batch_size: 4, ..Default::default() };
/// let report = run_image_training(&flow, &cfg, &data, &Device::Cpu, &ImageRunOptions::default())?;
/// assert_eq!(report.iterations, 2);
/// assert!(report.test.unwrap().slq.bpd.is_finite());
/// # Ok(())
/// # }
/// ```
pub fn run_image_training(
    flow: &ImageFlowConfig,
    cfg: &ImageTrainConfig,
    data: &ImageData,
    device: &Device,
    opts: &ImageRunOptions,
) -> Result<ImageTrainReport> {
    cfg.validate()?;
    if data.shape() != flow.image {
        return Err(CpflowError::InvalidInput(format!(
            "the images are {:?}, the flow models {:?}",
            data.shape(),
            flow.image
        )));
    }
    let wall = Instant::now();
    let mut run = if opts.resume {
        let dir = opts.out_dir.as_ref().ok_or_else(|| {
            CpflowError::InvalidConfig("resuming needs an output directory".into())
        })?;
        Run::resume(&dir.join("checkpoint.safetensors"), flow, cfg, data, device)?
    } else {
        Run::fresh(flow, cfg, data, device)?
    };
    run.out_dir = opts.out_dir.clone();
    run.train(opts, wall)
}

struct Run<'a> {
    cfg: &'a ImageTrainConfig,
    data: &'a ImageData,
    flow: ImageFlow,
    eval_flow: ImageFlow,
    vars: Vec<(String, Var)>,
    adam: Adam,
    ema: ExponentialMovingAverage,
    rng: FlowRng,
    state: ImageTrainState,
    perm: Option<(usize, Vec<u32>)>,
    out_dir: Option<PathBuf>,
    last_checkpoint: LastCheckpoint,
    fresh: bool,
}

/// The steps of one call (the run's totals are in the state).
#[derive(Default)]
struct StepStats {
    steps: usize,
    seconds: f64,
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl<'a> Run<'a> {
    fn fresh(
        flow_cfg: &ImageFlowConfig,
        cfg: &'a ImageTrainConfig,
        data: &'a ImageData,
        device: &Device,
    ) -> Result<Self> {
        let flow = ImageFlow::new(flow_cfg.clone(), device)?;
        let vars = flow.named_vars();
        let eval_flow = ImageFlow::new(flow_cfg.clone(), device)?;
        Ok(Run {
            cfg,
            data,
            // The weight average lives in the evaluation flow's variables: one copy of the
            // weights for both.
            ema: ExponentialMovingAverage::in_vars(eval_flow.named_vars()),
            eval_flow,
            adam: Adam::new(vars.clone(), cfg.adam.clone())?,
            vars,
            flow,
            rng: FlowRng::seed_from_u64(cfg.seed),
            state: ImageTrainState {
                n_train: Some(data.train.len()),
                ..Default::default()
            },
            perm: None,
            out_dir: None,
            last_checkpoint: LastCheckpoint::default(),
            fresh: true,
        })
    }

    fn resume(
        path: &Path,
        flow_cfg: &ImageFlowConfig,
        cfg: &'a ImageTrainConfig,
        data: &'a ImageData,
        device: &Device,
    ) -> Result<Self> {
        let ck = load_image_checkpoint(path, device)?;
        // Every number the resume uses, read from the file: refused naming it.
        check_resumable(path, &ck.meta, &ck.tensors)?;
        if ck.meta.flow != *flow_cfg {
            return Err(CpflowError::InvalidConfig(format!(
                "{} holds another model than the configured one (resume with the run's own \
                 model settings)",
                path.display()
            )));
        }
        let flow = ImageFlow::new(ck.meta.flow.clone(), device)?;
        flow.set_weights(&ck.tensors, "")
            .map_err(|e| naming_file(path, e))?;
        let vars = flow.named_vars();
        let mut adam = Adam::new(vars.clone(), cfg.adam.clone())?;
        adam.load_state(&ck.meta.adam, &ck.tensors)
            .map_err(|e| naming_file(path, e))?;
        let eval_flow = ImageFlow::new(flow_cfg.clone(), device)?;
        let mut ema = ExponentialMovingAverage::in_vars(eval_flow.named_vars());
        if ck.meta.ema {
            ema.load_in_place(&ck.tensors, EMA_PREFIX)
                .map_err(|e| naming_file(path, e))?;
        }
        let mut state = ck.meta.state;
        state.check_training_images(data.train.len())?;
        state.n_train = Some(data.train.len());
        batches::new_epoch_for_batch_size(
            &mut state,
            ck.meta.train.batch_size,
            cfg.batch_size,
            data.train.len(),
        );
        Ok(Run {
            cfg,
            data,
            eval_flow,
            adam,
            vars,
            flow,
            ema,
            rng: FlowRng::from_state(&ck.meta.rng).map_err(|e| naming_file(path, e))?,
            last_checkpoint: LastCheckpoint::at(path.to_path_buf(), state.iteration),
            state,
            perm: None,
            out_dir: None,
            fresh: false,
        })
    }

    /// One optimiser step and the EMA update; returns (loss, gradient norm, CG report).
    fn step(&mut self, x: &Tensor) -> Result<(f64, f64, CgReport)> {
        let it = self.state.iteration;
        self.adam.set_lr(self.cfg.lr_at(it));
        let out = self
            .flow
            .surrogate_loss(x, &self.cfg.surrogate, &mut self.rng)?;
        let loss = scalar(&out.loss)?;
        if !loss.is_finite() {
            return Err(CpflowError::NonFinite {
                what: format!("loss ({loss})"),
                step: it + 1,
                checkpoint: self.last_checkpoint.path(),
            });
        }
        let mut grads = icnn::detached_backward(&out.loss)?;
        let gn = self.adam.grad_norm(&grads)?;
        if !gn.is_finite() {
            let name = self
                .adam
                .first_non_finite_grad(&grads)?
                .unwrap_or_else(|| "the parameters (norm overflow)".into());
            return Err(CpflowError::NonFinite {
                what: format!("gradient of {name}"),
                step: it + 1,
                checkpoint: self.last_checkpoint.path(),
            });
        }
        if let Some(c) = self.cfg.clip_grad_norm {
            self.adam.clip_grad_norm_with_norm(&mut grads, c, gn)?;
        }
        self.adam.step(&grads)?;
        self.state.iteration += 1;
        self.ema
            .update(&self.vars, self.cfg.ema.decay_at(self.state.iteration))?;
        Ok((loss, gn, out.cg))
    }

    /// Make the evaluation flow hold the EMA weights (the current ones before the average
    /// starts). Once it has started, the average lives in the evaluation flow's variables.
    fn load_eval_weights(&self) -> Result<()> {
        if self.ema.is_initialized() {
            return Ok(());
        }
        let w = self.flow.weight_tensors().into_iter().collect();
        self.eval_flow.set_weights(&w, "")
    }

    /// Validation SLQ bpd with the EMA weights (same noise and probes at every validation,
    /// so points of the curve differ by the weights only); appends to the curve and rewrites
    /// `model.safetensors`.
    /// `None` without validation images, or when `stop` is set before the pass ends (an
    /// interrupt: a large model's validation takes minutes); then nothing is recorded.
    fn validate(&mut self, stop: Option<&AtomicBool>) -> Result<Option<BpdEstimate>> {
        if self.data.val.is_empty() {
            return Ok(None);
        }
        self.load_eval_weights()?;
        let Some(val) = slq_bpd_until(
            &self.eval_flow,
            &self.data.val,
            self.data.val.len(),
            &self.cfg.val_slq,
            self.cfg.eval_batch_size,
            self.cfg.seed ^ VAL_SEED_SALT,
            stop,
        )?
        else {
            return Ok(None);
        };
        tracing::info!(
            iteration = self.state.iteration,
            val_bpd = val.bpd,
            std_err = val.std_err,
            "validation (EMA weights, SLQ)"
        );
        self.state.val_curve.push(ValPoint {
            iteration: self.state.iteration,
            train_time_s: self.state.train_time_s,
            val: val.clone(),
        });
        if let Some(d) = &self.out_dir {
            let saved = self.eval_flow.save(&d.join("model.safetensors"));
            self.last_checkpoint
                .written(MODEL, self.state.iteration, saved)?;
        }
        Ok(Some(val))
    }

    /// SLQ bpd of a training batch with the current weights.
    fn train_bpd(&self, x: &Tensor) -> Result<f64> {
        let mut r = FlowRng::seed_from_u64(
            self.cfg.seed ^ TRAIN_SLQ_SALT ^ (self.state.iteration as u64).wrapping_mul(0x9E37),
        );
        let lp = self.flow.log_prob_slq(x, &self.cfg.val_slq, &mut r)?;
        let (mean, _) = lp.mean_and_std_err()?;
        Ok(bits_per_dim(mean, self.flow.dim()))
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        let Some(dir) = &self.out_dir else {
            return Ok(());
        };
        let path = dir.join("checkpoint.safetensors");
        let meta = ImageTrainCheckpointMeta {
            format_version: IMAGE_TRAIN_FORMAT_VERSION,
            flow: self.flow.config().clone(),
            train: self.cfg.clone(),
            state: self.state.clone(),
            adam: self.adam.state(),
            rng: self.rng.state(),
            ema: self.ema.is_initialized(),
        };
        let mut tensors = self.flow.weight_tensors();
        tensors.extend(self.adam.state_tensors());
        tensors.extend(
            self.ema
                .tensors()
                .into_iter()
                .map(|(k, t)| (format!("{EMA_PREFIX}{k}"), t)),
        );
        // A failed write leaves the last checkpoint as it was (it is replaced atomically):
        // the error says at which iteration it failed and where the run is saved.
        let written = save_image_checkpoint(&path, &meta, tensors);
        self.last_checkpoint
            .record_write(written, path, self.state.iteration)
    }

    fn metrics_path(&self) -> Option<PathBuf> {
        self.out_dir.as_ref().map(|d| d.join("metrics.jsonl"))
    }

    /// `write`, the writing of the run's `metrics.jsonl`, with its failure as
    /// [`CpflowError::CheckpointWrite`]: the file, the iteration, the last checkpoint.
    fn metrics_written<T>(&self, write: Result<T>) -> Result<T> {
        self.last_checkpoint
            .written(METRICS, self.state.iteration, write)
    }

    /// A resume cuts `metrics.jsonl` back to the checkpoint: lines past it (written before a
    /// kill) come again.
    fn cut_metrics_to_checkpoint(&self) -> Result<()> {
        match self.metrics_path() {
            Some(path) if !self.fresh => self.metrics_written(
                truncate_metrics(&path, "iteration", self.state.iteration as u64).map(|_| ()),
            ),
            _ => Ok(()),
        }
    }

    fn metrics_writer(&mut self) -> Result<Option<MetricsWriter>> {
        let Some(d) = &self.out_dir else {
            return Ok(None);
        };
        let path = d.join("metrics.jsonl");
        let opened = std::fs::create_dir_all(d)
            .map_err(|e| CpflowError::io(d, e))
            .and_then(|()| {
                if self.fresh {
                    MetricsWriter::create(&path)
                } else {
                    MetricsWriter::append(&path)
                }
            });
        self.metrics_written(opened).map(Some)
    }

    /// Validates the run at its iteration unless its curve has a point there already, and
    /// puts that validation into `metrics.jsonl`: into the line of its iteration (the
    /// file's last: the loop's line of the step, or one written before the interrupt that
    /// stopped this validation in an earlier call), or, when the iteration has no line (no
    /// step made, `max_minutes = 0`; a resume at a step that logged none), into a
    /// validation-only line. For the end of a run and the first validation of a resume.
    fn validate_unless_done(&mut self, stop: Option<&AtomicBool>, wall: Instant) -> Result<()> {
        let it = self.state.iteration;
        if self
            .state
            .val_curve
            .last()
            .is_some_and(|p| p.iteration == it)
        {
            return Ok(());
        }
        let (Some(val), Some(path)) = (self.validate(stop)?, self.metrics_path()) else {
            return Ok(());
        };
        let only = || {
            metrics_line::validation_only_record(
                it,
                self.epochs_done(),
                &val,
                self.state.train_time_s,
                wall.elapsed().as_secs_f64(),
            )
        };
        let recorded = record_late_validation(&path, it, (val.bpd, val.std_err), only);
        self.metrics_written(recorded).map(|_| ())
    }

    fn train(mut self, opts: &ImageRunOptions, wall: Instant) -> Result<ImageTrainReport> {
        let cfg = self.cfg;
        let budget = cfg.max_minutes.map(|m| m * 60.0);
        self.cut_metrics_to_checkpoint()?;
        let bar = Progress::new(
            self.steps_left()
                .map_or(0, |s| self.state.iteration.saturating_add(s) as u64),
            opts.progress_bar,
        );
        bar.set_position(self.state.iteration as u64);
        let mut stats = StepStats::default();
        let mut cg_warnings = cg_warning::CgWarnings::new(&cfg.surrogate, &self.flow);
        let mut eval_time = 0.0;
        let (mut win_steps, mut win_time) = (0usize, 0.0f64);
        let out_of_budget = |s: &ImageTrainState| budget.is_some_and(|b| s.train_time_s >= b);
        // A resumed run whose last validation an interrupt stopped (the checkpoint is written
        // after the step) validates first, so the curve has every point of an uninterrupted
        // run (validation does not touch the training stream), and so has the metrics line
        // of that step.
        let it = self.state.iteration;
        if !self.fresh
            && !self.limit_reached()
            && cfg.val_every > 0
            && it > 0
            && it.is_multiple_of(cfg.val_every)
        {
            let te = Instant::now();
            self.validate_unless_done(opts.interrupt.as_deref(), wall)?;
            eval_time += te.elapsed().as_secs_f64();
        }
        // Opened after that validation: it may rewrite the file.
        let mut metrics = self.metrics_writer()?;
        let stop_reason = loop {
            if self.limit_reached() {
                break ImageStopReason::IterationLimit;
            }
            if out_of_budget(&self.state) {
                break ImageStopReason::TimeBudget;
            }
            let t = Instant::now();
            let x = self.next_batch()?;
            if !self.flow.is_initialized()? {
                self.flow.initialize(&x)?;
            }
            let (loss, gn, cg) = self.step(&x)?;
            let dt = t.elapsed().as_secs_f64();
            self.state.train_time_s += dt;
            stats.steps += 1;
            stats.seconds += dt;
            (win_steps, win_time) = (win_steps + 1, win_time + dt);
            let cg_max = cg.iterations.iter().copied().max().unwrap_or(0);
            self.state.step_stats.record(loss, &cg);
            let it = self.state.iteration;
            cg_warnings.record(it, &cg);
            let last = self.limit_reached() || out_of_budget(&self.state);
            let te = Instant::now();
            let train_bpd = if cfg.train_slq_every > 0 && it.is_multiple_of(cfg.train_slq_every) {
                Some(self.train_bpd(&x)?)
            } else {
                None
            };
            let val_due = cfg.val_every > 0 && it.is_multiple_of(cfg.val_every);
            let val = if val_due {
                self.validate(opts.interrupt.as_deref())?
            } else {
                None
            };
            eval_time += te.elapsed().as_secs_f64();
            // A validation step has its line even when an interrupt stopped the validation:
            // the resume adds the validation to it.
            let log_now = (cfg.log_every > 0 && it.is_multiple_of(cfg.log_every))
                || train_bpd.is_some()
                || val_due
                || last;
            if log_now {
                cg_warnings.flush();
                let rec = ImageMetricsRecord {
                    iteration: it,
                    epoch: self.epochs_done(),
                    loss,
                    train_bpd_slq: train_bpd,
                    lr: self.adam.lr(),
                    grad_norm: gn,
                    cg_iterations: cg.mean_iterations(),
                    cg_max_iterations: cg_max,
                    // Over the steps since the previous line, as the flow's `cg_converged`.
                    cg_converged_fraction: cg_warnings.take_window().unwrap_or(1.0),
                    val_bpd: val.as_ref().map(|v| v.bpd),
                    val_bpd_std_err: val.as_ref().map(|v| v.std_err),
                    step_s: win_time / win_steps.max(1) as f64,
                    train_time_s: self.state.train_time_s,
                    elapsed_s: wall.elapsed().as_secs_f64(),
                };
                (win_steps, win_time) = (0, 0.0);
                tracing::debug!(
                    iteration = it,
                    loss,
                    train_bpd_slq = train_bpd,
                    cg_iterations = rec.cg_iterations,
                    step_s = rec.step_s,
                    "train"
                );
                bar.set_message(format!(
                    "loss {loss:.3} | val bpd {} | CG {:.1} | {:.2} s/step",
                    self.state
                        .val_curve
                        .last()
                        .map_or("-".to_string(), |p| format!("{:.3}", p.val.bpd)),
                    rec.cg_iterations,
                    rec.step_s
                ));
                if let Some(m) = metrics.as_mut() {
                    self.metrics_written(m.write(&rec))?;
                }
            }
            bar.set_position(it as u64);
            let interrupted = !last
                && opts
                    .interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed));
            if interrupted
                || val.is_some()
                || (cfg.checkpoint_every > 0 && it.is_multiple_of(cfg.checkpoint_every))
            {
                self.save_checkpoint()?;
            }
            if interrupted {
                bar.finish_and_clear();
                cg_warnings.flush();
                return Err(CpflowError::Interrupted {
                    iteration: it,
                    checkpoint: self.last_checkpoint.path(),
                });
            }
        };
        bar.finish_and_clear();
        // Nothing waits here (the last step logs), unless a break comes before a step.
        cg_warnings.flush();
        // The end-of-run validation may rewrite the file.
        drop(metrics);
        self.finish(stop_reason, stats, eval_time, wall, opts)
    }
}
