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
        let by_iterations = self
            .cfg
            .max_iterations
            .map(|m| m.saturating_sub(self.state.iteration));
        let by_epochs = self.cfg.epochs.map(|e| {
            let n = self.data.train.len() as u64;
            let bs = self.cfg.batch_size as u64;
            let wanted = (e as u64)
                .saturating_mul(n)
                .saturating_sub(self.state.samples_seen);
            // The rest of the current epoch first (its last batch may be short), then whole
            // epochs of `batches_per_epoch` batches, then the part of one.
            let rest = n.saturating_sub(self.state.epoch_batch as u64 * bs);
            let steps = if wanted <= rest || n == 0 {
                wanted.div_ceil(bs)
            } else {
                let after = wanted - rest;
                rest.div_ceil(bs)
                    + (after / n) * self.batches_per_epoch() as u64
                    + (after % n).div_ceil(bs)
            };
            usize::try_from(steps).unwrap_or(usize::MAX)
        });
        match (by_iterations, by_epochs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
