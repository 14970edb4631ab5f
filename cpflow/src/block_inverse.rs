//! Inverting a CP-Flow block, `∇Φ(x) = y`, with the `convex-opt` solvers: the block as a
//! [`BatchedPotential`].

use candle_core::Tensor;
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, InversionOptions,
    InversionResult, NewtonCgParams, SecondOrderModel, invert_lbfgs_batched, invert_lbfgs_flat,
    invert_newton_cg,
};
use serde::{Deserialize, Serialize};

use crate::block::CpFlowBlock;
use crate::error::Result;

/// Which `convex-opt` solver inverts the blocks. Every solver serves conditional (PICNN) blocks
/// too: the context rows follow the row subsets the per-sample solvers evaluate
/// ([`BlockPotential`]'s `select_rows`).
///
/// ```
/// use cpflow::{InverseParams, InverseSolver};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let y = Tensor::new(&[[0.3f64, -0.2], [1.0, 2.0]], &Device::Cpu)?;
/// for solver in [InverseSolver::NewtonCg, InverseSolver::LbfgsBatched, InverseSolver::LbfgsFlat] {
///     let params = InverseParams { solver, abs_tolerance: Some(1e-8), ..Default::default() };
///     let res = block.inverse(&y, None, &params)?;
///     assert!(res.all_converged(), "{solver:?}");
///     // ∇Φ(x) = y at the solution.
///     let err = (block.forward(&res.x, None)? - &y)?.abs()?.max_all()?.to_scalar::<f64>()?;
///     assert!(err <= 1e-8, "{solver:?}: {err}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InverseSolver {
    /// Damped Newton with CG inner solves and per-sample convergence (default).
    #[default]
    NewtonCg,
    /// Independent L-BFGS per sample, per-sample line searches.
    LbfgsBatched,
    /// The reference's method: the whole batch is one L-BFGS problem (shared line searches and
    /// stopping test).
    LbfgsFlat,
}

/// Parameters of the block inversion.
///
/// ```
/// use cpflow::{InverseParams, InverseSolver};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let params = InverseParams { abs_tolerance: Some(1e-10), ..Default::default() };
/// let (z, _logdet) = flow.transform(&x)?;
/// let inv = flow.inverse_with(&z, &params)?;
/// assert!(inv.report.all_converged() && inv.report.max_residual() <= 1e-10);
/// // The Jacobian is ⪰ I, so the error in x is at most the residual (times √d).
/// let err = (inv.x - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-8, "{err}");
/// // Fields left out of a configuration file take their defaults.
/// let p: InverseParams = serde_json::from_str(r#"{"solver": "lbfgs_batched"}"#)?;
/// assert_eq!((p.max_iterations, p.solver), (1000, InverseSolver::LbfgsBatched));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InverseParams {
    /// Absolute tolerance on `‖∇Φ(x_i) − y_i‖∞`; `None`: convex-opt's per-dtype default
    /// (1e-9 in f64, 2e-5 in f32).
    pub abs_tolerance: Option<f64>,
    /// Relative tolerance (times `‖y_i‖∞`); `None`: convex-opt's default (0 in f64, 2e-5 in f32).
    pub rel_tolerance: Option<f64>,
    /// Iteration cap per sample.
    pub max_iterations: usize,
    /// The solver.
    pub solver: InverseSolver,
}

impl Default for InverseParams {
    fn default() -> Self {
        InverseParams {
            abs_tolerance: None,
            rel_tolerance: None,
            max_iterations: 1000,
            solver: InverseSolver::NewtonCg,
        }
    }
}

impl InverseParams {
    pub(crate) fn options(&self) -> InversionOptions {
        let mut o = InversionOptions::default().with_max_iterations(self.max_iterations);
        if let Some(a) = self.abs_tolerance {
            o = o.with_abs_tolerance(a);
        }
        if let Some(r) = self.rel_tolerance {
            o = o.with_rel_tolerance(r);
        }
        o
    }
}

/// A block (with an optional fixed context, one row per point) seen as a batched convex
/// potential `x ↦ Φ(x; c) = sp(w₁)F(x; c) + sp(w₀)‖x‖²/2`. Outputs are detached. The context
/// rows follow the rows the solvers evaluate ([`BatchedPotential::select_rows`]: the
/// restriction to a set of rows holds those rows of the context), so every `convex-opt` solver
/// inverts conditional blocks.
///
/// ```
/// use cpflow::convex_opt::BatchedPotential;
/// use cpflow::BlockPotential;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let pot = BlockPotential::new(block, None);
/// let (phi, grad) = pot.value_and_gradient(&x)?;
/// assert_eq!(phi.dims(), &[2]);
/// // The gradient of the potential is the block's forward map.
/// let z = block.forward(&x, None)?;
/// assert!((grad - z)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// # Ok(())
/// # }
/// ```
pub struct BlockPotential<'a> {
    block: &'a CpFlowBlock,
    context: Option<Tensor>,
}

impl<'a> BlockPotential<'a> {
    /// Wrap a block; `context` `(B, d_c)` (one row per row of the points) is required for
    /// conditional blocks.
    pub fn new(block: &'a CpFlowBlock, context: Option<&Tensor>) -> Self {
        BlockPotential {
            block,
            context: context.map(Tensor::detach),
        }
    }
}

fn wrap(e: crate::error::CpflowError) -> ConvexOptError {
    ConvexOptError::potential(e)
}

impl BatchedPotential for BlockPotential<'_> {
    fn value_and_gradient(
        &self,
        x: &Tensor,
    ) -> std::result::Result<(Tensor, Tensor), ConvexOptError> {
        let (phi, z) = self
            .block
            .potential_and_forward(&x.detach(), self.context.as_ref())
            .map_err(wrap)?;
        Ok((phi.detach(), z.detach()))
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> std::result::Result<Tensor, ConvexOptError> {
        let (_, op) = self
            .block
            .detached_operator(x, self.context.as_ref())
            .map_err(wrap)?;
        op.apply(v).map_err(wrap)
    }

    fn second_order(
        &self,
        x: &Tensor,
    ) -> std::result::Result<SecondOrderModel<'_>, ConvexOptError> {
        let x = x.detach();
        let (z, op) = self
            .block
            .detached_operator(&x, self.context.as_ref())
            .map_err(wrap)?;
        let (a1, a0) = (
            self.block.icnn_weight().map_err(wrap)?,
            self.block.quadratic_weight().map_err(wrap)?,
        );
        let f = op.potential().map_err(wrap)?;
        let quad = (x.sqr()?.sum(1)? * 0.5)?;
        let phi = ((f * a1)? + (quad * a0)?)?;
        Ok(SecondOrderModel::new(
            phi,
            z,
            Box::new(move |v| op.apply(v).map_err(wrap)),
        ))
    }

    /// The block with the context rows `rows` (`None` without a context: rows are independent).
    fn select_rows(
        &self,
        rows: &Tensor,
    ) -> std::result::Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
        let Some(ctx) = &self.context else {
            return Ok(None);
        };
        Ok(Some(Box::new(BlockPotential {
            block: self.block,
            context: Some(ctx.index_select(rows, 0)?),
        })))
    }
}

impl CpFlowBlock {
    /// Solve `∇Φ(x) = y` for every row of `y` (with context row `i` for row `i` of a
    /// conditional block) by `params.solver`. Unconverged samples are reported in the result
    /// (`converged[i] == false`), never hidden.
    pub fn inverse(
        &self,
        y: &Tensor,
        ctx: Option<&Tensor>,
        params: &InverseParams,
    ) -> Result<InversionResult> {
        let pot = BlockPotential::new(self, ctx);
        let opts = params.options();
        let y = y.detach();
        Ok(match params.solver {
            InverseSolver::NewtonCg => {
                invert_newton_cg(&pot, &y, &opts, &NewtonCgParams::default())?
            }
            InverseSolver::LbfgsBatched => {
                invert_lbfgs_batched(&pot, &y, &opts, &BatchedLbfgsParams::default())?
            }
            InverseSolver::LbfgsFlat => {
                invert_lbfgs_flat(&pot, &y, &opts, &FlatLbfgsParams::default())?
            }
        })
    }
}
