//! Lower bounds on the memory of a VAE's CP-Flow posterior, from its configuration, for the
//! up-front check of `cpflow vae` (a `model.latent_dim` of 20,000 trained its first steps
//! and then aborted in an allocation: its exact `log q` forms a 20,000 × 20,000 Hessian per
//! image).
//!
//! Two phases, never at once: a training step (the CG surrogate; arrays that grow with
//! `latent_dim` and with the PICNN's units, per image of the batch) and the exact `log q` of
//! every evaluation (the validation −ELBO after each epoch, the test scores), which forms the
//! block's dense Jacobian, `latent_dim²` values per image, for a chunk of images at a time.

use super::model::{PosteriorKind, VaeModelConfig};
use crate::flow::exact_chunk_rows;
use crate::model_size::mul;

/// Values per latent dimension, PICNN layer, block and image that a training step of the
/// CP-Flow posterior keeps, at least: each layer's input gate `gate_x` (`(B, latent_dim)`,
/// from the context), the gated input it multiplies, and their gradients. Measured from the
/// slope of peak RSS against `latent_dim` (`POSTERIOR_MEASURED_PEAKS`, 4 blocks of depth 5,
/// f64, batch 100): about 43 per latent dimension, layer, block and image once the weights'
/// four copies are taken off (0.82 MB per latent dimension in all, 0.13 MB of it weights).
/// With it, the bound of `cpflow vae` (weights in four copies, the networks' activations, the
/// posterior's arrays) is 2.9× to 3.7× below each measured peak.
pub(crate) const POSTERIOR_STEP_LATENT_VALUES: f64 = 8.0;

/// Values per PICNN hidden unit and image that a training step keeps, at least (as a dense
/// flow's: the forward pass's values and pre-activations, the reverse recursion's arrays).
pub(crate) const POSTERIOR_STEP_UNIT_VALUES: f64 = 6.0;

/// What the CP-Flow posterior's exact `log q` needs at least: the images of one chunk and
/// the bytes of their dense Jacobians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ExactLogQMemory {
    /// Images per chunk (the exact passes' chunks, at most the images of a pass).
    pub rows: usize,
    /// `rows · latent_dim²` values of the posterior's float type, in bytes.
    pub bytes: f64,
}

impl VaeModelConfig {
    /// Bytes of the CP-Flow posterior's arrays in a training step on `batch` images, at
    /// least ([`POSTERIOR_STEP_LATENT_VALUES`] per latent dimension and
    /// [`POSTERIOR_STEP_UNIT_VALUES`] per hidden unit, for every layer of every block); 0 for
    /// the Gaussian posterior. A posterior potential of your own counts as one layer without
    /// hidden units per block.
    pub(crate) fn posterior_training_memory(&self, batch: usize) -> f64 {
        if self.posterior == PosteriorKind::Gaussian {
            return 0.0;
        }
        let (layers, width) = match self.custom_posterior {
            Some(_) => (1, 0),
            None => (self.depth, self.width),
        };
        let per_image = POSTERIOR_STEP_LATENT_VALUES * (self.latent_dim * layers) as f64
            + POSTERIOR_STEP_UNIT_VALUES * (width * layers) as f64;
        let bytes = self.posterior_float.dtype().size_in_bytes() as f64;
        per_image * self.blocks as f64 * batch as f64 * bytes
    }

    /// What the exact `log q` of passes of `rows_per_pass` images needs at least: one chunk's
    /// dense Jacobians (the chunks are sized as [`crate::Flow::log_prob_exact`]'s, at least
    /// 16 images unless a pass has fewer); nothing for the Gaussian posterior.
    pub(crate) fn posterior_exact_memory(&self, rows_per_pass: usize) -> ExactLogQMemory {
        if self.posterior == PosteriorKind::Gaussian {
            return ExactLogQMemory {
                rows: 0,
                bytes: 0.0,
            };
        }
        let rows = rows_per_pass.min(exact_chunk_rows(self.latent_dim, None));
        let values = mul(rows, mul(self.latent_dim, self.latent_dim)) as f64;
        ExactLogQMemory {
            rows,
            bytes: values * self.posterior_float.dtype().size_in_bytes() as f64,
        }
    }
}

/// Peak RSS of `cpflow vae --config configs/vae-frey-cpu.toml --set model.latent_dim=D
/// --epochs 1` (release, 2 threads; GB) during its first training steps (killed after 45 s,
/// before the first validation), with `D`: the CPU preset's encoder and decoder in f32, the
/// posterior's 4 blocks of PICNN(64, 5) in f64, batch 100.
#[cfg(test)]
pub(crate) const POSTERIOR_MEASURED_PEAKS: [(f64, usize); 4] =
    [(0.725, 64), (2.382, 2500), (4.455, 5000), (8.541, 10_000)];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FloatType;

    fn preset(latent_dim: usize) -> VaeModelConfig {
        VaeModelConfig {
            latent_dim,
            ..Default::default()
        }
    }

    /// The arithmetic: 4 blocks of depth 5 at batch 100 in f64; a custom potential counts
    /// one layer without units; the Gaussian posterior nothing.
    #[test]
    fn training_arrays_grow_with_latents_units_blocks_and_batch() {
        let cfg = preset(1000);
        let per_image = 8.0 * 1000.0 * 5.0 + 6.0 * 64.0 * 5.0;
        assert_eq!(
            cfg.posterior_training_memory(100),
            per_image * 4.0 * 100.0 * 8.0
        );
        let f32_cfg = VaeModelConfig {
            posterior_float: FloatType::F32,
            ..cfg.clone()
        };
        assert_eq!(
            f32_cfg.posterior_training_memory(100),
            cfg.posterior_training_memory(100) / 2.0
        );
        let custom = VaeModelConfig {
            custom_posterior: Some(crate::posterior::CustomPosteriorPotential {
                name: "x".into(),
                settings: Default::default(),
            }),
            ..cfg.clone()
        };
        assert_eq!(
            custom.posterior_training_memory(100),
            8.0 * 1000.0 * 4.0 * 100.0 * 8.0
        );
        let gaussian = VaeModelConfig {
            posterior: PosteriorKind::Gaussian,
            ..cfg
        };
        assert_eq!(gaussian.posterior_training_memory(100), 0.0);
        assert_eq!(gaussian.posterior_exact_memory(100).bytes, 0.0);
    }

    /// One chunk of dense Jacobians: the reference latent size evaluates 43 images at a time
    /// (2,752 / 64), a large one 16 (the chunks' floor), a pass of fewer images all of them.
    #[test]
    fn exact_log_q_needs_one_chunk_of_dense_jacobians() {
        let m = preset(64).posterior_exact_memory(100);
        assert_eq!((m.rows, m.bytes), (43, 43.0 * 64.0 * 64.0 * 8.0));
        let m = preset(20_000).posterior_exact_memory(100);
        assert_eq!((m.rows, m.bytes), (16, 16.0 * 4e8 * 8.0));
        assert_eq!(preset(20_000).posterior_exact_memory(3).rows, 3);
        // Saturates instead of overflowing.
        assert!(preset(usize::MAX / 2).posterior_exact_memory(100).bytes >= usize::MAX as f64);
    }
}
