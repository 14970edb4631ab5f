//! The traits other crates code against.

use candle_core::Tensor;

use crate::error::Result;
use crate::host_linearization::HostLinearization;
use crate::linearization::Linearization;

/// A convex potential `F: ℝᵈ → ℝ` evaluated on batches `(B, d)` (one point per row).
pub trait ConvexPotential {
    /// `F(x)`, shape `(B,)`.
    fn potential(&self, x: &Tensor) -> Result<Tensor>;
    /// The cached linearisation at `x` (gradient, Hessian-vector products, Hessian).
    fn linearize(&self, x: &Tensor) -> Result<Linearization>;
    /// The input dimension `d`.
    fn dim(&self) -> usize;
    /// `(F(x) (B,), ∇ₓF(x) (B, d))`, skipping the second-order caches.
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let lin = self.linearize(x)?;
        Ok((lin.potential(), lin.gradient()))
    }
    /// The host-kernel linearisation at `x` for the CG-surrogate training step, where the
    /// architecture and tensors allow it (see [`HostLinearization`]); `None` otherwise, and
    /// by default.
    fn host_linearize(&self, x: &Tensor) -> Result<Option<HostLinearization>> {
        let _ = x;
        Ok(None)
    }
}

/// A potential `F(x; c)` convex in `x` for every context `c` (partially input-convex).
pub trait ConditionalConvexPotential {
    /// `F(x; c)`, shape `(B,)`; `x` is `(B, d)`, `c` is `(B, d_c)`.
    fn potential_with_context(&self, x: &Tensor, c: &Tensor) -> Result<Tensor>;
    /// The cached linearisation in `x` at `(x, c)`.
    fn linearize_with_context(&self, x: &Tensor, c: &Tensor) -> Result<Linearization>;
    /// The input dimension `d`.
    fn dim(&self) -> usize;
    /// The context dimension `d_c`.
    fn context_dim(&self) -> usize;
}
