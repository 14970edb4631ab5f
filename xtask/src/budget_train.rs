//! Training under a wall-clock budget, with early stopping on the validation NLL.
//!
//! The budget is a [`cpflow::TimeBudget`] observer of [`cpflow::Trainer::fit_observed`]: a run
//! ends on its iteration cap, early stopping or the budget, whichever comes first, and then
//! finishes the same way in every case (the trainer validates the last weights and keeps the
//! better of them and the best validated ones).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cpflow::{
    Control, Dataset, Flow, FnObserver, Moment, StopReason, TimeBudget, TrainObserver, Trainer,
};
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
    /// Seconds spent in training steps and validations over the whole run, every invocation
    /// included (a resumed run adds to the time in its checkpoint; [`cpflow::TrainState`]).
    pub train_time_s: f64,
    /// Mean CG iterations per system and step (over this invocation's steps).
    pub mean_cg_iterations: f64,
    /// The iteration this invocation resumed from (`--resume`); `None` for a run that
    /// started here (and in reports written before resuming existed).
    #[serde(default)]
    pub resumed_at: Option<usize>,
}

/// A run that an interrupt paused (its checkpoint holds it): [`fit_with_budget`]'s error,
/// which is not a failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "interrupted at iteration {iteration}{}: continue it with --resume",
    held_by(checkpoint)
)]
pub struct TrainingPaused {
    /// Optimiser steps done.
    pub iteration: usize,
    /// The checkpoint that holds the run, if it has one.
    pub checkpoint: Option<PathBuf>,
}

/// Whether `e` is, or is caused by, an interrupt: a run that it paused ([`TrainingPaused`],
/// [`cpflow::CpflowError::Interrupted`]) or whose evaluation it stopped
/// ([`cpflow::CpflowError::EvaluationInterrupted`]), anywhere in `e`'s chain of causes. Not
/// whether an interrupt came: an error of its own that follows one is not one.
pub fn is_interrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<TrainingPaused>()
            || matches!(
                c.downcast_ref::<cpflow::CpflowError>(),
                Some(
                    cpflow::CpflowError::Interrupted { .. }
                        | cpflow::CpflowError::EvaluationInterrupted { .. }
                )
            )
    })
}

fn held_by(checkpoint: &Option<PathBuf>) -> String {
    checkpoint
        .as_ref()
        .map_or_else(String::new, |p| format!("; {} holds it", p.display()))
}

/// Trains until the iteration cap, early stopping or `budget` (whichever comes first) and
/// returns the model with the kept weights (see the module doc). A progress bar is drawn when
/// `progress` is set (time-based when there is a budget). The budget is checked after every
/// step, so a run overshoots it by at most one step (plus the final validation). `spent` is
/// the part of the budget that earlier sittings used (zero: a trainer that continues a run,
/// [`Trainer::resume`], gets the whole budget for its new steps); a run whose budget is
/// spent takes no step and ends as one that ran out of it (validated, best weights kept).
pub fn fit_with_budget(
    mut trainer: Trainer,
    train: &Dataset,
    val: &Dataset,
    budget: Option<Duration>,
    spent: Duration,
    progress: bool,
) -> Result<(Flow, BudgetedFit)> {
    let t0 = Instant::now();
    let budget = budget.map(|b| b.saturating_sub(spent));
    let spent_already = budget == Some(Duration::ZERO);
    let start = trainer.state().iteration;
    let total = trainer.config().max_iterations;
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
    let mut show = FnObserver::new(25, |trainer: &Trainer, _moment: Moment| {
        let state = trainer.state();
        match budget {
            Some(_) => bar.set_position(t0.elapsed().as_secs()),
            None => bar.set_position(state.iteration as u64),
        }
        bar.set_message(format!(
            "it {} | best val NLL {}",
            state.iteration,
            state
                .best_val_nll
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        ));
        Ok(Control::Continue)
    });
    // Without a budget the observer never stops the run.
    let mut clock = TimeBudget::new(budget.unwrap_or(Duration::MAX));
    // Stops before the first step a run whose budget earlier sittings spent.
    let mut gate = FnObserver::new(0, |_: &Trainer, moment: Moment| {
        Ok(if moment == Moment::Start && spent_already {
            Control::Stop
        } else {
            Control::Continue
        })
    });
    let rep = {
        let mut observers: [&mut dyn TrainObserver; 3] = [&mut show, &mut clock, &mut gate];
        trainer
            .fit_observed(train, Some(val), &mut observers)
            .context("training failed")?
    };
    bar.finish_and_clear();
    if rep.stop_reason == StopReason::Paused {
        // An interrupt: the checkpoint holds the run, which is not finished (no kept
        // weights to score).
        return Err(TrainingPaused {
            iteration: rep.iterations,
            checkpoint: trainer.checkpoint_path(),
        }
        .into());
    }
    let fit = BudgetedFit {
        iterations: rep.iterations,
        best_iteration: rep.best_iteration,
        best_val_nll: rep.best_val_nll,
        stopped_early: rep.stop_reason == StopReason::EarlyStopping,
        budget_exhausted: rep.stop_reason == StopReason::Observer
            && (clock.exhausted() || spent_already),
        train_time_s: trainer.state().train_time_s,
        mean_cg_iterations: rep.mean_cg_iterations,
        resumed_at: (start > 0).then_some(start),
    };
    Ok((trainer.into_flow(), fit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interrupt's errors are found under any context; other errors, whatever their
    /// message says, are not interrupts.
    #[test]
    fn only_the_interrupts_own_errors_are_interrupts() {
        let paused = anyhow::Error::new(TrainingPaused {
            iteration: 3,
            checkpoint: None,
        })
        .context("miniboone");
        assert!(is_interrupt(&paused));
        let stopped = anyhow::Error::new(cpflow::CpflowError::EvaluationInterrupted {
            skipped: "the score".into(),
            saved: vec![],
        })
        .context("evaluating");
        assert!(is_interrupt(&stopped));
        let io = anyhow::Error::new(std::io::Error::other("interrupted at iteration 3"))
            .context("writing the checkpoint");
        assert!(!is_interrupt(&io));
        assert!(!is_interrupt(&anyhow::anyhow!(
            "--val-every must be at least 1"
        )));
    }
}
