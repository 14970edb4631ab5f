//! Image flows (paper Table 2; the authors' `train_img.py`, images-vae.md §1.3–1.5, §2):
//! uniform dequantisation, the logit transform, per-channel ActNorm, squeeze, factor-out and
//! CP-Flow blocks on flattened `(C, H, W)` rows, composed as the reference's
//! `MultiscaleFlow`, with exact or SLQ log-densities, inversion with a per-sample
//! convergence report, sampling at a temperature (also with each sample's exact
//! log-density), bits per dimension, the CG-surrogate training loss, and save/load.
//!
//! Every layer acts on `(B, D)` rows, `D = C·H·W` in `(C, H, W)` order, so the CP-Flow
//! blocks, CG and Lanczos see the rows unchanged; convolutional potentials
//! (`PotentialConfig::ConvIcnn`, `ConvIcnn2`, `ConvIcnn3`) reshape
//! inside the ICNN, dense ones ([`crate::PotentialConfig::Icnn2`], …) see the flat vector.
//! The squeeze is a fixed permutation of the row, factor-out a split of it.
//!
//! Main entry points: [`ImageFlowConfig::multiscale`] (from a [`MultiscaleConfig`]),
//! [`ImageFlow`], [`dequantize`], [`bits_per_dim`]; training: [`run_image_training`]
//! ([`train`], with the weight average of [`ema`]); sample grids: `grid::write_sample_grid`
//! (features `datasets` or `toy-images`, which bring the PNG encoder).

mod actnorm;
mod bpd;
mod checkpoint;
mod config;
pub mod ema;
mod flow;
#[cfg(any(feature = "datasets", feature = "toy-images"))]
pub mod grid;
mod inverse;
mod logit;
mod loss;
mod sample_log_prob;
mod squeeze;
pub mod train;

pub use actnorm::ChannelActNorm;
pub use bpd::bits_per_dim;
pub use checkpoint::{IMAGE_FORMAT_VERSION, IMAGE_METADATA_KEY, ImageCheckpointMeta};
pub use config::{
    ImageFlowConfig, ImageLayerConfig, LayerShapes, MultiscaleConfig, default_image_potential,
    potential_for_shape,
};
pub use ema::ExponentialMovingAverage;
pub use flow::{IMAGE_EVAL_CHUNK, ImageFlow, ImageLayer, mean_and_std_err};
#[cfg(any(feature = "datasets", feature = "toy-images"))]
pub use grid::{grid_size, quantize_pixels, write_sample_grid};
pub use inverse::ImageInverse;
pub use logit::{CIFAR10_LOGIT_ALPHA, LogitTransform, MNIST_LOGIT_ALPHA, dequantize};
pub use loss::ImageSurrogateLoss;
pub use squeeze::{Squeeze, squeeze_permutation, squeezed_shape};
pub use train::{
    BpdEstimate, ConvArch, EmaConfig, ExactComparison, ImageData, ImageDataConfig, ImageDataset,
    ImageExperimentConfig, ImageMetricsRecord, ImageModelConfig, ImageRunOptions, ImageSet,
    ImageStopReason, ImageTestConfig, ImageTestReport, ImageTrainConfig, ImageTrainReport,
    ImageTrainState, ValPoint, run_image_training,
};
#[cfg(feature = "datasets")]
pub use train::{load_image_data, load_image_test_set};
