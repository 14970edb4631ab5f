//! The two-sided transforms of the Winograd convolutions ([`super::winograd`]),
//! `D ↦ C D Cᵀ` for a small matrix `C`, applied to many tiles at once: every entry of the
//! `n_in × n_in` tiles is a row of `len` values (one per tile), so each step is a linear
//! combination of rows, which the compiler vectorises.
//!
//! On x86-64 CPUs with AVX2 and FMA (detected at run time) the combinations run as code
//! compiled for them (4 f64 or 8 f32 lanes, fused multiply-adds); elsewhere as the portable
//! build (SSE2 on x86-64, two f64 lanes, separate multiply and add). In the VAE's training
//! step the transforms were about a third of the CPU samples in the portable build.

use crate::host_gemm::GemmFloat;

/// `dst[x][y] = Σ_{u,q} C[x][u] C[y][q] src[u][q]` for an `n_out × n_in` matrix `C`, over rows
/// of `len` values at once (`src` row `(u, q)` at `(u·n_in + q)·src_stride`, `dst` row
/// `(x, y)` at `(x·n_out + y)·dst_stride`). Zero entries of `C` cost nothing.
pub(super) struct Sandwich<'a, T> {
    c: &'a [T],
    n_out: usize,
    n_in: usize,
}

/// Where [`Sandwich::apply`] reads and writes.
pub(super) struct Rows<'s, 'd, T> {
    pub src: &'s [T],
    pub src_stride: usize,
    pub dst: &'d mut [T],
    pub dst_stride: usize,
    /// Scratch of at least `n_in · n_out · len` values.
    pub tmp: &'d mut [T],
    pub len: usize,
}

impl<'a, T: GemmFloat> Sandwich<'a, T> {
    /// `C` row-major, `n_out × n_in`.
    pub(super) fn new(c: &'a [T], n_out: usize, n_in: usize) -> Self {
        debug_assert_eq!(c.len(), n_out * n_in);
        Self { c, n_out, n_in }
    }

    /// Applies the transform (see the type's docs).
    pub(super) fn apply(&self, rows: Rows<'_, '_, T>) {
        #[cfg(target_arch = "x86_64")]
        if crate::wide_simd::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked above), the target features of
            // `apply_fma`.
            return unsafe { self.apply_fma(rows) };
        }
        self.body::<false>(rows);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn apply_fma(&self, rows: Rows<'_, '_, T>) {
        self.body::<true>(rows);
    }

    #[inline(always)]
    fn body<const FUSED: bool>(&self, r: Rows<'_, '_, T>) {
        let (c, n_out, n_in, len) = (self.c, self.n_out, self.n_in, r.len);
        let tmp = r.tmp;
        // tmp[u][y] = Σ_q C[y][q] src[u][q]
        for u in 0..n_in {
            for y in 0..n_out {
                let terms =
                    Terms::of((0..n_in).map(|q| (c[y * n_in + q], (u * n_in + q) * r.src_stride)));
                combine::<T, FUSED>(&mut tmp[(u * n_out + y) * len..][..len], terms.get(), r.src);
            }
        }
        // dst[x][y] = Σ_u C[x][u] tmp[u][y]
        for x in 0..n_out {
            for y in 0..n_out {
                let terms = Terms::of((0..n_in).map(|u| (c[x * n_in + u], (u * n_out + y) * len)));
                combine::<T, FUSED>(
                    &mut r.dst[(x * n_out + y) * r.dst_stride..][..len],
                    terms.get(),
                    tmp,
                );
            }
        }
    }
}

/// The nonzero `(coefficient, row offset)` terms of one combination, at most [`MAX_TERMS`].
struct Terms<T> {
    terms: [(T, usize); MAX_TERMS],
    n: usize,
}

/// The most terms of a combination: `n_in ≤ α ≤ 8`.
const MAX_TERMS: usize = 8;

impl<T: GemmFloat> Terms<T> {
    #[inline(always)]
    fn of(all: impl Iterator<Item = (T, usize)>) -> Self {
        let mut t = Self {
            terms: [(T::zero(), 0); MAX_TERMS],
            n: 0,
        };
        for (coef, offset) in all.filter(|(c, _)| *c != T::zero()) {
            t.terms[t.n] = (coef, offset);
            t.n += 1;
        }
        t
    }

    fn get(&self) -> &[(T, usize)] {
        &self.terms[..self.n]
    }
}

/// Values of a row summed at once in registers (4 AVX registers of f64).
const LANES: usize = 16;

/// `row = Σ coef · src[offset..offset + row.len()]`, in blocks of [`LANES`] values that stay
/// in registers across the terms (one store per value instead of one per term). The last
/// block of a row whose length is not a multiple of the block overlaps the one before it (it
/// recomputes a few values, the same ones): scalar tails were a quarter of the transforms'
/// time on rows of 35 values.
#[inline(always)]
fn combine<T: GemmFloat, const FUSED: bool>(row: &mut [T], terms: &[(T, usize)], src: &[T]) {
    let len = row.len();
    if len >= LANES {
        blocks::<T, FUSED, LANES>(row, terms, src);
    } else if len >= 4 {
        blocks::<T, FUSED, 4>(row, terms, src);
    } else {
        for (t, out) in row.iter_mut().enumerate() {
            let mut a = T::zero();
            for &(coef, offset) in terms {
                a += coef * src[offset + t];
            }
            *out = a;
        }
    }
}

/// [`combine`] in blocks of `B ≤ row.len()` values.
#[inline(always)]
fn blocks<T: GemmFloat, const FUSED: bool, const B: usize>(
    row: &mut [T],
    terms: &[(T, usize)],
    src: &[T],
) {
    let len = row.len();
    let starts = (0..len - B).step_by(B).chain(std::iter::once(len - B));
    for t0 in starts {
        let mut acc = [T::zero(); B];
        for &(coef, offset) in terms {
            let s = &src[offset + t0..offset + t0 + B];
            for (a, &v) in acc.iter_mut().zip(s) {
                *a = if FUSED {
                    T::fused_mul_add(coef, v, *a)
                } else {
                    *a + coef * v
                };
            }
        }
        row[t0..t0 + B].copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both builds against the dense triple product, with zeros in `C`, for rows shorter
    /// than a register block and rows of two blocks and a remainder.
    #[test]
    fn sandwich_is_c_d_ct_in_both_builds() {
        for len in [3, 5, LANES, 2 * LANES + 5] {
            sandwich_case(len);
        }
    }

    fn sandwich_case(len: usize) {
        let (n_out, n_in) = (3, 4);
        let c: Vec<f64> = (0..n_out * n_in)
            .map(|i| {
                if i % 5 == 2 {
                    0.0
                } else {
                    i as f64 * 0.37 - 1.1
                }
            })
            .collect();
        let src: Vec<f64> = (0..n_in * n_in * len)
            .map(|i| (i as f64 * 0.731).sin())
            .collect();
        let mut expected = vec![0.0; n_out * n_out * len];
        for x in 0..n_out {
            for y in 0..n_out {
                for t in 0..len {
                    let mut acc = 0.0;
                    for u in 0..n_in {
                        for q in 0..n_in {
                            acc +=
                                c[x * n_in + u] * c[y * n_in + q] * src[(u * n_in + q) * len + t];
                        }
                    }
                    expected[(x * n_out + y) * len + t] = acc;
                }
            }
        }
        let s = Sandwich::new(&c, n_out, n_in);
        let run = |fused: bool| {
            let mut dst = vec![f64::NAN; n_out * n_out * len];
            let mut tmp = vec![f64::NAN; n_in * n_out * len];
            let rows = Rows {
                src: &src,
                src_stride: len,
                dst: &mut dst,
                dst_stride: len,
                tmp: &mut tmp,
                len,
            };
            if fused {
                s.apply(rows)
            } else {
                s.body::<false>(rows)
            }
            dst
        };
        for fused in [false, true] {
            for (a, b) in run(fused).iter().zip(&expected) {
                assert!(
                    (a - b).abs() < 1e-13,
                    "len {len}, fused {fused}: {a} vs {b}"
                );
            }
        }
    }
}
