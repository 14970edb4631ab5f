//! Host kernels of the CG-surrogate training step for group networks whose links are dense
//! matrices or convolutions (`host_link`; no gates, no context): the forward pass with its derivative caches, the reverse gradient recursion,
//! Hessian-vector products, the bilinear form `uᵀ∇²F v` and the hand-written adjoint of
//! `J = Σ_b ⟨c_b, ∇F(x_b)⟩ + w_b u_bᵀ∇²F(x_b) v_b` with respect to the prepared parameters
//! and `x` (what candle's backward would compute through the composed recursions, without
//! its graph: every product writes into a caller-owned buffer, every element-wise step is
//! one pass).
//!
//! Notation (see `network.rs`): group `j` computes `a_j = Σ_i z_i P_jiᵀ + x A_jᵀ + b_j`,
//! `z_j = s_j(a_j)` (written for dense links; a convolution `P` acts on each row as its
//! matrix does, see `host_link`); `F = Σ_{readout j} r_j Σ z_j` (the dense networks: the
//! last group, one unit, `r = 1`); `gu_j = ∂F/∂z_j`, `δ_j = gu_j ⊙ s'_j`,
//! `∇F = Σ_j δ_j A_j`. With the
//! forward tangents `ȧ_j^t = J_j t` (`J_j = ∂a_j/∂x`) the Hessian is
//! `∇²F = Σ_j J_jᵀ diag(gu_j ⊙ s''_j) J_j`, so `uᵀ∇²F v = Σ_j ⟨gu_j ⊙ s''_j, ȧ_j^u ⊙ ȧ_j^v⟩`.
//! The adjoint runs three recursions:
//! 1. ascending (the adjoint of the reverse gradient recursion, linear in `gu`):
//!    `δ̄_j = c A_jᵀ + Σ_i ḡu_i P_jiᵀ`, `ḡu_j = w ⊙ s''_j ⊙ ȧ_j^u ⊙ ȧ_j^v + s'_j ⊙ δ̄_j`;
//! 2. descending, the adjoint of the tangent recursions (`ρ_j^t = Σ_k ā_k^t P_kj`,
//!    `ā_j^u = w ⊙ gu_j ⊙ s''_j ⊙ ȧ_j^v + s'_j ⊙ ρ_j^u`, likewise for `v`);
//! 3. descending with 2, the adjoint of the forward pass, `ā_j = E_j + s'_j ⊙ Σ_k ā_k P_kj`
//!    with the direct terms `E_j = s''_j ⊙ (gu_j ⊙ δ̄_j + ρ_j^u ⊙ ȧ_j^u + ρ_j^v ⊙ ȧ_j^v)
//!    + w ⊙ gu_j ⊙ s'''_j ⊙ ȧ_j^u ⊙ ȧ_j^v`.
//!
//! Parameter gradients: `P̄_ji = ā_jᵀ z_i + ā_j^{uv}ᵀ ż_i^{uv} + δ_jᵀ ḡu_i`,
//! `Ā_j = ā_jᵀ x + ā_j^{uv}ᵀ [u; v] + δ_jᵀ c`, `b̄_j = Σ_rows ā_j`; `x̄ = Σ_j ā_j A_j`.
//! The `u` and `v` directions are stacked as one `(2B, ·)` matrix in every tangent product.

use candle_core::Result;

use crate::fused::{ActKernels, ActSpec};
use crate::host_gemm::{GemmFloat, Par, View, matmul_into};
use crate::host_link::{ChannelLast, Link};
use crate::host_par;

/// Element types of the host surrogate kernels.
pub(crate) trait Real: GemmFloat + ActKernels + Default {}
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
    fn inner<'a>(&self, rows: &'a [T]) -> std::borrow::Cow<'a, [T]> {
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
    fn outer(&self, rows: Vec<T>) -> Vec<T> {
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
pub(crate) struct Primal<T> {
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

/// Forward tangents of stacked directions.
#[derive(Debug)]
pub(crate) struct Tangents<T> {
    pub adot: Vec<Vec<T>>,
    pub zdot: Vec<Vec<T>>,
}

pub(crate) fn rm<T>(data: &[T], rows: usize, cols: usize) -> View<'_, T> {
    View::row_major(data, rows, cols)
}

/// `dst (+)= a · b`, on the calling thread (the training step runs row chunks in parallel).
pub(crate) fn mm<T: Real>(dst: &mut [T], a: View<'_, T>, b: View<'_, T>, acc: bool) -> Result<()> {
    matmul_into(dst, a, b, acc, Par::Seq)
}

/// `a ⊙ s` with `s` repeated over the stacked copies in `a`.
pub(crate) fn mul_rep<T: Real>(a: &[T], s: &[T]) -> Vec<T> {
    let n = s.len().max(1);
    host_par::filled(a.len(), |start, out| {
        let mut j = start % n;
        for (o, &x) in out.iter_mut().zip(&a[start..]) {
            *o = x * s[j];
            j += 1;
            if j == n {
                j = 0;
            }
        }
    })
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
        grad: vec![T::zero(); b * d],
        potential: vec![T::zero(); b],
    };
    for g in &net.groups {
        let m = g.width;
        let mut a = match &g.bias {
            Some(bias) => bias.repeat(b * m / bias.len().max(1)),
            None => vec![T::zero(); b * m],
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
                let mut v = vec![T::zero(); b * m];
                let (mut d1, mut d2) = (v.clone(), v.clone());
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
            Some(_) => mul_rep(&p.gu[j], &p.s1[j]),
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
                T::third_into(spec, &a[st..st + out.len()], out);
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
    let t = &*net.inner(t);
    let (n, rows) = (net.groups.len(), k * p.b);
    let mut tg = Tangents {
        adot: Vec::with_capacity(n),
        zdot: Vec::with_capacity(n),
    };
    for (j, g) in net.groups.iter().enumerate() {
        let m = g.width;
        let mut a = vec![T::zero(); rows * m];
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
            tg.adot.push(Vec::new());
            tg.zdot.push(Vec::new());
            continue;
        }
        let zd = match g.act {
            Some(_) => mul_rep(&a, &p.s1[j]),
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
    let (n, d, b) = (net.groups.len(), net.dim, p.b);
    let mut gdot: Vec<Vec<T>> = vec![Vec::new(); n];
    let mut hv = vec![T::zero(); b * d];
    let mut hv_set = false;
    for j in (0..n).rev() {
        let g = &net.groups[j];
        let dd: Vec<T> = match g.act {
            Some(_) => {
                let curv = !tg.adot[j].is_empty() && !p.gu[j].is_empty();
                let back = !gdot[j].is_empty();
                match (back, curv) {
                    (false, false) => continue,
                    (true, false) => mul_rep(&gdot[j], &p.s1[j]),
                    (false, true) => {
                        let (gu, s2, ad) = (&p.gu[j], &p.s2[j], &tg.adot[j]);
                        host_par::filled(gu.len(), |st, out| {
                            let r = st..st + out.len();
                            for (o, ((&g, &s), &a)) in out
                                .iter_mut()
                                .zip(gu[r.clone()].iter().zip(&s2[r.clone()]).zip(&ad[r]))
                            {
                                *o = g * s * a;
                            }
                        })
                    }
                    (true, true) => {
                        let (gd, s1) = (&gdot[j], &p.s1[j]);
                        let (gu, s2, ad) = (&p.gu[j], &p.s2[j], &tg.adot[j]);
                        host_par::filled(gu.len(), |st, out| {
                            let r = st..st + out.len();
                            let first = gd[r.clone()].iter().zip(&s1[r.clone()]);
                            let second = gu[r.clone()].iter().zip(&s2[r.clone()]).zip(&ad[r]);
                            for (o, ((&gd, &s1), ((&g, &s2), &a))) in
                                out.iter_mut().zip(first.zip(second))
                            {
                                *o = gd * s1 + g * s2 * a;
                            }
                        })
                    }
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
    }
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

/// The adjoint of `J = Σ_b ⟨c_b, ∇F(x_b)⟩ + w_b u_bᵀ∇²F(x_b) v_b`: `(∂J/∂x (B × d), ∂J/∂θ
/// packed)`. `uv` is the stacked `[u; v]` whose tangents are `tg`; `s3` from
/// [`third_derivatives`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn adjoint<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    tg: &Tangents<T>,
    s3: &[Vec<T>],
    uv: &[T],
    c: &[T],
    w: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    let (uv, c) = (&*net.inner(uv), &*net.inner(c));
    let (n, d, b) = (net.groups.len(), net.dim, p.b);
    let (offs, len) = net.offsets();
    let mut pg = vec![T::zero(); len];
    let zero = T::zero();

    // 1. Ascending: δ̄_j, ḡu_j and the δ̄-terms of E_j; P̄ += δᵀ ḡu, Ā += δᵀ c.
    let mut gbar: Vec<Vec<T>> = vec![Vec::new(); n];
    let mut e: Vec<Vec<T>> = vec![Vec::new(); n];
    for (j, g) in net.groups.iter().enumerate() {
        if p.delta[j].is_empty() {
            continue;
        }
        let m = g.width;
        let dj = &p.delta[j];
        let mut dbar = vec![zero; b * m];
        let mut set = false;
        if let (Some(aw), Some(o)) = (&g.lin, offs[j].lin) {
            aw.apply(&mut dbar, c, b, false)?;
            set = true;
            aw.param_grad(&mut pg[o..], dj, c, b)?;
        }
        for ((i, wt), &o) in g.inputs.iter().zip(&offs[j].inputs) {
            if gbar[*i].is_empty() {
                continue;
            }
            wt.apply(&mut dbar, &gbar[*i], b, set)?;
            set = true;
            wt.param_grad(&mut pg[o..], dj, &gbar[*i], b)?;
        }
        if g.act.is_none() {
            if set {
                gbar[j] = dbar;
            }
            continue;
        }
        let (s1, s2, s3, gu) = (&p.s1[j], &p.s2[j], &s3[j], &p.gu[j]);
        let mut gb = vec![zero; b * m];
        let mut ej = vec![zero; b * m];
        let has_t = !tg.adot[j].is_empty();
        host_par::rows2(m, &mut gb, &mut ej, |r0, gb, ej| {
            let k0 = r0 * m;
            for (i, (g_out, e_out)) in gb.iter_mut().zip(ej.iter_mut()).enumerate() {
                let (k, wr) = (k0 + i, w[r0 + i / m]);
                let (mut q, mut e3) = (zero, zero);
                if has_t {
                    let aa = tg.adot[j][k] * tg.adot[j][b * m + k];
                    q = wr * s2[k] * aa;
                    e3 = wr * gu[k] * s3[k] * aa;
                }
                *g_out = q + s1[k] * dbar[k];
                *e_out = s2[k] * gu[k] * dbar[k] + e3;
            }
        });
        gbar[j] = gb;
        e[j] = ej;
    }

    // 2 + 3. Descending: tangent adjoints ā^{uv} and primal adjoints ā.
    let mut xbar = vec![zero; b * d];
    let mut xbar_set = false;
    let mut rho: Vec<Vec<T>> = vec![Vec::new(); n];
    let mut zbar: Vec<Vec<T>> = vec![Vec::new(); n];
    for j in (0..n).rev() {
        let g = &net.groups[j];
        let m = g.width;
        let (auv, abar) = match g.act {
            Some(_) => tracked_layer_adjoint(
                p,
                tg,
                j,
                m,
                w,
                std::mem::take(&mut rho[j]),
                std::mem::take(&mut zbar[j]),
                std::mem::take(&mut e[j]),
            ),
            None => (std::mem::take(&mut rho[j]), std::mem::take(&mut zbar[j])),
        };
        for ((i, wt), &o) in g.inputs.iter().zip(&offs[j].inputs) {
            if !auv.is_empty() {
                wt.adjoint_lazy(&mut rho[*i], &auv, 2 * b)?;
                if !tg.zdot[*i].is_empty() {
                    wt.param_grad(&mut pg[o..], &auv, &tg.zdot[*i], 2 * b)?;
                }
            }
            if !abar.is_empty() {
                wt.adjoint_lazy(&mut zbar[*i], &abar, b)?;
                wt.param_grad(&mut pg[o..], &abar, &p.z[*i], b)?;
            }
        }
        if let (Some(aw), Some(o)) = (&g.lin, offs[j].lin) {
            if !auv.is_empty() {
                aw.param_grad(&mut pg[o..], &auv, uv, 2 * b)?;
            }
            if !abar.is_empty() {
                aw.param_grad(&mut pg[o..], &abar, &p.x, b)?;
                aw.adjoint(&mut xbar, &abar, b, xbar_set)?;
                xbar_set = true;
            }
        }
        if let (Some(o), false) = (offs[j].bias, abar.is_empty()) {
            let nb = g.bias.as_ref().map_or(1, |bias| bias.len().max(1));
            let bb = &mut pg[o..o + nb];
            for seg in abar.chunks(nb) {
                for (t, &v) in bb.iter_mut().zip(seg) {
                    *t += v;
                }
            }
        }
    }
    Ok((net.outer(xbar), pg))
}

/// `(ā_j^{uv}, ā_j)` of a nonlinear group from its accumulated `ρ_j` (2B × m), `z̄_j`
/// (B × m) and direct terms `E_j` (each possibly empty = zero).
#[allow(clippy::too_many_arguments)]
fn tracked_layer_adjoint<T: Real>(
    p: &Primal<T>,
    tg: &Tangents<T>,
    j: usize,
    m: usize,
    w: &[T],
    rho: Vec<T>,
    zbar: Vec<T>,
    e: Vec<T>,
) -> (Vec<T>, Vec<T>) {
    let (b, zero) = (p.b, T::zero());
    let bm = b * m;
    let (s1, s2) = (&p.s1[j], &p.s2[j]);
    let ad = &tg.adot[j];
    let curv = !ad.is_empty() && !p.gu[j].is_empty();
    let has_rho = !rho.is_empty();
    let mut e = if e.is_empty() { vec![zero; bm] } else { e };
    let auv = if curv || has_rho {
        let mut out = vec![zero; 2 * bm];
        let (out_u, out_v) = out.split_at_mut(bm);
        host_par::rows3(m, out_u, out_v, &mut e, |r0, ou, ov, e| {
            let k0 = r0 * m;
            for (i, ((ou, ov), e)) in ou.iter_mut().zip(ov.iter_mut()).zip(e).enumerate() {
                let (k, wr) = (k0 + i, w[r0 + i / m]);
                for (h, o) in [ou, ov].into_iter().enumerate() {
                    let mut v = zero;
                    if curv {
                        v += wr * p.gu[j][k] * s2[k] * ad[(1 - h) * bm + k];
                    }
                    if has_rho {
                        let rh = rho[h * bm + k];
                        v += s1[k] * rh;
                        if !ad.is_empty() {
                            *e += s2[k] * rh * ad[h * bm + k];
                        }
                    }
                    *o = v;
                }
            }
        });
        out
    } else {
        Vec::new()
    };
    if !zbar.is_empty() {
        host_par::rows1(1, &mut e, |st, e| {
            for ((ek, &s), &zb) in e.iter_mut().zip(&s1[st..]).zip(&zbar[st..]) {
                *ek += s * zb;
            }
        });
    }
    (auv, e)
}
