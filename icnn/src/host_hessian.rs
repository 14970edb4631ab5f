//! The dense Hessian `∇²F(x_b)` of a dense group network from the host forward pass
//! (`surrogate_host::Primal`), for exact log-determinants:
//! `∇²F = Σ_j J_jᵀ diag(gu_j ⊙ s''_j) J_j` with the Jacobians `J_j = ∂a_j/∂x` carried
//! transposed, sample after sample, as one `(B·d × m_j)` matrix per group:
//! `J_jᵀ = Σ_i (J_iᵀ ⊙ s'_i) P_jiᵀ + A_jᵀ` is one matrix product per input (the `A_jᵀ` rows
//! written first and accumulated into), and each sample's `J_jᵀ diag(c) J_j` is one
//! `(d × m)(m × d)` product accumulated into its Hessian. No fresh zero-filled tensors, no
//! broadcast passes: what `Linearization::hessian` does with candle ops.

use candle_core::Result;

use crate::host_link::Link;
use crate::surrogate_host::{HostNet, Primal, Real, mm, rm};

/// `∇²F(x_b)` for every row, `(B × d × d)` row-major.
pub(crate) fn hessian<T: Real>(net: &HostNet<T>, p: &Primal<T>) -> Result<Vec<T>> {
    let (n, d, b) = (net.groups.len(), net.dim, p.b);
    let zero = T::zero();
    let mut h = vec![zero; b * d * d];
    // ∂z_j/∂x transposed, per sample `d` rows of `m_j`.
    let mut zt: Vec<Vec<T>> = vec![Vec::new(); n];
    let mut scaled: Vec<T> = Vec::new();
    for (j, g) in net.groups.iter().enumerate() {
        if g.act.is_none() {
            continue;
        }
        let m = g.width;
        let mut a = match g.lin.as_ref().map(Link::dense_weight).transpose()? {
            Some(aw) => {
                let mut at = vec![zero; d * m];
                for (r, row) in aw.chunks(d).enumerate() {
                    for (k, &v) in row.iter().enumerate() {
                        at[k * m + r] = v;
                    }
                }
                at.repeat(b)
            }
            None => vec![zero; b * d * m],
        };
        let mut acc = g.lin.is_some();
        for (i, w) in &g.inputs {
            if zt[*i].is_empty() {
                continue;
            }
            let ni = net.groups[*i].width;
            mm(
                &mut a,
                rm(&zt[*i], b * d, ni),
                rm(w.dense_weight()?, m, ni).t(),
                acc,
            )?;
            acc = true;
        }
        if !acc {
            continue;
        }
        if !p.gu[j].is_empty() {
            scaled.resize(d * m, zero);
            for r in 0..b {
                let jt = &a[r * d * m..(r + 1) * d * m];
                let (gu, s2) = (&p.gu[j][r * m..(r + 1) * m], &p.s2[j][r * m..(r + 1) * m]);
                for (srow, jrow) in scaled.chunks_mut(m).zip(jt.chunks(m)) {
                    for (((o, &x), &g), &c) in srow.iter_mut().zip(jrow).zip(gu).zip(s2) {
                        *o = x * g * c;
                    }
                }
                let hb = &mut h[r * d * d..(r + 1) * d * d];
                mm(hb, rm(&scaled, d, m), rm(jt, d, m).t(), true)?;
            }
        }
        let s1 = &p.s1[j];
        for (r, block) in a.chunks_mut(d * m).enumerate() {
            let s = &s1[r * m..(r + 1) * m];
            for row in block.chunks_mut(m) {
                for (x, &v) in row.iter_mut().zip(s) {
                    *x *= v;
                }
            }
        }
        zt[j] = a;
    }
    Ok(h)
}

/// `∇²F(x_b)` for every row, `(B × d × d)` row-major, from `d` Hessian-vector products (one
/// per unit vector, all rows at once): for networks with convolutions, whose Jacobians
/// [`hessian`] does not form. Row `k` of each `H_b` is `(H_b e_k)ᵀ` (H is symmetric).
pub(crate) fn hessian_by_products<T: Real>(net: &HostNet<T>, p: &Primal<T>) -> Result<Vec<T>> {
    let (d, b) = (net.dim, p.b);
    let zero = T::zero();
    let mut h = vec![zero; b * d * d];
    let mut e = vec![zero; b * d];
    for k in 0..d {
        for row in e.chunks_mut(d) {
            row.fill(zero);
            row[k] = T::one();
        }
        let hv = crate::surrogate_host::hvp(net, p, &e)?;
        for (r, col) in hv.chunks(d).enumerate() {
            h[r * d * d + k * d..][..d].copy_from_slice(col);
        }
    }
    Ok(h)
}
