//! Amortised posteriors `q(z | x)` for variational auto-encoders (paper Table 3,
//! `docs/reference/images-vae.md` §3): a base Gaussian from the encoder's heads pushed
//! through CP-Flow blocks whose PICNN potentials take the encoder feature as context.
//!
//! * [`AmortizedPosterior`] (built from a [`PosteriorConfig`]): sampling with the exact
//!   `log q` ([`AmortizedPosterior::sample_with_log_q_exact`]), with an SLQ estimate and its
//!   standard error ([`AmortizedPosterior::sample_with_log_q_slq`]), with the CG-surrogate
//!   training terms ([`AmortizedPosterior::sample_with_surrogate`]); `log q` at given points
//!   by inversion ([`AmortizedPosterior::log_q_exact_at`]). Every `sample_*` has a
//!   `transform_noise_*` twin that takes the noise `ε` instead of an RNG; evaluation takes
//!   [`AmortizedPosterior::transform_noise_exact_detached`] (no gradient, parallel row chunks).
//! * [`ScalarActNorm`]: the reference's `LayerActnorm` (one scalar shift and scale).
//! * [`importance_sampled_log_likelihood`]: the importance-sampled `log p(x)` with a
//!   standard error, by log-sum-exp.

mod amortized;
mod config;
mod density;
mod exact_chunks;
mod importance;
mod scalar_actnorm;

pub use amortized::{AmortizedPosterior, PosteriorSample, PosteriorSlqSample, PosteriorSurrogate};
pub use config::{CustomPosteriorPotential, PosteriorConfig, reference_vae_surrogate_params};
pub use density::PosteriorDensity;
pub use importance::{
    ImportanceEstimate, importance_sampled_log_likelihood, importance_sampled_log_likelihood_batch,
};
pub use scalar_actnorm::ScalarActNorm;
