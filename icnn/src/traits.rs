//! The traits other crates code against.

use candle_core::Tensor;

use crate::error::Result;
use crate::host_linearization::HostLinearization;
use crate::host_weights::HostWeights;
use crate::linearization::Linearization;

/// A convex potential `F: ℝᵈ → ℝ` evaluated on batches `(B, d)` (one point per row).
///
/// ```
/// use std::sync::Arc;
/// use candle_core::{Device, Tensor};
/// use icnn::{check_derivatives, ConvexPotential, HessianVectorProducts, Linearization};
/// /// ∇²F(x_b) = diag(row b of the stored tensor).
/// #[derive(Debug)]
/// struct Diag(Tensor);
/// impl HessianVectorProducts for Diag {
///     fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
///         Ok((v * &self.0)?)
///     }
///     fn detach(&self) -> Arc<dyn HessianVectorProducts> {
///         Arc::new(Diag(self.0.detach()))
///     }
/// }
/// /// F(x) = Σ_j exp(x_j): ∇F = exp(x), ∇²F = diag(exp(x)).
/// struct ExpSum;
/// impl ConvexPotential for ExpSum {
///     fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
///         Ok(x.exp()?.sum(1)?)
///     }
///     fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
///         let e = x.exp()?;
///         Linearization::from_parts(e.sum(1)?, e.clone(), Arc::new(Diag(e)))
///     }
///     fn dim(&self) -> usize {
///         2
///     }
/// }
/// # fn main() -> icnn::Result<()> {
/// let x = Tensor::new(&[[0.0f64, 1.0], [-1.0, 0.5]], &Device::Cpu)?;
/// let (f, _grad) = ExpSum.value_and_gradient(&x)?; // provided method
/// assert!((f.to_vec1::<f64>()?[0] - (1.0 + 1f64.exp())).abs() < 1e-12);
/// assert!(ExpSum.host_linearize(&x)?.is_none()); // no host kernels by default
/// let v = Tensor::new(&[[1.0f64, -1.0], [0.5, 2.0]], &Device::Cpu)?;
/// assert!(check_derivatives(&ExpSum, &x, &v, 1e-5)?.passes(1e-6));
/// # Ok(())
/// # }
/// ```
pub trait ConvexPotential {
    /// `F(x)`, shape `(B,)`. The built-in networks do not refuse NaN/`±∞` rows of `x` (they
    /// give non-finite values in those rows only); [`check_finite`](crate::check_finite)
    /// does.
    fn potential(&self, x: &Tensor) -> Result<Tensor>;
    /// The cached linearisation at `x` (gradient, Hessian-vector products, Hessian). As for
    /// [`ConvexPotential::potential`], a non-finite row of `x` is not refused.
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
    /// The prepared parameters on the host, to linearize at many batches with one copy of
    /// the weights (see [`HostWeights`]): `Some` where [`ConvexPotential::host_linearize`]
    /// would be and the network is ready (its ActNorms initialised); `None` otherwise, and by
    /// default.
    fn host_weights(&self) -> Result<Option<HostWeights>> {
        Ok(None)
    }
}

/// A potential `F(x; c)` convex in `x` for every context `c` (partially input-convex).
///
/// ```
/// use icnn::{ConditionalConvexPotential, Picnn, PicnnConfig};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let config = PicnnConfig { dim: 2, context_dim: 1, width: 8, depth: 2, ..Default::default() };
/// let net = Picnn::new(vb.pp("picnn"), &config, &mut rng)?;
/// assert_eq!((net.dim(), net.context_dim()), (2, 1));
/// // Rows 0–2: a, b and their midpoint under the same context; row 3 varies the context (the
/// // first call initialises the ActNorms on this batch, which needs a varying context).
/// let x = Tensor::new(&[[1.0f64, -2.0], [-1.0, 0.0], [0.0, -1.0], [1.0, -2.0]], &Device::Cpu)?;
/// let c = Tensor::new(&[[0.5f64], [0.5], [0.5], [-1.0]], &Device::Cpu)?;
/// let f = net.potential_with_context(&x, &c)?.to_vec1::<f64>()?;
/// assert!(f[2] <= 0.5 * (f[0] + f[1]) + 1e-12); // convex in x for a fixed context
/// let lin = net.linearize_with_context(&x, &c)?;
/// assert!((lin.potential().to_vec1::<f64>()?[0] - f[0]).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
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
