//! Linearisations of convex potentials defined outside this crate: a user's network supplies
//! `F(x)`, `∇ₓF(x)` and a Hessian-vector-product object, and [`Linearization::from_parts`]
//! turns them into the [`Linearization`] every CP-Flow algorithm consumes (CG, SLQ, exact
//! log-det, the surrogate's parameter gradient, inversion).

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{IcnnError, Result};
use crate::linearization::{HvpBackend, Linearization};

/// Hessian-vector products `∇²ₓF(x_b) v_b` of a convex potential at a fixed batch of points
/// `x` `(B, d)`, typically computed from tensors cached by the forward pass.
///
/// Write the products as candle tensor operations on the network's parameters: candle then
/// differentiates `uᵀ (∇²ₓF) v` w.r.t. the parameters in one first-order backward pass (the
/// CG surrogate's gradient). candle's own higher-order autodiff is **not** a substitute: its
/// backward detaches gradients, so mixed derivatives would silently be wrong.
/// Check an implementation with [`crate::check_derivatives`].
///
/// ```
/// use std::sync::Arc;
/// use candle_core::{Device, Tensor};
/// use icnn::HessianVectorProducts;
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
/// # fn main() -> icnn::Result<()> {
/// let h = Diag(Tensor::new(&[[1.0f64, 2.0], [3.0, 4.0]], &Device::Cpu)?);
/// let v = Tensor::new(&[[1.0f64, 1.0], [0.5, -1.0]], &Device::Cpu)?;
/// assert_eq!(h.hvp(&v)?.to_vec2::<f64>()?, vec![vec![1.0, 2.0], vec![1.5, -4.0]]);
/// // K = 2 products per point with the default `hvp_many`: the columns of the Hessian.
/// let eye = Tensor::new(&[[[1.0f64, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], &Device::Cpu)?;
/// let cols = h.hvp_many(&eye)?.to_vec3::<f64>()?;
/// assert_eq!(cols[1], vec![vec![3.0, 0.0], vec![0.0, 4.0]]);
/// assert_eq!(h.detach().hvp(&v)?.to_vec2::<f64>()?, h.hvp(&v)?.to_vec2::<f64>()?);
/// # Ok(())
/// # }
/// ```
pub trait HessianVectorProducts: std::fmt::Debug + Send + Sync {
    /// `∇²ₓF(x_b) v_b` for every row `b`: `v` and the result are `(B, d)`.
    fn hvp(&self, v: &Tensor) -> Result<Tensor>;

    /// `K` products per point: `v` is `(B, K, d)` (contiguous), the result `(B, K, d)` holds
    /// `∇²ₓF(x_b) v_{b,k}`. The default makes `K` calls of [`Self::hvp`]; override it when
    /// the products can be batched.
    fn hvp_many(&self, v: &Tensor) -> Result<Tensor> {
        let k = v.dim(1)?;
        let products = (0..k)
            .map(|j| self.hvp(&v.narrow(1, j, 1)?.squeeze(1)?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&products, 1)?)
    }

    /// The same products with every cached tensor detached from the autodiff graph (used
    /// inside iterative solvers, which need no graph). Return `Arc::new(self.clone())` with
    /// each cached tensor replaced by `Tensor::detach`.
    fn detach(&self) -> Arc<dyn HessianVectorProducts>;
}

/// Adapter from the public trait to the crate's internal backend.
#[derive(Debug)]
struct UserHvp(Arc<dyn HessianVectorProducts>);

impl HvpBackend for UserHvp {
    fn hvp(&self, v: &Tensor, multi: bool) -> Result<Tensor> {
        let out = if multi {
            self.0.hvp_many(v)?
        } else {
            self.0.hvp(v)?
        };
        if out.dims() != v.dims() || out.dtype() != v.dtype() {
            return Err(IcnnError::Shape(format!(
                "a custom HessianVectorProducts returned {:?} {:?} for v of shape {:?} {:?}",
                out.dims(),
                out.dtype(),
                v.dims(),
                v.dtype()
            )));
        }
        Ok(out)
    }

    fn detach(&self) -> Arc<dyn HvpBackend> {
        Arc::new(UserHvp(self.0.detach()))
    }
}

impl Linearization {
    /// The linearisation of a user-defined potential at a batch of `B` points in `d`
    /// dimensions: `potential` `(B,)`, `gradient` `(B, d)` (same dtype and device) and the
    /// Hessian-vector products there. The Hessian ([`Linearization::hessian`]) is assembled
    /// from `d` products. Mismatched shapes or dtypes are an [`IcnnError::Shape`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use candle_core::{Device, Tensor};
    /// use icnn::{HessianVectorProducts, Linearization};
    ///
    /// // F(x) = Σ_i c_i x_i⁴ / 12 + ‖x‖²/2 on a batch: ∇F = c ⊙ x³/3 + x, ∇²F = diag(c ⊙ x² + 1).
    /// #[derive(Debug, Clone)]
    /// struct Quartic { diag: Tensor }
    /// impl HessianVectorProducts for Quartic {
    ///     fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> { Ok((v * &self.diag)?) }
    ///     fn detach(&self) -> Arc<dyn HessianVectorProducts> {
    ///         Arc::new(Quartic { diag: self.diag.detach() })
    ///     }
    /// }
    /// # fn main() -> icnn::Result<()> {
    /// let x = Tensor::new(&[[1.0f64, 2.0], [0.5, -1.0]], &Device::Cpu)?;
    /// let c = Tensor::new(&[3.0f64, 0.5], &Device::Cpu)?;
    /// let x2 = x.sqr()?;
    /// let potential = ((x2.sqr()?.broadcast_mul(&c)? / 12.0)? + (&x2 / 2.0)?)?.sum(1)?;
    /// let gradient = ((x2.broadcast_mul(&c)? * &x)? / 3.0)?.add(&x)?;
    /// let diag = (x2.broadcast_mul(&c)? + 1.0)?;
    /// let lin = Linearization::from_parts(potential, gradient, Arc::new(Quartic { diag }))?;
    /// let h = lin.hessian()?.to_vec3::<f64>()?;
    /// assert_eq!(h[0], vec![vec![4.0, 0.0], vec![0.0, 3.0]]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_parts(
        potential: Tensor,
        gradient: Tensor,
        hvp: Arc<dyn HessianVectorProducts>,
    ) -> Result<Self> {
        let (b, _) = gradient.dims2().map_err(|_| {
            IcnnError::Shape(format!(
                "Linearization::from_parts: gradient must be (B, d), got {:?}",
                gradient.dims()
            ))
        })?;
        if potential.dims() != [b] || potential.dtype() != gradient.dtype() {
            return Err(IcnnError::Shape(format!(
                "Linearization::from_parts: potential must be ({b},) {:?} like the gradient, \
                 got {:?} {:?}",
                gradient.dtype(),
                potential.dims(),
                potential.dtype()
            )));
        }
        Linearization::from_backend(potential, gradient, Some(Arc::new(UserHvp(hvp))))
    }
}
