//! Batched Krylov solvers: conjugate gradient and Lanczos over a **batch of independent
//! systems**.
//!
//! A batch holds `B` systems of size `d`, each with its own symmetric (positive definite)
//! matrix `H_i`, which is only accessed through products `H_i x_i` ([`BatchOperator`]). The
//! vectors live in any backend implementing [`BatchVectors`]:
//!
//! | backend | batch layout | feature |
//! |---|---|---|
//! | `nalgebra::DMatrix<f32/f64>` | `d × B`, one system per **column** | always |
//! | `faer::Mat<f32/f64>` | `d × B`, one system per **column** | always |
//! | `candle_core::Tensor` | `(B, d)`, one system per **row**, any float dtype and device | `candle` |
//!
//! Solvers:
//! * [`cg()`] / [`cg_with_initial_guess`]: conjugate gradient with per-system step sizes and
//!   per-system convergence (converged systems are frozen and cost no further operator work),
//!   optional Jacobi preconditioner, optional residual re-orthogonalisation (finite
//!   termination in ≈ d iterations even for ill-conditioned spectra), and the reference's
//!   batch-global stopping as an explicit option ([`CgStopping::BatchGlobal`]).
//! * [`lanczos()`]: `m` Lanczos steps per system with optional full re-orthogonalisation,
//!   returning the tridiagonal coefficients; breakdown stops a system early.
//!
//! Operators: [`FnOperator`] (a closure), [`WithDiagonal`] (adds a diagonal for Jacobi),
//! [`CountingOperator`] (counts applications), and dense batches of matrices for each backend
//! ([`DenseNalgebraOperator`], [`DenseFaerOperator`], `DenseTensorOperator`).
//!
//! Per-system scalars (dot products, norms, step sizes) travel to the host as `f64` once per
//! iteration (`O(B)` numbers); vectors stay on their device.

#[cfg(feature = "candle")]
mod backend_candle;
#[cfg(feature = "candle")]
mod backend_candle_host;
mod backend_faer;
mod backend_nalgebra;
mod cg;
mod cg_reorth;
mod dense;
#[cfg(feature = "candle")]
mod dense_candle;
mod error;
mod lanczos;
mod operator;
mod real;
mod vectors;

pub use cg::{
    CgParams, CgResult, CgStep, CgStopping, Preconditioner, cg, cg_with_initial_guess,
    cg_with_initial_guess_observed, default_max_iters,
};
pub use dense::{DenseFaerOperator, DenseNalgebraOperator};
#[cfg(feature = "candle")]
pub use dense_candle::DenseTensorOperator;
pub use error::KrylovError;
pub use lanczos::{LanczosParams, LanczosResult, lanczos};
pub use operator::{BatchOperator, CountingOperator, FnOperator, WithDiagonal};
pub use real::Real;
pub use vectors::BatchVectors;
