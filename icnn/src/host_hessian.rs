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
use crate::wide_simd::avx2_fma_fn;

/// `∇²F(x_b)` for every row, `(B × d × d)` row-major.
///
/// Per sample, the Hessian term of a group and the scaling of its `J_jᵀ` block by `s'` run
/// one after the other on the sample's `d × m` block while it is in cache (two kernels
/// compiled for AVX2, see `wide_simd`), instead of the scaling as a second pass over the
/// whole `B·d × m` array.
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
        // Fresh arrays, not the pool's: a pass over large chunks (d = 6: 458 rows, 700 KB
        // per group) kept ten of them per thread and size in the pool, 30 MB of peak memory
        // on a process of 110 MB.
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
        let curvature = !p.gu[j].is_empty();
        let s1 = &p.s1[j];
        for (r, jt) in a.chunks_mut(d * m).enumerate() {
            if curvature {
                scaled.resize(d * m, zero);
                let (gu, s2) = (&p.gu[j][r * m..(r + 1) * m], &p.s2[j][r * m..(r + 1) * m]);
                curvature_rows(&mut scaled, jt, gu, s2);
                let hb = &mut h[r * d * d..(r + 1) * d * d];
                mm(hb, rm(&scaled, d, m), rm(jt, d, m).t(), true)?;
            }
            scale_rows(jt, &s1[r * m..(r + 1) * m]);
        }
        zt[j] = a;
    }
    Ok(h)
}

avx2_fma_fn! {
    /// Each row `o` of `out` (rows of `gu.len()` values) `= (jt_row ⊙ gu) ⊙ s''`.
    fn curvature_rows<T: Real>(out: &mut [T], jt: &[T], gu: &[T], s2: &[T]) {
        let m = gu.len();
        if m == 0 {
            return;
        }
        for (srow, jrow) in out.chunks_exact_mut(m).zip(jt.chunks_exact(m)) {
            for (((o, &x), &g), &c) in srow.iter_mut().zip(jrow).zip(gu).zip(s2) {
                *o = x * g * c;
            }
        }
    }
}

avx2_fma_fn! {
    /// Each row of `jt` (rows of `s.len()` values) `⊙= s`.
    fn scale_rows<T: Real>(jt: &mut [T], s: &[T]) {
        if s.is_empty() {
            return;
        }
        for row in jt.chunks_exact_mut(s.len()) {
            for (x, &v) in row.iter_mut().zip(s) {
                *x *= v;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::{
        ConvexPotential, DenseIcnn2, DenseIcnn2Config, Icnn, Icnn2, Icnn2Config, Icnn3,
        Icnn3Config, IcnnConfig,
    };

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// The host Hessian (products over one input, several inputs — `DenseIcnn2`'s groups
    /// read every earlier group — and groups reading `x` only) against the composed candle
    /// recursion's dense Hessian, f64, on batches of 5 and 1 rows.
    #[test]
    fn host_hessian_matches_the_composed_hessian() {
        let (d, width, depth) = (4, 6, 3);
        let mut rng = StdRng::seed_from_u64(7);
        let varmaps: Vec<VarMap> = (0..4).map(|_| VarMap::new()).collect();
        let vb = |i: usize| VarBuilder::from_varmap(&varmaps[i], DType::F64, &Device::Cpu);
        let nets: Vec<(&str, Box<dyn ConvexPotential>)> = vec![
            (
                "Icnn",
                Box::new(
                    Icnn::new(
                        vb(0),
                        &IcnnConfig {
                            dim: d,
                            width,
                            depth,
                        },
                        &mut rng,
                    )
                    .unwrap(),
                ),
            ),
            (
                "Icnn2",
                Box::new(
                    Icnn2::new(
                        vb(1),
                        &Icnn2Config {
                            dim: d,
                            width,
                            depth,
                            ..Default::default()
                        },
                        &mut rng,
                    )
                    .unwrap(),
                ),
            ),
            (
                "Icnn3",
                Box::new(
                    Icnn3::new(
                        vb(2),
                        &Icnn3Config {
                            dim: d,
                            width,
                            depth,
                            ..Default::default()
                        },
                        &mut rng,
                    )
                    .unwrap(),
                ),
            ),
            (
                "DenseIcnn2",
                Box::new(
                    DenseIcnn2::new(
                        vb(3),
                        &DenseIcnn2Config {
                            dim: d,
                            width,
                            depth,
                            ..Default::default()
                        },
                        &mut rng,
                    )
                    .unwrap(),
                ),
            ),
        ];
        for (name, net) in &nets {
            // 5 rows first: the first call initialises the ActNorms on its batch.
            for rows in [5usize, 1] {
                let xs: Vec<f64> = (0..rows * d).map(|_| rng.random_range(-1.5..1.5)).collect();
                let x = Tensor::from_vec(xs, (rows, d), &Device::Cpu).unwrap();
                let host = net
                    .host_linearize(&x)
                    .unwrap()
                    .expect("host kernels cover it");
                let got = flat(&host.hessian().unwrap());
                let want = flat(&net.linearize(&x).unwrap().hessian().unwrap());
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                // Both are f64 sums of the same ~depth·width products in other orders: a few
                // hundred ulps of the largest entry at most.
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-12 * scale,
                        "{name} rows {rows} entry {k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
