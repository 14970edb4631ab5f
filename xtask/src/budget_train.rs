//! Training under a wall-clock budget, with early stopping on the validation NLL.
//!
//! [`cpflow::Trainer`] stops on an iteration cap or early stopping; [`fit_with_budget`] drives
//! it in short segments ([`cpflow::Trainer::fit_steps`]) and also stops when the wall-clock
//! budget is spent. The weights kept are the best validated ones: the trainer restores them
//! itself when it finishes (cap or early stopping); when the budget ends the run, the current
//! weights are validated once more and the best checkpointed weights
//! ([`cpflow::Flow::load_best`]) replace them if they were better.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cpflow::{Dataset, Flow, FlowRng, Trainer, mean_nll};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// What happened during a budgeted run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetedFit {
    /// Optimiser steps done.
    pub iterations: usize,
    /// Iteration of the weights that were kept (best validation), when validation ran.
    pub best_iteration: Option<usize>,
    /// Validation NLL of the kept weights (the trainer's estimator).
    pub best_val_nll: Option<f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether the wall-clock budget ended the run.
    pub budget_exhausted: bool,
    /// Wall-clock seconds spent in training (validations included).
    pub train_time_s: f64,
    /// Mean CG iterations per system and step.
    pub mean_cg_iterations: f64,
}

/// Steps per [`Trainer::fit_steps`] call: the budget is checked between calls.
const MAX_SEGMENT: usize = 25;

/// Trains until the iteration cap, early stopping or `budget` (whichever comes first) and
/// returns the model with the best validated weights. `checkpoint` is a scratch file used to
/// recover the best weights when the budget ends the run. A progress bar is drawn when
/// `progress` is set (time-based when there is a budget). The budget is checked between
/// segments of at most `val_every` (capped at 25) steps, after the first one; later segments
/// are shortened to what the remaining budget allows at the pace so far, so a run overshoots
/// its budget by about one step (plus the final validation and test evaluation).
pub fn fit_with_budget(
    mut trainer: Trainer,
    train: &Dataset,
    val: &Dataset,
    budget: Option<Duration>,
    checkpoint: &Path,
    progress: bool,
) -> Result<(Flow, BudgetedFit)> {
    let t0 = Instant::now();
    let total = trainer.config().max_iterations;
    let segment = trainer.config().val_every.clamp(1, MAX_SEGMENT);
    let bar = match (progress, budget) {
        (false, _) => ProgressBar::hidden(),
        (true, Some(b)) => ProgressBar::new(b.as_secs().max(1)),
        (true, None) => ProgressBar::new(total as u64),
    };
    let template = if budget.is_some() {
        "{bar:30} {pos}/{len} s {msg}"
    } else {
        "{bar:30} {pos}/{len} it [{elapsed_precise}<{eta_precise}] {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let (mut cg_sum, mut cg_steps) = (0.0, 0usize);
    let mut budget_exhausted = false;
    loop {
        let state = trainer.state();
        if state.iteration >= total || state.stopped_early {
            break;
        }
        // At least one segment runs, so that the model is initialised and validated.
        if cg_steps > 0 && budget.is_some_and(|b| t0.elapsed() >= b) {
            budget_exhausted = true;
            break;
        }
        let before = state.iteration;
        let steps_now = match budget {
            // Do not start more steps than the remaining budget allows at the pace so far.
            Some(b) if cg_steps > 0 => {
                let per_step = t0.elapsed().as_secs_f64() / cg_steps as f64;
                let remaining = b.saturating_sub(t0.elapsed()).as_secs_f64();
                ((remaining / per_step).ceil() as usize).clamp(1, segment)
            }
            _ => segment,
        };
        let rep = trainer
            .fit_steps(train, Some(val), steps_now)
            .context("training step failed")?;
        let steps = rep.iterations - before;
        cg_sum += rep.mean_cg_iterations * steps as f64;
        cg_steps += steps;
        match budget {
            Some(_) => bar.set_position(t0.elapsed().as_secs()),
            None => bar.set_position(rep.iterations as u64),
        }
        bar.set_message(format!(
            "it {} | loss {:.3} | best val NLL {}",
            rep.iterations,
            rep.final_loss,
            rep.best_val_nll
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        ));
    }
    bar.finish_and_clear();
    let train_time_s = t0.elapsed().as_secs_f64();
    let state = trainer.state().clone();
    let mut fit = BudgetedFit {
        iterations: state.iteration,
        best_iteration: state.best_iteration,
        best_val_nll: state.best_val_nll,
        stopped_early: state.stopped_early,
        budget_exhausted,
        train_time_s,
        mean_cg_iterations: if cg_steps > 0 {
            cg_sum / cg_steps as f64
        } else {
            0.0
        },
    };
    if !budget_exhausted {
        // The trainer restored the best weights itself when it finished.
        return Ok((trainer.into_flow(), fit));
    }
    let cfg = trainer.config().clone();
    let mut rng = FlowRng::seed_from_u64(cfg.seed ^ 0x00B0_D6E7);
    let current = mean_nll(
        trainer.flow(),
        val,
        &cfg.val_estimator,
        cfg.eval_batch_size,
        &mut rng,
    )?;
    match state.best_val_nll {
        Some(best) if best < current || !current.is_finite() => {
            trainer
                .save_checkpoint(checkpoint)
                .with_context(|| format!("writing {}", checkpoint.display()))?;
            let flow = Flow::load_best(checkpoint, trainer.flow().device())?;
            Ok((flow, fit))
        }
        _ => {
            fit.best_iteration = Some(state.iteration);
            fit.best_val_nll = Some(current);
            Ok((trainer.into_flow(), fit))
        }
    }
}
