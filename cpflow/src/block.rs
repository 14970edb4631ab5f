//! The CP-Flow block `Φ(x) = sp(w₁)·F(x) + sp(w₀)·‖x‖²/2`, its gradient map, Hessian, and the
//! log-det estimators built on them (`docs/reference/cpflow-reference.md` §2).

pub use crate::hessian_operator::HessianOperator;
use crate::hessian_operator::Products;
use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::potential::{Potential, PotentialConfig};

mod surrogate;

/// `log(e − 1)`: the value of `w₀` for which `sp(w₀) = 1`.
pub const LOG_E_MINUS_1: f64 = 0.541_324_854_612_918_1;

/// Configuration of one CP-Flow block.
///
/// ```
/// use cpflow::candle::{DType, Device};
/// use cpflow::candle_nn::{VarBuilder, VarMap};
/// use cpflow::{BlockConfig, CpFlowBlock, FlowRng, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let config = BlockConfig::new(pot); // trainable w₀, bias_w1 = 0
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let block = CpFlowBlock::new(vb, &config, &mut FlowRng::seed_from_u64(0))?;
/// // w₀ starts at log(e − 1), so α = sp(w₀) = 1; w₁ = bias_w1 = 0, so sp(w₁) = log 2.
/// assert!((block.quadratic_weight()? - 1.0).abs() < 1e-12);
/// assert!((block.icnn_weight()? - 2f64.ln()).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// The ICNN `F`.
    pub potential: PotentialConfig,
    /// Whether `w₀` (the quadratic weight `α = sp(w₀)`, initialised to 1) is trained.
    #[serde(default = "default_true")]
    pub trainable_w0: bool,
    /// Initial value of `w₁` (reference `bias_w1`, default 0: `sp(w₁) = log 2`).
    #[serde(default)]
    pub bias_w1: f64,
}

fn default_true() -> bool {
    true
}

impl BlockConfig {
    /// A block with trainable `w₀` and `bias_w1 = 0` (the reference defaults).
    pub fn new(potential: PotentialConfig) -> Self {
        BlockConfig {
            potential,
            trainable_w0: true,
            bias_w1: 0.0,
        }
    }
}

/// Per-evaluation report of the CG solves inside the surrogate.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let mut rng = cpflow::FlowRng::seed_from_u64(0);
/// let params = cpflow::SurrogateParams::default(); // one probe, at most d = 2 CG iterations
/// let (_z, _s, report) = block.forward_with_surrogate(&x, None, &params, &mut rng)?;
/// assert_eq!(report.iterations.len(), 2); // one system per sample and probe
/// // CG solves a 2×2 SPD system in at most 2 iterations.
/// assert_eq!((report.converged, report.breakdown), (2, 0));
/// assert!(report.mean_iterations() <= 2.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgReport {
    /// CG iterations per system (sample × probe).
    pub iterations: Vec<usize>,
    /// Number of systems that met the tolerance.
    pub converged: usize,
    /// Number of systems whose CG broke down (non-positive or non-finite curvature `pᵀHp`,
    /// or a non-finite residual): the block's Jacobian is not positive definite there or the
    /// Hessian-vector products are not finite — with the built-in ICNNs only through
    /// round-off or NaN weights; with a custom potential, products that are not those of a
    /// convex function (check them with `icnn::check_derivatives`).
    pub breakdown: usize,
}

impl CgReport {
    /// Mean number of CG iterations per system.
    pub fn mean_iterations(&self) -> f64 {
        if self.iterations.is_empty() {
            0.0
        } else {
            self.iterations.iter().sum::<usize>() as f64 / self.iterations.len() as f64
        }
    }

    /// Merge another report (several blocks).
    pub fn extend(&mut self, other: &CgReport) {
        self.iterations.extend_from_slice(&other.iterations);
        self.converged += other.converged;
        self.breakdown += other.breakdown;
    }
}

/// A convex-potential flow block: forward map `x ↦ ∇Φ(x)`, Jacobian `H = sp(w₁)∇²F + sp(w₀)I ≻ 0`.
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let (z, h) = block.forward_and_hessian(&x, None)?;
/// assert_eq!(z.dims(), &[2, 2]);
/// // H = sp(w₁)∇²F + sp(w₀)I with ∇²F ⪰ 0 and sp(w₀) = 1: symmetric, diagonal ≥ 1.
/// for m in h.to_vec3::<f64>()? {
///     assert!((m[0][1] - m[1][0]).abs() < 1e-12);
///     assert!(m[0][0] >= 1.0 - 1e-12 && m[1][1] >= 1.0 - 1e-12);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CpFlowBlock {
    pub(crate) potential: Potential,
    w0: Tensor,
    w1: Tensor,
    dim: usize,
    context_dim: Option<usize>,
}

pub(crate) fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok(icnn::softplus(x)?)
}

fn scalar_f64(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .first()
        .copied()
        .unwrap_or(f64::NAN))
}

/// Unit-variance Rademacher draws (±1) from the host RNG as a `(n, d)` tensor.
pub(crate) fn rademacher<R: Rng + ?Sized>(
    n: usize,
    d: usize,
    like: &Tensor,
    rng: &mut R,
) -> Result<Tensor> {
    let v: Vec<f64> = (0..n * d)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    Ok(Tensor::from_vec(v, (n, d), like.device())?.to_dtype(like.dtype())?)
}

impl CpFlowBlock {
    /// Build (or load) the block's variables under `vb`: the ICNN under `icnn`, and `w0`, `w1`.
    /// A non-trainable `w₀` is a constant (not a variable). ICNN weights are drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(vb: VarBuilder, config: &BlockConfig, rng: &mut R) -> Result<Self> {
        let potential = Potential::new(vb.pp("icnn"), &config.potential, rng)?;
        let w1 = vb.get_with_hints(1, "w1", Init::Const(config.bias_w1))?;
        let w0 = if config.trainable_w0 {
            vb.get_with_hints(1, "w0", Init::Const(LOG_E_MINUS_1))?
        } else {
            Tensor::full(LOG_E_MINUS_1, 1, vb.device())?.to_dtype(vb.dtype())?
        };
        Ok(CpFlowBlock {
            potential,
            w0,
            w1,
            dim: config.potential.dim(),
            context_dim: config.potential.context_dim(),
        })
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Context dimension of a conditional (PICNN) block.
    pub fn context_dim(&self) -> Option<usize> {
        self.context_dim
    }

    /// The strong-convexity weight `α = sp(w₀)`.
    pub fn quadratic_weight(&self) -> Result<f64> {
        scalar_f64(&softplus(&self.w0)?)
    }

    /// The ICNN weight `sp(w₁)`.
    pub fn icnn_weight(&self) -> Result<f64> {
        scalar_f64(&softplus(&self.w1)?)
    }

    /// `(sp(w₁), sp(w₀))` as parameter-tracking `(1,)` tensors.
    fn weights(&self) -> Result<(Tensor, Tensor)> {
        Ok((softplus(&self.w1)?, softplus(&self.w0)?))
    }

    pub(crate) fn is_initialized(&self) -> Result<bool> {
        self.potential.is_initialized()
    }

    pub(crate) fn initialize(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<()> {
        self.potential.initialize(x, ctx)
    }

    /// `z = sp(w₁)∇F(x) + sp(w₀)x` from `∇F(x)`.
    fn map_from(&self, grad: &Tensor, x: &Tensor, sp1: &Tensor, sp0: &Tensor) -> Result<Tensor> {
        Ok((grad.broadcast_mul(sp1)? + x.broadcast_mul(sp0)?)?)
    }

    /// `H = sp(w₁)∇²F + sp(w₀)I` `(B, d, d)` from `∇²F`.
    fn jacobian_from(&self, hess: &Tensor, sp1: &Tensor, sp0: &Tensor) -> Result<Tensor> {
        let b = hess.dim(0)?;
        let eye = Tensor::eye(self.dim, hess.dtype(), hess.device())?.unsqueeze(0)?;
        Ok((hess.broadcast_mul(&sp1.reshape((1, 1, 1))?)?
            + eye
                .broadcast_mul(&sp0.reshape((1, 1, 1))?)?
                .broadcast_as((b, self.dim, self.dim))?)?)
    }

    /// Forward map `∇Φ(x)` (parameter-tracking).
    pub fn forward(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<Tensor> {
        let (sp1, sp0) = self.weights()?;
        let (_, g) = self.potential.value_and_gradient(x, ctx)?;
        Ok((g.broadcast_mul(&sp1)? + x.broadcast_mul(&sp0)?)?)
    }

    /// `(Φ(x) (B,), ∇Φ(x) (B, d))`, parameter-tracking.
    pub fn potential_and_forward(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (sp1, sp0) = self.weights()?;
        let (f, g) = self.potential.value_and_gradient(x, ctx)?;
        let quad = (x.sqr()?.sum(1)? * 0.5)?;
        let phi = (f.broadcast_mul(&sp1)? + quad.broadcast_mul(&sp0)?)?;
        let z = (g.broadcast_mul(&sp1)? + x.broadcast_mul(&sp0)?)?;
        Ok((phi, z))
    }

    /// Forward map and the Jacobian `H = sp(w₁)∇²F + sp(w₀)I` `(B, d, d)`, both
    /// parameter-tracking.
    pub fn forward_and_hessian(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (sp1, sp0) = self.weights()?;
        let lin = self.potential.linearize(x, ctx)?;
        let z = self.map_from(&lin.gradient(), x, &sp1, &sp0)?;
        Ok((z, self.jacobian_from(&lin.hessian()?, &sp1, &sp0)?))
    }

    /// [`CpFlowBlock::forward_and_hessian`] detached, for evaluation: the dense Jacobian of
    /// the [`CpFlowBlock::detached_operator`] (host kernels where they apply).
    pub(crate) fn forward_and_hessian_detached(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        weights: Option<&icnn::HostWeights>,
    ) -> Result<(Tensor, Tensor)> {
        let (z, op) = self.detached_operator_sharing(x, ctx, weights)?;
        Ok((z, op.dense()?))
    }

    /// The potential's prepared parameters on the host ([`icnn::HostWeights`]), for sharing
    /// one copy among the row chunks of a batch; `None` where the host kernels do not apply
    /// (a context, a network they do not cover, parameters off the CPU) or the network is
    /// not initialised.
    pub(crate) fn host_weights(&self, ctx: Option<&Tensor>) -> Result<Option<icnn::HostWeights>> {
        self.potential.host_weights(ctx)
    }

    /// The host linearisation at `x`: of `weights` when given (built by
    /// [`CpFlowBlock::host_weights`] for the same context), else of weights prepared here.
    fn host_linearize_sharing(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        weights: Option<&icnn::HostWeights>,
    ) -> Result<Option<icnn::HostLinearization>> {
        match weights {
            Some(w) => Ok(Some(w.linearize(x)?)),
            None => self.potential.host_linearize(x, ctx),
        }
    }

    /// The detached operator `v ↦ H v` at `x` (for SLQ and other Krylov estimates), with the
    /// detached forward map.
    pub(crate) fn detached_operator(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, HessianOperator)> {
        self.detached_operator_sharing(x, ctx, None)
    }

    /// [`CpFlowBlock::detached_operator`] with host weights built once for the row chunks of
    /// an evaluation ([`CpFlowBlock::host_weights`]; `None`: built here).
    pub(crate) fn detached_operator_sharing(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        weights: Option<&icnn::HostWeights>,
    ) -> Result<(Tensor, HessianOperator)> {
        let x = x.detach();
        let (sp1, sp0) = self.weights()?;
        let (sp1, sp0) = (sp1.detach(), sp0.detach());
        let (a1, a0) = (scalar_f64(&sp1)?, scalar_f64(&sp0)?);
        if let Some(host) = self.host_linearize_sharing(&x, ctx, weights)? {
            let z = self.map_from(&host.gradient()?, &x, &sp1, &sp0)?;
            let lin = Products::Host(host);
            return Ok((z, HessianOperator { lin, a1, a0 }));
        }
        let lin = self.potential.linearize(&x, ctx)?.detach();
        let z = self.map_from(&lin.gradient(), &x, &sp1, &sp0)?;
        let lin = Products::Composed(lin);
        Ok((z, HessianOperator { lin, a1, a0 }))
    }
}

impl CpFlowBlock {
    /// The operator `v ↦ H v` at `x` **with** the parameter graph kept (no detach), and the
    /// tracked forward map: for back-propagating through an iterative log-det estimator (the
    /// memory baseline the CG surrogate avoids; `sp(w₀)`, `sp(w₁)` enter as constants).
    pub fn tracked_operator(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, HessianOperator)> {
        let (sp1, sp0) = self.weights()?;
        let lin = self.potential.linearize(x, ctx)?;
        let z = self.map_from(&lin.gradient(), x, &sp1, &sp0)?;
        Ok((
            z,
            HessianOperator {
                lin: Products::Composed(lin),
                a1: scalar_f64(&sp1)?,
                a0: scalar_f64(&sp0)?,
            },
        ))
    }
}
