//! Hessian-vector products on the rows that are still *active*: a batched CG solve freezes
//! each system when it converges, and its operator is told which systems it still needs
//! (`krylov::BatchOperator::apply(x, active)`). The host kernels then run the network's
//! tangent and adjoint passes on those rows only ([`Rows::Listed`]): the products take the
//! listed rows of the direction, and the element-wise steps read the forward pass's caches
//! (`s'`, `s''`, `∂F/∂z`) at the listed rows in place (no copy of the caches). The results are
//! scattered back with zeros in the frozen rows.
//!
//! Late in image-flow training the systems of a batch need very different numbers of
//! iterations (the MNIST CPU run: 17.5 per image on average, 39 for the slowest image of a
//! step), so products over the whole batch until its slowest system converges (the
//! reference's CG) do about twice the work.
//!
//! The element-wise steps ([`scaled`], [`curvature`], [`curvature_and_back`]) are one kernel
//! for every kind of pass: a pass over all rows ([`Rows::All`], possibly `k` stacked
//! directions over one batch) and a pass over listed rows differ only in which row of the
//! batch's caches a row of the pass reads, and both go through [`rowwise`] in runs of rows
//! that are consecutive in both.

use std::ops::Range;

use crate::error::{IcnnError, Result};
use crate::host_par;
use crate::scratch;
use crate::surrogate_host::{HostNet, Primal, Real, Tangents, hvp_from_tangents_on, tangents_on};
use crate::wide_simd::avx2_fma_fn;

/// The rows of a batch a pass runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows<'a> {
    /// All `B` rows (row `k` of a pass over `k·B` stacked rows reads row `k mod B`).
    All,
    /// These rows (increasing), in this order: row `k` of the pass is row `idx[k]` of the
    /// batch.
    Listed(&'a [usize]),
}

impl Rows<'_> {
    /// The number of rows of a pass over a batch of `b`.
    pub(crate) fn count(&self, b: usize) -> usize {
        match self {
            Rows::All => b,
            Rows::Listed(idx) => idx.len(),
        }
    }

    /// `f(first pass row, first batch row, rows)` for the pass rows `rows` of a batch of `b`,
    /// in maximal runs whose batch rows are consecutive.
    fn for_each_run(&self, rows: Range<usize>, b: usize, mut f: impl FnMut(usize, usize, usize)) {
        let mut k = rows.start;
        while k < rows.end {
            let (i0, n) = match self {
                Rows::All => {
                    let i0 = k % b.max(1);
                    (i0, (b - i0).min(rows.end - k))
                }
                Rows::Listed(idx) => {
                    let i0 = idx[k];
                    let mut n = 1;
                    while k + n < rows.end && idx[k + n] == i0 + n {
                        n += 1;
                    }
                    (i0, n)
                }
            };
            f(k, i0, n);
            k += n;
        }
    }
}

/// The indices of the active rows, or `None` when every row is active.
///
/// # Errors
/// When `active` does not have one entry per row.
pub(crate) fn active_indices(active: &[bool], batch: usize) -> Result<Option<Vec<usize>>> {
    if active.len() != batch {
        return Err(IcnnError::Shape(format!(
            "active rows: {} flags for a batch of {batch}",
            active.len()
        )));
    }
    if active.iter().all(|a| *a) {
        return Ok(None);
    }
    Ok(Some((0..batch).filter(|&i| active[i]).collect()))
}

/// `rows` rows of `m` values of a pass over `on` of a batch of `b` rows: `fill(out, pass
/// values, batch values)` writes the values of a run of rows into `out`, given the run's
/// value ranges in the pass's arrays and in the batch's. An array of the pool (no zero
/// fill), written on the calling thread when small, in chunks of whole rows over the pool
/// otherwise; the same values either way.
fn rowwise<T: Real>(
    on: Rows<'_>,
    b: usize,
    rows: usize,
    m: usize,
    fill: impl Fn(&mut [T], Range<usize>, Range<usize>) + Sync,
) -> Vec<T> {
    // Every value is written below: the runs cover each chunk's rows.
    let mut out = scratch::reused(rows * m);
    if out.is_empty() {
        return out;
    }
    host_par::rows1(m, &mut out, |r0, chunk| {
        let mut o = 0;
        on.for_each_run(r0..r0 + chunk.len() / m, b, |k, i, n| {
            let (pass, batch) = (k * m..(k + n) * m, i * m..(i + n) * m);
            fill(&mut chunk[o..o + n * m], pass, batch);
            o += n * m;
        });
    });
    out
}

avx2_fma_fn! {
    /// `out = a ⊙ s`.
    fn scale_into<T: Real>(out: &mut [T], a: &[T], s: &[T]) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(s) {
            *o = x * y;
        }
    }
}

avx2_fma_fn! {
    /// `out = (gu ⊙ s'') ⊙ ȧ`.
    fn curvature_into<T: Real>(out: &mut [T], gu: &[T], s2: &[T], ad: &[T]) {
        for (((o, &g), &s), &a) in out.iter_mut().zip(gu).zip(s2).zip(ad) {
            *o = g * s * a;
        }
    }
}

avx2_fma_fn! {
    /// `out = ġ ⊙ s' + (gu ⊙ s'') ⊙ ȧ` from `[ġ, s', gu, s'', ȧ]` (no fused multiply-add: the
    /// values of the baseline build).
    fn curvature_and_back_into<T: Real>(out: &mut [T], operands: [&[T]; 5]) {
        let [gd, s1, gu, s2, ad] = operands;
        let n = out.len();
        let (gd, s1, gu, s2, ad) = (&gd[..n], &s1[..n], &gu[..n], &s2[..n], &ad[..n]);
        for j in 0..n {
            out[j] = gd[j] * s1[j] + gu[j] * s2[j] * ad[j];
        }
    }
}

/// The rows `idx` of the row-major `src` (`m` values per row), in that order.
pub(crate) fn gather_rows<T: Real>(src: &[T], idx: &[usize], m: usize) -> Vec<T> {
    let b = src.len() / m.max(1);
    rowwise(Rows::Listed(idx), b, idx.len(), m, |out, _, i| {
        out.copy_from_slice(&src[i]);
    })
}

/// `rows` rows of `m` values: row `idx[k]` is row `k` of `src`, every other row zero.
pub(crate) fn scatter_rows<T: Real>(src: &[T], idx: &[usize], m: usize, rows: usize) -> Vec<T> {
    let mut out = host_par::zeros(rows * m);
    // Row `i` of `out` reads row `pos[i]` of `src` (none for a frozen row).
    let mut pos = vec![usize::MAX; rows];
    for (k, &i) in idx.iter().enumerate() {
        pos[i] = k;
    }
    host_par::rows1(m, &mut out, |r0, chunk| {
        for (row, &k) in chunk.chunks_exact_mut(m).zip(&pos[r0..]) {
            if k != usize::MAX {
                row.copy_from_slice(&src[k * m..(k + 1) * m]);
            }
        }
    });
    out
}

/// `a ⊙ s` row by row over the pass `on` (`a`: the pass's rows of `m` values; `s`: the
/// batch's `b` rows).
pub(crate) fn scaled<T: Real>(a: &[T], s: &[T], on: Rows<'_>, b: usize, m: usize) -> Vec<T> {
    rowwise(on, b, a.len() / m.max(1), m, |out, k, i| {
        scale_into(out, &a[k], &s[i]);
    })
}

/// `gu ⊙ s'' ⊙ ȧ` row by row over the pass `on` (`ȧ`: the pass's rows; `gu`, `s''`: the
/// batch's `b` rows of `m` values).
pub(crate) fn curvature<T: Real>(
    [gu, s2, ad]: [&[T]; 3],
    on: Rows<'_>,
    b: usize,
    m: usize,
) -> Vec<T> {
    rowwise(on, b, ad.len() / m.max(1), m, |out, k, i| {
        curvature_into(out, &gu[i.clone()], &s2[i], &ad[k]);
    })
}

/// `ġ ⊙ s' + gu ⊙ s'' ⊙ ȧ` row by row over the pass `on`, from `[ġ, s', gu, s'', ȧ]` (`ġ`,
/// `ȧ`: the pass's rows; the others: the batch's `b` rows of `m` values).
pub(crate) fn curvature_and_back<T: Real>(
    [gd, s1, gu, s2, ad]: [&[T]; 5],
    on: Rows<'_>,
    b: usize,
    m: usize,
) -> Vec<T> {
    rowwise(on, b, ad.len() / m.max(1), m, |out, k, i| {
        let operands = [
            &gd[k.clone()],
            &s1[i.clone()],
            &gu[i.clone()],
            &s2[i],
            &ad[k],
        ];
        curvature_and_back_into(out, operands);
    })
}

/// `(∇²F(x_b) w_b (B × d), the tangents of w on the listed rows)` on the rows `idx` (not
/// empty) of the batch, the products zero in the other rows; `w` `(B × d)` in the caller's
/// order.
pub(crate) fn hvp_on_rows<T: Real>(
    net: &HostNet<T>,
    p: &Primal<T>,
    w: &[T],
    idx: &[usize],
) -> Result<(Vec<T>, Tangents<T>)> {
    let (d, on) = (net.dim, Rows::Listed(idx));
    let tg = tangents_on(net, p, &gather_rows(w, idx, d), 1, on)?;
    let hv = hvp_from_tangents_on(net, p, &tg, on)?;
    Ok((scatter_rows(&hv, idx, d, p.b), tg))
}

/// The tangents `ȧ_j` of [`hvp_on_rows`] per group on all `rows` of the batch (`B × m_j`),
/// zero in the rows not listed.
pub(crate) fn scattered_tangents<T: Real>(
    net: &HostNet<T>,
    tg: &Tangents<T>,
    idx: &[usize],
    rows: usize,
) -> Vec<Vec<T>> {
    tg.adot
        .iter()
        .zip(&net.groups)
        .map(|(a, g)| {
            if a.is_empty() {
                Vec::new()
            } else {
                scatter_rows(a, idx, g.width, rows)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathering rows then scattering them back restores them and zeroes the others, for a
    /// small and a large (parallel) buffer; the row-wise products read the listed rows of the
    /// batch's arrays.
    #[test]
    fn listed_rows_read_and_write_the_right_rows() {
        for (rows, m) in [(5usize, 3usize), (64, 5000)] {
            let src: Vec<f64> = (0..rows * m).map(|i| i as f64 + 0.5).collect();
            let idx: Vec<usize> = (0..rows).filter(|i| i % 3 != 1).collect();
            let g = gather_rows(&src, &idx, m);
            assert_eq!(g.len(), idx.len() * m);
            for (k, &i) in idx.iter().enumerate() {
                assert_eq!(g[k * m..(k + 1) * m], src[i * m..(i + 1) * m]);
            }
            let s = scatter_rows(&g, &idx, m, rows);
            for i in 0..rows {
                let row = &s[i * m..(i + 1) * m];
                if idx.contains(&i) {
                    assert_eq!(row, &src[i * m..(i + 1) * m]);
                } else {
                    assert!(row.iter().all(|v| *v == 0.0));
                }
            }
            check_kernels(&src, Rows::Listed(&idx), rows, m, &idx);
        }
    }

    /// The three element-wise kernels against their definitions, written per value: pass
    /// row `k` reads `batch_row[k]` of the batch's arrays and row `k` of the pass's.
    fn check_kernels(batch: &[f64], on: Rows<'_>, b: usize, m: usize, batch_row: &[usize]) {
        let n = batch_row.len();
        let pass: Vec<f64> = (0..n * m).map(|v| 0.25 - v as f64).collect();
        let back: Vec<f64> = (0..n * m).map(|v| (v % 7) as f64 - 3.0).collect();
        let s2: Vec<f64> = batch.iter().map(|v| v * 0.5 + 1.0).collect();
        let at = |v: usize| batch_row[v / m] * m + v % m;
        let want_s: Vec<f64> = (0..n * m).map(|v| pass[v] * batch[at(v)]).collect();
        let want_c: Vec<f64> = (0..n * m)
            .map(|v| batch[at(v)] * s2[at(v)] * pass[v])
            .collect();
        let want_cb: Vec<f64> = (0..n * m)
            .map(|v| back[v] * s2[at(v)] + batch[at(v)] * s2[at(v)] * pass[v])
            .collect();
        assert_eq!(scaled(&pass, batch, on, b, m), want_s);
        assert_eq!(curvature([batch, &s2, &pass], on, b, m), want_c);
        let cb = curvature_and_back([&back, &s2, batch, &s2, &pass], on, b, m);
        assert_eq!(cb, want_cb);
    }

    /// A pass over all rows of `k` stacked directions reads batch row `r mod B` for its row
    /// `r`, small and large (parallel chunks that start inside a copy of the batch).
    #[test]
    fn stacked_passes_read_the_batch_rows_modulo_its_size() {
        for (b, m, k) in [(4usize, 3usize, 2usize), (7, 9000, 3), (5, 4, 1)] {
            let batch: Vec<f64> = (0..b * m).map(|i| i as f64 * 0.5 - 3.0).collect();
            let rows: Vec<usize> = (0..k * b).map(|r| r % b).collect();
            check_kernels(&batch, Rows::All, b, m, &rows);
        }
    }

    #[test]
    fn active_indices_checks_the_length() {
        assert_eq!(active_indices(&[true, true], 2).unwrap(), None);
        assert_eq!(
            active_indices(&[true, false, true], 3).unwrap(),
            Some(vec![0, 2])
        );
        assert!(active_indices(&[true], 2).is_err());
    }
}
