//! The cached linearisation of a network at a batch of points: potential, gradient map,
//! Hessian-vector products and Hessians, all as candle tensors.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::{IcnnError, Result};
use crate::fused_sums;
use crate::network::{GroupAct, PreparedGroup};

/// A forward pass of a convex potential `F` at a batch `x` `(B, d)`, cached so that the
/// gradient `∇ₓF(x)`, Hessian-vector products `∇²ₓF(x)·v` and the Hessian `∇²ₓF(x)` are a
/// handful of matrix products each (see `docs` of the crate for the recursions).
///
/// Every tensor is built from the parameters (and from `x`), so candle's ordinary
/// first-order backward differentiates `gradient()`, `hvp(v)` and `hessian()` w.r.t. the
/// parameters (and w.r.t. whatever `x` was computed from). [`Linearization::detach`] gives
/// the same cache with every tensor detached: use it for the many HVPs inside CG, where no
/// graph is needed. Cloning is cheap (the cache is shared).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvexPotential, Icnn2, Icnn2Config};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = Icnn2Config { dim: 3, width: 8, depth: 2, ..Default::default() };
/// let net = Icnn2::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// let x = Tensor::new(&[[0.1f64, -0.2, 0.3], [1.0, 0.5, -1.0]], &Device::Cpu)?;
/// let lin = net.linearize(&x)?;
/// assert_eq!(lin.gradient().dims(), &[2, 3]);
/// let v = Tensor::ones((2, 3), DType::F64, &Device::Cpu)?;
/// assert_eq!(lin.hvp(&v)?.dims(), &[2, 3]);
/// assert_eq!(lin.hessian()?.dims(), &[2, 3, 3]);
/// // Inside an iterative solver, use the detached cache: no graph is built.
/// let cg_lin = lin.detach();
/// let _hv = cg_lin.hvp(&v)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Linearization {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    groups: Vec<PreparedGroup>,
    /// `s'(a_j)` per group (`None` for the identity output group).
    s1: Vec<Option<Tensor>>,
    /// `(∂F/∂z_j) ⊙ s''(a_j)` per group (`None` when not needed / zero).
    d2: Vec<Option<Tensor>>,
    potential: Tensor,
    gradient: Tensor,
    batch: usize,
    dim: usize,
    second_order: bool,
    /// Built by [`Linearization::detach`]: products need no graph, so the host kernels of
    /// `crate::fused_sums` may replace the composed element-wise ops.
    detached: bool,
    /// Hessian-vector products of a non-dense network (the convolutional ICNNs); `None` for
    /// the dense group networks, whose caches are `groups`, `s1` and `d2`.
    backend: Option<Arc<dyn HvpBackend>>,
}

/// The Hessian-vector products of a linearisation whose network is not a dense group network
/// (the convolutional ICNNs of `conv_network`). The potential and gradient live in the
/// shared [`Linearization`] cache; shapes are checked before `hvp` is called.
pub(crate) trait HvpBackend: std::fmt::Debug + Send + Sync {
    /// `∇²ₓF(x_b) v_b` for `v` `(B, d)`, or `(B, K, d)` (contiguous) when `multi`.
    fn hvp(&self, v: &Tensor, multi: bool) -> Result<Tensor>;
    /// The same backend with every cached tensor detached.
    fn detach(&self) -> Arc<dyn HvpBackend>;
}

/// Accumulate `t` into an optional sum.
fn acc(sum: Option<Tensor>, t: Tensor) -> Result<Option<Tensor>> {
    Ok(Some(match sum {
        Some(s) => (s + t)?,
        None => t,
    }))
}

impl Linearization {
    /// Forward pass with cached derivatives, then the reverse gradient recursion.
    /// With `second_order = false` the caches needed for HVPs are not built (HVPs then fail).
    pub(crate) fn build(
        groups: Vec<PreparedGroup>,
        x: &Tensor,
        second_order: bool,
    ) -> Result<Self> {
        let (batch, dim) = x.dims2()?;
        let n = groups.len();
        let mut zs: Vec<Tensor> = Vec::with_capacity(n);
        let mut s1: Vec<Option<Tensor>> = Vec::with_capacity(n);
        let mut s2: Vec<Option<Tensor>> = Vec::with_capacity(n);
        for g in &groups {
            let a = g.pre_activation(&zs, x)?;
            match g.act {
                GroupAct::Nonlinear(act) => {
                    let e = act.eval(&a, true)?;
                    zs.push(e.value);
                    s1.push(e.d1);
                    s2.push(if second_order { e.d2 } else { None });
                }
                GroupAct::Identity => {
                    zs.push(a);
                    s1.push(None);
                    s2.push(None);
                }
            }
        }
        let potential = zs
            .last()
            .ok_or_else(|| IcnnError::InvalidConfig("empty network".into()))?
            .squeeze(1)?;
        drop(zs);

        // Reverse recursion: gu[j] = ∂F/∂z_j.
        let mut gu: Vec<Option<Tensor>> = vec![None; n];
        let mut d2: Vec<Option<Tensor>> = vec![None; n];
        let mut grad: Option<Tensor> = None;
        for j in (0..n).rev() {
            let g = &groups[j];
            let delta = match (g.act, gu[j].take()) {
                (GroupAct::Identity, Some(u)) => u,
                (GroupAct::Identity, None) => {
                    if j + 1 == n {
                        Tensor::ones((batch, 1), x.dtype(), x.device())?
                    } else {
                        continue;
                    }
                }
                (GroupAct::Nonlinear(_), Some(u)) => {
                    if let Some(s) = &s2[j] {
                        d2[j] = Some((&u * s)?);
                    }
                    match &s1[j] {
                        Some(s) => (&u * s)?,
                        None => u,
                    }
                }
                (GroupAct::Nonlinear(_), None) => continue,
            };
            for inp in &g.inputs {
                let mut c = delta.matmul(&inp.weight)?;
                if let Some(gt) = &inp.gate {
                    c = (c * gt)?;
                }
                gu[inp.group] = acc(gu[inp.group].take(), c)?;
            }
            if let Some((a, gt)) = &g.lin {
                let mut c = delta.matmul(a)?;
                if let Some(gt) = gt {
                    c = (c * gt)?;
                }
                grad = acc(grad, c)?;
            }
        }
        let gradient = match grad {
            Some(g) => g,
            None => Tensor::zeros((batch, dim), x.dtype(), x.device())?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                groups,
                s1,
                d2,
                potential,
                gradient,
                batch,
                dim,
                second_order,
                detached: false,
                backend: None,
            }),
        })
    }

    /// A linearisation whose Hessian-vector products come from `backend` (`potential` `(B,)`,
    /// `gradient` `(B, d)`; `backend = None` means no second-order caches).
    pub(crate) fn from_backend(
        potential: Tensor,
        gradient: Tensor,
        backend: Option<Arc<dyn HvpBackend>>,
    ) -> Result<Self> {
        let (batch, dim) = gradient.dims2()?;
        Ok(Self {
            inner: Arc::new(Inner {
                groups: Vec::new(),
                s1: Vec::new(),
                d2: Vec::new(),
                potential,
                gradient,
                batch,
                dim,
                second_order: backend.is_some(),
                detached: false,
                backend,
            }),
        })
    }

    /// `F(x)`, shape `(B,)`.
    pub fn potential(&self) -> Tensor {
        self.inner.potential.clone()
    }

    /// `∇ₓF(x)`, shape `(B, d)`.
    pub fn gradient(&self) -> Tensor {
        self.inner.gradient.clone()
    }

    /// Batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.inner.batch
    }

    /// Input dimension `d`.
    pub fn dim(&self) -> usize {
        self.inner.dim
    }

    /// Data type of the cached tensors.
    pub fn dtype(&self) -> DType {
        self.inner.gradient.dtype()
    }

    /// The same linearisation with every cached tensor detached from the graph (cheap: no
    /// data is copied). Products computed from it build no backward graph.
    pub fn detach(&self) -> Self {
        let i = &self.inner;
        let det = |v: &[Option<Tensor>]| -> Vec<Option<Tensor>> {
            v.iter().map(|t| t.as_ref().map(Tensor::detach)).collect()
        };
        Self {
            inner: Arc::new(Inner {
                groups: i.groups.iter().map(PreparedGroup::detach).collect(),
                s1: det(&i.s1),
                d2: det(&i.d2),
                potential: i.potential.detach(),
                gradient: i.gradient.detach(),
                batch: i.batch,
                dim: i.dim,
                second_order: i.second_order,
                detached: true,
                backend: i.backend.as_ref().map(|b| b.detach()),
            }),
        }
    }

    /// Hessian-vector products `∇²ₓF(x_b) v_b` for every row `b`; `v` and the result are
    /// `(B, d)`, of the linearisation's [`dtype`](Self::dtype) (another shape or dtype is an
    /// [`IcnnError::Shape`]).
    pub fn hvp(&self, v: &Tensor) -> Result<Tensor> {
        let dims = v.dims();
        if dims != [self.inner.batch, self.inner.dim] || v.dtype() != self.dtype() {
            return Err(IcnnError::Shape(format!(
                "hvp: expected v of shape ({}, {}) {:?}, got {:?} {:?}",
                self.inner.batch,
                self.inner.dim,
                self.dtype(),
                dims,
                v.dtype()
            )));
        }
        self.hvp_impl(v, false)
    }

    /// Several Hessian-vector products per sample at once: `v` is `(B, K, d)`, the result
    /// `(B, K, d)` holds `∇²ₓF(x_b) v_{b,k}` (`v` of the linearisation's dtype).
    pub fn hvp_many(&self, v: &Tensor) -> Result<Tensor> {
        let dims = v.dims();
        if dims.len() != 3
            || dims[0] != self.inner.batch
            || dims[2] != self.inner.dim
            || v.dtype() != self.dtype()
        {
            return Err(IcnnError::Shape(format!(
                "hvp_many: expected v of shape ({}, K, {}) {:?}, got {:?} {:?}",
                self.inner.batch,
                self.inner.dim,
                self.dtype(),
                dims,
                v.dtype()
            )));
        }
        self.hvp_impl(&v.contiguous()?, true)
    }

    /// The Hessians `∇²ₓF(x_b)`, shape `(B, d, d)` (meant for small `d`: it costs about `d`
    /// Hessian-vector products).
    ///
    /// For the dense group networks the Hessian is assembled from per-layer Jacobians: every
    /// nonlinearity is elementwise and every pre-activation `a_j` is affine in `x` and the
    /// earlier `z`, so `∇²F = Σ_j J_jᵀ diag((∂F/∂z_j) ⊙ s''(a_j)) J_j` with `J_j = ∂a_j/∂x`.
    /// One forward Jacobian pass and one batched product per layer replace the `d` forward
    /// and reverse tangent passes (about half the arithmetic, a third of the element-wise
    /// traffic).
    pub fn hessian(&self) -> Result<Tensor> {
        if !self.inner.second_order {
            return Err(IcnnError::InvalidConfig(
                "this linearisation was built without second-order caches".into(),
            ));
        }
        if self.inner.backend.is_none() {
            return self.hessian_from_jacobians();
        }
        let (b, d) = (self.inner.batch, self.inner.dim);
        let eye = Tensor::eye(d, self.dtype(), self.inner.gradient.device())?
            .unsqueeze(0)?
            .broadcast_as((b, d, d))?
            .contiguous()?;
        // Row i of the result is (H e_i)ᵀ, i.e. row i of the symmetric H.
        self.hvp_impl(&eye, true)
    }

    fn hvp_impl(&self, v: &Tensor, multi: bool) -> Result<Tensor> {
        let i = &self.inner;
        if !i.second_order {
            return Err(IcnnError::InvalidConfig(
                "this linearisation was built without second-order caches".into(),
            ));
        }
        if let Some(backend) = &i.backend {
            return backend.hvp(v, multi);
        }
        if i.detached && !multi && fused_sums::host_fusable(&[v, &i.gradient]) {
            return self.hvp_host_fused(v);
        }
        self.hvp_composed(v, multi)
    }
}

#[path = "dense_hvp.rs"]
mod dense_hvp;
