//! The training loop: Adam, learning-rate schedules, validation with early stopping,
//! SLQ monitoring, progress bar, metrics file and atomic checkpoints with exact resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::adam::Adam;
use crate::block::CgReport;
use crate::checkpoint::{
    BEST_PREFIX, CheckpointMeta, FORMAT_VERSION, load_checkpoint, save_checkpoint,
};
use crate::config::{LrSchedule, NllEstimator, Objective, TrainConfig};
use crate::error::{CpflowError, Result};
use crate::flow::Flow;
use crate::metrics::{MetricsRecord, MetricsWriter};
use crate::rng::FlowRng;
use crate::train_state::{TrainState, plateau_update, scheduled_lr};

/// A data set (rows are samples) with an optional context (conditional flows).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `(N, d)` samples.
    pub x: Tensor,
    /// `(N, d_c)` contexts.
    pub context: Option<Tensor>,
}

impl Dataset {
    /// Unconditional data.
    pub fn new(x: Tensor) -> Self {
        Dataset { x, context: None }
    }

    /// Conditional data.
    pub fn with_context(x: Tensor, context: Tensor) -> Self {
        Dataset {
            x,
            context: Some(context),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a run writes (all optional).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Output directory: `checkpoint.safetensors` (resumable), `metrics.jsonl`,
    /// `model.safetensors` (final model).
    pub out_dir: Option<PathBuf>,
    /// Show an indicatif progress bar.
    pub progress_bar: bool,
}

/// Summary of a [`Trainer::fit`] call.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Optimiser steps done in total (including before a resume).
    pub iterations: usize,
    /// Loss of the last step (surrogate: not an NLL).
    pub final_loss: f64,
    /// Best validation NLL.
    pub best_val_nll: Option<f64>,
    /// Iteration of the best validation.
    pub best_iteration: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Wall-clock seconds of this call.
    pub wall_time_s: f64,
    /// Mean CG iterations per system over the steps of this call.
    pub mean_cg_iterations: f64,
    /// The metrics records written during this call.
    pub history: Vec<MetricsRecord>,
}

/// Trains a [`Flow`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
///
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
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
}

/// Mean NLL of a data set (sample-weighted over chunks of `batch_size`), with the given
/// estimator; `rng` draws the SLQ probes.
pub fn mean_nll<R: Rng + ?Sized>(
    flow: &Flow,
    data: &Dataset,
    estimator: &NllEstimator,
    batch_size: usize,
    rng: &mut R,
) -> Result<f64> {
    let n = data.len();
    if n == 0 {
        return Err(CpflowError::InvalidInput(
            "evaluation data set is empty".into(),
        ));
    }
    let mut total = 0.0;
    let mut start = 0;
    while start < n {
        let len = batch_size.max(1).min(n - start);
        let x = data.x.narrow(0, start, len)?;
        let c = match &data.context {
            Some(c) => Some(c.narrow(0, start, len)?),
            None => None,
        };
        let lp = match estimator {
            NllEstimator::Exact => flow.log_prob_exact_given_opt(&x, c.as_ref())?,
            NllEstimator::Slq(p) => flow.log_prob_slq_given_opt(&x, c.as_ref(), p, rng)?,
        };
        total -= lp.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        start += len;
    }
    Ok(total / n as f64)
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
        })
    }

    /// Set output options (checkpoint directory, progress bar).
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Continue a run from a checkpoint written by a trainer. `config` replaces the saved
    /// training configuration when given (e.g. more iterations); the optimiser state, RNG,
    /// schedule and early-stopping state come from the checkpoint.
    pub fn resume(path: &Path, device: &Device, config: Option<TrainConfig>) -> Result<Self> {
        let ck = load_checkpoint(path, device)?;
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
        let config = config.unwrap_or(saved);
        config.validate()?;
        let flow = Flow::new(ck.meta.flow.clone(), device)?;
        flow.set_weights(&ck.tensors, "")?;
        let mut adam = Adam::new(flow.named_vars(), config.adam.clone())?;
        adam.load_state(&adam_state, &ck.tensors)?;
        let best = if ck.tensors.keys().any(|k| k.starts_with(BEST_PREFIX)) {
            let mut v = Vec::new();
            for (name, _) in flow.named_vars() {
                let key = format!("{BEST_PREFIX}{name}");
                let t = ck
                    .tensors
                    .get(&key)
                    .ok_or_else(|| CpflowError::Checkpoint(format!("missing {key}")))?;
                v.push((name, t.clone()));
            }
            Some(v)
        } else {
            None
        };
        let rng = FlowRng::from_state(&rng_state)?;
        Ok(Trainer {
            flow,
            config,
            adam,
            rng,
            state,
            best,
            options: RunOptions::default(),
            perm: None,
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

    /// The checkpoint path of the run (when an output directory is set).
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.options
            .out_dir
            .as_ref()
            .map(|d| d.join("checkpoint.safetensors"))
    }

    /// Write a resumable checkpoint (weights, optimiser, RNG, progress, best weights).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            flow: self.flow.config().clone(),
            train: Some(self.config.clone()),
            state: Some(self.state.clone()),
            adam: Some(self.adam.state()),
            rng: Some(self.rng.state()),
        };
        let mut tensors = self.flow.weight_tensors();
        tensors.extend(self.adam.state_tensors());
        if let Some(best) = &self.best {
            tensors.extend(
                best.iter()
                    .map(|(k, t)| (format!("{BEST_PREFIX}{k}"), t.clone())),
            );
        }
        save_checkpoint(path, &meta, tensors)
    }

    fn checkpoint_if_configured(&self) -> Result<()> {
        if let Some(p) = self.checkpoint_path() {
            self.save_checkpoint(&p)?;
        }
        Ok(())
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
        let perm = self.perm.as_ref().map(|(_, p)| p.as_slice()).unwrap_or(&[]);
        let start = self.state.epoch_batch * bs;
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

    /// One optimiser step on a batch; returns (loss, grad norm, CG report).
    fn step(&mut self, x: &Tensor, ctx: Option<&Tensor>) -> Result<(f64, f64, CgReport)> {
        let lr = scheduled_lr(&self.config.lr_schedule, &self.state, self.state.iteration);
        self.adam.set_lr(lr);
        let (lp, cg) = match self.config.objective {
            Objective::CgSurrogate => {
                self.flow
                    .surrogate_terms(x, ctx, &self.config.surrogate, &mut self.rng)?
            }
            Objective::ExactNll => (
                self.flow.exact_log_prob_tracked(x, ctx)?,
                CgReport::default(),
            ),
        };
        let loss = lp.mean_all()?.neg()?;
        let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let it = self.state.iteration;
        if !lv.is_finite() {
            return Err(CpflowError::NonFinite {
                what: format!("loss ({lv})"),
                step: it,
            });
        }
        let mut grads = loss.backward()?;
        // One reduction pass: a NaN/Inf anywhere makes the norm non-finite; only then look for
        // the culprit to name it.
        let gn = self.adam.grad_norm(&grads)?;
        if !gn.is_finite() {
            let name = self
                .adam
                .first_non_finite_grad(&grads)?
                .unwrap_or_else(|| "the parameters (norm overflow)".into());
            return Err(CpflowError::NonFinite {
                what: format!("gradient of {name}"),
                step: it,
            });
        }
        if let Some(c) = self.config.clip_grad_norm {
            self.adam.clip_grad_norm_with_norm(&mut grads, c, gn)?;
        }
        self.adam.step(&grads)?;
        self.state.iteration += 1;
        self.state.samples_seen += x.dim(0)? as u64;
        Ok((lv, gn, cg))
    }

    /// Validate; update best weights, plateau schedule and early-stopping counter.
    fn validate(&mut self, val: &Dataset) -> Result<f64> {
        let mut rng = aux_rng(self.config.seed, self.state.iteration, 0x5A5A);
        let nll = mean_nll(
            &self.flow,
            val,
            &self.config.val_estimator,
            self.config.eval_batch_size,
            &mut rng,
        )?;
        let improved = self.state.best_val_nll.is_none_or(|b| nll < b) && nll.is_finite();
        if improved {
            self.state.best_val_nll = Some(nll);
            self.state.best_iteration = Some(self.state.iteration);
            self.state.vals_without_improvement = 0;
            let copies: Result<Vec<(String, Tensor)>> = self
                .flow
                .weight_tensors()
                .into_iter()
                .map(|(k, t)| Ok((k, t.copy()?)))
                .collect();
            self.best = Some(copies?);
        } else {
            self.state.vals_without_improvement += 1;
            if self.config.lr_schedule == LrSchedule::Plateau {
                let patience = self.config.early_stopping.unwrap_or(20);
                if plateau_update(&mut self.state, patience) {
                    tracing::info!(
                        lr = scheduled_lr(&LrSchedule::Plateau, &self.state, self.state.iteration),
                        "learning rate decayed"
                    );
                }
            }
            if let Some(p) = self.config.early_stopping
                && self.state.vals_without_improvement > p
            {
                self.state.stopped_early = true;
            }
        }
        tracing::info!(
            iteration = self.state.iteration,
            val_nll = nll,
            improved,
            "validation"
        );
        Ok(nll)
    }

    /// Train until `config.max_iterations` steps are done in total or early stopping.
    pub fn fit(&mut self, train: &Dataset, val: Option<&Dataset>) -> Result<TrainReport> {
        self.fit_steps(train, val, usize::MAX)
    }

    /// Like [`Trainer::fit`], but do at most `max_steps` steps in this call (the run can be
    /// continued by another call or, after a checkpoint, by [`Trainer::resume`]).
    pub fn fit_steps(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        max_steps: usize,
    ) -> Result<TrainReport> {
        let (tx, tc) = self.flow.check_input(&train.x, train.context.as_ref())?;
        let train = Dataset { x: tx, context: tc };
        let val = match val {
            Some(v) => {
                let (vx, vc) = self.flow.check_input(&v.x, v.context.as_ref())?;
                Some(Dataset { x: vx, context: vc })
            }
            None => None,
        };
        let t0 = Instant::now();
        let mut metrics = match &self.options.out_dir {
            Some(d) => Some(MetricsWriter::append(&d.join("metrics.jsonl"))?),
            None => None,
        };
        let total = self.config.max_iterations;
        let bar = if self.options.progress_bar {
            ProgressBar::new(total as u64)
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(self.state.iteration as u64);
        let mut history = Vec::new();
        let (mut last_loss, mut cg_sum, mut cg_n) = (f64::NAN, 0.0, 0usize);
        let (mut win_t, mut win_samples) = (Instant::now(), 0u64);
        let mut last_val: Option<f64> = self.state.best_val_nll;
        let mut steps = 0;
        while self.state.iteration < total && steps < max_steps && !self.state.stopped_early {
            let (x, c) = self.next_batch(&train)?;
            if !self.flow.is_initialized()? {
                match &c {
                    Some(c) => self.flow.initialize_given(&x, c)?,
                    None => self.flow.initialize(&x)?,
                }
            }
            let step_index = self.state.iteration;
            let (loss, gn, cg) = self.step(&x, c.as_ref())?;
            steps += 1;
            last_loss = loss;
            win_samples += x.dim(0)? as u64;
            if !cg.iterations.is_empty() {
                cg_sum += cg.mean_iterations();
                cg_n += 1;
            }
            let mut train_nll = None;
            if self.config.train_slq_every > 0
                && step_index.is_multiple_of(self.config.train_slq_every)
            {
                let mut r = aux_rng(self.config.seed, step_index, 0xA5A5);
                let ds = Dataset {
                    x: x.clone(),
                    context: c.clone(),
                };
                train_nll = Some(mean_nll(
                    &self.flow,
                    &ds,
                    &NllEstimator::Slq(self.config.train_slq.clone()),
                    x.dim(0)?,
                    &mut r,
                )?);
            }
            let mut val_nll = None;
            if let Some(v) = &val
                && self.config.val_every > 0
                && step_index.is_multiple_of(self.config.val_every)
            {
                let nll = self.validate(v)?;
                val_nll = Some(nll);
                last_val = Some(nll);
            }
            let done =
                self.state.iteration >= total || steps >= max_steps || self.state.stopped_early;
            let log_now = (self.config.log_every > 0
                && step_index.is_multiple_of(self.config.log_every))
                || val_nll.is_some()
                || train_nll.is_some()
                || done;
            if log_now {
                let dt = win_t.elapsed().as_secs_f64().max(1e-9);
                let rec = MetricsRecord {
                    iteration: self.state.iteration,
                    epoch: self.state.epoch,
                    loss,
                    lr: self.adam.lr(),
                    grad_norm: gn,
                    cg_iterations: cg.mean_iterations(),
                    train_nll_slq: train_nll,
                    val_nll,
                    samples_per_sec: win_samples as f64 / dt,
                    elapsed_s: t0.elapsed().as_secs_f64(),
                };
                (win_t, win_samples) = (Instant::now(), 0);
                tracing::info!(
                    iteration = rec.iteration,
                    loss = rec.loss,
                    lr = rec.lr,
                    grad_norm = rec.grad_norm,
                    cg_iterations = rec.cg_iterations,
                    train_nll_slq = ?rec.train_nll_slq,
                    val_nll = ?rec.val_nll,
                    samples_per_sec = rec.samples_per_sec,
                    "train"
                );
                bar.set_message(format!(
                    "loss {:.4} | val NLL {} | CG {:.2} | {:.0} samples/s",
                    rec.loss,
                    last_val.map_or("-".to_string(), |v| format!("{v:.4}")),
                    rec.cg_iterations,
                    rec.samples_per_sec
                ));
                if let Some(m) = metrics.as_mut() {
                    m.write(&rec)?;
                }
                history.push(rec);
            }
            bar.set_position(self.state.iteration as u64);
            let periodic = self.config.checkpoint_every > 0
                && self
                    .state
                    .iteration
                    .is_multiple_of(self.config.checkpoint_every);
            if periodic || val_nll.is_some() {
                self.checkpoint_if_configured()?;
            }
        }
        let finished = self.state.iteration >= total || self.state.stopped_early;
        if finished
            && self.config.restore_best
            && let Some(best) = &self.best
        {
            let map = best.iter().cloned().collect();
            self.flow.set_weights(&map, "")?;
            tracing::info!(best_iteration = ?self.state.best_iteration, best_val_nll = ?self.state.best_val_nll, "restored the best weights");
        }
        self.checkpoint_if_configured()?;
        if finished && let Some(d) = &self.options.out_dir {
            self.flow.save(&d.join("model.safetensors"))?;
        }
        bar.finish_and_clear();
        Ok(TrainReport {
            iterations: self.state.iteration,
            final_loss: last_loss,
            best_val_nll: self.state.best_val_nll,
            best_iteration: self.state.best_iteration,
            stopped_early: self.state.stopped_early,
            wall_time_s: t0.elapsed().as_secs_f64(),
            mean_cg_iterations: if cg_n > 0 { cg_sum / cg_n as f64 } else { 0.0 },
            history,
        })
    }
}
