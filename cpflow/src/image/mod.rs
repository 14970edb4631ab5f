//! Image flows (paper Table 2; the authors' `train_img.py`, images-vae.md §1.3–1.5, §2):
//! uniform dequantisation, the logit transform, per-channel ActNorm, squeeze, factor-out and
//! CP-Flow blocks on flattened `(C, H, W)` rows, composed as the reference's
//! `MultiscaleFlow`, with exact or SLQ log-densities, inversion with a per-sample
//! convergence report, sampling at a temperature, bits per dimension, the CG-surrogate
//! training loss, and save/load.
//!
//! Every layer acts on `(B, D)` rows, `D = C·H·W` in `(C, H, W)` order, so the CP-Flow
//! blocks, CG and Lanczos see the rows unchanged; convolutional potentials
//! (`PotentialConfig::ConvIcnn`, `ConvIcnn2`, `ConvIcnn3`) reshape
//! inside the ICNN, dense ones ([`crate::PotentialConfig::Icnn2`], …) see the flat vector.
//! The squeeze is a fixed permutation of the row, factor-out a split of it.
//!
//! Main entry points: [`ImageFlowConfig::multiscale`] (from a [`MultiscaleConfig`]),
//! [`ImageFlow`], [`dequantize`], [`bits_per_dim`].

mod actnorm;
mod bpd;
mod checkpoint;
mod config;
mod flow;
mod inverse;
mod logit;
mod loss;
mod squeeze;

pub use actnorm::ChannelActNorm;
pub use bpd::bits_per_dim;
pub use checkpoint::{IMAGE_FORMAT_VERSION, IMAGE_METADATA_KEY, ImageCheckpointMeta};
pub use config::{
    ImageFlowConfig, ImageLayerConfig, LayerShapes, MultiscaleConfig, default_image_potential,
    potential_for_shape,
};
pub use flow::{IMAGE_EVAL_CHUNK, ImageFlow, ImageLayer, ImageLogProb, mean_and_std_err};
pub use inverse::ImageInverse;
pub use logit::{CIFAR10_LOGIT_ALPHA, LogitTransform, MNIST_LOGIT_ALPHA, dequantize};
pub use loss::ImageSurrogateLoss;
pub use squeeze::{Squeeze, squeeze_permutation, squeezed_shape};
