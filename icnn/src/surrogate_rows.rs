//! The per-row element-wise steps of the surrogate adjoint (`surrogate_adjoint`), compiled for
//! AVX2 + FMA where the CPU has them (`wide_simd`). Each takes one row of `m` values of every
//! operand as a slice (an empty slice: the operand is absent), so the loops have no bounds
//! checks and vectorise; the arithmetic is the same expression, term for term, as the
//! recursions in `surrogate_adjoint`'s docs.

use std::ops::Range;

use crate::surrogate_host::Real;
use crate::wide_simd::avx2_fma_fn;

avx2_fma_fn! {
    /// Step 1 of the adjoint, one row: `ḡu = w s'' (ȧ^u ⊙ ȧ^v) + s' δ̄` into `g` and the
    /// direct term `E = s'' gu δ̄ + w gu s''' (ȧ^u ⊙ ȧ^v)` into `e`, from the rows
    /// `operands = [s', s'', s''', gu, δ̄]` and `tangents = [ȧ^u, ȧ^v]` (empty: no tangents,
    /// the `w` terms vanish).
    pub(crate) fn gradient_adjoint_row<T: Real>(
        g: &mut [T],
        e: &mut [T],
        w: T,
        operands: [&[T]; 5],
        tangents: [&[T]; 2],
    ) {
        let ([s1, s2, s3, gu, dbar], [au, av]) = (operands, tangents);
        let m = g.len();
        let (e, s1, s2, gu, dbar) = (&mut e[..m], &s1[..m], &s2[..m], &gu[..m], &dbar[..m]);
        if au.is_empty() {
            for t in 0..m {
                g[t] = s1[t] * dbar[t];
                e[t] = s2[t] * gu[t] * dbar[t];
            }
        } else {
            let (s3, au, av) = (&s3[..m], &au[..m], &av[..m]);
            for t in 0..m {
                let aa = au[t] * av[t];
                g[t] = w * s2[t] * aa + s1[t] * dbar[t];
                e[t] = s2[t] * gu[t] * dbar[t] + w * gu[t] * s3[t] * aa;
            }
        }
    }
}

avx2_fma_fn! {
    /// Step 2 of the adjoint, one row of one tangent (`u` or `v`): `ā^t = w gu s'' ȧ^{t'} +
    /// s' ρ^t` into `out` (`t'` the other tangent), and `E += s'' ρ^t ȧ^t` (step 3's direct
    /// term) into `e`, from the rows `operands = [s', s'', gu, ȧ^{t'}, ȧ^t, ρ^t]`. `gu`
    /// empty: no curvature term; `ρ^t` empty: no `ρ` terms; `ȧ^t` empty: no `E` update.
    pub(crate) fn tangent_adjoint_row<T: Real>(
        out: &mut [T],
        e: &mut [T],
        w: T,
        operands: [&[T]; 6],
    ) {
        let [s1, s2, gu, ad_other, ad, rho] = operands;
        let m = out.len();
        if gu.is_empty() {
            out.fill(T::zero());
        } else {
            let (s2, gu, ad_other) = (&s2[..m], &gu[..m], &ad_other[..m]);
            for t in 0..m {
                out[t] = w * gu[t] * s2[t] * ad_other[t];
            }
        }
        if !rho.is_empty() {
            let (s1, rho) = (&s1[..m], &rho[..m]);
            for t in 0..m {
                out[t] += s1[t] * rho[t];
            }
            if !ad.is_empty() {
                let (e, s2, ad) = (&mut e[..m], &s2[..m], &ad[..m]);
                for t in 0..m {
                    e[t] += s2[t] * rho[t] * ad[t];
                }
            }
        }
    }
}

/// `v[range]`, or the empty slice when `v` is empty (an absent operand).
pub(crate) fn row_of<T>(v: &[T], range: Range<usize>) -> &[T] {
    if v.is_empty() { &[] } else { &v[range] }
}
