//! The range checks of an image training checkpoint's numbers before a resume uses any of
//! them (as [`crate::TrainState::validate`] checks the vector trainer's): a checkpoint whose
//! JSON metadata was edited is refused, naming the field, instead of steering the run.

use std::collections::HashMap;

use candle_core::Tensor;

use super::ImageTrainCheckpointMeta;
use crate::adam::AdamState;
use crate::error::{CpflowError, Result};
use crate::rng::FlowRng;

/// Refuses `meta` (read with its tensors `tensors`) as the state of a resume when a number
/// the resume uses is out of range or inconsistent with the others:
///
/// - `train` (the saved configuration; its batch size places the run in its epoch) is
///   refused as [`super::ImageTrainConfig::validate`] refuses a configuration;
/// - `adam.params` (β₁, β₂, ε and the weight decay are used as saved) as
///   [`crate::AdamParams::validate`]; every step count of `adam.steps` in `1..=iteration`
///   and of a variable whose moments the file holds;
/// - the counters: `state.epoch_batch`, `state.step_stats.steps` and every point of
///   `state.val_curve` at most `state.iteration`, `state.epoch` at most `2·iteration` (a
///   resume with another batch size skips the rest of an epoch), `state.samples_seen` at
///   least `iteration` (every step draws an image at least), the epoch position within the
///   epoch of `state.n_train` images of the saved batch size, the curve's iterations in
///   order and no more points than validations can have been made (`iteration + 1`);
/// - `state.train_time_s` finite and ≥ 0, the curve's times finite, ≥ 0 and at most it;
///   the step statistics' last loss finite, their CG sums finite and their counts bounded
///   by the counts they are part of;
/// - `rng` a well-formed generator state.
///
/// Every refusal is a [`CpflowError::Checkpoint`] that names `path` and the field.
pub(crate) fn check_resumable(
    path: &std::path::Path,
    meta: &ImageTrainCheckpointMeta,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    check_numbers(meta, tensors).map_err(|m| {
        CpflowError::Checkpoint(format!(
            "{}: its training state cannot be resumed: {m}",
            path.display()
        ))
    })
}

/// [`check_resumable`] without the file: the message of the first refusal.
fn check_numbers(
    meta: &ImageTrainCheckpointMeta,
    tensors: &HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    meta.train
        .validate()
        .map_err(|e| format!("its training configuration (`train`): {e}"))?;
    let st = &meta.state;
    let it = st.iteration;
    check_adam(&meta.adam, tensors, it)?;
    if st.epoch_batch > it {
        return Err(format!(
            "state.epoch_batch is {}, past the iteration ({it})",
            st.epoch_batch
        ));
    }
    if let Some(n) = st.n_train {
        let batches = n.div_ceil(meta.train.batch_size);
        if st.epoch_batch > 0 && st.epoch_batch >= batches {
            return Err(format!(
                "state.epoch_batch is {}, past the end of an epoch of {n} images \
                 (state.n_train) in batches of {} (train.batch_size): {batches} batches",
                st.epoch_batch, meta.train.batch_size
            ));
        }
    } else if st.epoch_batch.checked_mul(meta.train.batch_size).is_none() {
        return Err(format!(
            "state.epoch_batch ({}) times train.batch_size ({}) overflows",
            st.epoch_batch, meta.train.batch_size
        ));
    }
    if st.epoch > it.saturating_mul(2) {
        return Err(format!(
            "state.epoch is {}, more than twice the iteration ({it})",
            st.epoch
        ));
    }
    if st.samples_seen < it as u64 {
        return Err(format!(
            "state.samples_seen is {}, fewer than the iteration ({it}): every step draws \
             an image at least",
            st.samples_seen
        ));
    }
    let time = st.train_time_s;
    if !(time.is_finite() && time >= 0.0) {
        return Err(format!(
            "state.train_time_s is {time:?}: it must be finite and ≥ 0"
        ));
    }
    if st.val_curve.len() > it.saturating_add(1) {
        return Err(format!(
            "state.val_curve has {} points, more than validations up to iteration {it} \
             ({})",
            st.val_curve.len(),
            it.saturating_add(1)
        ));
    }
    let mut previous = 0;
    for (k, p) in st.val_curve.iter().enumerate() {
        if p.iteration > it || p.iteration < previous {
            return Err(format!(
                "state.val_curve[{k}] is at iteration {}: the curve's iterations are in \
                 order and at most the iteration ({it})",
                p.iteration
            ));
        }
        previous = p.iteration;
        let t = p.train_time_s;
        if !(t.is_finite() && t >= 0.0 && t <= time) {
            return Err(format!(
                "state.val_curve[{k}].train_time_s is {t:?}: it must be finite, ≥ 0 and at \
                 most state.train_time_s ({time:?})"
            ));
        }
    }
    st.step_stats
        .check_counts("state.step_stats", "state.iteration", it)?;
    FlowRng::from_state(&meta.rng).map_err(|e| format!("rng: {e}"))?;
    Ok(())
}

/// Adam's scalars (β₁, β₂, ε and the weight decay are used as saved; the learning rate is
/// set from the configuration at every step) and its step counts, each of a variable whose
/// moments `adam.m.*` the file holds (the tensor table was checked against the model) and in
/// `1..=iteration` (the bias correction uses it).
fn check_adam(
    adam: &AdamState,
    tensors: &HashMap<String, Tensor>,
    iteration: usize,
) -> std::result::Result<(), String> {
    adam.params
        .validate("adam.params")
        .map_err(|e| e.to_string())?;
    for (name, &step) in &adam.steps {
        if !tensors.contains_key(&format!("adam.m.{name}")) {
            return Err(format!(
                "adam.steps counts steps of {name}, whose moments the file does not hold"
            ));
        }
        if step == 0 || step > iteration as u64 {
            return Err(format!(
                "adam.steps counts {step} steps of {name}, outside 1..={iteration} (the \
                 iterations done)"
            ));
        }
    }
    Ok(())
}
