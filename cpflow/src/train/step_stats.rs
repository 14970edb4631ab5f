//! The statistics of a run's training steps (the last loss, CG iterations and convergence),
//! kept in the checkpointed [`crate::TrainState`] (and in the image and VAE trainers'
//! states) so that they cover the whole run across resumes, as its training time does.

use serde::{Deserialize, Serialize};

use crate::block::CgReport;

/// Totals over the training steps of a run, every invocation included (a resume continues
/// them from its checkpoint). A checkpoint written before they were kept resumes with none:
/// they then cover the steps after the resume only, which
/// [`TrainStepStats::counted_from`] tells.
///
/// ```
/// use cpflow::CgReport;
/// use cpflow::train::TrainStepStats;
/// let mut s = TrainStepStats::default();
/// s.record(2.5, &CgReport { iterations: vec![1, 3], converged: 2, breakdown: 0 });
/// s.record(2.0, &CgReport { iterations: vec![4, 4], converged: 1, breakdown: 0 });
/// s.record(1.5, &CgReport::default()); // a step without CG systems (exact, or no CP-Flow block)
/// assert_eq!((s.steps, s.last_loss, s.cg_unconverged_steps), (3, Some(1.5), 1));
/// assert_eq!((s.cg_steps, s.cg_max), (2, 4));
/// assert_eq!(s.mean_cg_iterations(), 3.0); // the mean of the steps' means, 2 and 4
/// assert_eq!(s.converged_fraction(), Some(0.75));
/// // Run to iteration 3: every step is counted.
/// assert_eq!(s.counted_from(3), 0);
/// // Resumed at 10 from a checkpoint without them, run to 13: steps 11 to 13 only.
/// assert_eq!(s.counted_from(13), 10);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainStepStats {
    /// Optimiser steps counted.
    pub steps: usize,
    /// The loss of the last step (`None` before the first).
    pub last_loss: Option<f64>,
    /// Sum over the steps with CG systems of their mean CG iterations per system.
    pub cg_mean_sum: f64,
    /// Steps with CG systems (none with the exact objective).
    pub cg_steps: usize,
    /// CG systems solved.
    pub cg_systems: usize,
    /// CG systems that met their tolerance.
    pub cg_converged: usize,
    /// Steps that left at least one CG system unconverged.
    pub cg_unconverged_steps: usize,
    /// Most CG iterations of any system in any step (0 without CG systems; in statistics
    /// written before it was kept, the largest count since the resume).
    pub cg_max: usize,
}

impl TrainStepStats {
    /// Whether statistics read from a checkpoint are consistent with `steps` optimiser
    /// steps (named `steps_key` in the checkpoint; the statistics are at `key`): at most
    /// `steps` steps counted, each CG count bounded by the count it is part of, the last loss
    /// finite, the CG sum finite and ≥ 0. The error names the field, for a resume to refuse
    /// the file with.
    ///
    /// ```
    /// use cpflow::train::TrainStepStats;
    /// let mut s = TrainStepStats::default();
    /// assert!(s.check_counts("state.step_stats", "state.steps", 0).is_ok());
    /// s.steps = 5;
    /// let err = s.check_counts("state.step_stats", "state.steps", 3).unwrap_err();
    /// assert_eq!(err, "state.step_stats.steps is 5, more than state.steps (3)");
    /// ```
    pub fn check_counts(&self, key: &str, steps_key: &str, steps: usize) -> Result<(), String> {
        let of = |field: &str| format!("{key}.{field}");
        let counts = [
            ("steps", self.steps, steps_key.to_string(), steps),
            ("cg_steps", self.cg_steps, of("steps"), self.steps),
            (
                "cg_unconverged_steps",
                self.cg_unconverged_steps,
                of("cg_steps"),
                self.cg_steps,
            ),
            (
                "cg_converged",
                self.cg_converged,
                of("cg_systems"),
                self.cg_systems,
            ),
        ];
        for (name, n, of, bound) in counts {
            if n > bound {
                return Err(format!("{key}.{name} is {n}, more than {of} ({bound})"));
            }
        }
        if let Some(loss) = self.last_loss
            && !loss.is_finite()
        {
            return Err(format!("{key}.last_loss is {loss:?}: it must be finite"));
        }
        let sum = self.cg_mean_sum;
        if !(sum.is_finite() && sum >= 0.0) {
            return Err(format!(
                "{key}.cg_mean_sum is {sum:?}: it must be finite and ≥ 0"
            ));
        }
        Ok(())
    }

    /// Counts a step: its loss and CG report.
    pub fn record(&mut self, loss: f64, cg: &CgReport) {
        self.steps += 1;
        self.last_loss = Some(loss);
        let systems = cg.iterations.len();
        if systems == 0 {
            return;
        }
        let converged = cg.converged.min(systems);
        let most = cg.iterations.iter().copied().max().unwrap_or(0);
        self.cg_max = self.cg_max.max(most);
        self.cg_mean_sum += cg.mean_iterations();
        self.cg_steps += 1;
        self.cg_systems += systems;
        self.cg_converged += converged;
        if converged < systems {
            self.cg_unconverged_steps += 1;
        }
    }

    /// Mean over the steps with CG systems of their mean CG iterations per system (0
    /// without any).
    pub fn mean_cg_iterations(&self) -> f64 {
        if self.cg_steps > 0 {
            self.cg_mean_sum / self.cg_steps as f64
        } else {
            0.0
        }
    }

    /// The fraction of the CG systems that met their tolerance (`None` without any).
    pub fn converged_fraction(&self) -> Option<f64> {
        (self.cg_systems > 0).then(|| self.cg_converged as f64 / self.cg_systems as f64)
    }

    /// The iteration after which the counted steps start, for a run at `iteration`: 0 when
    /// every step of the run is counted, the iteration of the resume when the run was resumed
    /// from a checkpoint written before the statistics were kept.
    pub fn counted_from(&self, iteration: usize) -> usize {
        iteration.saturating_sub(self.steps)
    }
}
