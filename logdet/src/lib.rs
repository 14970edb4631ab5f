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
//!
//! # Quick start
//!
//! `log det H(θ)` of `H(θ) = A + θB` exactly and by SLQ, and its derivative
//! `tr(H⁻¹B)` by the CG surrogate `uᵀBv` (`u = H⁻¹v`, Rademacher `v`), averaged over 4,000
//! probes solved as one batch of 4,000 systems:
//!
//! ```
//! use faer::Mat;
//! use krylov::{CgParams, DenseNalgebraOperator};
//! use logdet::{SlqParams, cg_surrogate, exact_logdet, rademacher_probes, slq_logdet};
//! use nalgebra::{DMatrix, dmatrix};
//! use rand::{SeedableRng, rngs::StdRng};
//!
//! let a = dmatrix![4.0, 1.0, 0.0; 1.0, 3.0, 1.0; 0.0, 1.0, 2.0];
//! let b = dmatrix![1.0, 0.5, 0.0; 0.5, 2.0, 0.0; 0.0, 0.0, 1.0];
//! let logdet_at = |t: f64| -> Result<f64, logdet::LogdetError> {
//!     let h = &a + t * &b;
//!     Ok(exact_logdet(&[Mat::<f64>::from_fn(3, 3, |i, j| h[(i, j)])])?[0])
//! };
//! let h = &a + 0.5 * &b;
//! let exact = logdet_at(0.5)?;
//! assert!((exact - h.determinant().ln()).abs() < 1e-12);
//!
//! // SLQ with d Lanczos steps: each probe's quadrature is exact, so the estimate is off by
//! // the probes' sampling error only.
//! let mut rng = StdRng::seed_from_u64(0);
//! let op = DenseNalgebraOperator::new(vec![h.clone()])?;
//! let slq_params = SlqParams::default().with_probes(2000).with_lanczos_steps(3);
//! let slq = slq_logdet(&op, &DMatrix::<f64>::zeros(3, 1), &mut rng, &slq_params)?;
//! assert!((slq.estimate[0] - exact).abs() < 4.0 * slq.std_err[0]);
//!
//! // The CG surrogate: one system per probe.
//! let n = 4000;
//! let op = DenseNalgebraOperator::new(vec![h.clone(); n])?;
//! let v = DMatrix::from_column_slice(3, n, &rademacher_probes(&mut rng, n, 3)?);
//! let s = cg_surrogate(&op, &v, &CgParams::default().with_rtol(1e-12))?;
//! assert!(s.report.all_converged());
//! let per_probe: Vec<f64> = (0..n).map(|i| s.u.column(i).dot(&(&b * v.column(i)))).collect();
//! let mean = per_probe.iter().sum::<f64>() / n as f64;
//! let var = per_probe.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
//! // Its expectation is tr(H⁻¹B), the derivative of log det H(θ) (central differences).
//! let derivative = (logdet_at(0.5 + 1e-5)? - logdet_at(0.5 - 1e-5)?) / 2e-5;
//! let trace = (h.try_inverse().expect("H is SPD") * &b).trace();
//! assert!((derivative - trace).abs() < 1e-8);
//! assert!((mean - trace).abs() < 4.0 * (var / n as f64).sqrt());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod exact;
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
