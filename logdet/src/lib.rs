//! Log-determinants of batches of symmetric positive definite operators.
//!
//! * [`exact_logdet`] (and [`exact_logdet_flat`], `exact_logdet_tensor` with feature
//!   `candle`): Cholesky on the host (faer), batched `(B, d, d)`.
//! * [`hutchinson_trace`]: Hutchinson's trace estimator with Rademacher or Gaussian probes from
//!   a seeded `rand` RNG.
//! * [`slq_logdet`]: stochastic Lanczos quadrature `log det H ≈ ‖v‖² Σ_j τ_j² log λ_j`, with
//!   the quadrature exposed separately ([`slq_quadrature_logdet`], [`slq_logdet_from_lanczos`],
//!   [`gauss_quadrature_nodes`]) so callers can reuse their own Lanczos output.
//! * [`cg_surrogate`]: `u ≈ H⁻¹ v` by CG so that `∂θ[uᵀ H(θ) v]` estimates `∂θ log det H(θ)`
//!   (CP-Flow, eq. 3–4).
//!
//! Operators and vectors are those of the [`krylov`] crate (nalgebra, faer, candle backends).

mod error;
mod exact;
mod gauss_ql;
mod hutchinson;
mod probes;
mod quadrature;
mod slq;
mod stats;
mod surrogate;

pub use error::LogdetError;
#[cfg(feature = "candle")]
pub use exact::exact_logdet_tensor;
pub use exact::{exact_logdet, exact_logdet_flat};
pub use hutchinson::{HutchinsonParams, StochasticEstimate, hutchinson_trace};
pub use probes::{ProbeDistribution, draw_probes, gaussian_probes, rademacher_probes};
#[cfg(feature = "candle")]
pub use probes::{probes_like, rademacher_like};
pub use quadrature::{
    RITZ_ROUNDOFF_FACTOR, gauss_quadrature_nodes, slq_logdet_from_lanczos, slq_quadrature_logdet,
};
pub use slq::{SlqParams, slq_logdet};
pub use surrogate::{CgSurrogate, cg_surrogate};
