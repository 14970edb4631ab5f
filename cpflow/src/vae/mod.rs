//! The VAE experiment of the paper's Table 3 (`docs/reference/images-vae.md` §3): the
//! Sylvester-flows gated-convolution encoder and decoder, with a Gaussian or an amortised
//! CP-Flow posterior ([`crate::posterior`]), β warm-up, Adamax, early stopping on a
//! validation split, and evaluation by the single-sample negative ELBO (exact log-det) and an
//! importance-sampled log-likelihood.
//!
//! The conditional flow itself lives in [`crate::posterior`]; this module is the experiment
//! around it (feature `vae`).

mod data;

pub use data::*;
mod gated;
mod hidden_units;
mod network;
mod parameter_count;
// Used by `cpflow vae`'s up-front memory check only.
#[cfg(feature = "cli")]
mod posterior_memory;
mod shape_text;
#[cfg(all(test, feature = "cli"))]
pub(crate) use posterior_memory::POSTERIOR_MEASURED_PEAKS;

pub use gated::{ConvShape, GatedConv};
pub use network::{Decoder, Encoder, EncoderOutput, VaeArchitecture};
mod adamax;
mod adamax_host;
mod categorical_op;
mod cg_warning;
mod likelihood;

pub use adamax::{Adamax, AdamaxParams, AdamaxState};
pub use likelihood::{bernoulli_log_likelihood, categorical_log_likelihood};
mod model;

pub use model::{NegElbo, PosteriorKind, Vae, VaeBatch, VaeModelConfig, VaeTrainTerms};
mod best_weights;
mod checkpoint;
mod config;
mod evaluate;
mod generate;
mod load;
mod reference_weights;
mod report;
mod run_data;
mod test_scores;
mod train;

pub use best_weights::{BEST_EPOCH_KEY, best_weights_epoch, check_best_weights_against_checkpoint};
pub use checkpoint::{
    EpochSums, PartialEpoch, VAE_METADATA_KEY, VaeCheckpointMeta, VaeTrainState,
    load_vae_checkpoint, save_vae_checkpoint,
};
pub use config::{VaeConfig, VaeDataConfig, VaeEvalConfig, VaeTrainConfig};
pub use evaluate::{
    MeanWithError, make_batch, split_importance_nll, split_importance_nll_monitored, split_neg_elbo,
};
pub use load::{load_vae, load_vae_file};
pub use reference_weights::{load_reference_vae_state_dict, reference_vae_key_mapping};
pub use report::{VaeEpochRecord, VaeReport, VaeStopReason};
pub use test_scores::{VaeTestParams, VaeTestProgress, VaeTestScores, score_vae_test};
pub use train::{VaeRunOptions, run_vae, run_vae_on};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_adamax;
#[cfg(test)]
mod tests_best_weights;
#[cfg(test)]
mod tests_cg_stats;
#[cfg(test)]
mod tests_checkpoint_write;
#[cfg(test)]
mod tests_importance;
#[cfg(test)]
mod tests_log_write;
#[cfg(test)]
mod tests_n_train;
#[cfg(test)]
mod tests_resume;
#[cfg(test)]
mod tests_train_terms;
#[cfg(test)]
mod tests_train_terms_blocks;
