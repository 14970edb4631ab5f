//! Convex Potential Flows (Huang, Tsirigotis, Chen, Courville, ICLR 2021).
//!
//! A CP-Flow block maps `x ↦ ∇Φ(x)` with `Φ(x) = sp(w₁)·F(x) + sp(w₀)·‖x‖²/2` and `F` an
//! input-convex network (crate `icnn`); the Jacobian `H = sp(w₁)∇²F + sp(w₀)I` is symmetric
//! positive definite, so the map is invertible (crate `convex-opt`) and `log det H` can be
//! computed exactly (dense, small `d`), estimated by stochastic Lanczos quadrature, or — for
//! training — differentiated through the conjugate-gradient surrogate (crate `krylov`).
//!
//! Main entry points: [`Flow`] (built from a [`FlowConfig`]) with [`Flow::log_prob`] (=
//! [`Flow::log_prob_exact`]), [`Flow::log_prob_slq`], [`Flow::transform`], [`Flow::inverse`],
//! [`Flow::sample`], [`Flow::sample_and_log_prob`], [`Flow::surrogate_loss`],
//! [`Flow::exact_nll_loss`]; the [`Trainer`] (Adam, schedules, early stopping, checkpoints);
//! [`run_toy_experiment`].
//!
//! The crates of the types in its API are re-exported: [`candle`] (`candle_core`: `Tensor`,
//! `Device`, `DType`), [`candle_nn`] (the `VarBuilder` a custom potential's builder
//! receives), [`icnn`] (the potentials' configurations, e.g. `icnn::Icnn3Config`),
//! [`convex_opt`] (the inversion's `InversionResult` in [`InverseReport::blocks`], the
//! `BatchedPotential` a block's potential implements), [`krylov`] (the `BatchOperator` trait
//! a block's [`HessianOperator`] implements, CG and Lanczos on it), [`logdet`] (SLQ,
//! Hutchinson and exact log-determinants of such operators) and [`rand`] (the `Rng` trait its
//! sampling and SLQ take), so `cpflow` alone in `Cargo.toml` is enough for the quick start
//! below, with versions that match.
//!
//! ```
//! // The inversion's results per block, and the Krylov and log-det parameters, named
//! // through `cpflow` alone.
//! fn worst_residual(report: &cpflow::InverseReport) -> f64 {
//!     let blocks: &[cpflow::convex_opt::InversionResult] = &report.blocks;
//!     blocks.iter().map(|b| b.max_residual()).fold(0.0, f64::max)
//! }
//! let cg = cpflow::krylov::CgParams::default().with_rtol(1e-8);
//! let slq = cpflow::logdet::SlqParams::default().with_lanczos_steps(8);
//! assert_eq!((cg.rtol, slq.lanczos_steps), (1e-8, 8));
//! ```
//!
//! # Quick start
//!
//! Fit a flow to draws of a correlated 2-D Gaussian, compare its exact log-density with the
//! true one, and sample from it (by inverting the flow):
//!
//! ```
//! use cpflow::candle::{DType, Device, Tensor};
//! use cpflow::icnn::Icnn3Config;
//! use cpflow::{Dataset, FloatType, Flow, FlowConfig, FlowRng, GaussianPrior, PotentialConfig};
//! use cpflow::{TrainConfig, Trainer};
//! # fn main() -> cpflow::Result<()> {
//! // x = (a, 0.8a + 0.6b) for standard normal a, b: x ~ N(0, Σ), Σ = [[1, 0.8], [0.8, 1]].
//! let mut rng = FlowRng::seed_from_u64(0);
//! let mut draw = |n: usize| -> cpflow::Result<Tensor> {
//!     let ab = GaussianPrior::standard().sample(n, 2, DType::F64, &Device::Cpu, &mut rng)?;
//!     let (a, b) = (ab.narrow(1, 0, 1)?, ab.narrow(1, 1, 1)?);
//!     Ok(Tensor::cat(&[&a, &((&a * 0.8)? + (&b * 0.6)?)?], 1)?)
//! };
//! let (train, test) = (draw(4096)?, draw(2000)?);
//!
//! // ActNorm, one CP-Flow block (an Icnn3 potential), ActNorm; f64.
//! let icnn = Icnn3Config { dim: 2, width: 16, depth: 2, ..Default::default() };
//! let config = FlowConfig::tabular(2, 1, PotentialConfig::Icnn3(icnn)).with_float(FloatType::F64);
//! let flow = Flow::new(config, &Device::Cpu)?;
//! let train_config = TrainConfig {
//!     batch_size: 256, max_iterations: 1500, val_every: 0, train_slq_every: 0,
//!     ..Default::default()
//! };
//! let mut trainer = Trainer::new(flow, train_config)?;
//! trainer.fit(&Dataset::new(train), None)?;
//! let flow = trainer.flow();
//!
//! // Test NLL against the true density's, −log N(x; 0, Σ), on the same points; a flow
//! // that missed the correlation would be 0.5 nats worse.
//! let nll = -flow.log_prob(&test)?.mean_all()?.to_scalar::<f64>()?;
//! let rows = test.to_vec2::<f64>()?;
//! let true_nll = rows
//!     .iter()
//!     .map(|r| {
//!         let q = (r[0] * r[0] - 1.6 * r[0] * r[1] + r[1] * r[1]) / 0.36;
//!         (2.0 * std::f64::consts::PI).ln() + 0.5 * 0.36f64.ln() + 0.5 * q
//!     })
//!     .sum::<f64>()
//!     / rows.len() as f64;
//! assert!((nll - true_nll).abs() < 0.02, "{nll} vs {true_nll}");
//!
//! // Samples: prior draws pushed through the inverse map, each inversion converged.
//! let samples = flow.sample(2000, &mut FlowRng::seed_from_u64(1))?;
//! assert!(samples.report.converged.iter().all(|&c| c));
//! let x = samples.x.to_vec2::<f64>()?;
//! let n = x.len() as f64;
//! let mean = |j: usize| x.iter().map(|r| r[j]).sum::<f64>() / n;
//! let (m0, m1) = (mean(0), mean(1));
//! let cov = |j: usize, k: usize| {
//!     let m = [m0, m1];
//!     x.iter().map(|r| (r[j] - m[j]) * (r[k] - m[k])).sum::<f64>() / n
//! };
//! let correlation = cov(0, 1) / (cov(0, 0) * cov(1, 1)).sqrt();
//! assert!((correlation - 0.8).abs() < 0.05, "{correlation}");
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! The default features build everything the `cpflow` command-line program needs. With
//! `default-features = false` the crate is the library core — model, training, evaluation,
//! sampling, checkpoints and the procedural toy densities — and the features below add the
//! rest:
//!
//! | feature | adds |
//! |---|---|
//! | `progress` | the trainer's terminal progress bar ([`RunOptions::progress_bar`]; without it the option does nothing) |
//! | `plot` | the `plot` module (PNG figures with axes and titles) and the `ot` experiment |
//! | `datasets` | the `datasets` module (MAF tabular benchmarks, BSDS300, MNIST, CIFAR-10) |
//! | `toy-images` | `toy::ImageDensity` (a 2-D density read from a PNG) |
//! | `vae` | the `vae` module: the VAE experiment of Table 3 (gated-conv encoder/decoder, data, training, evaluation) |
//! | `mimalloc` | mimalloc as the binaries' allocator (the `allocator` module) |
//! | `cli` (default) | the command line: [`cli`] and the `cpflow` binary; implies all of the above |
//! | `cuda` | candle's CUDA backend |

pub mod actnorm;
pub mod adam;
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod block;
pub mod block_inverse;
pub mod checkpoint;
pub mod checkpoint_digest;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod cpu_threads;
mod cuda_device;
pub mod custom_conditional_potential;
pub mod custom_potential;
pub mod dense_logdet;
pub mod error;
pub mod evaluate;
pub mod exit_report;
pub mod experiment;
pub mod flow;
pub mod flow_config;
mod flow_copy;
mod flow_density;
pub mod flow_loss;
pub mod flow_sample;
pub mod hessian_operator;
mod hidden_units;
pub mod image;
#[cfg(any(feature = "plot", feature = "datasets", feature = "toy-images"))]
pub mod image_file;
pub mod metrics;
mod model_size;
mod named_vars;
mod non_finite_rows;
pub mod observer;
pub mod posterior;
pub mod potential;
pub mod prior;
mod probe_source;
mod progress;
pub mod reference_weights;
pub mod rng;
pub mod slq;
mod surrogate_cg;
pub mod surrogate_preconditioner;
pub mod train;
pub mod train_state;

pub mod toy;

#[cfg(feature = "datasets")]
pub mod datasets;
#[cfg(feature = "plot")]
pub mod ot;
#[cfg(feature = "plot")]
pub mod plot;
#[cfg(feature = "vae")]
pub mod vae;

/// `candle_core`, the tensor library of the crate's API (`Tensor`, `Device`, `DType`).
pub use candle_core as candle;
/// `candle_nn`, whose `VarBuilder` a custom potential's builder receives
/// ([`CustomPotentialConfig`]).
pub use candle_nn;
/// The convex solvers of the inversion ([`InverseReport::blocks`] holds their
/// `InversionResult`s; a block's potential is a `convex_opt::BatchedPotential`).
pub use convex_opt;
/// The input-convex networks of the CP-Flow potentials ([`PotentialConfig`]'s configurations).
pub use icnn;
/// The batched Krylov solvers (CG, Lanczos) and the `BatchOperator` trait that
/// [`HessianOperator`] implements.
pub use krylov;
/// The log-determinant estimators (exact, SLQ, Hutchinson, CG surrogate) over `krylov`'s
/// operators, e.g. a block's [`HessianOperator`].
pub use logdet;
/// The random-number traits the sampling and SLQ methods take (rand 0.9).
pub use rand;

pub use actnorm::ActNorm;
pub use adam::{Adam, AdamParams, AdamState};
pub use block::{BlockConfig, CgReport, CpFlowBlock};
pub use block_inverse::{BlockPotential, InverseParams, InverseSolver};
pub use checkpoint::{Checkpoint, CheckpointMeta, load_checkpoint};
#[allow(deprecated)]
pub use config::SlqParams;
pub use config::{
    FloatType, LrSchedule, NllEstimator, Objective, SlqConfig, SurrogateParams, TrainConfig,
};
pub use cuda_device::open_cuda_device;
pub use custom_conditional_potential::{
    ConditionalPotentialBuilder, CustomConditionalConfig, CustomConditionalNetwork,
    register_conditional_potential, registered_conditional_potentials,
};
pub use custom_potential::{
    CustomNetwork, CustomPotentialConfig, PotentialBuilder, register_potential,
    registered_potentials,
};
pub use error::{CpflowError, Result};
pub use experiment::{ToyExperimentConfig, ToyExperimentReport, run_toy_experiment};
pub use flow::{EVAL_CHUNK, Flow, Layer};
pub use flow_config::{FlowConfig, LayerConfig};
pub use flow_loss::SurrogateLoss;
pub use flow_sample::{FlowInverse, INVERSE_CHUNK, InverseReport};
pub use hessian_operator::HessianOperator;
pub use metrics::MetricsRecord;
pub use observer::{Control, FnObserver, Moment, NllCurve, TimeBudget, TrainObserver};
pub use potential::PotentialConfig;
pub use prior::GaussianPrior;
pub use rng::{FlowRng, RngState};
pub use slq::{SlqBiasCounts, SlqLogProb};
pub use surrogate_preconditioner::CgPreconditioner;
pub use train::{
    Dataset, NllEstimate, RunOptions, StopReason, TrainReport, Trainer, mean_nll, mean_nll_with,
    nll_estimate, nll_estimate_with,
};
pub use train_state::TrainState;
