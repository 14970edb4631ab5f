//! [`HostWeights`]: a network's prepared parameters copied to the host once, then linearized
//! at any number of batches (the row chunks of a training step or of an evaluation).
//!
//! Preparing the parameters (positive weights through softplus, ActNorm folded into the
//! weights) and copying them to the host costs a few copies of the weights. A caller that
//! linearizes the same weights at many chunks, in parallel, builds them once: the chunks share
//! the host copy and, for the training step, one packed tensor (the tracked argument of the
//! surrogate's custom op), instead of holding copies of their own.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::conv_network::PreparedNode;
use crate::error::{IcnnError, Result};
use crate::host_conv_net::conv_host_net;
use crate::host_linearization::HostLinearization;
use crate::host_link::Link;
use crate::network::{GroupAct, PreparedGroup};
use crate::surrogate_host::{HostGroup, HostNet, Real};

/// A network's prepared parameters on the host, to linearize at many batches
/// ([`HostWeights::linearize`]); from [`crate::ConvexPotential::host_weights`] for the
/// networks that [`HostLinearization`] covers (dense and convolutional ICNNs without gates or
/// context, parameters on the CPU in f32 or f64).
///
/// The weights are a snapshot: built before an optimiser step, they keep the old values. The
/// linearizations stay differentiable with respect to the network's parameters (they share
/// one tracked copy of the prepared parameters).
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
/// let x = Tensor::randn(0.0, 1.0, (10, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
/// net.initialize(&x)?; // the weights of an uninitialized network are `None`
/// let weights = net.host_weights()?.expect("dense ICNN on the CPU");
/// // Two chunks of rows, one copy of the weights.
/// let top = weights.linearize(&x.narrow(0, 0, 4)?)?;
/// let bottom = weights.linearize(&x.narrow(0, 4, 6)?)?;
/// let whole = net.host_linearize(&x)?.expect("dense ICNN on the CPU");
/// let g = Tensor::cat(&[top.gradient()?, bottom.gradient()?], 0)?;
/// let err = (g - whole.gradient()?)?.abs()?.max_keepdim(0)?.max(1)?.to_vec1::<f64>()?[0];
/// assert!(err < 1e-12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HostWeights {
    pub(crate) inner: Arc<Weights>,
}

/// The host network in either precision (cloning shares it).
#[derive(Debug, Clone)]
pub(crate) enum NetOf {
    F32(Arc<HostNet<f32>>),
    F64(Arc<HostNet<f64>>),
}

#[derive(Debug)]
pub(crate) struct Weights {
    pub(crate) net: NetOf,
    /// The prepared parameters, flattened, in the packed order (`HostNet::offsets`).
    parts: Vec<Tensor>,
    /// Their concatenation, made on the first use (the surrogate's op) and shared after.
    packed: Mutex<Option<Tensor>>,
    /// A detached copy of the concatenation whose gradient the surrogate's op computes
    /// instead ([`HostWeights::with_gradient_leaf`]).
    leaf: Option<Var>,
    /// Values per row.
    pub(crate) dim: usize,
    /// `(C, H, W)` of a convolutional network's input images.
    image: Option<(usize, usize, usize)>,
    dtype: DType,
}

pub(crate) fn host_vec<T: candle_core::WithDType>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.detach().flatten_all()?.to_vec1::<T>()?)
}

fn host_net<T: Real>(groups: &[PreparedGroup], dim: usize) -> Result<HostNet<T>> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let width = match (&g.lin, g.inputs.first()) {
            (Some((a, _)), _) => a.dim(0)?,
            (None, Some(i)) => i.weight.dim(0)?,
            (None, None) => return Err(IcnnError::InvalidConfig("group without inputs".into())),
        };
        let dense = |w: &Tensor| -> Result<Link<T>> {
            let (m, n) = w.dims2()?;
            Ok(Link::Dense {
                w: host_vec::<T>(w)?,
                m,
                n,
            })
        };
        out.push(HostGroup {
            inputs: g
                .inputs
                .iter()
                .map(|i| Ok((i.group, dense(&i.weight)?)))
                .collect::<Result<_>>()?,
            lin: g.lin.as_ref().map(|(a, _)| dense(a)).transpose()?,
            bias: g.bias.as_ref().map(host_vec::<T>).transpose()?,
            act: match g.act {
                GroupAct::Nonlinear(a) => Some(a.spec()),
                GroupAct::Identity => None,
            },
            readout: None,
            width,
        });
    }
    // The output group (one unit) is `F`.
    if let Some(last) = out.last_mut() {
        last.readout = Some(T::one());
    }
    Ok(HostNet {
        groups: out,
        dim,
        channel_last: None,
    })
}

/// Whether the host kernels take parameters of this dtype on this tensor's device.
fn host_dtype(t: &Tensor) -> Option<DType> {
    (crate::takes_host_kernels(t.device()) && matches!(t.dtype(), DType::F32 | DType::F64))
        .then_some(t.dtype())
}

impl HostWeights {
    /// The host weights of prepared dense groups, or `None` when the kernels do not cover
    /// them (gates or per-sample biases, an output group that is not one identity unit,
    /// parameters off the CPU or not f32/f64).
    pub(crate) fn build(groups: &[PreparedGroup]) -> Result<Option<Self>> {
        // The first link that reads `x` gives the input's width.
        let Some((input, _)) = groups.iter().find_map(|g| g.lin.as_ref()) else {
            return Ok(None);
        };
        let dim = input.dim(1)?;
        let supported = groups.last().is_some_and(|g| g.act == GroupAct::Identity)
            && groups.iter().all(|g| {
                g.inputs.iter().all(|i| i.gate.is_none())
                    && g.lin.as_ref().is_none_or(|(_, gt)| gt.is_none())
                    && g.bias.as_ref().is_none_or(|b| b.rank() == 1)
            });
        let Some(dtype) = host_dtype(input).filter(|_| supported) else {
            return Ok(None);
        };
        let mut parts: Vec<Tensor> = Vec::new();
        for g in groups {
            for i in &g.inputs {
                parts.push(i.weight.flatten_all()?);
            }
            if let Some((a, _)) = &g.lin {
                parts.push(a.flatten_all()?);
            }
            if let Some(b) = &g.bias {
                parts.push(b.flatten_all()?);
            }
        }
        let net = match dtype {
            DType::F32 => NetOf::F32(Arc::new(host_net::<f32>(groups, dim)?)),
            _ => NetOf::F64(Arc::new(host_net::<f64>(groups, dim)?)),
        };
        let one_unit = match &net {
            NetOf::F32(n) => n.groups.last().map(|g| g.width) == Some(1),
            NetOf::F64(n) => n.groups.last().map(|g| g.width) == Some(1),
        };
        Ok(one_unit.then(|| Self::assemble(net, parts, dim, None, dtype, None)))
    }

    /// The host weights of a prepared conv network, or `None` when the kernels do not cover
    /// it (see `host_conv_net`; parameters off the CPU or not f32/f64).
    pub(crate) fn build_conv(nodes: &[PreparedNode]) -> Result<Option<Self>> {
        let Some(input) = nodes.first() else {
            return Ok(None);
        };
        let (c, h, w) = input.shape;
        let Some(kernel) = nodes
            .iter()
            .flat_map(|n| &n.blocks)
            .map(|b| &b.conv.kernel)
            .next()
        else {
            return Ok(None);
        };
        let Some(dtype) = host_dtype(kernel) else {
            return Ok(None);
        };
        fn built<T: Real>(
            nodes: &[PreparedNode],
            wrap: fn(Arc<HostNet<T>>) -> NetOf,
        ) -> Result<Option<(NetOf, Vec<Tensor>)>> {
            Ok(conv_host_net::<T>(nodes)?.map(|(net, parts)| (wrap(Arc::new(net)), parts)))
        }
        let built = match dtype {
            DType::F32 => built::<f32>(nodes, NetOf::F32)?,
            _ => built::<f64>(nodes, NetOf::F64)?,
        };
        Ok(built.map(|(net, parts)| {
            Self::assemble(net, parts, c * h * w, Some((c, h, w)), dtype, None)
        }))
    }

    fn assemble(
        net: NetOf,
        parts: Vec<Tensor>,
        dim: usize,
        image: Option<(usize, usize, usize)>,
        dtype: DType,
        leaf: Option<Var>,
    ) -> Self {
        Self {
            inner: Arc::new(Weights {
                net,
                parts,
                packed: Mutex::new(None),
                leaf,
                dim,
                image,
                dtype,
            }),
        }
    }

    /// Values per input row (`C·H·W` for a convolutional network).
    pub fn dim(&self) -> usize {
        self.inner.dim
    }

    /// The parameters' dtype (f32 or f64).
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// The linearization at `x`: rows `(B, d)`, or for a convolutional network images
    /// `(B, C, H, W)` too, on the CPU in the weights' dtype.
    pub fn linearize(&self, x: &Tensor) -> Result<HostLinearization> {
        let w = &self.inner;
        let rows = match (x.dims(), w.image) {
            (&[_, d], _) if d == w.dim => x.clone(),
            (&[b, c, h, wd], Some(image)) if (c, h, wd) == image => x.reshape((b, w.dim))?,
            (dims, image) => {
                return Err(IcnnError::Shape(format!(
                    "expected input of shape (B, {}){}, got {dims:?}",
                    w.dim,
                    image.map_or(String::new(), |(c, h, wd)| format!(
                        " or (B, {c}, {h}, {wd})"
                    ))
                )));
            }
        };
        if !x.device().is_cpu() || x.dtype() != w.dtype {
            return Err(IcnnError::Shape(format!(
                "host weights take CPU tensors of {:?}, got {:?} on {:?}",
                w.dtype,
                x.dtype(),
                x.device().location()
            )));
        }
        HostLinearization::at(self.inner.clone(), rows)
    }

    /// These weights with the parameter gradients of their linearizations stopping at one
    /// leaf: a detached copy of the prepared parameters, packed into one vector
    /// ([`HostWeights::gradient_leaf`]). A caller that back-propagates many row chunks adds
    /// the chunks' gradients of the leaf and then back-propagates their sum through the
    /// preparation once ([`HostWeights::backward_from_leaf`]) instead of once per chunk: one
    /// pass through the preparation, and at most one gradient of the network's weights per
    /// chunk in memory instead of the several of candle's backward through the preparation.
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
    /// let x = Tensor::randn(0.0, 1.0, (10, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
    /// net.initialize(&x)?;
    /// let u = Tensor::randn(0.0, 1.0, (10, 3), &Device::Cpu)?.to_dtype(DType::F64)?;
    /// let loss = |w: &icnn::HostWeights, x: &Tensor, u: &Tensor| -> icnn::Result<Tensor> {
    ///     let (g, q) = w.linearize(x)?.gradient_and_bilinear(u, u)?;
    ///     Ok((g.sqr()?.sum_all()? + q.sum_all()?)?)
    /// };
    /// // Two chunks through the leaf, then one pass through the preparation.
    /// let w = net.host_weights()?.expect("dense ICNN on the CPU").with_gradient_leaf()?;
    /// let leaf = w.gradient_leaf().expect("leaf weights");
    /// let mut sum: Option<Tensor> = None;
    /// for (start, len) in [(0, 4), (4, 6)] {
    ///     let grads = loss(&w, &x.narrow(0, start, len)?, &u.narrow(0, start, len)?)?.backward()?;
    ///     let g = grads.get(leaf).expect("the leaf's gradient").clone();
    ///     sum = Some(match sum { Some(s) => (s + g)?, None => g });
    /// }
    /// let by_leaf = w.backward_from_leaf(&sum.expect("two chunks"))?;
    /// // The same as back-propagating the whole batch through the preparation.
    /// let whole = net.host_weights()?.expect("dense ICNN on the CPU");
    /// let direct = loss(&whole, &x, &u)?.backward()?;
    /// for var in vm.all_vars() {
    ///     if let (Some(a), Some(b)) = (by_leaf.get(&var), direct.get(&var)) {
    ///         let err = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    ///         assert!(err < 1e-10);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_gradient_leaf(&self) -> Result<Self> {
        let w = &self.inner;
        // A variable is a copy without a graph; the concatenation it copies dies here (not
        // cached in `self`, which may live on).
        let leaf = Var::from_tensor(&Tensor::cat(&w.parts, 0)?)?;
        let (net, parts) = (w.net.clone(), w.parts.clone());
        Ok(Self::assemble(
            net,
            parts,
            w.dim,
            w.image,
            w.dtype,
            Some(leaf),
        ))
    }

    /// The leaf of [`HostWeights::with_gradient_leaf`] (`None` for weights whose gradients
    /// reach the network's parameters directly): the key of its gradient in a
    /// [`GradStore`].
    pub fn gradient_leaf(&self) -> Option<&Tensor> {
        self.inner.leaf.as_ref().map(Var::as_tensor)
    }

    /// The gradients of the network's parameters for the gradient `g` of the leaf
    /// ([`HostWeights::with_gradient_leaf`]; for leafless weights, of their packed
    /// parameters): one backward pass through the preparation.
    ///
    /// The pass runs part by part (a layer's weights, its bias), so that candle's backward
    /// holds the few temporaries of the largest part instead of those of the whole network.
    pub fn backward_from_leaf(&self, g: &Tensor) -> Result<GradStore> {
        let parts = &self.inner.parts;
        let total: usize = parts.iter().map(Tensor::elem_count).sum();
        if g.dims() != [total] {
            return Err(IcnnError::Shape(format!(
                "the leaf's gradient has shape {:?}, expected ({total},)",
                g.dims()
            )));
        }
        let g = g.detach();
        let mut out = GradStore::default();
        let mut offset = 0;
        for part in parts {
            let n = part.elem_count();
            let gi = g.narrow(0, offset, n)?;
            offset += n;
            let mut grads = crate::detached_backward(&(part * &gi)?.sum_all()?)?;
            // candle's backward also stores a gradient for the constant factor: not ours.
            grads.remove(&gi);
            out.extend(grads)?;
        }
        Ok(out)
    }
}

impl Weights {
    /// What the surrogate's op differentiates: the leaf where there is one, else the packed
    /// prepared parameters.
    pub(crate) fn op_argument(&self) -> Result<Tensor> {
        match &self.leaf {
            Some(leaf) => Ok(leaf.as_tensor().clone()),
            None => self.packed(),
        }
    }

    /// The prepared parameters as one tracked vector, made on the first call and shared.
    pub(crate) fn packed(&self) -> Result<Tensor> {
        // A poisoned lock still holds either nothing or the whole vector.
        let mut slot = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let t = Tensor::cat(&self.parts, 0)?;
        *slot = Some(t.clone());
        Ok(t)
    }
}
