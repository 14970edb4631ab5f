//! Input-convex neural networks on candle with explicit input gradients and
//! Hessian-vector products.
//!
//! CP-Flow needs, for a convex potential `F` and a batch `x`: `F(x)`, the gradient map
//! `∇ₓF(x)`, Hessian-vector products `∇²ₓF(x)·v`, and gradients of scalars built from these
//! w.r.t. the network parameters. candle's autodiff is first-order by default, so this crate
//! computes `∇ₓF` and `∇²ₓF·v` explicitly as tensor ops from a cached forward pass
//! ([`Linearization`]); candle then differentiates those expressions once, w.r.t. the
//! parameters.
//!
//! Architectures: [`Icnn`] (Amos et al.), [`Icnn2`] (tabular default, ActNorm inside),
//! [`Icnn3`] (input-augmented ICNN, the paper's eq. 7), [`DenseIcnn2`], and [`Picnn`]
//! (partially input-convex, conditioned on a context). Convolutional potentials over images
//! `(C, H, W)`, seen as flattened rows `(B, C·H·W)`: [`ConvIcnn`], [`ConvIcnn2`] and the
//! input-augmented [`ConvIcnn3`], built from [`Conv2d`] and [`PosConv2d`].
//!
//! # Parameters and checkpoints
//! Parameters live in a [`candle_nn::VarMap`]; build the network from
//! `VarBuilder::from_varmap(&varmap, dtype, &device).pp("icnn")` (one prefix per network).
//! Names and shapes under the prefix are those of the reference PyTorch `state_dict`
//! (`Wzs.k.weight`, `Wxs.k.bias`, `actnorms.k.logs`, ...; see each architecture), plus one
//! `initialized` flag `(1,)` per network that records whether the ActNorm data-dependent
//! init has run. Save/load with `VarMap::save`/`VarMap::load` (safetensors). Weights
//! converted from PyTorch lack the flag: call `mark_initialized()` after loading them.
//! The init needs a representative batch: fewer than 2 rows, all points equal (for the conv
//! networks: constant, equal images), non-finite values, or a constant context (`Picnn`) are
//! an [`IcnnError::Initialization`] that writes nothing, so the network stays uninitialised
//! and a later call with a usable batch initialises it.
//!
//! # Lazy initialisation and threads
//! Without an explicit `initialize(x)`, the first `potential`/`linearize` call initialises
//! the ActNorms from its own batch, and that batch becomes the network's normalisation for
//! good. The networks are `Send + Sync` and take `&self`: when several threads make their
//! first calls on a fresh network at once, each computes the statistics of its batch, and
//! the second check of the flag and the writing hold one lock: exactly one batch initialises
//! (which one is up to the scheduler) and every call, the first ones included, computes with
//! the network it wrote. To choose the batch, call `initialize` on it before sharing the
//! network.
//!
//! # Non-finite input
//! Once initialised, the networks do not check their input for NaN or `±∞`: rows are
//! independent, so such a row gives non-finite outputs (potential, gradient, products) in
//! that row only, and the other rows are computed as without it (the flows rely on this to
//! score the rest of a batch in which one point overflowed). To refuse such input with a
//! typed error, call [`check_finite`] first ([`IcnnError::NonFiniteInput`]; one pass over
//! the input).
//!
//! # Imports
//! `use icnn::*` also imports the alias [`Result<T>`](Result), which shadows
//! `std::result::Result<T, E>` in that module; import the names you use instead.
//!
//! # Your own architecture
//! Implement [`ConvexPotential`] for it: `linearize` returns
//! [`Linearization::from_parts`]`(F(x), ∇ₓF(x), hvp)` with `hvp` your
//! [`HessianVectorProducts`], all written as candle tensor ops so that candle can
//! differentiate them once w.r.t. the parameters. [`check_derivatives`] compares them with
//! central differences (the flows do not check convexity; [`check_derivatives_given`] for a
//! [`ConditionalConvexPotential`] at a fixed context). Draw its initial weights with the
//! seeded [`init::uniform`] (candle's own initialisers cannot be seeded), and return its own
//! errors as [`IcnnError::network`] (the error stays the `source`). The `cpflow` crate's
//! `register_potential` (or `register_conditional_potential` for a
//! [`ConditionalConvexPotential`]) then puts the network in a flow.
//!
//! # Derivative recursions
//! Per group `j` (see the `network` module docs): forward `a_j`, cached `s'(a_j)`,
//! `s''(a_j)`; gradient by the reverse recursion `δ_j = g_j ⊙ s'(a_j)`, `g_i += δ_j P_j`,
//! `∇F = Σ δ_j A_j`; Hessian-vector products by forward-mode on that recursion, reusing the
//! cache (`ȧ`, `ż = s' ⊙ ȧ`, then `δ̇ = ġ ⊙ s' + g ⊙ s'' ⊙ ȧ`, `Hv = Σ δ̇_j A_j`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use icnn::{ConvexPotential, Icnn2, Icnn2Config};
//! use rand::SeedableRng;
//!
//! # fn main() -> icnn::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
//! let config = Icnn2Config { dim: 2, width: 8, depth: 3, ..Default::default() };
//! let net = Icnn2::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(0))?;
//! let x = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.0], [0.0, 0.3]], &Device::Cpu)?;
//! let lin = net.linearize(&x)?;
//! let u = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0], [1.0, 1.0]], &Device::Cpu)?;
//! // A surrogate uᵀ H v whose parameter gradient candle computes with one backward pass.
//! let v = lin.gradient().detach();
//! let surrogate = (lin.hvp(&v)? * &u)?.sum_all()?;
//! let grads = surrogate.backward()?;
//! assert!(varmap.all_vars().iter().any(|var| grads.get(var).is_some()));
//! # Ok(())
//! # }
//! ```

mod activation;
mod active_rows;
mod actnorm;
mod actnorm_init;
mod batch_statistics;
mod candle_threads;
mod common;
mod conv_geometry;
mod conv_icnn;
mod conv_icnn2;
mod conv_icnn3;
mod conv_layers;
mod conv_linearization;
mod conv_network;
mod custom_linearization;
mod dense_icnn2;
mod derivative_check;
mod detached_backward;
mod direction_tangents;
mod error;
mod fast_exp;
mod finite_input;
mod fused;
mod fused_sums;
pub mod gemm_conv;
mod host_conv_net;
mod host_gemm;
mod host_hessian;
mod host_kernels;
mod host_linearization;
mod host_link;
mod host_matmul;
mod host_par;
mod host_weights;
mod icnn;
mod icnn2;
mod icnn3;
pub mod init;
mod init_lock;
mod layer_input;
mod layers;
mod linearization;
mod network;
mod parameter_count;
mod params;
mod picnn;
mod scaled_kernel;
mod scratch;
mod shifted_conv;
mod surrogate_adjoint;
mod surrogate_host;
mod surrogate_rows;
mod traits;
#[cfg(test)]
mod validate_tests;
mod wide_simd;
mod winograd_conv;

pub use activation::{Activation, ActivationEval, ActivationKind, softplus};
pub use actnorm::{ACTNORM_SCALE_MIN, ActNorm};
pub use batch_statistics::{BatchStatistics, channel_statistics, feature_statistics};
pub use candle_threads::{RAYON_NUM_THREADS, export_candle_thread_count};
pub use conv_geometry::{ConvGeometry, ImageShape};
pub use conv_icnn::{ConvIcnn, ConvIcnnConfig};
pub use conv_icnn2::{ConvIcnn2, ConvIcnn2Config};
pub use conv_icnn3::{ConvIcnn3, ConvIcnn3Config};
pub use conv_layers::{Conv2d, PosConv2d};
pub use custom_linearization::HessianVectorProducts;
pub use dense_icnn2::{DenseIcnn2, DenseIcnn2Config};
pub use derivative_check::{DerivativeCheck, check_derivatives, check_derivatives_given};
pub use detached_backward::detached_backward;
pub use direction_tangents::DirectionTangents;
pub use error::{IcnnError, Result};
pub use fast_exp::ExpNonPositive;
pub use finite_input::check_finite;
pub use gemm_conv::{conv_transpose2d_gemm, conv2d_gemm};
pub use host_kernels::{HOST_KERNELS_ENV, host_kernels_enabled, takes_host_kernels};
pub use host_linearization::HostLinearization;
pub use host_matmul::{PARALLEL_MIN_MULTIPLY_ADDS, host_matmul};
pub use host_weights::HostWeights;
pub use icnn::{Icnn, IcnnConfig};
pub use icnn2::{Icnn2, Icnn2Config};
pub use icnn3::{Icnn3, Icnn3Config};
pub use layers::{Linear, PosLinear};
pub use linearization::Linearization;
pub use parameter_count::{MAX_MODEL_PARAMETERS, check_parameter_count, shown_parameter_count};
pub use picnn::{Picnn, PicnnConfig};
pub use scratch::{ArrayPoolPause, pause_array_pool};
pub use traits::{ConditionalConvexPotential, ConvexPotential};
