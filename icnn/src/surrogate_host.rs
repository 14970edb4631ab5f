//! Host kernels of the CG-surrogate training step for group networks whose links are dense
//! matrices or convolutions (`host_link`; no gates, no context): the forward pass with its
//! derivative caches, the reverse gradient recursion, forward tangents, Hessian-vector
//! products and the bilinear form `uᵀ∇²F v`; the hand-written adjoint of
//! `J = Σ_b ⟨c_b, ∇F(x_b)⟩ + w_b u_bᵀ∇²F(x_b) v_b` with respect to the prepared parameters
//! and `x` is in `surrogate_adjoint` (what candle's backward would compute through the
//! composed recursions, without its graph: every product writes into a caller-owned buffer,
//! every element-wise step is one pass).
//!
//! Notation (see `network.rs`): group `j` computes `a_j = Σ_i z_i P_jiᵀ + x A_jᵀ + b_j`,
//! `z_j = s_j(a_j)` (written for dense links; a convolution `P` acts on each row as its
//! matrix does, see `host_link`); `F = Σ_{readout j} r_j Σ z_j` (the dense networks: the
//! last group, one unit, `r = 1`); `gu_j = ∂F/∂z_j`, `δ_j = gu_j ⊙ s'_j`,
//! `∇F = Σ_j δ_j A_j`. With the
//! forward tangents `ȧ_j^t = J_j t` (`J_j = ∂a_j/∂x`) the Hessian is
//! `∇²F = Σ_j J_jᵀ diag(gu_j ⊙ s''_j) J_j`, so `uᵀ∇²F v = Σ_j ⟨gu_j ⊙ s''_j, ȧ_j^u ⊙ ȧ_j^v⟩`.
//! The `u` and `v` directions are stacked as one `(2B, ·)` matrix in every tangent product.

use candle_core::Result;

use crate::active_rows::{Rows, curvature, curvature_and_back, scaled};
use crate::fused::{ActKernels, ActSpec};
use crate::host_gemm::{GemmFloat, Par, View, matmul_into};
use crate::host_link::{ChannelLast, Link};
use crate::host_par;
use crate::scratch;

/// Element types of the host surrogate kernels.
pub(crate) trait Real:
    GemmFloat + ActKernels + scratch::SmallPooled + Default + 'static
{
}
impl Real for f32 {}
impl Real for f64 {}

/// One group with host copies of its prepared parameters.
#[derive(Debug, Clone)]
pub(crate) struct HostGroup<T> {
    /// `(earlier group, P_ji)`.
    pub inputs: Vec<(usize, Link<T>)>,
    /// `A_j`, reading `x`.
    pub lin: Option<Link<T>>,
    /// `b_j`, repeated periodically along a row of `m` (dense: `m` parameters, once; a
    /// convolution on channel-last maps: one per channel, repeated over the pixels).
    pub bias: Option<Vec<T>>,
    /// `None`: the identity.
    pub act: Option<ActSpec>,
    /// `r_j` when `r_j Σ z_j` is a term of `F`.
    pub readout: Option<T>,
    pub width: usize,
}

/// A group network on the host.
#[derive(Debug, Clone)]
pub(crate) struct HostNet<T> {
    pub groups: Vec<HostGroup<T>>,
    pub dim: usize,
    /// For convolutional networks: the inputs (and `∇F`, `Hv`, `x̄`) cross this module's
    /// boundary channel-first, the links work channel-last (`None`: no conversion).
    pub channel_last: Option<ChannelLast>,
}

impl<T: Real> HostNet<T> {
    /// Rows from the caller's order to the links' order.
    pub(crate) fn inner<'a>(&self, rows: &'a [T]) -> std::borrow::Cow<'a, [T]> {
        match self.channel_last {
            Some(o) => std::borrow::Cow::Owned(o.rows_to_channel_last(rows)),
            None => std::borrow::Cow::Borrowed(rows),
        }
    }

    /// [`HostNet::inner`] of owned rows (no copy without a conversion).
    fn inner_owned(&self, rows: Vec<T>) -> Vec<T> {
        match self.channel_last {
            Some(o) => o.rows_to_channel_last(&rows),
            None => rows,
        }
    }

    /// Rows from the links' order to the caller's.
    pub(crate) fn outer(&self, rows: Vec<T>) -> Vec<T> {
        match self.channel_last {
            Some(o) => o.rows_to_channel_first(&rows),
            None => rows,
        }
    }
}

/// Offsets of one group's parameters in the packed parameter vector.
#[derive(Debug, Clone)]
pub(crate) struct GroupOffsets {
    pub inputs: Vec<usize>,
    pub lin: Option<usize>,
    pub bias: Option<usize>,
}

impl<T> HostNet<T> {
    /// Whether a link is a convolution (the dense host Hessian does not apply).
    pub(crate) fn has_convolutions(&self) -> bool {
        self.groups.iter().any(|g| {
            g.inputs
                .iter()
                .map(|(_, l)| l)
                .chain(&g.lin)
                .any(|l| matches!(l, Link::Conv { .. }))
        })
    }

    /// Offsets in the packed order (per group: each input's `P`, then `A`, then `b`) and the
    /// total length.
    pub(crate) fn offsets(&self) -> (Vec<GroupOffsets>, usize) {
        let mut off = 0;
        let mut out = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let mut at = |len: usize| {
                let o = off;
                off += len;
                o
            };
            let inputs = g.inputs.iter().map(|(_, l)| at(l.params().len())).collect();
            let lin = g.lin.as_ref().map(|l| at(l.params().len()));
            let bias = g.bias.as_ref().map(|bias| at(bias.len()));
            out.push(GroupOffsets { inputs, lin, bias });
        }
        (out, off)
    }
}

/// The forward pass and the reverse gradient recursion at `x` (B rows).
#[derive(Debug)]
pub(crate) struct Primal<T: Real> {
    pub b: usize,
    pub x: Vec<T>,
    pub z: Vec<Vec<T>>,
    /// `s'`, `s''` and the pre-activation `a` of nonlinear groups (empty for the identity;
    /// `s'''` is computed from `a` by [`third_derivatives`] when the adjoint needs it).
    pub s1: Vec<Vec<T>>,
    pub s2: Vec<Vec<T>>,
    pub a: Vec<Vec<T>>,
    /// `∂F/∂z_j`; empty where `F` does not depend on `z_j`.
    pub gu: Vec<Vec<T>>,
    /// `gu_j ⊙ s'_j` (identity: `gu_j`); empty with `gu_j`.
    pub delta: Vec<Vec<T>>,
    /// `∇F` `(B × d)`.
    pub grad: Vec<T>,
    /// `F` `(B,)`.
    pub potential: Vec<T>,
}

/// A linearization's primal arrays go back to the array pool when it is dropped, for the
/// next one's (see [`crate::scratch`]).
impl<T: Real> Drop for Primal<T> {
    fn drop(&mut self) {
        let groups = [
            &mut self.z,
            &mut self.s1,
            &mut self.s2,
            &mut self.a,
            &mut self.gu,
            &mut self.delta,
        ];
        for v in groups.into_iter().flat_map(|g| g.drain(..)) {
            scratch::recycle(v);
        }
        scratch::recycle(std::mem::take(&mut self.x));
        scratch::recycle(std::mem::take(&mut self.grad));
    }
}

/// Forward tangents of stacked directions.
#[derive(Debug)]
pub(crate) struct Tangents<T: Real> {
    pub adot: Vec<Vec<T>>,
    pub zdot: Vec<Vec<T>>,
}

/// Tangents die once per CG iteration: their arrays go back to the array pool for the next
/// iteration's (see [`crate::scratch`]).
impl<T: Real> Drop for Tangents<T> {
    fn drop(&mut self) {
        for v in self.adot.drain(..).chain(self.zdot.drain(..)) {
            scratch::recycle(v);
        }
    }
}

pub(crate) fn rm<T>(data: &[T], rows: usize, cols: usize) -> View<'_, T> {
    View::row_major(data, rows, cols)
}

/// `dst (+)= a · b`, on the calling thread (the training step runs row chunks in parallel).
pub(crate) fn mm<T: Real>(dst: &mut [T], a: View<'_, T>, b: View<'_, T>, acc: bool) -> Result<()> {
    matmul_into(dst, a, b, acc, Par::Seq)
}

/// The forward pass (with `s'`, `s''`, `s'''`) and the reverse gradient recursion.
pub(crate) fn primal<T: Real>(net: &HostNet<T>, x: Vec<T>, b: usize) -> Result<Primal<T>> {
    let x = net.inner_owned(x);
    let (n, d) = (net.groups.len(), net.dim);
    let mut p = Primal {
        b,
        x,
        z: Vec::with_capacity(n),
        s1: Vec::with_capacity(n),
        s2: Vec::with_capacity(n),
        a: Vec::with_capacity(n),
        gu: vec![Vec::new(); n],
        delta: vec![Vec::new(); n],
        grad: scratch::zeroed(b * d),
        potential: vec![T::zero(); b],
    };
    for g in &net.groups {
        let m = g.width;
        let mut a = match &g.bias {
            Some(bias) => host_par::repeated(bias, b * m),
            None => scratch::zeroed(b * m),
        };
        let mut acc = g.bias.is_some();
        for (i, w) in &g.inputs {
            w.apply(&mut a, &p.z[*i], b, acc)?;
            acc = true;
        }
        if let Some(aw) = &g.lin {
            aw.apply(&mut a, &p.x, b, acc)?;
        }
        match &g.act {
            Some(spec) => {
                // Every value is written by `triple_into` below.
                let mut v = scratch::reused(b * m);
                let (mut d1, mut d2) = (scratch::reused(b * m), scratch::reused(b * m));
                host_par::rows3(1, &mut v, &mut d1, &mut d2, |st, v, d1, d2| {
                    T::triple_into(spec, &a[st..st + v.len()], v, d1, d2);
                });
                p.z.push(v);
                p.s1.push(d1);
                p.s2.push(d2);
                p.a.push(a);
            }
            None => {
                p.z.push(a);
                p.s1.push(Vec::new());
                p.s2.push(Vec::new());
                p.a.push(Vec::new());
            }
        }
    }
    for (j, g) in net.groups.iter().enumerate() {
        if let Some(r) = g.readout {
            p.gu[j] = vec![r; b * g.width];
            for (f, row) in p.potential.iter_mut().zip(p.z[j].chunks(g.width)) {
                *f += r * row.iter().fold(T::zero(), |s, &v| s + v);
            }
        }
    }
    let mut grad_set = false;
    for j in (0..n).rev() {
        if p.gu[j].is_empty() {
            continue;
        }
        let g = &net.groups[j];
        let dj = match g.act {
            Some(_) => scaled(&p.gu[j], &p.s1[j], Rows::All, b, g.width),
            None => p.gu[j].clone(),
        };
        for (i, w) in &g.inputs {
            w.adjoint_lazy(&mut p.gu[*i], &dj, b)?;
        }
        if let Some(aw) = &g.lin {
            aw.adjoint(&mut p.grad, &dj, b, grad_set)?;
            grad_set = true;
        }
        p.delta[j] = dj;
    }
    p.grad = net.outer(std::mem::take(&mut p.grad));
    Ok(p)
}

/// `s'''(a_j)` of every nonlinear group (empty for the identity).
pub(crate) fn third_derivatives<T: Real>(net: &HostNet<T>, p: &Primal<T>) -> Vec<Vec<T>> {
    net.groups
        .iter()
        .zip(&p.a)
        .map(|(g, a)| match &g.act {
            Some(spec) => host_par::filled(a.len(), |st, out| {
                T::derivative_into(spec, 3, &a[st..st + out.len()], out);
            }),
            None => Vec::new(),
        })
        .collect()
}

/// Forward tangents of `k` directions stacked as `t` (`k·B × d`).
pub(crate) fn tangents<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    t: &[T],
    k: usize,
) -> Result<Tangents<T>> {
    tangents_on(net, p, t, k, Rows::All)
}

/// [`tangents`] of one direction per row of `rows` (`t`: those rows, in that order).
pub(crate) fn tangents_on<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    t: &[T],
    k: usize,
    on: Rows<'_>,
) -> Result<Tangents<T>> {
    let t = &*net.inner(t);
    let (n, rows) = (net.groups.len(), k * on.count(p.b));
    let mut tg = Tangents {
        adot: Vec::with_capacity(n),
        zdot: Vec::with_capacity(n),
    };
    for (j, g) in net.groups.iter().enumerate() {
        let m = g.width;
        // Overwritten by the first product below (unread when there is none).
        let mut a = scratch::reused(rows * m);
        let mut acc = false;
        for (i, w) in &g.inputs {
            if tg.zdot[*i].is_empty() {
                continue;
            }
            w.apply(&mut a, &tg.zdot[*i], rows, acc)?;
            acc = true;
        }
        if let Some(aw) = &g.lin {
            aw.apply(&mut a, t, rows, acc)?;
            acc = true;
        }
        if !acc {
            scratch::recycle(a);
            tg.adot.push(Vec::new());
            tg.zdot.push(Vec::new());
            continue;
        }
        let zd = match g.act {
            Some(_) => scaled(&a, &p.s1[j], on, p.b, m),
            None => a.clone(),
        };
        tg.adot.push(a);
        tg.zdot.push(zd);
    }
    Ok(tg)
}

/// `∇²F(x_b) w_b` for `w` `(B × d)`.
pub(crate) fn hvp<T: Real>(net: &HostNet<T>, p: &Primal<T>, w: &[T]) -> Result<Vec<T>> {
    hvp_from_tangents(net, p, &tangents(net, p, w, 1)?)
}

/// `∇²F(x_b) w_b` from the forward tangents `tg` of `w` (one direction per row).
pub(crate) fn hvp_from_tangents<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    tg: &Tangents<T>,
) -> Result<Vec<T>> {
    hvp_from_tangents_on(net, p, tg, Rows::All)
}

/// [`hvp_from_tangents`] on the rows `on` (`tg` from [`tangents_on`] with the same rows; the
/// result has those rows, in that order).
pub(crate) fn hvp_from_tangents_on<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    tg: &Tangents<T>,
    on: Rows<'_>,
) -> Result<Vec<T>> {
    let (n, d, b) = (net.groups.len(), net.dim, on.count(p.b));
    let mut gdot: Vec<Vec<T>> = vec![Vec::new(); n];
    let mut hv = scratch::zeroed(b * d);
    let mut hv_set = false;
    for j in (0..n).rev() {
        let g = &net.groups[j];
        let dd: Vec<T> = match g.act {
            Some(_) => {
                let curv = !tg.adot[j].is_empty() && !p.gu[j].is_empty();
                let back = !gdot[j].is_empty();
                let m = g.width;
                let (s1, gu, s2, ad) = (&p.s1[j], &p.gu[j], &p.s2[j], &tg.adot[j]);
                match (back, curv) {
                    (false, false) => continue,
                    (true, false) => scaled(&gdot[j], s1, on, p.b, m),
                    (false, true) => curvature([gu, s2, ad], on, p.b, m),
                    (true, true) => curvature_and_back([&gdot[j], s1, gu, s2, ad], on, p.b, m),
                }
            }
            None => {
                if gdot[j].is_empty() {
                    continue;
                }
                std::mem::take(&mut gdot[j])
            }
        };
        for (i, w) in &g.inputs {
            w.adjoint_lazy(&mut gdot[*i], &dd, b)?;
        }
        if let Some(aw) = &g.lin {
            aw.adjoint(&mut hv, &dd, b, hv_set)?;
            hv_set = true;
        }
        scratch::recycle(dd);
    }
    gdot.into_iter().for_each(scratch::recycle);
    Ok(net.outer(hv))
}

/// `q_b = u_bᵀ∇²F(x_b) v_b` from the tangents of the stacked `[u; v]`.
pub(crate) fn bilinear<T: Real>(net: &HostNet<T>, p: &Primal<T>, tg: &Tangents<T>) -> Vec<T> {
    let b = p.b;
    let terms: Vec<(usize, usize)> = net
        .groups
        .iter()
        .enumerate()
        .filter(|(j, g)| g.act.is_some() && !tg.adot[*j].is_empty() && !p.gu[*j].is_empty())
        .map(|(j, g)| (j, g.width))
        .collect();
    // q_r sums the groups in order, whichever thread computes row r.
    let row = |r: usize| {
        let mut q = T::zero();
        for &(j, m) in &terms {
            let (au, av) = tg.adot[j].split_at(b * m);
            let k = r * m..(r + 1) * m;
            let mut s = T::zero();
            for (((&g, &c), &x), &y) in p.gu[j][k.clone()]
                .iter()
                .zip(&p.s2[j][k.clone()])
                .zip(&au[k.clone()])
                .zip(&av[k])
            {
                s += g * c * x * y;
            }
            q += s;
        }
        q
    };
    let work: usize = terms.iter().map(|(_, m)| b * m).sum();
    if host_par::is_large(work) {
        use rayon::prelude::*;
        (0..b).into_par_iter().map(row).collect()
    } else {
        (0..b).map(row).collect()
    }
}
