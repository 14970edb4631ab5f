//! The trainer's resumable progress and the learning-rate schedules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::LrSchedule;
use crate::error::{CpflowError, Result};
use crate::train::TrainStepStats;

/// Everything about a training run's progress that a resume needs (besides weights,
/// optimiser and RNG).
///
/// ```
/// use cpflow::TrainState;
/// let mut st = TrainState::new(1e-3);
/// assert_eq!((st.iteration, st.lr_decays, st.best_val_nll), (0, 0, None));
/// st.iteration = 500;
/// st.curves.insert("validation".into(), vec![(500, 1.25)]);
/// // Saved as JSON in checkpoints: the round trip is exact.
/// let json = serde_json::to_string(&st).unwrap();
/// assert_eq!(serde_json::from_str::<TrainState>(&json).unwrap(), st);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps done.
    pub iteration: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Seed of the current epoch's permutation.
    pub epoch_seed: u64,
    /// Batches of the current epoch already used.
    pub epoch_batch: usize,
    /// Learning rate at the start of training.
    pub base_lr: f64,
    /// Plateau schedule: number of decays done (0, 1 or 2).
    pub lr_decays: usize,
    /// Best validation NLL so far.
    pub best_val_nll: Option<f64>,
    /// Iteration of the best validation.
    pub best_iteration: Option<usize>,
    /// Validations since the last improvement.
    pub vals_without_improvement: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Training samples processed.
    pub samples_seen: u64,
    /// Seconds of training over the whole run, every invocation included (resumes add to
    /// it): each iteration's batch, step, SLQ monitor, validation and metrics line; observers,
    /// checkpoint writes and the end of a run are not counted. 0 in checkpoints written
    /// before it existed.
    #[serde(default)]
    pub train_time_s: f64,
    /// The loss and CG statistics of the run's steps, every invocation included (resumes
    /// continue them). None in checkpoints written before they were kept: a run resumed from
    /// one counts the steps after the resume ([`TrainStepStats::counted_from`]).
    #[serde(default)]
    pub step_stats: TrainStepStats,
    /// The curves observers keep with the run ([`crate::observer::TrainObserver::curve`], e.g.
    /// the validation curve of [`crate::observer::NllCurve`]): name → `(iteration, value)`
    /// points up to `iteration`, so that a resumed run reports the whole curve. Empty in
    /// checkpoints written before it existed; a non-finite value is read back as NaN.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "curves_json"
    )]
    pub curves: BTreeMap<String, Vec<(usize, f64)>>,
}

impl TrainState {
    /// A fresh state.
    pub fn new(base_lr: f64) -> Self {
        TrainState {
            iteration: 0,
            epoch: 0,
            epoch_seed: 0,
            epoch_batch: 0,
            base_lr,
            lr_decays: 0,
            best_val_nll: None,
            best_iteration: None,
            vals_without_improvement: 0,
            stopped_early: false,
            samples_seen: 0,
            train_time_s: 0.0,
            step_stats: TrainStepStats::default(),
            curves: BTreeMap::new(),
        }
    }
}

impl TrainState {
    /// Checks the numbers a resume uses, read from a checkpoint whose saved configuration
    /// has the learning rate `configured_lr` (`train.adam.lr`): `base_lr`, the start of every
    /// schedule, is that rate, or (a run resumed through the library with another
    /// configuration, whose rate a resume does not apply) finite and in (0, 1]; at most 2
    /// plateau decays; the counts of iterations within their bounds (`epoch_batch`, the
    /// best iteration, the step statistics and the curves' iterations at most `iteration`,
    /// the epoch at most `2·iteration` — a resume with a larger batch may skip what is left
    /// of an epoch in the step that completes the next one); the best validation NLL, the
    /// training time and the loss statistics finite (the time and CG sums ≥ 0). A refusal
    /// is a [`CpflowError::Checkpoint`] naming the field.
    ///
    /// ```
    /// use cpflow::TrainState;
    /// let mut st = TrainState::new(1e-3);
    /// st.iteration = 10;
    /// st.validate(1e-3)?;
    /// st.base_lr = -1.0;
    /// let err = st.validate(1e-3).unwrap_err().to_string();
    /// assert!(err.contains("base_lr") && err.contains("-1"), "{err}");
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn validate(&self, configured_lr: f64) -> Result<()> {
        let bad = |m: String| Err(CpflowError::Checkpoint(format!("its training state: {m}")));
        let lr = self.base_lr;
        if !(lr == configured_lr || lr.is_finite() && lr > 0.0 && lr <= 1.0) {
            return bad(format!(
                "state.base_lr (the learning rate the schedule starts from) is {lr:?}: it is \
                 the configured train.adam.lr ({configured_lr:?}), or finite and in (0, 1]"
            ));
        }
        if self.lr_decays > 2 {
            return bad(format!(
                "state.lr_decays is {}: the plateau schedule decays twice at most",
                self.lr_decays
            ));
        }
        let it = self.iteration;
        let at_most_it = [
            ("state.epoch_batch", self.epoch_batch),
            ("state.best_iteration", self.best_iteration.unwrap_or(0)),
        ];
        for (name, n) in at_most_it {
            if n > it {
                return bad(format!("{name} is {n}, past the iteration ({it})"));
            }
        }
        if self.epoch > it.saturating_mul(2) {
            return bad(format!(
                "state.epoch is {}, more than twice the iteration ({it})",
                self.epoch
            ));
        }
        if let Some((name, &(i, _))) = self
            .curves
            .iter()
            .find_map(|(k, v)| v.iter().find(|(i, _)| *i > it).map(|p| (k, p)))
        {
            return bad(format!(
                "curve {name:?} has a point at iteration {i}, past the iteration ({it})"
            ));
        }
        self.step_stats
            .check_counts("state.step_stats", "state.iteration", it)
            .or_else(bad)?;
        let finite = [
            (
                "state.best_val_nll",
                self.best_val_nll.unwrap_or(0.0),
                false,
            ),
            ("state.train_time_s", self.train_time_s, true),
        ];
        for (name, v, non_negative) in finite {
            if !v.is_finite() || (non_negative && v < 0.0) {
                let want = if non_negative {
                    "finite and ≥ 0"
                } else {
                    "finite"
                };
                return bad(format!("{name} is {v:?}: it must be {want}"));
            }
        }
        Ok(())
    }
}

/// JSON has no NaN or infinity (serde_json writes `null`, then cannot read it back as an
/// `f64`): curve values are written as `null` when they are not finite and read back as NaN.
mod curves_json {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Curves = BTreeMap<String, Vec<(usize, f64)>>;

    /// Writes the curves with non-finite values as `null`.
    pub fn serialize<S: Serializer>(curves: &Curves, s: S) -> Result<S::Ok, S::Error> {
        let finite: BTreeMap<&String, Vec<(usize, Option<f64>)>> = curves
            .iter()
            .map(|(k, v)| {
                let pts = v.iter().map(|&(i, x)| (i, x.is_finite().then_some(x)));
                (k, pts.collect())
            })
            .collect();
        finite.serialize(s)
    }

    /// Reads the curves back, a `null` value as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Curves, D::Error> {
        let raw = BTreeMap::<String, Vec<(usize, Option<f64>)>>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(k, v)| {
                let pts = v.into_iter().map(|(i, x)| (i, x.unwrap_or(f64::NAN)));
                (k, pts.collect())
            })
            .collect())
    }
}

/// Learning rate for the optimiser step with 0-based index `step` (time-based schedules; the
/// plateau schedule depends on `state.lr_decays` only).
///
/// ```
/// use cpflow::LrSchedule;
/// use cpflow::train_state::{TrainState, scheduled_lr};
/// let st = TrainState::new(0.1);
/// let step = LrSchedule::Step { step_size: 10, gamma: 0.5 };
/// assert_eq!(scheduled_lr(&step, &st, 9), 0.1);
/// assert_eq!(scheduled_lr(&step, &st, 25), 0.025); // two decays
/// let cosine = LrSchedule::Cosine { t_max: 100 };
/// assert!((scheduled_lr(&cosine, &st, 50) - 0.05).abs() < 1e-15); // half-way: lr/2
/// ```
pub fn scheduled_lr(schedule: &LrSchedule, state: &TrainState, step: usize) -> f64 {
    let base = state.base_lr;
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Step { step_size, gamma } => {
            base * gamma.powi((step / (*step_size).max(1)) as i32)
        }
        LrSchedule::Cosine { t_max } => {
            let t = step as f64 / (*t_max).max(1) as f64;
            0.5 * base * (1.0 + (std::f64::consts::PI * t).cos())
        }
        LrSchedule::Plateau => base * 0.1f64.powi(state.lr_decays as i32),
    }
}

/// The reference's `update_lr` after a non-improving validation: more than `patience/3`
/// validations without improvement → first decay (lr/10), more than `2·(patience/3)` →
/// second decay (lr/100). Returns whether a decay happened.
///
/// ```
/// use cpflow::LrSchedule;
/// use cpflow::train_state::{TrainState, plateau_update, scheduled_lr};
/// let mut st = TrainState::new(1e-3);
/// // patience 9: the first decay after more than 3 validations without improvement.
/// st.vals_without_improvement = 3;
/// assert!(!plateau_update(&mut st, 9));
/// st.vals_without_improvement = 4;
/// assert!(plateau_update(&mut st, 9));
/// assert!((scheduled_lr(&LrSchedule::Plateau, &st, 0) - 1e-4).abs() < 1e-18);
/// ```
pub fn plateau_update(state: &mut TrainState, patience: usize) -> bool {
    let third = patience / 3;
    if state.lr_decays == 0 && state.vals_without_improvement > third {
        state.lr_decays = 1;
        true
    } else if state.lr_decays == 1 && state.vals_without_improvement > third * 2 {
        state.lr_decays = 2;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_cosine_schedules() {
        let st = TrainState::new(5e-3);
        let s = LrSchedule::Step {
            step_size: 2000,
            gamma: 0.5,
        };
        assert_eq!(scheduled_lr(&s, &st, 0), 5e-3);
        assert_eq!(scheduled_lr(&s, &st, 1999), 5e-3);
        assert_eq!(scheduled_lr(&s, &st, 2000), 2.5e-3);
        let c = LrSchedule::Cosine { t_max: 100 };
        assert!((scheduled_lr(&c, &st, 50) - 2.5e-3).abs() < 1e-15);
        assert!(scheduled_lr(&c, &st, 100).abs() < 1e-15);
    }

    /// Curves round-trip through JSON, a non-finite value as NaN; a state written before
    /// curves (or the training time) existed reads back with none (0 s).
    #[test]
    fn curves_round_trip_and_old_states_read_without_them_or_a_training_time() {
        let mut st = TrainState::new(1e-3);
        let plain = serde_json::to_string(&st).unwrap();
        assert!(!plain.contains("curves"), "{plain}");
        assert_eq!(serde_json::from_str::<TrainState>(&plain).unwrap(), st);
        // A state written before the training time was kept reads back with 0 s.
        let old = plain.replace(",\"train_time_s\":0.0", "");
        assert!(!old.contains("train_time_s"), "{old}");
        assert_eq!(serde_json::from_str::<TrainState>(&old).unwrap(), st);
        // So does one written before the step statistics were kept (none: zero steps).
        let start = old.find(",\"step_stats\":").unwrap();
        let end = start + old[start..].find('}').unwrap() + 1;
        let old = format!("{}{}", &old[..start], &old[end..]);
        assert!(!old.contains("step_stats") && !old.contains("cg_"), "{old}");
        assert_eq!(serde_json::from_str::<TrainState>(&old).unwrap(), st);
        // Statistics written before the largest CG count was kept read back with 0.
        st.step_stats.steps = 3;
        st.step_stats.cg_max = 7;
        let json = serde_json::to_string(&st)
            .unwrap()
            .replace(",\"cg_max\":7", "");
        assert!(
            json.contains("\"steps\":3") && !json.contains("cg_max"),
            "{json}"
        );
        let back = serde_json::from_str::<TrainState>(&json).unwrap();
        assert_eq!((back.step_stats.steps, back.step_stats.cg_max), (3, 0));
        st.curves.insert(
            "validation".into(),
            vec![(500, 1.25), (1000, f64::INFINITY)],
        );
        let back: TrainState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        let pts = &back.curves["validation"];
        assert_eq!(pts[0], (500, 1.25));
        assert!(pts[1].0 == 1000 && pts[1].1.is_nan());
    }

    #[test]
    fn plateau_follows_the_reference_thresholds() {
        let mut st = TrainState::new(1e-3);
        let mut decays_at = vec![];
        for k in 1..=20 {
            st.vals_without_improvement = k;
            if plateau_update(&mut st, 20) {
                decays_at.push(k);
            }
        }
        // 20 // 3 = 6: decay when the counter exceeds 6, then when it exceeds 12.
        assert_eq!(decays_at, vec![7, 13]);
        assert!((scheduled_lr(&LrSchedule::Plateau, &st, 0) - 1e-5).abs() < 1e-18);
    }
}
