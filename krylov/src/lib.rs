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
//!   confirmed on the true residual `b − H x` by default
//!   ([`CgParams::confirm_with_true_residual`]), a reason per system
//!   ([`CgTermination`]; a breakdown on a NaN/±Inf is told from one on curvature `≤ 0` or
//!   `rᵀM⁻¹r ≤ 0` by [`CgResult::non_finite`]), optional Jacobi or supplied preconditioner
//!   (which must be SPD: checked), optional residual re-orthogonalisation (finite
//!   termination in ≈ d iterations even for ill-conditioned spectra), and the reference's
//!   batch-global stopping as an explicit option ([`CgStopping::BatchGlobal`]).
//! * [`lanczos()`]: `m` Lanczos steps per system with optional full re-orthogonalisation,
//!   returning the tridiagonal coefficients; breakdown (an invariant Krylov space) stops a
//!   system early, and so does a non-finite operator output, flagged apart
//!   ([`LanczosResult::non_finite`]); [`LanczosResult::ritz_values`] gives the eigenvalues
//!   of a system's tridiagonal ([`gauss_quadrature_nodes`] its whole Gauss rule).
//!
//! Operators: [`FnOperator`] (a closure), [`WithDiagonal`] (adds a diagonal for Jacobi),
//! [`CountingOperator`] (counts applications), and dense batches of matrices for each backend
//! ([`DenseNalgebraOperator`], [`DenseFaerOperator`], `DenseTensorOperator`).
//!
//! Per-system scalars (dot products, norms, step sizes) travel to the host as `f64` once per
//! iteration (`O(B)` numbers); vectors stay on their device.
//!
//! # Quick start
//!
//! Two systems in one batch, one well and one badly conditioned, each solved to its own
//! tolerance: the easy one stops early and costs no products after that.
//!
//! ```
//! use krylov::{CgParams, CountingOperator, DenseNalgebraOperator, cg};
//! use nalgebra::{DMatrix, DVector};
//!
//! let d = 30;
//! // Symmetric positive definite: eigenvalues from 1 to `cond`, rotated off the diagonal.
//! let spd = |cond: f64| {
//!     let q = DMatrix::<f64>::from_fn(d, d, |i, j| ((i * j + i + 2 * j) as f64).sin()).qr().q();
//!     let eig = DVector::from_fn(d, |i, _| cond.powf(i as f64 / (d - 1) as f64));
//!     &q * DMatrix::from_diagonal(&eig) * q.transpose()
//! };
//! let (easy, hard) = (spd(2.0), spd(1e3));
//! let dense = DenseNalgebraOperator::new(vec![easy.clone(), hard.clone()])?;
//! let op = CountingOperator::new(dense, 2);
//! let b = DMatrix::<f64>::from_fn(d, 2, |i, j| (i + j) as f64 / d as f64 - 0.5);
//! let res = cg(&op, &b, &CgParams::default().with_rtol(1e-10))?;
//! assert!(res.all_converged());
//! assert!(res.iterations[0] < res.iterations[1]);
//! assert_eq!(op.counts(), res.applications); // products per system
//! for (i, h) in [easy, hard].iter().enumerate() {
//!     let residual = h * res.x.column(i) - b.column(i);
//!     assert!(residual.amax() < 1e-8 * b.column(i).amax());
//! }
//! # Ok::<(), krylov::KrylovError>(())
//! ```

#[cfg(feature = "candle")]
mod backend_candle;
#[cfg(feature = "candle")]
mod backend_candle_host;
mod backend_faer;
mod backend_nalgebra;
mod cg;
mod cg_floor;
mod cg_overflow;
mod cg_params;
mod cg_reorth;
mod cg_resolution;
mod cg_solve;
mod dense;
#[cfg(feature = "candle")]
mod dense_candle;
mod error;
mod gauss_ql;
mod gauss_rule;
mod lanczos;
mod operator;
mod preconditioner;
mod real;
mod vectors;

#[cfg(feature = "candle")]
pub use backend_candle::unit_roundoff_of;
pub use cg::{
    CgResult, CgStep, CgTermination, cg, cg_with_initial_guess, cg_with_initial_guess_observed,
};
pub use cg_params::{CgParams, CgStopping, default_max_iters};
pub use dense::{DenseFaerOperator, DenseNalgebraOperator};
#[cfg(feature = "candle")]
pub use dense_candle::DenseTensorOperator;
pub use error::KrylovError;
pub use gauss_rule::gauss_quadrature_nodes;
pub use lanczos::{LanczosParams, LanczosResult, lanczos};
pub use operator::{
    BatchOperator, CountingOperator, FnOperator, WithDiagonal, WithPreconditioner,
    check_operator_shape,
};
pub use preconditioner::Preconditioner;
pub use real::Real;
pub use vectors::BatchVectors;
