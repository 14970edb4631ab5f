//! The trainer's resumable progress and the learning-rate schedules.

use serde::{Deserialize, Serialize};

use crate::config::LrSchedule;

/// Everything about a training run's progress that a resume needs (besides weights,
/// optimiser and RNG).
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
        }
    }
}

/// Learning rate for the optimiser step with 0-based index `step` (time-based schedules; the
/// plateau schedule depends on `state.lr_decays` only).
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
