//! The cached linearisation of a convolutional network (`conv_network`): the forward pass
//! with `s'(a_j)`, `s''(a_j)` cached per node, the gradient by the reverse recursion, and
//! Hessian-vector products by forward-mode on that recursion.
//!
//! ```text
//! gradient:  g_j = ∂F/∂z_j = [j readout]/(H_j W_j) + Σ_{consumers k} K_{k←j}ᵀ δ_k
//!            δ_j = g_j ⊙ s'(a_j)            (δ_j = g_j on identity nodes)
//!            ∇ₓF = g_0
//! HVP:       ż_0 = v,  ȧ_j = Σ K_{j←s} ż_s,  ż_j = s'(a_j) ⊙ ȧ_j
//!            δ̇_j = ġ_j ⊙ s'(a_j) + g_j ⊙ s''(a_j) ⊙ ȧ_j,  ġ_s += K_{j←s}ᵀ δ̇_j,  Hv = ġ_0
//! ```
//! `K` is a convolution and `Kᵀ` its adjoint (a convolution with the flipped, channel-
//! transposed kernel for stride 1, a transposed convolution otherwise); the readout term is
//! constant, so it has no tangent. Gradients and HVPs are returned as flattened rows
//! `(B, C·H·W)` in `(C, H, W)` order.

use std::sync::Arc;

use candle_core::Tensor;

use crate::conv_network::{PreparedNode, readout_value};
use crate::error::{IcnnError, Result};
use crate::linearization::{HvpBackend, Linearization};

/// Accumulate `t` into an optional sum.
fn acc(sum: Option<Tensor>, t: Tensor) -> Result<Option<Tensor>> {
    Ok(Some(match sum {
        Some(s) => (s + t)?,
        None => t,
    }))
}

/// The second-order caches of a conv network at a batch.
#[derive(Debug)]
struct ConvHvp {
    nodes: Vec<PreparedNode>,
    /// `s'(a_j)` `(B, C_j, H_j, W_j)` (`None` on identity nodes and the input).
    s1: Vec<Option<Tensor>>,
    /// `g_j ⊙ s''(a_j)` (`None` where zero).
    d2: Vec<Option<Tensor>>,
}

/// Forward pass with cached derivatives and the reverse gradient recursion at `x`
/// `(B, C, H, W)`; with `second_order = false` no HVP caches are kept.
pub(crate) fn linearize(
    nodes: Vec<PreparedNode>,
    x: &Tensor,
    second_order: bool,
) -> Result<Linearization> {
    let (batch, c, h, w) = x.dims4()?;
    let n = nodes.len();
    let mut zs: Vec<Tensor> = Vec::with_capacity(n);
    let mut s1: Vec<Option<Tensor>> = Vec::with_capacity(n);
    let mut s2: Vec<Option<Tensor>> = Vec::with_capacity(n);
    zs.push(x.clone());
    s1.push(None);
    s2.push(None);
    let mut potential: Option<Tensor> = None;
    for node in nodes.iter().skip(1) {
        let a = node.pre_activation(&zs)?;
        let z = match node.act {
            Some(act) => {
                let e = act.eval(&a, true)?;
                s1.push(e.d1);
                s2.push(if second_order { e.d2 } else { None });
                e.value
            }
            None => {
                s1.push(None);
                s2.push(None);
                a
            }
        };
        if let Some(scale) = node.readout {
            potential = acc(potential, readout_value(&z, scale)?)?;
        }
        zs.push(z);
    }
    drop(zs);
    let potential =
        potential.ok_or_else(|| IcnnError::InvalidConfig("network without readout".into()))?;

    // Reverse recursion: g[j] = ∂F/∂z_j.
    let mut g: Vec<Option<Tensor>> = vec![None; n];
    let mut d2: Vec<Option<Tensor>> = vec![None; n];
    for j in (1..n).rev() {
        let node = &nodes[j];
        let mut gj = g[j].take();
        if let Some(scale) = node.readout {
            let (cj, hj, wj) = node.shape;
            let r = Tensor::ones((batch, cj, hj, wj), x.dtype(), x.device())?.affine(scale, 0.0)?;
            gj = acc(gj, r)?;
        }
        let Some(gj) = gj else { continue };
        if let Some(s) = &s2[j] {
            d2[j] = Some((&gj * s)?);
        }
        let delta = match &s1[j] {
            Some(s) => (&gj * s)?,
            None => gj,
        };
        for b in &node.blocks {
            g[b.source] = acc(g[b.source].take(), b.conv.adjoint(&delta)?)?;
        }
    }
    let gradient = match g[0].take() {
        Some(g0) => g0.reshape((batch, c * h * w))?,
        None => Tensor::zeros((batch, c * h * w), x.dtype(), x.device())?,
    };
    let backend: Option<Arc<dyn HvpBackend>> = if second_order {
        Some(Arc::new(ConvHvp { nodes, s1, d2 }))
    } else {
        None
    };
    Linearization::from_backend(potential, gradient, backend)
}

impl ConvHvp {
    /// `t ⊙ cache` where `t` is `(B·K, C, H, W)` and the cache `(B, C, H, W)`.
    fn mul_cache(t: &Tensor, cache: &Tensor, k: usize) -> Result<Tensor> {
        if k == 1 {
            return Ok((t * cache)?);
        }
        let (b, c, h, w) = cache.dims4()?;
        Ok(t.reshape((b, k, c, h, w))?
            .broadcast_mul(&cache.unsqueeze(1)?)?
            .reshape((b * k, c, h, w))?)
    }
}

impl HvpBackend for ConvHvp {
    fn hvp(&self, v: &Tensor, multi: bool) -> Result<Tensor> {
        let n = self.nodes.len();
        let (c, h, w) = self.nodes[0].shape;
        let (b, k) = if multi {
            let (b, k, _) = v.dims3()?;
            (b, k)
        } else {
            (v.dim(0)?, 1)
        };
        // Forward tangents ȧ_j (kept where s'' is needed) and ż_j.
        let mut adot: Vec<Option<Tensor>> = vec![None; n];
        let mut zdot: Vec<Option<Tensor>> = vec![None; n];
        zdot[0] = Some(v.reshape((b * k, c, h, w))?);
        for j in 1..n {
            let node = &self.nodes[j];
            let mut a: Option<Tensor> = None;
            for blk in &node.blocks {
                if let Some(zd) = &zdot[blk.source] {
                    a = acc(a, blk.conv.forward(zd)?)?;
                }
            }
            let Some(a) = a else { continue };
            zdot[j] = Some(match &self.s1[j] {
                Some(s) => Self::mul_cache(&a, s, k)?,
                None => a.clone(),
            });
            if self.d2[j].is_some() {
                adot[j] = Some(a);
            }
        }
        drop(zdot);
        // Reverse tangents.
        let mut gdot: Vec<Option<Tensor>> = vec![None; n];
        for j in (1..n).rev() {
            let mut delta: Option<Tensor> = None;
            if let (Some(d2), Some(a)) = (&self.d2[j], &adot[j]) {
                delta = Some(Self::mul_cache(a, d2, k)?);
            }
            if let Some(gd) = gdot[j].take() {
                let t = match &self.s1[j] {
                    Some(s) => Self::mul_cache(&gd, s, k)?,
                    None => gd,
                };
                delta = acc(delta, t)?;
            }
            let Some(delta) = delta else { continue };
            for blk in &self.nodes[j].blocks {
                gdot[blk.source] = acc(gdot[blk.source].take(), blk.conv.adjoint(&delta)?)?;
            }
        }
        let d = c * h * w;
        let hv = match gdot[0].take() {
            Some(t) => t,
            None => v.zeros_like()?,
        };
        Ok(if multi {
            hv.reshape((b, k, d))?
        } else {
            hv.reshape((b, d))?
        })
    }

    fn detach(&self) -> Arc<dyn HvpBackend> {
        let det = |v: &[Option<Tensor>]| -> Vec<Option<Tensor>> {
            v.iter().map(|t| t.as_ref().map(Tensor::detach)).collect()
        };
        Arc::new(Self {
            nodes: self.nodes.iter().map(PreparedNode::detach).collect(),
            s1: det(&self.s1),
            d2: det(&self.d2),
        })
    }
}
