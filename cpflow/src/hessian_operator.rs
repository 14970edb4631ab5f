//! The detached Jacobian `H = a₁∇²F + a₀I` of a CP-Flow block at a fixed batch, applied by
//! Hessian-vector products (the operator CG and Lanczos solve and estimate with).

use candle_core::Tensor;
use icnn::Linearization;

use crate::error::Result;

/// Where the Hessian-vector products of a [`HessianOperator`] come from.
#[derive(Clone, Debug)]
pub(crate) enum Products {
    /// The candle recursions (any potential and device; tracked for `tracked_operator`).
    Composed(Linearization),
    /// The host kernels of dense and conv ICNNs on the CPU (detached).
    Host(icnn::HostLinearization),
}

/// The detached Jacobian `H = a₁∇²F + a₀I` of a block at a fixed batch, as products.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let (_z, op) = block.tracked_operator(&x, None)?;
/// assert_eq!(op.batch_size(), 2);
/// // H e₁ for sample 0 and H e₂ for sample 1: columns of the dense Jacobians.
/// let v = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0]], &Device::Cpu)?;
/// let hv = op.apply(&v)?.to_vec2::<f64>()?;
/// let h = op.dense()?.to_vec3::<f64>()?;
/// for (i, (got, want)) in [(hv[0][0], h[0][0][0]), (hv[0][1], h[0][1][0]), (hv[1][1], h[1][1][1])]
///     .into_iter()
///     .enumerate()
/// {
///     assert!((got - want).abs() < 1e-10, "entry {i}: {got} vs {want}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HessianOperator {
    pub(crate) lin: Products,
    pub(crate) a1: f64,
    pub(crate) a0: f64,
}

impl HessianOperator {
    /// `∇²F v` for `v` `(B, d)`.
    fn potential_hvp(&self, v: &Tensor) -> Result<Tensor> {
        Ok(match &self.lin {
            Products::Composed(l) => l.hvp(v)?,
            Products::Host(h) => h.hvp(v)?,
        })
    }

    /// `H v` for `v` `(B, d)`.
    pub fn apply(&self, v: &Tensor) -> Result<Tensor> {
        Ok(((self.potential_hvp(v)? * self.a1)? + (v * self.a0)?)?)
    }

    /// `H v` for `v` `(B, K, d)`.
    pub fn apply_many(&self, v: &Tensor) -> Result<Tensor> {
        let hv = match &self.lin {
            Products::Composed(l) => l.hvp_many(v)?,
            Products::Host(h) => {
                let k = v.dim(1)?;
                let cols = (0..k)
                    .map(|i| h.hvp(&v.narrow(1, i, 1)?.squeeze(1)?.contiguous()?))
                    .collect::<icnn::Result<Vec<_>>>()?;
                Tensor::stack(&cols, 1)?
            }
        };
        Ok(((hv * self.a1)? + (v * self.a0)?)?)
    }

    /// The dense `H = a₁∇²F + a₀I`, `(B, d, d)` (detached).
    pub fn dense(&self) -> Result<Tensor> {
        let hess = match &self.lin {
            Products::Composed(l) => l.hessian()?,
            Products::Host(h) => h.hessian()?,
        };
        let (b, d, _) = hess.dims3()?;
        let eye = Tensor::eye(d, hess.dtype(), hess.device())?
            .unsqueeze(0)?
            .broadcast_as((b, d, d))?;
        Ok(((hess * self.a1)? + (eye * self.a0)?)?)
    }

    /// `F(x)` at the linearisation point (detached), `(B,)`.
    pub fn potential(&self) -> Result<Tensor> {
        Ok(match &self.lin {
            Products::Composed(l) => l.potential(),
            Products::Host(h) => h.potential()?,
        })
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        match &self.lin {
            Products::Composed(l) => l.batch_size(),
            Products::Host(h) => h.batch_size(),
        }
    }
}
