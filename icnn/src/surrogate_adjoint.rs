//! The hand-written adjoint of the host surrogate kernels (`surrogate_host`): the gradients of
//! `J = Σ_b ⟨c_b, ∇F(x_b)⟩ + w_b u_bᵀ∇²F(x_b) v_b` with respect to the prepared parameters and
//! `x`, in the notation of `surrogate_host`.
//!
//! It runs three recursions:
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

use candle_core::Result;

use crate::host_par;
use crate::scratch;
use crate::surrogate_host::{HostNet, Primal, Real, Tangents};
use crate::surrogate_rows::{gradient_adjoint_row, row_of, tangent_adjoint_row};

/// The adjoint of `J = Σ_b ⟨c_b, ∇F(x_b)⟩ + w_b u_bᵀ∇²F(x_b) v_b`: `(∂J/∂x (B × d), ∂J/∂θ
/// packed)`. `uv` is the stacked `[u; v]` whose tangents are `tg`; `s3` from
/// [`crate::surrogate_host::third_derivatives`].
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

    // 1. Ascending: δ̄_j, ḡu_j and the δ̄-terms of E_j; P̄ += δᵀ ḡu, Ā += δᵀ c.
    let mut gbar: Vec<Vec<T>> = vec![Vec::new(); n];
    let mut e: Vec<Vec<T>> = vec![Vec::new(); n];
    for (j, g) in net.groups.iter().enumerate() {
        if p.delta[j].is_empty() {
            continue;
        }
        let m = g.width;
        let dj = &p.delta[j];
        let mut dbar = scratch::zeroed(b * m);
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
        // `gradient_adjoint_row` writes every value of both.
        let mut gb = scratch::reused(b * m);
        let mut ej = scratch::reused(b * m);
        let has_t = !tg.adot[j].is_empty();
        host_par::rows2(m, &mut gb, &mut ej, |r0, gb, ej| {
            for (r, (gb, ej)) in gb.chunks_mut(m).zip(ej.chunks_mut(m)).enumerate() {
                let (wr, k) = (w[r0 + r], (r0 + r) * m..(r0 + r + 1) * m);
                let tangents = if has_t {
                    let (au, av) = tg.adot[j].split_at(b * m);
                    [row_of(au, k.clone()), row_of(av, k.clone())]
                } else {
                    [&[][..], &[][..]]
                };
                let operands = [s1, s2, s3, gu, &dbar].map(|v| row_of(v, k.clone()));
                gradient_adjoint_row(gb, ej, wr, operands, tangents);
            }
        });
        scratch::recycle(dbar);
        gbar[j] = gb;
        e[j] = ej;
    }

    // 2 + 3. Descending: tangent adjoints ā^{uv} and primal adjoints ā.
    let mut xbar = scratch::zeroed(b * d);
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
        scratch::recycle(auv);
        scratch::recycle(abar);
    }
    for v in [gbar, e, rho, zbar].into_iter().flatten() {
        scratch::recycle(v);
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
    let b = p.b;
    let bm = b * m;
    let (s1, s2) = (&p.s1[j], &p.s2[j]);
    let ad = &tg.adot[j];
    let curv = !ad.is_empty() && !p.gu[j].is_empty();
    let has_rho = !rho.is_empty();
    let mut e = if e.is_empty() { scratch::zeroed(bm) } else { e };
    let auv = if curv || has_rho {
        // `tangent_adjoint_row` writes every value of `out` (it accumulates into `e`).
        let mut out = scratch::reused(2 * bm);
        let (out_u, out_v) = out.split_at_mut(bm);
        host_par::rows3(m, out_u, out_v, &mut e, |r0, ou, ov, e| {
            for (h, out) in [ou, ov].into_iter().enumerate() {
                for (r, (orow, erow)) in out.chunks_mut(m).zip(e.chunks_mut(m)).enumerate() {
                    let (wr, k) = (w[r0 + r], (r0 + r) * m..(r0 + r + 1) * m);
                    // Rows of the tangent `h` and of the other one in the stacked `[u; v]`.
                    let part = |t: usize| t * bm + k.start..t * bm + k.end;
                    let gu_row = if curv { &p.gu[j][k.clone()] } else { &[][..] };
                    let operands = [
                        &s1[k.clone()],
                        &s2[k.clone()],
                        gu_row,
                        row_of(ad, part(1 - h)),
                        row_of(ad, part(h)),
                        row_of(&rho, part(h)),
                    ];
                    tangent_adjoint_row(orow, erow, wr, operands);
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
    scratch::recycle(rho);
    scratch::recycle(zbar);
    (auv, e)
}
