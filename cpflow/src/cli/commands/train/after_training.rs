//! The end of `cpflow train` after training, stage by stage, and what an interrupt there
//! leaves undone.

use anyhow::Result;
use std::path::Path;

use crate::cli::interrupt::Interrupt;
use crate::cli::shell_words::{resume_command, shell_word};
use crate::{Dataset, Flow, FlowRng, NllEstimate, NllEstimator, nll_estimate_with};

/// The end of a `cpflow train` run after training (the kept weights' validation score, the
/// test score, plots, report): an interrupt stops it at the next stage or scoring chunk, with
/// a message that says what is saved, what is not done and which commands do it.
pub(super) struct AfterTraining<'a> {
    pub(super) interrupt: &'a Interrupt,
    pub(super) out: &'a Path,
    pub(super) iteration: usize,
    pub(super) n_test: usize,
    pub(super) plots: bool,
}

/// The stages after training, in their order: an interrupt before or during one leaves it
/// and the later ones undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    /// The exact validation NLL of kept weights that the curve has no point at.
    Validation,
    /// The test split's exact NLL (only with test rows).
    Test,
    /// The plots (only with `run.plots` on 2-D data).
    Plots,
}

impl Stage {
    /// What the interrupt error of the library's scoring calls this stage.
    fn score_name(self) -> &'static str {
        match self {
            Stage::Validation => "the validation score",
            Stage::Test => "the test score",
            Stage::Plots => "the plots",
        }
    }
}

impl AfterTraining<'_> {
    /// An error when an interrupt came before `next`.
    pub(super) fn check(&self, next: Stage) -> Result<()> {
        if self.interrupt.is_set() {
            return Err(self.stopped(next));
        }
        Ok(())
    }

    /// For [`crate::evaluate::nll_estimate_with`]: stops the scoring of `stage` between chunks
    /// once an interrupt came.
    pub(super) fn stop_chunks(&self, stage: Stage) -> crate::Result<()> {
        if self.interrupt.is_set() {
            return Err(crate::CpflowError::EvaluationInterrupted {
                skipped: stage.score_name().into(),
                saved: Vec::new(),
            });
        }
        Ok(())
    }

    /// The score of `stage`, with an interrupt of [`AfterTraining::stop_chunks`] turned into
    /// the message.
    pub(super) fn scored<T>(&self, stage: Stage, result: crate::Result<T>) -> Result<T> {
        match result {
            Err(crate::CpflowError::EvaluationInterrupted { .. }) => Err(self.stopped(stage)),
            r => Ok(r?),
        }
    }

    /// The exact NLL of `data` under `flow`, scored for `stage` in chunks of 1024 rows that
    /// an interrupt stops (with the message of [`AfterTraining::check`]), with `seed` for the
    /// rng. (Callers check before their log line, so an interrupt before the stage logs no
    /// scoring.)
    pub(super) fn score_exact(
        &self,
        stage: Stage,
        flow: &Flow,
        data: &Dataset,
        seed: u64,
    ) -> Result<NllEstimate> {
        let mut rng = FlowRng::seed_from_u64(seed);
        let nll = nll_estimate_with(flow, data, &NllEstimator::Exact, 1024, &mut rng, |_| {
            self.stop_chunks(stage)
        });
        self.scored(stage, nll)
    }

    /// The error of an interrupt before or during `next`: what is saved, what is not done
    /// (`next` and the stages after it that this run has), the commands that do it.
    fn stopped(&self, next: Stage) -> anyhow::Error {
        let out = shell_word(self.out);
        let mut missing = Vec::new();
        let mut commands = Vec::new();
        if next <= Stage::Validation {
            // No command but the resume scores the validation rows (`eval` scores test rows).
            missing.push("the exact validation score of the kept weights");
        }
        if next <= Stage::Test && self.n_test > 0 {
            missing.push("the test score");
            // The run's own test rows: a toy's are drawn again with `-n` (ignored for files).
            let n = if self.n_test <= crate::cli::MAX_EVAL_POINTS {
                format!(" -n {}", self.n_test)
            } else {
                String::new()
            };
            commands.push(format!(
                "`cpflow eval --model {out}{n}` scores the test split"
            ));
        }
        if self.plots {
            missing.push("the plots");
            commands.push(format!("`cpflow plot --model {out}` draws the plots"));
        }
        missing.push("report.json");
        commands.push(format!(
            "`{}` does all of it",
            resume_command("train", self.out)
        ));
        anyhow::anyhow!(
            "interrupted after training (iteration {}): the model is saved in {} and the run \
             in {}; not done: {}. {}",
            self.iteration,
            self.out.join("model.safetensors").display(),
            self.out.join("checkpoint.safetensors").display(),
            missing.join(", "),
            commands.join("; ")
        )
    }
}
