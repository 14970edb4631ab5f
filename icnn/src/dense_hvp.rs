//! The Hessian recursions of a dense group network's [`Linearization`]: the Hessian from
//! per-layer Jacobians, and Hessian-vector products by forward-mode tangents on the gradient
//! recursion, with candle ops (any device, tracked or not) or, for a detached cache on CPU,
//! with the host kernels of `crate::fused_sums`. A child module of `linearization.rs`, whose
//! cache (`Inner`) it reads.

use candle_core::Tensor;

use super::{Linearization, acc};
use crate::error::Result;
use crate::fused_sums;
use crate::network::GroupAct;

/// Elementwise product of a tangent (`(B, n)`, or `(B, K, n)` when `multi`) with a
/// per-sample tensor `(B, n)`.
fn mul_ps(t: &Tensor, ps: &Tensor, multi: bool) -> Result<Tensor> {
    Ok(if multi {
        t.broadcast_mul(&ps.unsqueeze(1)?)?
    } else {
        (t * ps)?
    })
}

/// `t · w` for a tangent `t` (`(B, n)` or `(B, K, n)`) and a matrix `w` `(n, m)` (may be a
/// transposed view).
fn mm(t: &Tensor, w: &Tensor, multi: bool) -> Result<Tensor> {
    Ok(if multi {
        let (b, k, n) = t.dims3()?;
        let m = w.dims()[1];
        t.reshape((b * k, n))?.matmul(w)?.reshape((b, k, m))?
    } else {
        t.matmul(w)?
    })
}

impl Linearization {
    /// `Σ_j J_jᵀ diag(c_j) J_j` with `c_j = (∂F/∂z_j) ⊙ s''(a_j)` (the cached `d2`) and the
    /// Jacobians `J_j = ∂a_j/∂x` carried transposed as `(B, d, m_j)` tensors.
    pub(super) fn hessian_from_jacobians(&self) -> Result<Tensor> {
        let i = &self.inner;
        let (b, d) = (i.batch, i.dim);
        let n = i.groups.len();
        // ∂z_j/∂x, transposed: (B, d, m_j).
        let mut zt: Vec<Option<Tensor>> = vec![None; n];
        let mut hess: Option<Tensor> = None;
        for (j, g) in i.groups.iter().enumerate() {
            if g.act == GroupAct::Identity {
                continue;
            }
            let mut a: Option<Tensor> = None;
            for inp in &g.inputs {
                if let Some(z) = &zt[inp.group] {
                    let z = match &inp.gate {
                        Some(gt) => z.broadcast_mul(&gt.unsqueeze(1)?)?,
                        None => z.clone(),
                    };
                    a = acc(a, mm(&z, &inp.weight.t()?, true)?)?;
                }
            }
            if let Some((w, gt)) = &g.lin {
                // ∂((x ⊙ g) Aᵀ)/∂x_k = g_k A[:, k]: row k of the transposed Jacobian.
                let wt = w.t()?.unsqueeze(0)?;
                let t = match gt {
                    Some(gt) => gt.unsqueeze(2)?.broadcast_mul(&wt)?,
                    None => wt,
                };
                let m = t.dim(2)?;
                a = Some(match a {
                    Some(a) => a.broadcast_add(&t)?,
                    None => t.broadcast_as((b, d, m))?.contiguous()?,
                });
            }
            let Some(a) = a else { continue };
            if let Some(c) = &i.d2[j] {
                let ac = a.broadcast_mul(&c.unsqueeze(1)?)?;
                hess = acc(hess, ac.matmul(&a.transpose(1, 2)?)?)?;
            }
            if let Some(s) = &i.s1[j] {
                zt[j] = Some(a.broadcast_mul(&s.unsqueeze(1)?)?);
            }
        }
        Ok(match hess {
            Some(h) => h,
            None => Tensor::zeros((b, d, d), self.dtype(), i.gradient.device())?,
        })
    }

    /// [`Linearization::hvp`] of a detached cache on CPU: the same recursions as `hvp_impl`,
    /// with the sums and products around each matrix product done by the host kernels of
    /// `crate::fused_sums` (one pass and one allocation each instead of two or three candle ops).
    /// Falls back to the composed ops for any tensor the kernels do not take.
    pub(super) fn hvp_host_fused(&self, v: &Tensor) -> Result<Tensor> {
        let i = &self.inner;
        let n = i.groups.len();
        let sum = |parts: &[Tensor]| -> Result<Tensor> {
            let r: Vec<&Tensor> = parts.iter().collect();
            if fused_sums::host_fusable(&r) {
                Ok(fused_sums::host_sum(&r)?)
            } else {
                let mut a = parts[0].clone();
                for p in &parts[1..] {
                    a = (a + p)?;
                }
                Ok(a)
            }
        };
        // Forward: the products making up ȧ_j (kept for the reverse pass) and ż_j.
        let mut adot: Vec<Vec<Tensor>> = vec![Vec::new(); n];
        let mut zdot: Vec<Option<Tensor>> = vec![None; n];
        for (j, g) in i.groups.iter().enumerate() {
            if g.act == GroupAct::Identity {
                continue;
            }
            let Some(s) = &i.s1[j] else {
                // Every nonlinear group caches s'; otherwise use the general recursion.
                return self.hvp_composed(v, false);
            };
            let mut parts: Vec<Tensor> = Vec::with_capacity(g.inputs.len() + 1);
            for inp in &g.inputs {
                if let Some(zd) = &zdot[inp.group] {
                    let zd = match &inp.gate {
                        Some(gt) => (zd * gt)?,
                        None => zd.clone(),
                    };
                    parts.push(zd.matmul(&inp.weight.t()?)?);
                }
            }
            if let Some((w, gt)) = &g.lin {
                let vg = match gt {
                    Some(gt) => (v * gt)?,
                    None => v.clone(),
                };
                parts.push(vg.matmul(&w.t()?)?);
            }
            if parts.is_empty() {
                continue;
            }
            let mut all: Vec<&Tensor> = parts.iter().collect();
            all.push(s);
            zdot[j] = Some(if fused_sums::host_fusable(&all) {
                fused_sums::host_sum_times(&all[..parts.len()], s)?
            } else {
                (sum(&parts)? * s)?
            });
            adot[j] = parts;
        }
        // Reverse: δ̇_j = ȧ_j ⊙ d2_j + ġ_j ⊙ s'(a_j).
        let mut gdot: Vec<Option<Tensor>> = vec![None; n];
        let mut hv_parts: Vec<Tensor> = Vec::new();
        for j in (0..n).rev() {
            let g = &i.groups[j];
            if g.act == GroupAct::Identity {
                continue;
            }
            let Some(s) = &i.s1[j] else { continue };
            let parts = std::mem::take(&mut adot[j]);
            let a_term = match &i.d2[j] {
                Some(c) if !parts.is_empty() => Some(c),
                _ => None,
            };
            let delta = match (a_term, gdot[j].take()) {
                (Some(c), Some(gd)) => {
                    let mut all: Vec<&Tensor> = parts.iter().collect();
                    all.extend([c, &gd, s]);
                    if fused_sums::host_fusable(&all) {
                        fused_sums::host_sum_times_plus(&all[..parts.len()], c, &gd, s)?
                    } else {
                        ((sum(&parts)? * c)? + (&gd * s)?)?
                    }
                }
                (Some(c), None) => {
                    let mut all: Vec<&Tensor> = parts.iter().collect();
                    all.push(c);
                    if fused_sums::host_fusable(&all) {
                        fused_sums::host_sum_times(&all[..parts.len()], c)?
                    } else {
                        (sum(&parts)? * c)?
                    }
                }
                (None, Some(gd)) => (&gd * s)?,
                (None, None) => continue,
            };
            for inp in &g.inputs {
                let mut c = delta.matmul(&inp.weight)?;
                if let Some(gt) = &inp.gate {
                    c = (c * gt)?;
                }
                gdot[inp.group] = acc(gdot[inp.group].take(), c)?;
            }
            if let Some((w, gt)) = &g.lin {
                let mut c = delta.matmul(w)?;
                if let Some(gt) = gt {
                    c = (c * gt)?;
                }
                hv_parts.push(c);
            }
        }
        if hv_parts.is_empty() {
            return Ok(v.zeros_like()?);
        }
        sum(&hv_parts)
    }

    /// The tangent recursions with candle ops (any device, tracked or not, `multi` batches).
    pub(super) fn hvp_composed(&self, v: &Tensor, multi: bool) -> Result<Tensor> {
        let i = &self.inner;
        let n = i.groups.len();
        // Forward tangents: ȧ_j and ż_j = s'(a_j) ⊙ ȧ_j.
        let mut adot: Vec<Option<Tensor>> = vec![None; n];
        let mut zdot: Vec<Option<Tensor>> = vec![None; n];
        for (j, g) in i.groups.iter().enumerate() {
            if g.act == GroupAct::Identity {
                continue;
            }
            let mut a: Option<Tensor> = None;
            for inp in &g.inputs {
                if let Some(zd) = &zdot[inp.group] {
                    let zd = match &inp.gate {
                        Some(gt) => mul_ps(zd, gt, multi)?,
                        None => zd.clone(),
                    };
                    a = acc(a, mm(&zd, &inp.weight.t()?, multi)?)?;
                }
            }
            if let Some((w, gt)) = &g.lin {
                let vg = match gt {
                    Some(gt) => mul_ps(v, gt, multi)?,
                    None => v.clone(),
                };
                a = acc(a, mm(&vg, &w.t()?, multi)?)?;
            }
            if let Some(a) = a {
                if let Some(s) = &i.s1[j] {
                    zdot[j] = Some(mul_ps(&a, s, multi)?);
                }
                adot[j] = Some(a);
            }
        }
        // Reverse tangents: δ̇_j = ġ_j ⊙ s'(a_j) + g_j ⊙ s''(a_j) ⊙ ȧ_j.
        let mut gdot: Vec<Option<Tensor>> = vec![None; n];
        let mut hv: Option<Tensor> = None;
        for j in (0..n).rev() {
            let g = &i.groups[j];
            if g.act == GroupAct::Identity {
                continue;
            }
            let mut delta: Option<Tensor> = None;
            if let (Some(d2), Some(a)) = (&i.d2[j], &adot[j]) {
                delta = Some(mul_ps(a, d2, multi)?);
            }
            if let Some(gd) = gdot[j].take() {
                let t = match &i.s1[j] {
                    Some(s) => mul_ps(&gd, s, multi)?,
                    None => gd,
                };
                delta = acc(delta, t)?;
            }
            let Some(delta) = delta else { continue };
            for inp in &g.inputs {
                let mut c = mm(&delta, &inp.weight, multi)?;
                if let Some(gt) = &inp.gate {
                    c = mul_ps(&c, gt, multi)?;
                }
                gdot[inp.group] = acc(gdot[inp.group].take(), c)?;
            }
            if let Some((w, gt)) = &g.lin {
                let mut c = mm(&delta, w, multi)?;
                if let Some(gt) = gt {
                    c = mul_ps(&c, gt, multi)?;
                }
                hv = acc(hv, c)?;
            }
        }
        Ok(match hv {
            Some(h) => h,
            None => v.zeros_like()?,
        })
    }
}
