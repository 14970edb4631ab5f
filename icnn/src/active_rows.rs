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

use crate::error::{IcnnError, Result};
use crate::host_par;
use crate::surrogate_host::{HostNet, Primal, Real, Tangents, hvp_from_tangents_on, tangents_on};

/// The rows of a batch a pass runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows<'a> {
    /// All `B` rows.
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

/// `idx.len()` rows of `m` values, row `k` filled by `f(row, k, idx[k])`.
fn by_rows<T: Real>(idx: &[usize], m: usize, f: impl Fn(&mut [T], usize, usize) + Sync) -> Vec<T> {
    let mut out = host_par::zeros(idx.len() * m);
    host_par::rows1(m, &mut out, |r0, chunk| {
        for (k, row) in chunk.chunks_exact_mut(m).enumerate() {
            f(row, r0 + k, idx[r0 + k]);
        }
    });
    out
}

/// The rows `idx` of the row-major `src` (`m` values per row), in that order.
pub(crate) fn gather_rows<T: Real>(src: &[T], idx: &[usize], m: usize) -> Vec<T> {
    by_rows(idx, m, |o, _, i| {
        o.copy_from_slice(&src[i * m..(i + 1) * m])
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

/// `a_k ⊙ s_{idx[k]}` row by row (`a`: the listed rows; `s`: the whole batch).
pub(crate) fn scaled_rows<T: Real>(a: &[T], s: &[T], idx: &[usize], m: usize) -> Vec<T> {
    by_rows(idx, m, |o, k, i| {
        let src = a[k * m..(k + 1) * m].iter().zip(&s[i * m..(i + 1) * m]);
        for (o, (&x, &y)) in o.iter_mut().zip(src) {
            *o = x * y;
        }
    })
}

/// `gu ⊙ s'' ⊙ ȧ` row by row (`ȧ`: the listed rows; `gu`, `s''`: the whole batch).
pub(crate) fn curvature_rows<T: Real>(
    gu: &[T],
    s2: &[T],
    ad: &[T],
    idx: &[usize],
    m: usize,
) -> Vec<T> {
    by_rows(idx, m, |o, k, i| {
        let full = gu[i * m..(i + 1) * m].iter().zip(&s2[i * m..(i + 1) * m]);
        for (o, ((&g, &s), &a)) in o.iter_mut().zip(full.zip(&ad[k * m..(k + 1) * m])) {
            *o = g * s * a;
        }
    })
}

/// `ġ ⊙ s' + gu ⊙ s'' ⊙ ȧ` row by row, from `[ġ, s', gu, s'', ȧ]` (`ġ`, `ȧ`: the listed
/// rows; the others: the whole batch).
pub(crate) fn curvature_and_back_rows<T: Real>(
    [gd, s1, gu, s2, ad]: [&[T]; 5],
    idx: &[usize],
    m: usize,
) -> Vec<T> {
    by_rows(idx, m, |o, k, i| {
        let (lk, li) = (k * m..(k + 1) * m, i * m..(i + 1) * m);
        let first = gd[lk.clone()].iter().zip(&s1[li.clone()]);
        let second = gu[li.clone()].iter().zip(&s2[li]).zip(&ad[lk]);
        for (o, ((&gd, &s1), ((&g, &s2), &a))) in o.iter_mut().zip(first.zip(second)) {
            *o = gd * s1 + g * s2 * a;
        }
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
            // a_k = 2 for every listed row: a_k ⊙ src_{idx[k]} = 2 · gathered.
            let two = vec![2.0; idx.len() * m];
            let doubled: Vec<f64> = g.iter().map(|v| 2.0 * v).collect();
            assert_eq!(scaled_rows(&two, &src, &idx, m), doubled);
            let c = curvature_rows(&src, &src, &two, &idx, m);
            let want: Vec<f64> = g.iter().map(|v| v * v * 2.0).collect();
            assert_eq!(c, want);
            let cb = curvature_and_back_rows([&two, &src, &src, &src, &two], &idx, m);
            let want: Vec<f64> = g.iter().map(|v| 2.0 * v + v * v * 2.0).collect();
            assert_eq!(cb, want);
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
