//! Inverting gradient maps of strongly convex potentials.
//!
//! Sampling from a convex-potential flow means solving `∇Φ(x) = y` for a batch of independent
//! targets `y`, i.e. `x_i = argmin_x Φ(x) − xᵀy_i`. This crate provides
//!
//! * the problem trait [`BatchedPotential`] (values and gradients per row of a `(B, d)` candle
//!   tensor, optional Hessian-vector products, optional per-row data such as a context that
//!   follows the row subsets the solvers evaluate: [`BatchedPotential::select_rows`]), with
//!   closure adapters ([`FnPotential`]) and a quadratic test potential with a closed-form
//!   inverse ([`QuadraticPotential`]);
//! * [`minimize_lbfgs`]: argmin's L-BFGS on nalgebra vectors, a plain convex solver with an
//!   ∞-norm gradient tolerance (its problem implements argmin's `CostFunction` and
//!   `Gradient`: the crate re-exports [`argmin`], so `convex_opt::argmin::core::{CostFunction,
//!   Gradient}` are the matching versions);
//! * [`invert_lbfgs_flat`]: the reference implementation's method — the whole batch flattened
//!   into one argmin L-BFGS problem (shared line search, curvature pairs and stopping);
//! * [`invert_lbfgs_batched`]: an independent L-BFGS per sample on tensors, with per-sample
//!   strong-Wolfe line searches and convergence masks;
//! * [`invert_newton_cg`]: damped Newton with the Newton systems solved by `krylov`'s batched
//!   CG from Hessian-vector products, with per-sample backtracking.
//!
//! All solvers share [`InversionOptions`] (tolerance on `‖∇Φ(x_i) − y_i‖∞`, iteration limit,
//! initial point, default `x₀ = y`) and return an [`InversionResult`] with the solution,
//! per-sample iterations, residuals, convergence flags and the reason each sample stopped
//! ([`Termination`]: converged, iteration limit, failed line search, …). Non-finite input is an
//! error; samples that fail to converge are reported, never returned as if solved. Targets whose
//! dtype differs from the potential's ([`BatchedPotential::expected_dtype`]) are rejected before
//! anything is evaluated.
//!
//! Default tolerances depend on the dtype: `1e-9` (absolute) in `f64`; `2e-5 + 2e-5·‖y_i‖∞` in
//! `f32`, whose gradients carry rounding errors of order `1e-6 … 1e-5` (see
//! [`options::F32_ABS_TOLERANCE`]).
//!
//! # Quick start
//!
//! A batch of targets `y` inverted by each solver, on a quadratic potential
//! `Φ(x) = ½xᵀAx + bᵀx` whose inverse `x = A⁻¹(y − b)` is known:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use convex_opt::{
//!     BatchedLbfgsParams, FlatLbfgsParams, InversionOptions, NewtonCgParams, QuadraticPotential,
//!     invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
//! };
//! use nalgebra::{DMatrix, DVector};
//!
//! // Symmetric and diagonally dominant, so positive definite (eigenvalues ≥ 1.5).
//! let a = DMatrix::from_fn(4, 4, |i, j| if i == j { 3.0 } else { 0.5 / (1 + i + j) as f64 });
//! let b = DVector::from_vec(vec![1.0, -1.0, 0.5, 0.0]);
//! let pot = QuadraticPotential::new(&a, Some(&b), DType::F64, &Device::Cpu)?;
//! let y = Tensor::new(&[[3.0f64, 3.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0], [-5.0, 1.0, 4.0, 2.5]],
//!     &Device::Cpu)?;
//! let want = pot.solve(&y)?;
//! let options = InversionOptions::default(); // ‖∇Φ(x_i) − y_i‖∞ ≤ 1e-9 in f64, from x₀ = y
//! for res in [
//!     invert_lbfgs_batched(&pot, &y, &options, &BatchedLbfgsParams::default())?,
//!     invert_newton_cg(&pot, &y, &options, &NewtonCgParams::default())?,
//!     invert_lbfgs_flat(&pot, &y, &options, &FlatLbfgsParams::default())?,
//! ] {
//!     assert!(res.all_converged() && res.max_residual() <= 1e-9, "{:?}", res.termination);
//!     let error = (&res.x - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
//!     assert!(error < 1e-9);
//! }
//! # Ok::<(), convex_opt::ConvexOptError>(())
//! ```

mod argmin_lbfgs;
mod batch;
mod batched_lbfgs;
mod best_iterate;
mod error;
#[cfg(test)]
mod evaluation_order_tests;
mod first_step;
mod flat_lbfgs;
mod lbfgs_params;
mod line_search_fallback;
mod newton_cg;
pub mod options;
mod potential;
mod quadratic;
mod rows;
mod termination;
mod trial_problem;
mod wolfe;
mod working_rows;

/// argmin 0.11, whose `core::{CostFunction, Gradient}` a [`minimize_lbfgs`] problem
/// implements (re-exported so that the versions match without a dependency of your own).
pub use argmin;

pub use argmin_lbfgs::{LINE_SEARCH_MAX_EVALUATIONS, MinimizeResult, minimize_lbfgs};
pub use batched_lbfgs::{BatchedLbfgsParams, invert_lbfgs_batched};
pub use error::ConvexOptError;
pub use flat_lbfgs::{FlatLbfgsParams, invert_lbfgs_flat};
pub use lbfgs_params::{F32_GRADIENT_TOLERANCE, F64_GRADIENT_TOLERANCE, LbfgsParams, LineSearch};
pub use newton_cg::{NewtonCgParams, invert_newton_cg};
pub use options::{InversionOptions, InversionResult, SolverStats};
pub use potential::{BatchedPotential, FnPotential, FnPotentialWithHvp, HvpFn, SecondOrderModel};
pub use quadratic::QuadraticPotential;
pub use termination::Termination;
