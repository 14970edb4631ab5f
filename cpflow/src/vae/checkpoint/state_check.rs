//! The range checks of a VAE checkpoint's trainer and optimiser state before a resume uses
//! any of it (as [`crate::TrainState::validate`] checks the vector trainer's): a checkpoint
//! whose JSON metadata was edited is refused, naming the field, instead of steering the run.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::super::adamax::AdamaxState;
use super::{EpochSums, VaeCheckpointMeta, VaeTrainState};
use crate::error::{CpflowError, Result};
use crate::rng::FlowRng;

/// Refuses the trainer and optimiser state of `meta` (read with its tensors `tensors`) as
/// the state of a resume configured with the learning rate `configured_lr`
/// (`train.optimizer.lr`) when a number the resume uses is out of range or inconsistent
/// with the others:
///
/// - `optimizer.params` (Adamax's scalars are used as saved) as
///   [`super::super::AdamaxParams::validate`] refuses them, and the learning rate the
///   configured one or finite and in (0, 1]; every step count of `optimizer.steps` in
///   `1..=state.steps` and of a variable whose moments the file holds;
/// - the counters: `state.epoch` plus the batches of a paused epoch at most `state.steps`
///   (every epoch makes a step at least), `state.bad_epochs` at most `state.epoch`, the best
///   validation's epoch and every point of `state.val_curve` in `1..=epoch` (the curve's
///   epochs increasing: one point per epoch), the step statistics' counts bounded;
/// - `state.best_val`, the curve's values, the paused epoch's sums and the step statistics'
///   last loss finite, `state.train_seconds`, the paused epoch's seconds and the CG sum finite
///   and ≥ 0, the paused epoch at one batch at least with its converged CG systems at most
///   its systems;
/// - `state.rng` and the paused epoch's `shuffle_rng` well-formed generator states.
///
/// A file without a trainer state (or without an optimiser state) has nothing of it to
/// check. Every refusal is a [`CpflowError::Checkpoint`] that names `path` and the field.
pub(crate) fn check_resumable(
    path: &Path,
    meta: &VaeCheckpointMeta,
    configured_lr: f64,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let refused = |m: String| {
        CpflowError::Checkpoint(format!(
            "{}: its training state cannot be resumed: {m}",
            path.display()
        ))
    };
    let steps = meta.state.as_ref().map_or(0, |s| s.steps);
    if let Some(opt) = &meta.optimizer {
        check_optimizer(opt, configured_lr, tensors, steps).map_err(refused)?;
    }
    if let Some(state) = &meta.state {
        check_state(state).map_err(refused)?;
    }
    Ok(())
}

/// Adamax's scalars and step counts (each of a variable whose moments `adamax.m.*` the file
/// holds, the tensor table having been checked against the model, and in `1..=steps`: the
/// bias correction uses it).
fn check_optimizer(
    opt: &AdamaxState,
    configured_lr: f64,
    tensors: &HashMap<String, Tensor>,
    steps: usize,
) -> std::result::Result<(), String> {
    let p = &opt.params;
    p.validate("optimizer.params").map_err(|e| e.to_string())?;
    let lr = p.lr;
    if !(lr == configured_lr || lr.is_finite() && lr > 0.0 && lr <= 1.0) {
        return Err(format!(
            "optimizer.params.lr (the learning rate the resume steps with) is {lr:?}: it is \
             the configured train.optimizer.lr ({configured_lr:?}), or finite and in (0, 1]"
        ));
    }
    for (name, &step) in &opt.steps {
        if !tensors.contains_key(&format!("adamax.m.{name}")) {
            return Err(format!(
                "optimizer.steps counts steps of {name}, whose moments the file does not hold"
            ));
        }
        if step == 0 || step > steps as u64 {
            return Err(format!(
                "optimizer.steps counts {step} steps of {name}, outside 1..={steps} \
                 (state.steps, the steps done)"
            ));
        }
    }
    Ok(())
}

/// The trainer state's counters, values and generator states.
fn check_state(st: &VaeTrainState) -> std::result::Result<(), String> {
    let (epoch, steps) = (st.epoch, st.steps);
    let paused = st.partial_epoch.as_ref().map_or(0, |p| p.sums.batches);
    if epoch.saturating_add(paused) > steps {
        return Err(format!(
            "state.epoch ({epoch}) plus the batches of the paused epoch ({paused}) is more \
             than state.steps ({steps}): every epoch makes a step at least"
        ));
    }
    if st.bad_epochs > epoch {
        return Err(format!(
            "state.bad_epochs is {}, more than state.epoch ({epoch})",
            st.bad_epochs
        ));
    }
    if let Some((v, e)) = st.best_val
        && !(v.is_finite() && (1..=epoch).contains(&e))
    {
        return Err(format!(
            "state.best_val is ({v:?}, epoch {e}): its value must be finite and its epoch in \
             1..={epoch} (state.epoch)"
        ));
    }
    let mut previous = 0;
    for (k, &(e, v)) in st.val_curve.iter().enumerate() {
        if e <= previous || e > epoch || !v.is_finite() {
            return Err(format!(
                "state.val_curve[{k}] is (epoch {e}, {v:?}): one finite value per epoch, \
                 epochs increasing and in 1..={epoch} (state.epoch)"
            ));
        }
        previous = e;
    }
    let secs = st.train_seconds;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!(
            "state.train_seconds is {secs:?}: it must be finite and ≥ 0"
        ));
    }
    st.step_stats
        .check_counts("state.step_stats", "state.steps", steps)?;
    FlowRng::from_state(&st.rng).map_err(|e| format!("state.rng: {e}"))?;
    if let Some(p) = &st.partial_epoch {
        check_sums(&p.sums)?;
        FlowRng::from_state(&p.shuffle_rng)
            .map_err(|e| format!("state.partial_epoch.shuffle_rng: {e}"))?;
    }
    Ok(())
}

/// The running sums of a paused epoch.
fn check_sums(s: &EpochSums) -> std::result::Result<(), String> {
    let key = "state.partial_epoch.sums";
    if s.batches == 0 {
        return Err(format!(
            "{key}.batches is 0: an epoch is paused after a step"
        ));
    }
    if s.cg_converged > s.cg_systems {
        return Err(format!(
            "{key}.cg_converged is {}, more than {key}.cg_systems ({})",
            s.cg_converged, s.cg_systems
        ));
    }
    for (name, v) in [("loss", s.loss), ("reconstruction", s.reconstruction)] {
        if !v.is_finite() {
            return Err(format!("{key}.{name} is {v:?}: it must be finite"));
        }
    }
    if !(s.seconds.is_finite() && s.seconds >= 0.0) {
        return Err(format!(
            "{key}.seconds is {:?}: it must be finite and ≥ 0",
            s.seconds
        ));
    }
    Ok(())
}
