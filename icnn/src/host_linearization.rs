//! [`HostLinearization`]: the linearisation of a dense or convolutional ICNN for the
//! CG-surrogate training step, computed by the host kernels of `surrogate_host` instead of
//! candle ops.
//!
//! The surrogate needs, at one batch `x`: Hessian-vector products without a graph (inside
//! CG), then `∇F(x)` and `uᵀ∇²F(x) v` differentiable with respect to the parameters and `x`.
//! Built from composed candle ops (as [`crate::Linearization`] does) the backward pass of the
//! second costs more than everything else in the step: candle allocates, zero-fills and adds
//! a gradient buffer for every argument of every element-wise op. Here the forward pass runs
//! once on the host, CG reuses its caches, and `(∇F, uᵀ∇²F v)` is one custom op whose
//! backward is the hand-written adjoint of `surrogate_host` (checked against candle's
//! backward through the composed recursions and against finite differences). The prepared
//! parameters enter that op packed into one vector, so candle's graph sees two arguments
//! (`x` and the packed vector) and back-propagates into the raw parameters through the
//! cheap preparation ops (softplus, ActNorm folding) as before.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Tensor};

use crate::active_rows::{active_indices, hvp_on_rows, scattered_tangents};
use crate::direction_tangents::{DirectionTangents, stacked_pair};
use crate::error::{IcnnError, Result};
use crate::host_weights::{NetOf, Weights, host_vec};
use crate::surrogate_adjoint::adjoint;
use crate::surrogate_host::{
    self, HostNet, Primal, Real, Tangents, bilinear, hvp, hvp_from_tangents, tangents,
    third_derivatives,
};

/// The forward pass of an ICNN at a batch, on the host, for the CG-surrogate step: detached
/// `∇F` and Hessian-vector products, and the tracked pair `(∇F, uᵀ∇²F v)`.
///
/// Built by [`crate::ConvexPotential::host_linearize`] for networks without gates or context
/// (`Icnn`, `Icnn2`, `Icnn3`, `DenseIcnn2`, and the conv ICNNs `ConvIcnn`, `ConvIcnn2`,
/// `ConvIcnn3`, whose rows are flattened `(C, H, W)` images) on CPU tensors of f32 or f64.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvexPotential, Icnn2, Icnn2Config};
/// use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
/// let cfg = Icnn2Config { dim: 3, width: 8, depth: 2, ..Default::default() };
/// let net = Icnn2::new(vb, &cfg, &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// let x = Tensor::randn(0.0, 1.0, (5, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
/// let lin = net.host_linearize(&x)?.expect("dense ICNN on the CPU");
/// let u = Tensor::randn(0.0, 1.0, (5, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
/// let v = Tensor::randn(0.0, 1.0, (5, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
/// let (g, q) = lin.gradient_and_bilinear(&u, &v)?; // tracked: (5, 3) and (5,)
/// let hv = lin.hvp(&v)?; // detached (5, 3)
/// let q2 = (u * hv)?.sum(1)?;
/// let err = (q - q2)?.abs()?.max(0)?.to_scalar::<f64>()?;
/// assert!(err < 1e-12);
/// assert_eq!(g.dims(), &[5, 3]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HostLinearization {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    host: Host,
    /// The weights the forward pass ran with: their packed prepared parameters are the op's
    /// second argument.
    weights: Arc<Weights>,
    /// The tracked input.
    x: Tensor,
    batch: usize,
    dim: usize,
}

#[derive(Debug)]
enum Host {
    F32(Arc<HostNet<f32>>, Primal<f32>),
    F64(Arc<HostNet<f64>>, Primal<f64>),
}

/// Runs `$body` with `$net`, `$p` bound to the host state of either precision.
macro_rules! with_host {
    ($host:expr, |$net:ident, $p:ident| $body:expr) => {
        match $host {
            Host::F32($net, $p) => $body,
            Host::F64($net, $p) => $body,
        }
    };
}

impl HostLinearization {
    /// The forward pass of the shared `weights` at `rows` `(B, d)` (checked by the caller:
    /// CPU, the weights' dtype and row width).
    pub(crate) fn at(weights: Arc<Weights>, rows: Tensor) -> Result<Self> {
        let (batch, dim) = rows.dims2()?;
        let host = match &weights.net {
            NetOf::F32(net) => {
                let p = surrogate_host::primal(net, host_vec::<f32>(&rows)?, batch)?;
                Host::F32(net.clone(), p)
            }
            NetOf::F64(net) => {
                let p = surrogate_host::primal(net, host_vec::<f64>(&rows)?, batch)?;
                Host::F64(net.clone(), p)
            }
        };
        Ok(Self {
            inner: Arc::new(State {
                host,
                weights,
                x: rows,
                batch,
                dim,
            }),
        })
    }

    fn device(&self) -> &Device {
        self.inner.x.device()
    }

    fn check(&self, t: &Tensor, name: &str) -> Result<()> {
        let i = &self.inner;
        if t.dims() != [i.batch, i.dim] || t.dtype() != i.x.dtype() {
            return Err(IcnnError::Shape(format!(
                "{name}: expected ({}, {}) {:?}, got {:?} {:?}",
                i.batch,
                i.dim,
                i.x.dtype(),
                t.dims(),
                t.dtype()
            )));
        }
        Ok(())
    }

    /// The batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.inner.batch
    }

    /// The input dimension `d` (the products act on `(B, d)` batches).
    pub fn dim(&self) -> usize {
        self.inner.dim
    }

    /// `F(x)` `(B,)`, detached.
    pub fn potential(&self) -> Result<Tensor> {
        let b = self.inner.batch;
        Ok(with_host!(&self.inner.host, |_net, p| Tensor::from_vec(
            p.potential.clone(),
            b,
            self.device()
        )?))
    }

    /// `∇ₓF(x)` `(B, d)`, detached.
    pub fn gradient(&self) -> Result<Tensor> {
        let (b, d) = (self.inner.batch, self.inner.dim);
        Ok(with_host!(&self.inner.host, |_net, p| Tensor::from_vec(
            p.grad.clone(),
            (b, d),
            self.device()
        )?))
    }

    /// `∇²ₓF(x_b) w_b` for `w` `(B, d)`, detached.
    pub fn hvp(&self, w: &Tensor) -> Result<Tensor> {
        self.check(w, "hvp")?;
        let (b, d) = (self.inner.batch, self.inner.dim);
        Ok(with_host!(&self.inner.host, |net, p| {
            let hv = hvp(net, p, &host_vec(w)?)?;
            Tensor::from_vec(hv, (b, d), self.device())?
        }))
    }

    /// [`HostLinearization::hvp`] and the forward tangents of `w` that it computed on the
    /// way, for [`HostLinearization::gradient_and_bilinear_given_tangents`] (see
    /// [`DirectionTangents`]).
    pub fn hvp_and_tangents(&self, w: &Tensor) -> Result<(Tensor, DirectionTangents)> {
        self.check(w, "hvp")?;
        let (b, d) = (self.inner.batch, self.inner.dim);
        Ok(with_host!(&self.inner.host, |net, p| {
            let mut tg = tangents(net, p, &host_vec(w)?, 1)?;
            let hv = hvp_from_tangents(net, p, &tg)?;
            (
                Tensor::from_vec(hv, (b, d), self.device())?,
                DirectionTangents::new(std::mem::take(&mut tg.adot), b),
            )
        }))
    }

    /// [`HostLinearization::hvp`] on the rows with `active[b]` only (CG's running systems):
    /// the network's passes skip the other rows, whose output is zero. `active` has one entry
    /// per row.
    ///
    /// ```
    /// # use candle_core::{DType, Device, Tensor};
    /// # use candle_nn::{VarBuilder, VarMap};
    /// # use icnn::{ConvexPotential, Icnn2, Icnn2Config};
    /// # use rand::SeedableRng;
    /// # fn main() -> icnn::Result<()> {
    /// # let vm = VarMap::new();
    /// # let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    /// # let cfg = Icnn2Config { dim: 3, width: 8, depth: 2, ..Default::default() };
    /// # let net = Icnn2::new(vb, &cfg, &mut rand::rngs::StdRng::seed_from_u64(0))?;
    /// let x = Tensor::randn(0.0, 1.0, (4, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
    /// let w = Tensor::randn(0.0, 1.0, (4, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
    /// let lin = net.host_linearize(&x)?.expect("dense ICNN on the CPU");
    /// let some = lin.hvp_active(&w, &[true, false, true, false])?;
    /// let all = lin.hvp(&w)?;
    /// // Rows 0 and 2 as in the full product, rows 1 and 3 zero.
    /// let rows = |t: &Tensor, i: usize| t.get(i)?.to_vec1::<f64>();
    /// assert_eq!(rows(&some, 1)?, vec![0.0; 3]);
    /// let diff: f64 = rows(&some, 2)?.iter().zip(rows(&all, 2)?).map(|(a, b)| (a - b).abs()).sum();
    /// assert!(diff < 1e-12);
    /// # Ok(()) }
    /// ```
    pub fn hvp_active(&self, w: &Tensor, active: &[bool]) -> Result<Tensor> {
        self.check(w, "hvp")?;
        let (b, d) = (self.inner.batch, self.inner.dim);
        match active_indices(active, b)? {
            None => self.hvp(w),
            // Zero (a solver never asks for this).
            Some(idx) if idx.is_empty() => Ok(w.zeros_like()?),
            Some(idx) => Ok(with_host!(&self.inner.host, |net, p| {
                let (hv, _) = hvp_on_rows(net, p, &host_vec(w)?, &idx)?;
                Tensor::from_vec(hv, (b, d), self.device())?
            })),
        }
    }

    /// [`HostLinearization::hvp_and_tangents`] on the rows with `active[b]` only (see
    /// [`HostLinearization::hvp_active`]): the products and the tangents of the other rows are
    /// zero, so [`DirectionTangents::add_scaled_rows`] with a zero step size there leaves the
    /// accumulated tangents as they are.
    pub fn hvp_and_tangents_active(
        &self,
        w: &Tensor,
        active: &[bool],
    ) -> Result<(Tensor, DirectionTangents)> {
        self.check(w, "hvp")?;
        let (b, d) = (self.inner.batch, self.inner.dim);
        let Some(idx) = active_indices(active, b)? else {
            return self.hvp_and_tangents(w);
        };
        if idx.is_empty() {
            // Zero, with the tangents' per-group layout (a solver never asks for this).
            return self.hvp_and_tangents(&w.zeros_like()?);
        }
        Ok(with_host!(&self.inner.host, |net, p| {
            let (hv, tg) = hvp_on_rows(net, p, &host_vec(w)?, &idx)?;
            (
                Tensor::from_vec(hv, (b, d), self.device())?,
                DirectionTangents::new(scattered_tangents(net, &tg, &idx, b), b),
            )
        }))
    }

    /// Whether following the forward tangents of CG's iterates
    /// ([`HostLinearization::hvp_and_tangents`], [`DirectionTangents::add_scaled_rows`]) is
    /// cheaper than the tangent pass of [`HostLinearization::gradient_and_bilinear`]: true
    /// for convolutional networks, whose tangent pass costs `2k²C` flops per value against
    /// two per value and CG iteration for the updates (MNIST flow: the training step 5%
    /// faster); false for dense ones, where a pass is a thin product and the updates,
    /// copies and stacking cost about as much (tabular d = 43, at initialisation and after
    /// 200 steps with 8 CG iterations: no difference beyond the noise, so the simpler path).
    pub fn prefers_tracked_tangents(&self) -> bool {
        with_host!(&self.inner.host, |net, _p| net.has_convolutions())
    }

    /// `∇²ₓF(x_b)` `(B, d, d)`, detached (for exact log-determinants).
    pub fn hessian(&self) -> Result<Tensor> {
        let (b, d) = (self.inner.batch, self.inner.dim);
        Ok(with_host!(&self.inner.host, |net, p| Tensor::from_vec(
            if net.has_convolutions() {
                crate::host_hessian::hessian_by_products(net, p)?
            } else {
                crate::host_hessian::hessian(net, p)?
            },
            (b, d, d),
            self.device()
        )?))
    }

    /// `(∇ₓF(x) (B, d), u_bᵀ∇²ₓF(x_b) v_b (B,))`, differentiable with respect to the network's
    /// parameters and `x`; `u` and `v` `(B, d)` enter as constants.
    pub fn gradient_and_bilinear(&self, u: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.bilinear_op(u, v, None)
    }

    /// [`HostLinearization::gradient_and_bilinear`] given the forward tangents of `u` and `v`
    /// (from [`HostLinearization::hvp_and_tangents`] and
    /// [`DirectionTangents::add_scaled_rows`]), which it would otherwise compute: one pass of
    /// the network over `2B` rows fewer. The tangents must be those of `u` and `v`; only their
    /// shapes are checked.
    pub fn gradient_and_bilinear_given_tangents(
        &self,
        u: &Tensor,
        v: &Tensor,
        u_tangents: &DirectionTangents,
        v_tangents: &DirectionTangents,
    ) -> Result<(Tensor, Tensor)> {
        let given = match &self.inner.host {
            Host::F32(net, p) => Given::F32(stacked_pair(net, p, u_tangents, v_tangents)?),
            Host::F64(net, p) => Given::F64(stacked_pair(net, p, u_tangents, v_tangents)?),
        };
        self.bilinear_op(u, v, Some(given))
    }

    fn bilinear_op(
        &self,
        u: &Tensor,
        v: &Tensor,
        given: Option<Given>,
    ) -> Result<(Tensor, Tensor)> {
        self.check(u, "u")?;
        self.check(v, "v")?;
        let uv = Tensor::cat(&[u.detach(), v.detach()], 0)?;
        let uv = match self.inner.host {
            Host::F32(..) => Stacked::F32(host_vec(&uv)?),
            Host::F64(..) => Stacked::F64(host_vec(&uv)?),
        };
        let op = BilinearOp {
            state: self.inner.clone(),
            uv,
            given: Mutex::new(given),
            saved: Mutex::new(None),
        };
        let i = &self.inner;
        let packed = i.weights.op_argument()?;
        let out = i.x.apply_op2(&packed, op)?;
        Ok((
            out.narrow(1, 0, i.dim)?,
            out.narrow(1, i.dim, 1)?.squeeze(1)?,
        ))
    }
}

/// Precomputed `[u; v]` tangents for the op's forward.
#[derive(Debug)]
enum Given {
    F32(Tangents<f32>),
    F64(Tangents<f64>),
}

#[derive(Debug)]
enum Stacked {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// What the op's forward keeps for its backward: the `[u; v]` tangents and `s'''`.
#[derive(Debug)]
struct OpCache<T: Real> {
    tg: Tangents<T>,
    s3: Vec<Vec<T>>,
}

impl<T: Real> Drop for OpCache<T> {
    /// The third derivatives came from the array pool (`third_derivatives`): they go back,
    /// as the tangents do.
    fn drop(&mut self) {
        for v in self.s3.drain(..) {
            crate::scratch::recycle(v);
        }
    }
}

#[derive(Debug)]
enum Saved {
    F32(OpCache<f32>),
    F64(OpCache<f64>),
}

/// `(x, packed θ) ↦ [∇F | uᵀ∇²F v]` `(B, d + 1)` with the hand-written adjoint. Its forward
/// reads the host state built from the same `x` and parameters (the arguments only carry the
/// graph); the `[u; v]` tangents (computed, or `given`) are kept for the backward pass.
struct BilinearOp {
    state: Arc<State>,
    uv: Stacked,
    given: Mutex<Option<Given>>,
    saved: Mutex<Option<Saved>>,
}

fn op_err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("icnn host surrogate: {e}"))
}

fn forward_rows<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    uv: &[T],
    given: Option<Tangents<T>>,
) -> candle_core::Result<(Vec<T>, OpCache<T>)> {
    let tg = match given {
        Some(tg) => tg,
        None => tangents(net, p, uv, 2)?,
    };
    let q = bilinear(net, p, &tg);
    let d = net.dim;
    let mut out = Vec::with_capacity(p.b * (d + 1));
    for (row, &qr) in p.grad.chunks(d).zip(&q) {
        out.extend_from_slice(row);
        out.push(qr);
    }
    let s3 = third_derivatives(net, p);
    Ok((out, OpCache { tg, s3 }))
}

fn backward_rows<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    cache: &OpCache<T>,
    uv: &[T],
    grad: &[T],
) -> candle_core::Result<(Vec<T>, Vec<T>)> {
    let d = net.dim;
    let mut c = Vec::with_capacity(p.b * d);
    let mut w = Vec::with_capacity(p.b);
    for row in grad.chunks(d + 1) {
        c.extend_from_slice(&row[..d]);
        w.push(row[d]);
    }
    adjoint(net, p, &cache.tg, &cache.s3, uv, &c, &w)
}

impl CustomOp2 for BilinearOp {
    fn name(&self) -> &'static str {
        "icnn-host-gradient-bilinear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = &self.state;
        let shape = Shape::from((s.batch, s.dim + 1));
        let given = self.given.lock().map_err(op_err)?.take();
        let (storage, saved) = match (&s.host, &self.uv) {
            (Host::F32(net, p), Stacked::F32(uv)) => {
                let given = match given {
                    None => None,
                    Some(Given::F32(t)) => Some(t),
                    Some(Given::F64(_)) => return Err(op_err("mixed precisions")),
                };
                let (out, cache) = forward_rows(net, p, uv, given)?;
                (CpuStorage::F32(out), Saved::F32(cache))
            }
            (Host::F64(net, p), Stacked::F64(uv)) => {
                let given = match given {
                    None => None,
                    Some(Given::F64(t)) => Some(t),
                    Some(Given::F32(_)) => return Err(op_err("mixed precisions")),
                };
                let (out, cache) = forward_rows(net, p, uv, given)?;
                (CpuStorage::F64(out), Saved::F64(cache))
            }
            _ => return Err(op_err("mixed precisions")),
        };
        *self.saved.lock().map_err(op_err)? = Some(saved);
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let s = &self.state;
        let guard = self.saved.lock().map_err(op_err)?;
        let saved = guard
            .as_ref()
            .ok_or_else(|| op_err("backward before forward"))?;
        let g = grad_res.contiguous()?.flatten_all()?;
        let dev = s.x.device();
        let n_params = packed.dim(0)?;
        let (gx, gp) = match (&s.host, &self.uv, saved) {
            (Host::F32(net, p), Stacked::F32(uv), Saved::F32(cache)) => {
                let (gx, gp) = backward_rows(net, p, cache, uv, &g.to_vec1::<f32>()?)?;
                (
                    Tensor::from_vec(gx, (s.batch, s.dim), dev)?,
                    Tensor::from_vec(gp, n_params, dev)?,
                )
            }
            (Host::F64(net, p), Stacked::F64(uv), Saved::F64(cache)) => {
                let (gx, gp) = backward_rows(net, p, cache, uv, &g.to_vec1::<f64>()?)?;
                (
                    Tensor::from_vec(gx, (s.batch, s.dim), dev)?,
                    Tensor::from_vec(gp, n_params, dev)?,
                )
            }
            _ => return Err(op_err("mixed precisions")),
        };
        Ok((Some(gx), Some(gp)))
    }
}
