//! The preconditioner of the surrogate's CG solves: the mean of the block's Jacobians
//! `a₁∇²F + a₀I` at a few rows of the batch, dense and inverted once per solve (once per
//! training step: the trainer makes it from the batch's first rows for all its row chunks).
//!
//! The Hessians of one trained potential at different points share most of their structure
//! (on BSDS300 the block's Jacobians have condition numbers around 70, their mean brings
//! `M⁻¹H` to about 9), so `M = mean_k H(x_k)` over 8 rows cuts plain CG's iterations by
//! about 40% at the same residual tolerance. It costs the dense Jacobians of those rows
//! (`rows · d` Hessian-vector products: half a CG iteration of a batch of 1,024 at
//! `d = 63`), an `O(d³)` inversion and one `(B × d)·(d × d)` product per iteration: it is
//! meant for dense flows of moderate `d` (tabular data, a VAE's latent space), not for image
//! flows (`d` in the thousands).
//!
//! The test is still `‖v − Hu‖∞ ≤ atol + rtol·‖v‖∞`, so `u` is as accurate as plain CG's and
//! the surrogate's gradient estimate has the same quality; only the iterates differ, so a run
//! with the preconditioner does not reproduce a run without it bit for bit.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::block::CpFlowBlock;
use crate::config::SurrogateParams;
use crate::dense_logdet::exact_logdet_and_inverse_host;
use crate::error::{CpflowError, Result};
use crate::flow::{Flow, Layer};

/// Rows per solve of the [`CgPreconditioner::MeanHessian`] by default: on BSDS300, 8 rows
/// give 12.4 iterations per system, 16 give 12.3 and 256 give 11.9 (plain CG: 21.2).
pub const DEFAULT_PRECONDITIONER_ROWS: usize = 8;

/// Preconditioner of the CG solves of the training surrogate (`train.surrogate.preconditioner`
/// in a config: `"none"` or `"mean-hessian"`).
///
/// ```
/// use cpflow::{CgPreconditioner, SurrogateParams};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn2(cpflow::icnn::Icnn2Config { dim: 4, width: 8, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2, 0.0, 1.0], [0.3, -0.4, 1.0, 0.5], [1.0, 0.0, -1.0, 2.0]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let plain = SurrogateParams { cg_atol: 1e-9, ..Default::default() };
/// let pcg = SurrogateParams { preconditioner: CgPreconditioner::MeanHessian, ..plain.clone() };
/// let a = flow.surrogate_loss(&x, &plain, &mut FlowRng::seed_from_u64(0))?;
/// let b = flow.surrogate_loss(&x, &pcg, &mut FlowRng::seed_from_u64(0))?;
/// // Both solves meet the tolerance, so the surrogates agree closely (the same probes).
/// assert_eq!((a.cg.converged, b.cg.converged), (3, 3));
/// let (sa, sb) = (a.loss.to_scalar::<f64>()?, b.loss.to_scalar::<f64>()?);
/// assert!((sa - sb).abs() < 1e-6 * sa.abs().max(1.0), "{sa} vs {sb}");
/// // With 3 rows and the default of 8, M is the mean of all three Jacobians.
/// assert!(b.cg.iterations.iter().sum::<usize>() <= a.cg.iterations.iter().sum::<usize>());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgPreconditioner {
    /// Plain CG (the reference).
    #[default]
    None,
    /// `M = mean_k (a₁∇²F(x_k) + a₀I)` over the first
    /// [`SurrogateParams::preconditioner_rows`] rows of the solve's batch.
    MeanHessian,
}

impl std::str::FromStr for CgPreconditioner {
    type Err = CpflowError;

    /// The config names, for command-line flags.
    ///
    /// ```
    /// use cpflow::CgPreconditioner;
    /// assert_eq!("mean-hessian".parse::<CgPreconditioner>()?, CgPreconditioner::MeanHessian);
    /// assert_eq!("none".parse::<CgPreconditioner>()?, CgPreconditioner::None);
    /// let err = "jacobi".parse::<CgPreconditioner>().unwrap_err().to_string();
    /// assert!(err.contains("use none or mean-hessian"), "{err}");
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "mean-hessian" => Ok(Self::MeanHessian),
            other => Err(CpflowError::InvalidConfig(format!(
                "unknown CG preconditioner {other:?}: use none or mean-hessian"
            ))),
        }
    }
}

/// `M⁻¹` (a `(d, d)` tensor in `x`'s dtype and device) for the surrogate's solves at `x`,
/// or `None` for plain CG. `weights`: the block's host weights when shared by the caller.
pub(crate) fn surrogate_preconditioner(
    block: &CpFlowBlock,
    x: &Tensor,
    ctx: Option<&Tensor>,
    params: &SurrogateParams,
    weights: Option<&icnn::HostWeights>,
) -> Result<Option<Tensor>> {
    let Some((xk, ck)) = preconditioner_rows(x, ctx, params)? else {
        return Ok(None);
    };
    Ok(Some(
        mean_jacobian_inverse(block, &xk, ck.as_ref(), weights)?.1,
    ))
}

/// The first [`SurrogateParams::preconditioner_rows`] rows of `x` (detached) and of `ctx`
/// that `M` is made from, or `None` when `params` ask for no preconditioner (or `x` is empty).
fn preconditioner_rows(
    x: &Tensor,
    ctx: Option<&Tensor>,
    params: &SurrogateParams,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    if params.preconditioner == CgPreconditioner::None {
        return Ok(None);
    }
    let k = params.preconditioner_rows.min(x.dim(0)?);
    if k == 0 {
        return Ok(None);
    }
    let ck = ctx.map(|c| c.narrow(0, 0, k)).transpose()?;
    Ok(Some((x.narrow(0, 0, k)?.detach(), ck)))
}

/// [`surrogate_preconditioner`] of every block of `flow` for a batch `x` (`ctx`), made from
/// the batch's first rows pushed through the layers before each block: one `M⁻¹` per block
/// for all the row chunks of a training step (`None` for ActNorms, and for every layer when
/// `params` ask for no preconditioner). `weights`: the blocks' shared host weights, by layer.
pub(crate) fn flow_preconditioners(
    flow: &Flow,
    x: &Tensor,
    ctx: Option<&Tensor>,
    params: &SurrogateParams,
    weights: &[Option<icnn::HostWeights>],
) -> Result<Vec<Option<Tensor>>> {
    let Some((mut h, ck)) = preconditioner_rows(x, ctx, params)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(flow.layers().len());
    for (i, layer) in flow.layers().iter().enumerate() {
        match layer {
            Layer::ActNorm(a) => {
                h = a.forward(&h)?.0.detach();
                out.push(None);
            }
            Layer::Cpf(b) => {
                let w = weights.get(i).and_then(Option::as_ref);
                let (z, m_inv) = mean_jacobian_inverse(b, &h, ck.as_ref(), w)?;
                out.push(Some(m_inv));
                h = z;
            }
        }
    }
    Ok(out)
}

/// The block's output at `x` and the inverse of its mean Jacobian over `x`'s rows.
fn mean_jacobian_inverse(
    block: &CpFlowBlock,
    x: &Tensor,
    ctx: Option<&Tensor>,
    weights: Option<&icnn::HostWeights>,
) -> Result<(Tensor, Tensor)> {
    let (z, h) = block.forward_and_hessian_detached(x, ctx, weights)?;
    // The mean in f64, inverted by the host Cholesky of the exact log-det (which refuses a
    // matrix that is not numerically positive definite).
    let mean = h.to_dtype(DType::F64)?.mean_keepdim(0)?;
    let (_, inv) = exact_logdet_and_inverse_host(&mean)?;
    Ok((z.detach(), inv.squeeze(0)?.to_dtype(x.dtype())?))
}
