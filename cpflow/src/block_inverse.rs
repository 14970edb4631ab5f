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

/// Which `convex-opt` solver inverts the blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InverseSolver {
    /// Damped Newton with CG inner solves and per-sample convergence (default).
    #[default]
    NewtonCg,
    /// Independent L-BFGS per sample, per-sample line searches.
    LbfgsBatched,
    /// The reference's method: the whole batch is one L-BFGS problem. Conditional (PICNN)
    /// blocks always use this one, because the per-sample solvers evaluate subsets of rows and
    /// the context rows cannot follow them through the `BatchedPotential` interface.
    LbfgsFlat,
}

/// Parameters of the block inversion.
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

/// A block (with an optional fixed context) seen as a batched convex potential
/// `x ↦ Φ(x) = sp(w₁)F(x) + sp(w₀)‖x‖²/2`. Outputs are detached.
pub struct BlockPotential<'a> {
    block: &'a CpFlowBlock,
    context: Option<&'a Tensor>,
}

impl<'a> BlockPotential<'a> {
    /// Wrap a block; `context` is required for conditional blocks (and then the solver must
    /// evaluate whole batches: see [`InverseSolver::LbfgsFlat`]).
    pub fn new(block: &'a CpFlowBlock, context: Option<&'a Tensor>) -> Self {
        BlockPotential { block, context }
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
            .potential_and_forward(&x.detach(), self.context)
            .map_err(wrap)?;
        Ok((phi.detach(), z.detach()))
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> std::result::Result<Tensor, ConvexOptError> {
        let (_, op) = self
            .block
            .detached_operator(x, self.context)
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
            .detached_operator(&x, self.context)
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
}

impl CpFlowBlock {
    /// Solve `∇Φ(x) = y` for every row of `y`. Unconverged samples are reported in the
    /// result (`converged[i] == false`), never hidden.
    pub fn inverse(
        &self,
        y: &Tensor,
        ctx: Option<&Tensor>,
        params: &InverseParams,
    ) -> Result<InversionResult> {
        let pot = BlockPotential::new(self, ctx);
        let opts = params.options();
        let solver = if ctx.is_some() {
            InverseSolver::LbfgsFlat
        } else {
            params.solver
        };
        let y = y.detach();
        Ok(match solver {
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
