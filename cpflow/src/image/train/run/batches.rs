//! The batches of an image run and how far it has got: the shuffled epochs, the epochs
//! counted in images seen, the `epochs` / `max_iterations` limit, and the new epoch a resume
//! with another batch size starts.

use candle_core::Tensor;

use super::super::ImageTrainState;
use super::super::data::{epoch_permutation, training_batch};
use super::Run;
use crate::error::Result;

impl Run<'_> {
    pub(super) fn batches_per_epoch(&self) -> usize {
        self.data.train.len().div_ceil(self.cfg.batch_size)
    }

    /// Epochs done, counted in training images seen (whatever the batch sizes were).
    pub(super) fn epochs_done(&self) -> f64 {
        self.state.samples_seen as f64 / self.data.train.len().max(1) as f64
    }

    /// Whether `epochs` or `max_iterations` is reached.
    pub(super) fn limit_reached(&self) -> bool {
        self.cfg.limit_reached(
            self.state.iteration,
            self.state.samples_seen,
            self.data.train.len(),
        )
    }

    /// The steps left to the first of `epochs` and `max_iterations` (the progress bar's
    /// length; `None`: only the time budget limits the run).
    pub(super) fn steps_left(&self) -> Option<usize> {
        steps_to_limits(
            self.cfg.max_iterations,
            self.cfg.epochs,
            self.data.train.len(),
            self.cfg.batch_size,
            &self.state,
        )
    }

    /// The next training batch, dequantised with the run's RNG.
    pub(super) fn next_batch(&mut self) -> Result<Tensor> {
        let n = self.data.train.len();
        let bs = self.cfg.batch_size;
        let nb = self.batches_per_epoch();
        if self.state.epoch_batch >= nb {
            // Fewer training images than the checkpoint's epoch position: start the next
            // epoch (a new batch size starts one at the resume, `new_epoch_for_batch_size`).
            self.state.epoch += 1;
            self.state.epoch_batch = 0;
        }
        let epoch = self.state.epoch;
        if self.perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.perm = Some((epoch, epoch_permutation(n, self.cfg.seed, epoch)));
        }
        let perm = self.perm.as_ref().map(|(_, p)| p.as_slice()).unwrap_or(&[]);
        let start = self.state.epoch_batch * bs;
        let idx = &perm[start..(start + bs).min(n)];
        let x = training_batch(
            &self.data.train,
            idx,
            self.cfg.hflip,
            self.flow.dtype(),
            self.flow.device(),
            &mut self.rng,
        )?;
        self.state.epoch_batch += 1;
        self.state.samples_seen += idx.len() as u64;
        if self.state.epoch_batch >= nb {
            self.state.epoch += 1;
            self.state.epoch_batch = 0;
        }
        Ok(x)
    }
}

/// The steps from `state` to the first of `max_iterations` and `epochs` (counted in images
/// seen) with `n_train` images in batches of `batch_size`, as [`Run::next_batch`] draws
/// them, without drawing them: the rest of the current epoch first (its last batch may be
/// short), then whole epochs of `n_train.div_ceil(batch_size)` batches, then the part of
/// one. `None` without either limit.
fn steps_to_limits(
    max_iterations: Option<usize>,
    epochs: Option<usize>,
    n_train: usize,
    batch_size: usize,
    state: &ImageTrainState,
) -> Option<usize> {
    let by_iterations = max_iterations.map(|m| m.saturating_sub(state.iteration));
    let by_epochs = epochs.map(|e| {
        let (n, bs) = (n_train as u64, batch_size.max(1) as u64);
        let wanted = (e as u64)
            .saturating_mul(n)
            .saturating_sub(state.samples_seen);
        let rest = n.saturating_sub(state.epoch_batch as u64 * bs);
        let steps = if wanted <= rest || n == 0 {
            wanted.div_ceil(bs)
        } else {
            let after = wanted - rest;
            rest.div_ceil(bs) + (after / n) * n.div_ceil(bs) + (after % n).div_ceil(bs)
        };
        usize::try_from(steps).unwrap_or(usize::MAX)
    });
    match (by_iterations, by_epochs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A resume with another batch size than the checkpoint's in the middle of an epoch starts a
/// new epoch (as the vector trainer does): the batches of the old size no longer tile the
/// rest of the epoch's permutation. The log says so and how many of its images the run skips.
/// Epochs are counted in images seen, so the skipped ones are not counted as seen.
pub(super) fn new_epoch_for_batch_size(
    state: &mut ImageTrainState,
    old_batch_size: usize,
    batch_size: usize,
    n_train: usize,
) {
    if state.epoch_batch == 0 || old_batch_size == batch_size {
        return;
    }
    let seen = (state.epoch_batch * old_batch_size).min(n_train);
    tracing::info!(
        "the batch size changed from {old_batch_size} to {batch_size} in the middle of an \
         epoch ({seen} of its {n_train} images seen): a new epoch starts, the other {} \
         images of that epoch are skipped",
        n_train - seen
    );
    state.epoch += 1;
    state.epoch_batch = 0;
}

#[cfg(test)]
mod tests {
    use super::super::super::ImageTrainConfig;
    use super::*;

    /// One step of [`Run::next_batch`]'s bookkeeping (no images drawn).
    fn advance(s: &mut ImageTrainState, n: usize, bs: usize) {
        let nb = n.div_ceil(bs);
        if s.epoch_batch >= nb {
            (s.epoch, s.epoch_batch) = (s.epoch + 1, 0);
        }
        let start = s.epoch_batch * bs;
        s.samples_seen += ((start + bs).min(n) - start) as u64;
        s.epoch_batch += 1;
        if s.epoch_batch >= nb {
            (s.epoch, s.epoch_batch) = (s.epoch + 1, 0);
        }
        s.iteration += 1;
    }

    /// The steps to the limit by walking them, as the training loop does.
    fn walked(cfg: &ImageTrainConfig, n: usize, state: &ImageTrainState) -> Option<usize> {
        if cfg.max_iterations.is_none() && cfg.epochs.is_none() {
            return None;
        }
        let mut s = state.clone();
        let mut steps = 0;
        while !cfg.limit_reached(s.iteration, s.samples_seen, n) {
            advance(&mut s, n, cfg.batch_size);
            steps += 1;
        }
        Some(steps)
    }

    /// The direct count is the walk's, from the start, from every position of a run
    /// (mid-epoch, short last batches) and from a position past the end of the epoch (a
    /// checkpoint of more images than the data now hold, written before a resume on
    /// another number of images was refused), for both limits, either and none.
    #[test]
    fn steps_left_is_the_number_of_steps_the_loop_makes() {
        let mut cases = 0;
        for n in [1, 5, 8, 10] {
            for bs in [1, 3, 4, 8, 16] {
                for done in [0, 1, 2, 3, 7, 12] {
                    let mut state = ImageTrainState::default();
                    for _ in 0..done {
                        advance(&mut state, n, bs);
                    }
                    let past_end = ImageTrainState {
                        epoch_batch: n.div_ceil(bs) + 1,
                        ..state.clone()
                    };
                    for epochs in [None, Some(0), Some(1), Some(2), Some(5)] {
                        for max_iterations in [None, Some(0), Some(4), Some(9), Some(100)] {
                            let cfg = ImageTrainConfig {
                                max_iterations,
                                epochs,
                                batch_size: bs,
                                ..Default::default()
                            };
                            for s in [&state, &past_end] {
                                assert_eq!(
                                    steps_to_limits(max_iterations, epochs, n, bs, s),
                                    walked(&cfg, n, s),
                                    "n {n}, batch {bs}, epochs {epochs:?}, \
                                     max_iterations {max_iterations:?}, {s:?}"
                                );
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 4 * 5 * 6 * 5 * 5 * 2);
    }
}
