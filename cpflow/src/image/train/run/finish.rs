//! The end of an image run: final validation, checkpoint, model file, the test score (unless
//! an interrupt came once training had ended) and the report.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::eval_progress::score_test_set_until;
use super::super::{ImageRunOptions, ImageStopReason, ImageTrainReport};
use super::{Run, StepStats, TEST_SEED_SALT};
use crate::error::{CpflowError, Result};

impl Run<'_> {
    /// Final validation (unless the last step was validated), checkpoint, model file, test
    /// score, report. `opts.training_ended` is set first; an interrupt seen after the model
    /// file is written skips the test score and the report
    /// ([`CpflowError::EvaluationInterrupted`]): resuming the finished run scores it.
    pub(super) fn finish(
        mut self,
        stop_reason: ImageStopReason,
        stats: StepStats,
        mut eval_time: f64,
        wall: Instant,
        opts: &ImageRunOptions,
    ) -> Result<ImageTrainReport> {
        if let Some(f) = &opts.training_ended {
            f.store(true, Ordering::Relaxed);
        }
        let te = Instant::now();
        if !self.flow.is_initialized()? {
            // No step was run (a zero limit): initialise on the first batch, untrained,
            // without consuming it.
            let (state, rng) = (self.state.clone(), self.rng.clone());
            let x = self.next_batch()?;
            self.flow.initialize(&x)?;
            (self.state, self.rng) = (state, rng);
        }
        let it = self.state.iteration;
        self.validate_unless_done(opts.interrupt.as_deref(), wall)?;
        self.save_checkpoint()?;
        self.load_eval_weights()?;
        if let Some(d) = &self.out_dir {
            let saved = self.eval_flow.save(&d.join("model.safetensors"));
            self.last_checkpoint.written(super::MODEL, it, saved)?;
        }
        let stopped = || {
            let saved = match &self.out_dir {
                Some(d) => vec![
                    d.join("model.safetensors"),
                    d.join("checkpoint.safetensors"),
                ],
                None => Vec::new(),
            };
            CpflowError::EvaluationInterrupted {
                skipped: "the test score".into(),
                saved,
            }
        };
        let interrupted = opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        if interrupted && !self.data.test.is_empty() {
            return Err(stopped());
        }
        let test = if self.data.test.is_empty() {
            None
        } else {
            // An interrupt during the score stops it at its next chunk.
            let r = score_test_set_until(
                &self.eval_flow,
                &self.data.test,
                &self.cfg.test,
                self.cfg.eval_batch_size,
                self.cfg.seed ^ TEST_SEED_SALT,
                opts.interrupt.as_deref(),
            )?
            .ok_or_else(stopped)?;
            tracing::info!(
                images = r.slq.images,
                test_bpd = r.slq.bpd,
                std_err = r.slq.std_err,
                slq_minus_exact = r.exact.as_ref().map(|e| e.slq_minus_exact),
                "test score (EMA weights, scored once)"
            );
            Some(r)
        };
        eval_time += te.elapsed().as_secs_f64();
        let invocation_wall = wall.elapsed().as_secs_f64();
        let totals = &self.state.step_stats;
        let report = ImageTrainReport {
            parameters: self.flow.num_parameters(),
            cp_flow_blocks: self.flow.blocks().count(),
            n_train: self.data.train.len(),
            n_val: self.data.val.len(),
            n_test: self.data.test.len(),
            iterations: it,
            epochs: self.epochs_done(),
            stop_reason,
            // Over every step of the run, across resumes.
            final_loss: totals.last_loss.unwrap_or(f64::NAN),
            mean_cg_iterations: totals.mean_cg_iterations(),
            cg_converged: totals.converged_fraction(),
            max_cg_iterations: totals.cg_max,
            cg_unconverged_steps: totals.cg_unconverged_steps,
            step_stats_since_iteration: Some(totals.counted_from(it)).filter(|&i| i > 0),
            // The training time covers every step of the run (a checkpoint written before
            // the step totals were kept has it too).
            mean_step_s: if it > 0 {
                self.state.train_time_s / it as f64
            } else {
                0.0
            },
            val_curve: self.state.val_curve.clone(),
            test,
            train_time_s: self.state.train_time_s,
            eval_time_s: eval_time,
            // The earlier invocations' training (up to the checkpoint this one resumed
            // from) and all of this one.
            wall_time_s: self.state.train_time_s - stats.seconds + invocation_wall,
            invocation_wall_time_s: invocation_wall,
        };
        // A report that cannot be written names itself and the final checkpoint, whose
        // resume scores the run again and writes it.
        if let Some(d) = &self.out_dir {
            let path = d.join("report.json");
            let json = serde_json::to_string_pretty(&report)?;
            let written = crate::checkpoint::write_atomic(&path, json.as_bytes());
            self.last_checkpoint.written("report.json", it, written)?;
        }
        Ok(report)
    }
}
