//! The training loop of [`Trainer`]: steps, validation, metrics, checkpoints, observers, and
//! the end of a run (final checkpoint of the last weights, choice of the weights to keep).

mod metrics_line;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;

use super::cg_tally::{CgTally, CgWarningContext, Unconverged};
use super::{MetricsStart, StopReason, TrainReport, Trainer, aux_rng};
use crate::block::CgReport;
use crate::config::{LrSchedule, NllEstimator, Objective};
use crate::error::{CpflowError, Result};
use crate::evaluate::{Dataset, mean_nll};
use crate::metrics::{MetricsRecord, MetricsWriter, record_late_validation, truncate_metrics};
use crate::observer::{Control, Moment, TrainObserver};
use crate::progress::Progress;
use crate::train_state::{plateau_update, scheduled_lr};

/// The run's log, as a failed write names it ([`CpflowError::CheckpointWrite`]).
const METRICS: &str = "metrics.jsonl";

impl Trainer {
    /// One optimiser step on a batch; returns (loss, grad norm, CG report).
    fn step(&mut self, x: &Tensor, ctx: Option<&Tensor>) -> Result<(f64, f64, CgReport)> {
        let lr = scheduled_lr(&self.config.lr_schedule, &self.state, self.state.iteration);
        self.adam.set_lr(lr);
        let it = self.state.iteration;
        let (lv, mut grads, cg) = match self.config.objective {
            Objective::CgSurrogate => self.surrogate_gradients(x, ctx)?,
            Objective::ExactNll => self.exact_gradients(x, ctx)?,
        };
        if !lv.is_finite() {
            return Err(CpflowError::NonFinite {
                what: format!("loss ({lv})"),
                step: it + 1,
                checkpoint: self.last_checkpoint.path(),
            });
        }
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
                step: it + 1,
                checkpoint: self.last_checkpoint.path(),
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
        self.last_val = Some((self.state.iteration, nll));
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
        self.run(train, val, usize::MAX, &mut [])
    }

    /// Like [`Trainer::fit`], with observers called at the start, every `period` iterations
    /// and at the end of the run; any of them can stop it ([`crate::observer`]).
    pub fn fit_observed(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        observers: &mut [&mut dyn TrainObserver],
    ) -> Result<TrainReport> {
        self.run(train, val, usize::MAX, observers)
    }

    /// Like [`Trainer::fit`], but do at most `max_steps` steps in this call (the run can be
    /// continued by another call or, after a checkpoint, by [`Trainer::resume`]). A call that
    /// ends on this limit leaves the run unfinished: no best-weights restore, no model file.
    pub fn fit_steps(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        max_steps: usize,
    ) -> Result<TrainReport> {
        self.run(train, val, max_steps, &mut [])
    }

    fn run(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        max_steps: usize,
        observers: &mut [&mut dyn TrainObserver],
    ) -> Result<TrainReport> {
        // Which set a shape or value error is about.
        let (tx, tc) = self
            .flow
            .check_input(&train.x, train.context.as_ref())
            .map_err(|e| e.about("training set"))?;
        let train = Dataset { x: tx, context: tc };
        let val = match val {
            Some(v) => {
                let (vx, vc) = self
                    .flow
                    .check_input(&v.x, v.context.as_ref())
                    .map_err(|e| e.about("validation set"))?;
                Some(Dataset { x: vx, context: vc })
            }
            None => None,
        };
        // A finished run handed out its best weights: training goes on from the last ones.
        if let Some(last) = self.last_weights.take() {
            self.flow
                .set_weights(&last.into_iter().collect::<HashMap<_, _>>(), "")?;
        }
        self.kept = None;
        let t0 = Instant::now();
        // A log that cannot be opened or cut back names itself and the last checkpoint.
        let mut metrics = match &self.options.out_dir {
            Some(d) => {
                let path = d.join("metrics.jsonl");
                let start = std::mem::replace(&mut self.metrics_start, MetricsStart::Append);
                let opened = match start {
                    MetricsStart::Create if self.state.iteration == 0 => {
                        MetricsWriter::create(&path)
                    }
                    MetricsStart::CutBack => {
                        truncate_metrics(&path, "iteration", self.state.iteration as u64)
                            .and_then(|_| MetricsWriter::append(&path))
                    }
                    _ => MetricsWriter::append(&path),
                };
                Some(
                    self.last_checkpoint
                        .written(METRICS, self.state.iteration, opened)?,
                )
            }
            None => None,
        };
        let total = self.config.max_iterations;
        let bar = Progress::new(total as u64, self.options.progress_bar);
        bar.set_position(self.state.iteration as u64);
        // What the observers asked for so far (`Continue`: nothing).
        let mut requested = Control::Continue;
        for o in observers.iter_mut() {
            request(&mut requested, o.observe(self, Moment::Start)?);
        }
        let _ = self.keep_curves(observers);
        let mut history = Vec::new();
        let mut cg_tally = CgTally::default();
        let (mut win_t, mut win_samples) = (Instant::now(), 0u64);
        let mut last_val: Option<f64> = self.state.best_val_nll;
        let mut steps = 0;
        while requested == Control::Continue
            && self.state.iteration < total
            && steps < max_steps
            && !self.state.stopped_early
        {
            let step_start = Instant::now();
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
            self.state.step_stats.record(loss, &cg);
            win_samples += x.dim(0)? as u64;
            if let Some(first) = cg_tally.record(self.state.iteration, &cg) {
                self.warn_unconverged(&first);
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
                if let Some(since) = cg_tally.flush() {
                    self.warn_unconverged(&since);
                }
                let dt = win_t.elapsed().as_secs_f64().max(1e-9);
                let rec = MetricsRecord {
                    iteration: self.state.iteration,
                    epoch: self.state.epoch,
                    loss,
                    lr: self.adam.lr(),
                    grad_norm: gn,
                    cg_iterations: cg.mean_iterations(),
                    cg_converged: cg_tally.take_window(),
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
                    cg_converged = rec.cg_converged,
                    train_nll_slq = rec.train_nll_slq,
                    val_nll = rec.val_nll,
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
                    let line = m.write(&rec);
                    self.last_checkpoint.written(METRICS, rec.iteration, line)?;
                }
                history.push(rec);
            }
            bar.set_position(self.state.iteration as u64);
            self.state.train_time_s += step_start.elapsed().as_secs_f64();
            // The observers first: a checkpoint written at this step holds their curves'
            // points of this step.
            let mut observed = false;
            for o in observers.iter_mut() {
                let p = o.period();
                if p > 0 && self.state.iteration.is_multiple_of(p) {
                    request(&mut requested, o.observe(self, Moment::Periodic)?);
                    observed = true;
                }
            }
            if observed {
                let _ = self.keep_curves(observers);
            }
            // An interrupt flag of the caller's (`RunOptions::interrupt`) pauses the run after
            // this step, as an observer's `Control::Pause` does.
            if self
                .options
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            {
                request(&mut requested, Control::Pause);
            }
            let periodic = self.config.checkpoint_every > 0
                && self
                    .state
                    .iteration
                    .is_multiple_of(self.config.checkpoint_every);
            if periodic || val_nll.is_some() {
                self.checkpoint_if_configured()?;
            }
        }
        let stop_reason = if self.state.stopped_early {
            StopReason::EarlyStopping
        } else if self.state.iteration >= total {
            StopReason::MaxIterations
        } else {
            match requested {
                Control::Pause => StopReason::Paused,
                Control::Stop => StopReason::Observer,
                Control::Continue => StopReason::StepLimit,
            }
        };
        bar.finish_and_clear();
        // A stop asked by an observer after a step that was not a logging point.
        if let Some(since) = cg_tally.flush() {
            self.warn_unconverged(&since);
        }
        if matches!(stop_reason, StopReason::StepLimit | StopReason::Paused) {
            self.checkpoint_if_configured()?;
        } else {
            // The end may rewrite the file (its validation into the last line): the loop's
            // appending handle is closed first.
            drop(metrics);
            if let Some(nll) = self.finish(val.as_ref())? {
                self.log_final_validation(nll, &mut history, t0)?;
            }
            for o in observers.iter_mut() {
                o.observe(self, Moment::End)?;
            }
            // The final checkpoint was written before the end's observations: written again
            // when they added a point, so that a resumed run reports it too.
            if self.keep_curves(observers) && self.checkpoint_path().is_some() {
                let last = match &self.last_weights {
                    Some(w) => w.clone(),
                    None => self.flow.weight_tensors(),
                };
                self.write_run_checkpoint(last)?;
            }
        }
        let (best_iteration, best_val_nll) = match self.kept {
            Some((it, nll)) => (Some(it), Some(nll)),
            None => (self.state.best_iteration, self.state.best_val_nll),
        };
        let stats = &self.state.step_stats;
        Ok(TrainReport {
            iterations: self.state.iteration,
            final_loss: stats.last_loss.unwrap_or(f64::NAN),
            best_val_nll,
            best_iteration,
            stopped_early: self.state.stopped_early,
            stop_reason,
            wall_time_s: t0.elapsed().as_secs_f64(),
            // Over the run's steps, every call and resume included.
            mean_cg_iterations: stats.mean_cg_iterations(),
            cg_converged: stats.converged_fraction(),
            cg_unconverged_steps: stats.cg_unconverged_steps,
            history,
        })
    }

    /// Puts the end-of-run validation `nll` of the weights at the current iteration into
    /// `metrics.jsonl` and `history`: into the line of that iteration when it is the last
    /// one and has no validation, else a validation-only line ([`metrics_line`]).
    fn log_final_validation(
        &mut self,
        nll: f64,
        history: &mut Vec<MetricsRecord>,
        t0: Instant,
    ) -> Result<()> {
        let it = self.state.iteration;
        let only = || {
            metrics_line::validation_only_record(
                it,
                self.state.epoch,
                nll,
                t0.elapsed().as_secs_f64(),
            )
        };
        let own_line = match &self.options.out_dir {
            Some(d) => {
                let recorded = record_late_validation(&d.join(METRICS), it, nll, only);
                self.last_checkpoint.written(METRICS, it, recorded)?
            }
            None => history.last().is_none_or(|r| r.iteration != it),
        };
        match history.last_mut() {
            Some(r) if r.iteration == it => {
                r.val_nll.get_or_insert(nll);
            }
            _ if own_line => history.push(only()),
            _ => {}
        }
        Ok(())
    }

    /// The warning of steps whose CG left systems unconverged ([`CgTally`]).
    fn warn_unconverged(&self, u: &Unconverged) {
        u.warn(
            &self.config.surrogate,
            &CgWarningContext::flow(self.flow.dim(), self.flow.dtype()),
        );
    }

    /// Copies the observers' curves into the training state ([`TrainState::curves`]), which
    /// checkpoints hold; returns whether one changed.
    ///
    /// [`TrainState::curves`]: crate::TrainState::curves
    fn keep_curves(&mut self, observers: &[&mut dyn TrainObserver]) -> bool {
        let mut changed = false;
        for o in observers {
            if let Some((name, points)) = o.curve() {
                let kept = self.state.curves.entry(name.to_string()).or_default();
                // Compared by bits: a NaN point is not a change.
                let bits = |p: &[(usize, f64)]| -> Vec<(usize, u64)> {
                    p.iter().map(|&(i, v)| (i, v.to_bits())).collect()
                };
                if bits(kept) != bits(points) {
                    *kept = points.to_vec();
                    changed = true;
                }
            }
        }
        changed
    }

    /// The end of a run: the final checkpoint holds the *last* weights with their optimiser
    /// and RNG state (a resume with more iterations continues this trajectory); then, with
    /// validation data and `restore_best`, the last weights are validated (unless they just
    /// were) and the better of them and the best validated weights is kept (the last ones are
    /// put back if training continues in-process); `model.safetensors` gets the kept weights.
    /// The final validation changes nothing in the saved training state; its NLL is
    /// returned when it was made here (not a periodic validation of this iteration), for
    /// the metrics. The kept weights are the ones of the lowest validation NLL of the run,
    /// the last weights' included (the reference keeps the best of its periodic validations
    /// only); ties go to the last weights.
    fn finish(&mut self, val: Option<&Dataset>) -> Result<Option<f64>> {
        self.checkpoint_if_configured()?;
        let mut final_val = None;
        if let Some(v) = val
            && self.config.restore_best
            && self.config.val_every > 0
        {
            let it = self.state.iteration;
            let current = match self.last_val {
                Some((i, nll)) if i == it => nll,
                _ => {
                    let mut rng = aux_rng(self.config.seed, it, 0x5A5A);
                    let nll = mean_nll(
                        &self.flow,
                        v,
                        &self.config.val_estimator,
                        self.config.eval_batch_size,
                        &mut rng,
                    )?;
                    final_val = Some(nll);
                    nll
                }
            };
            let restore = match (
                &self.best,
                self.state.best_val_nll,
                self.state.best_iteration,
            ) {
                (Some(best), Some(b), Some(bi))
                    if bi != it && (b < current || !current.is_finite()) =>
                {
                    Some((best.clone(), b, bi))
                }
                _ => None,
            };
            match restore {
                Some((best, b, bi)) => {
                    let last: Result<Vec<(String, Tensor)>> = self
                        .flow
                        .weight_tensors()
                        .into_iter()
                        .map(|(k, t)| Ok((k, t.copy()?)))
                        .collect();
                    self.last_weights = Some(last?);
                    self.flow
                        .set_weights(&best.into_iter().collect::<HashMap<_, _>>(), "")?;
                    self.kept = Some((bi, b));
                    tracing::info!(
                        best_iteration = bi,
                        best_val_nll = b,
                        last_val_nll = current,
                        "kept the best validated weights"
                    );
                }
                None => {
                    self.kept = Some((it, current));
                    // Logged as the restore is, saying why: the earlier validations' lowest
                    // NLL is not below the last weights' (or it is theirs), or there is none,
                    // or its weights are not held (a checkpoint written without them).
                    let earlier = match (self.state.best_iteration, self.state.best_val_nll) {
                        (Some(bi), Some(b)) if bi != it => Some((bi, b)),
                        _ => None,
                    };
                    let why = match earlier {
                        Some((_, b)) if b < current || current.is_nan() => {
                            "the weights of the earlier lower validation NLL are not held"
                        }
                        Some(_) => "their validation NLL is the lowest of the run",
                        None if self.state.best_iteration == Some(it) => {
                            "their validation NLL is the lowest of the run"
                        }
                        None => "no earlier finite validation to compare with",
                    };
                    tracing::info!(
                        iteration = it,
                        last_val_nll = current,
                        earlier_lowest_iteration = earlier.map(|(bi, _)| bi),
                        earlier_lowest_val_nll = earlier.map(|(_, b)| b),
                        "kept the last weights: {why}"
                    );
                }
            }
        }
        // Written after the final checkpoint: a failure names it, which resumes the run.
        if let Some(d) = &self.options.out_dir {
            let saved = self.flow.save(&d.join("model.safetensors"));
            let it = self.state.iteration;
            self.last_checkpoint
                .written("model.safetensors", it, saved)?;
        }
        Ok(final_val)
    }
}

/// Folds an observer's answer into what the run has been asked so far: a pause outranks a
/// stop (an interrupted run must not be finished), either outranks continuing.
fn request(requested: &mut Control, answer: Control) {
    match (answer, *requested) {
        (Control::Pause, _) | (Control::Stop, Control::Continue) => *requested = answer,
        _ => {}
    }
}
