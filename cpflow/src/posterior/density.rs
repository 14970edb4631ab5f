//! `log q(z | x)` at arbitrary points `z` (not drawn from `q`): invert the posterior flow
//! (closed form for the ActNorms, convex-opt for the CP-Flow blocks), then run the exact
//! forward pass from the recovered base point.

use candle_core::Tensor;
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, InversionResult,
    NewtonCgParams, SecondOrderModel, invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
};

use super::amortized::{AmortizedPosterior, PosteriorLayer};
use crate::block::CpFlowBlock;
use crate::block_inverse::{InverseParams, InverseSolver};
use crate::error::{CpflowError, Result};
use crate::flow::check_matrix;

/// A conditional block with **one** context row shared by every point, as a batched
/// potential: the context is broadcast to whatever rows the solver evaluates, so the
/// per-sample solvers (Newton-CG, batched L-BFGS) work. (`BlockPotential` must use the flat
/// L-BFGS for conditional blocks, because a per-row context cannot follow row subsets.)
struct SharedContextPotential<'a> {
    block: &'a CpFlowBlock,
    context_row: &'a Tensor,
}

fn wrap(e: CpflowError) -> ConvexOptError {
    ConvexOptError::potential(e)
}

impl SharedContextPotential<'_> {
    fn context(&self, x: &Tensor) -> std::result::Result<Tensor, ConvexOptError> {
        let (n, dc) = (x.dim(0)?, self.context_row.dim(1)?);
        Ok(self.context_row.broadcast_as((n, dc))?.contiguous()?)
    }
}

impl BatchedPotential for SharedContextPotential<'_> {
    fn value_and_gradient(
        &self,
        x: &Tensor,
    ) -> std::result::Result<(Tensor, Tensor), ConvexOptError> {
        let c = self.context(x)?;
        let (phi, z) = self
            .block
            .potential_and_forward(&x.detach(), Some(&c))
            .map_err(wrap)?;
        Ok((phi.detach(), z.detach()))
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> std::result::Result<Tensor, ConvexOptError> {
        let c = self.context(x)?;
        let (_, op) = self.block.detached_operator(x, Some(&c)).map_err(wrap)?;
        op.apply(v).map_err(wrap)
    }

    fn second_order(
        &self,
        x: &Tensor,
    ) -> std::result::Result<SecondOrderModel<'_>, ConvexOptError> {
        let x = x.detach();
        let c = self.context(&x)?;
        let (z, op) = self.block.detached_operator(&x, Some(&c)).map_err(wrap)?;
        let (a1, a0) = (
            self.block.icnn_weight().map_err(wrap)?,
            self.block.quadratic_weight().map_err(wrap)?,
        );
        let quad = (x.sqr()?.sum(1)? * 0.5)?;
        let phi = ((op.potential().map_err(wrap)? * a1)? + (quad * a0)?)?;
        Ok(SecondOrderModel::new(
            phi,
            z,
            Box::new(move |v| op.apply(v).map_err(wrap)),
        ))
    }
}

/// Invert one block for the rows of `y`: with a context shared by all rows, by the solver
/// of `params` on a [`SharedContextPotential`]; otherwise by the block's own inverse (flat
/// L-BFGS for conditional blocks).
fn invert_block(
    block: &CpFlowBlock,
    y: &Tensor,
    context: &Tensor,
    shared: bool,
    params: &InverseParams,
) -> Result<InversionResult> {
    if !shared {
        return block.inverse(y, Some(context), params);
    }
    let row = context.narrow(0, 0, 1)?;
    let pot = SharedContextPotential {
        block,
        context_row: &row,
    };
    let (opts, y) = (params.options(), y.detach());
    Ok(match params.solver {
        InverseSolver::NewtonCg => invert_newton_cg(&pot, &y, &opts, &NewtonCgParams::default())?,
        InverseSolver::LbfgsBatched => {
            invert_lbfgs_batched(&pot, &y, &opts, &BatchedLbfgsParams::default())?
        }
        InverseSolver::LbfgsFlat => {
            invert_lbfgs_flat(&pot, &y, &opts, &FlatLbfgsParams::default())?
        }
    })
}

/// Whether every row of `h` equals the first (exactly).
fn rows_identical(h: &Tensor) -> Result<bool> {
    let first = h.narrow(0, 0, 1)?;
    let diff = h.broadcast_sub(&first)?.abs()?.flatten_all()?.max(0)?;
    Ok(diff.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? == 0.0)
}

/// Rows per inversion problem: the conditional blocks are inverted by one L-BFGS problem per
/// chunk (`InverseSolver::LbfgsFlat`), and smaller problems converge in fewer iterations.
const INVERSE_CHUNK: usize = 256;

/// The density of given points under the posterior (detached).
#[derive(Clone, Debug)]
pub struct PosteriorDensity {
    /// `log q(z | x)` per row, `(B,)`, exact log-dets.
    pub log_q: Tensor,
    /// The recovered base points `z₀ = f⁻¹(z)`, `(B, d)`.
    pub z0: Tensor,
    /// Whether every block inversion met its tolerance for every row.
    pub converged: bool,
    /// Largest final residual `‖∇Φ(x) − y‖∞` over the blocks and rows.
    pub max_residual: f64,
}

impl AmortizedPosterior {
    /// `log q(z | x)` at the rows of `z` `(B, d)` for the encoder outputs `(μ, log σ, h)`:
    /// each layer is inverted (blocks to `params`' tolerances: when every row has the same
    /// context — one data point, many `z` — with `params.solver`, otherwise with the flat
    /// L-BFGS solver on chunks of 256 rows), `ε = (z₀ − μ)/σ`, and the exact
    /// forward pass gives the log-density. Unconverged inversions are reported in the result,
    /// never hidden. Detached; for evaluation and tests (sampling never needs it).
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use candle_nn::VarMap;
    /// use cpflow::{InverseParams, posterior::{AmortizedPosterior, PosteriorConfig}};
    /// use rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let dev = Device::Cpu;
    /// let cfg = PosteriorConfig::reference_vae(2, 1).with_blocks(1).with_picnn(8, 2);
    /// let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &dev)?;
    /// let mu = Tensor::zeros((4, 2), DType::F64, &dev)?;
    /// let ls = Tensor::zeros((4, 2), DType::F64, &dev)?;
    /// // Initialised on contexts that vary (a constant context is an initialisation error),
    /// // then evaluated at one data point's context for every row.
    /// let h0 = Tensor::new(&[[0.5f64], [1.0], [1.5], [2.0]], &dev)?;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    /// q.initialize(&mu, &ls, &h0, &mut rng)?;
    /// let h = Tensor::ones((4, 1), DType::F64, &dev)?;
    /// let s = q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng)?;
    /// let back = q.log_q_exact_at(&s.z, &mu, &ls, &h, &InverseParams::default())?;
    /// assert!(back.converged);
    /// let diff = (back.log_q - s.log_q)?.abs()?.max(0)?.to_scalar::<f64>()?;
    /// assert!(diff < 1e-6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_q_exact_at(
        &self,
        z: &Tensor,
        mu: &Tensor,
        log_sigma: &Tensor,
        h: &Tensor,
        params: &InverseParams,
    ) -> Result<PosteriorDensity> {
        let z = check_matrix(z, self.latent_dim(), "z", self.dtype(), z.device())?;
        let [mu, ls, h, z] = self.check_batch(mu, log_sigma, h, &z)?;
        let (mu, ls, h, z) = (mu.detach(), ls.detach(), h.detach(), z.detach());
        let n = z.dim(0)?;
        let shared = rows_identical(&h)?;
        let chunk = if shared { n } else { INVERSE_CHUNK };
        let mut parts = Vec::new();
        let (mut converged, mut max_residual) = (true, 0.0f64);
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let hc = h.narrow(0, start, len)?;
            let mut y = z.narrow(0, start, len)?;
            for l in self.layers().iter().rev() {
                y = match l {
                    PosteriorLayer::ActNorm(a) => a.inverse(&y)?,
                    PosteriorLayer::Cpf(b) => {
                        let res = invert_block(b, &y, &hc, shared, params)?;
                        converged &= res.all_converged();
                        max_residual = res.residual_inf.iter().fold(max_residual, |m, r| m.max(*r));
                        res.x
                    }
                };
            }
            parts.push(y);
            start += len;
        }
        let z0 = Tensor::cat(&parts, 0)?;
        let eps = ((&z0 - &mu)? / ls.exp()?)?;
        let s = self.transform_noise_exact(&mu, &ls, &h, &eps)?;
        if !max_residual.is_finite() {
            return Err(CpflowError::InvalidInput(
                "the posterior inversion produced non-finite residuals".into(),
            ));
        }
        Ok(PosteriorDensity {
            log_q: s.log_q.detach(),
            z0,
            converged,
            max_residual,
        })
    }
}
