//! The two-sided transforms of the Winograd convolutions ([`super::winograd`]),
//! `D ↦ C D Cᵀ` for a small matrix `C`, applied to many tiles at once: every entry of the
//! `n_in × n_in` tiles is a row of `len` values (one per tile), so each step is a linear
//! combination of rows, which the compiler vectorises.
//!
//! On x86-64 CPUs with AVX2 and FMA (detected at run time) the combinations run as code
//! compiled for them (4 f64 or 8 f32 lanes, fused multiply-adds), with AVX-512F in 512-bit
//! registers; elsewhere as the portable build (SSE2 on x86-64, two f64 lanes, separate
//! multiply and add). In the VAE's training step the transforms were about a third of the
//! CPU samples in the portable build, and 18% in the AVX2 one (Zen 4, `perf`), where the
//! fused builds now mix a block of all `n_in` source rows into all `n_out` outputs at once
//! ([`mix`]) for the tile transforms' shapes. All fused builds give the same bits: each
//! value is the same chain of fused multiply-adds, term by term in the same order.

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
        if has_avx512f() && crate::wide_simd::has_avx2_fma() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above), the target
            // features of `apply_avx512`.
            return unsafe { self.apply_avx512(rows) };
        }
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
        self.blocked_or_rows::<4, 4>(rows);
    }

    /// The fused build in 512-bit registers (8 f64 or 16 f32 lanes): the same fused
    /// multiply-adds, value by value and term by term, so the same bits as [`Self::apply_fma`]
    /// with half the instructions.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn apply_avx512(&self, rows: Rows<'_, '_, T>) {
        self.blocked_or_rows::<8, 4>(rows);
    }

    /// The fused transform by [`mix`] in blocks of `B` values (a last one of `H`) for the
    /// shapes of the convolutions' tile transforms (`F(4×4, 5×5)`: `α = 8`; `F(4×4, 3×3)`:
    /// `α = 6`), by [`Self::body`] for other shapes (the kernel transforms, run once per op)
    /// and rows shorter than a block.
    #[inline(always)]
    fn blocked_or_rows<const B: usize, const H: usize>(&self, r: Rows<'_, '_, T>) {
        if r.len < B {
            return self.body::<true>(r);
        }
        match (self.n_out, self.n_in) {
            (8, 8) => self.blocked::<B, H, 8, 8>(r),
            (4, 8) => self.blocked::<B, H, 4, 8>(r),
            (8, 4) => self.blocked::<B, H, 8, 4>(r),
            (6, 6) => self.blocked::<B, H, 6, 6>(r),
            (4, 6) => self.blocked::<B, H, 4, 6>(r),
            (6, 4) => self.blocked::<B, H, 6, 4>(r),
            _ => self.body::<true>(r),
        }
    }

    /// [`Self::body`]'s two passes, each as [`mix`]es of `NI` rows into `NO` (`C` is
    /// `NO × NI`, `r.len ≥ B`).
    #[inline(always)]
    fn blocked<const B: usize, const H: usize, const NO: usize, const NI: usize>(
        &self,
        r: Rows<'_, '_, T>,
    ) {
        let len = r.len;
        let c: [[T; NI]; NO] = std::array::from_fn(|i| std::array::from_fn(|j| self.c[i * NI + j]));
        // tmp[u][y] = Σ_q C[y][q] src[u][q]
        for u in 0..NI {
            let from: [usize; NI] = std::array::from_fn(|q| (u * NI + q) * r.src_stride);
            let to: [usize; NO] = std::array::from_fn(|y| (u * NO + y) * len);
            mix::<T, B, H, NO, NI>(&c, (r.src, &from), (r.tmp, &to), len);
        }
        // dst[x][y] = Σ_u C[x][u] tmp[u][y]
        for y in 0..NO {
            let from: [usize; NI] = std::array::from_fn(|u| (u * NO + y) * len);
            let to: [usize; NO] = std::array::from_fn(|x| (x * NO + y) * r.dst_stride);
            mix::<T, B, H, NO, NI>(&c, (r.tmp, &from), (r.dst, &to), len);
        }
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

/// Values of the blocks after the last whole [`LANES`] block of a row.
const TAIL_LANES: usize = 4;

/// `row = Σ coef · src[offset..offset + row.len()]`, in blocks of [`LANES`] values that stay
/// in registers across the terms (one store per value instead of one per term), then blocks
/// of [`TAIL_LANES`] for the rest. The last block of a row whose length is not a multiple of
/// [`TAIL_LANES`] overlaps the one before it (it recomputes a few values, the same ones):
/// scalar tails were a quarter of the transforms' time on rows of 35 values. (One
/// overlapping block of [`LANES`] for the tail, as before, computed 48 values for a row of
/// 35, the 28×20 images' tiles; now 36.) Every value is the same sum of the same products
/// in the same order whatever block holds it.
#[inline(always)]
fn combine<T: GemmFloat, const FUSED: bool>(row: &mut [T], terms: &[(T, usize)], src: &[T]) {
    let len = row.len();
    if len >= TAIL_LANES {
        let whole = len - len % LANES;
        for t0 in (0..whole).step_by(LANES) {
            block::<T, FUSED, LANES>(row, terms, src, t0);
        }
        let mut t0 = whole;
        while t0 + TAIL_LANES <= len {
            block::<T, FUSED, TAIL_LANES>(row, terms, src, t0);
            t0 += TAIL_LANES;
        }
        if t0 < len {
            block::<T, FUSED, TAIL_LANES>(row, terms, src, len - TAIL_LANES);
        }
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

/// `row[t0..t0 + B] = Σ coef · src[offset + t0..offset + t0 + B]` (`t0 + B ≤ row.len()`).
#[inline(always)]
fn block<T: GemmFloat, const FUSED: bool, const B: usize>(
    row: &mut [T],
    terms: &[(T, usize)],
    src: &[T],
    t0: usize,
) {
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

/// `dst[to[i] + t] = Σ_j c[i][j] · src[from[j] + t]` for `t < len` (`len ≥ B`), the terms with
/// `c[i][j] ≠ 0` fused in order of `j` from zero: the bits of [`combine`]'s fused build value
/// by value. Each block of `B` values of the `NI` source rows is loaded once into registers
/// for all `NO` outputs (the row-by-row [`combine`] loads it once per output that uses it,
/// a load per multiply-add). A rest of at most `H ≤ B` values takes one block of `H` that
/// ends the row, a longer rest one of `B`: both overlap the block before (rows of 35 values,
/// the 28×20 images' tiles, compute 36 values with `B = 8`, `H = 4`).
#[inline(always)]
fn mix<T: GemmFloat, const B: usize, const H: usize, const NO: usize, const NI: usize>(
    c: &[[T; NI]; NO],
    (src, from): (&[T], &[usize; NI]),
    (dst, to): (&mut [T], &[usize; NO]),
    len: usize,
) {
    let whole = len - len % B;
    for t in (0..whole).step_by(B) {
        mix_block::<T, B, NO, NI>(c, (src, from), (&mut *dst, to), t);
    }
    let rest = len - whole;
    if rest > H {
        mix_block::<T, B, NO, NI>(c, (src, from), (dst, to), len - B);
    } else if rest > 0 {
        mix_block::<T, H, NO, NI>(c, (src, from), (dst, to), len - H);
    }
}

/// [`mix`] for the `B` values from `t`.
#[inline(always)]
fn mix_block<T: GemmFloat, const B: usize, const NO: usize, const NI: usize>(
    c: &[[T; NI]; NO],
    (src, from): (&[T], &[usize; NI]),
    (dst, to): (&mut [T], &[usize; NO]),
    t: usize,
) {
    let s: [[T; B]; NI] = std::array::from_fn(|j| {
        let mut v = [T::zero(); B];
        v.copy_from_slice(&src[from[j] + t..][..B]);
        v
    });
    for (ci, &o) in c.iter().zip(to) {
        let mut acc = [T::zero(); B];
        for (&k, sj) in ci.iter().zip(&s) {
            if k != T::zero() {
                for (a, &v) in acc.iter_mut().zip(sj) {
                    *a = T::fused_mul_add(k, v, *a);
                }
            }
        }
        dst[o + t..][..B].copy_from_slice(&acc);
    }
}

/// Whether the CPU has AVX-512F (std caches the detection).
#[cfg(target_arch = "x86_64")]
fn has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `n_out × n_out` rows of `len` values that `apply` writes from `src` (`n_in × n_in`
    /// rows), with NaN-filled output and scratch, so an unwritten value shows.
    fn applied(
        src: &[f64],
        len: usize,
        n_out: usize,
        n_in: usize,
        apply: impl FnOnce(Rows<'_, '_, f64>),
    ) -> Vec<f64> {
        let mut dst = vec![f64::NAN; n_out * n_out * len];
        let mut tmp = vec![f64::NAN; n_in * n_out * len];
        apply(Rows {
            src,
            src_stride: len,
            dst: &mut dst,
            dst_stride: len,
            tmp: &mut tmp,
            len,
        });
        dst
    }

    /// Both builds against the dense triple product, with zeros in `C`, for rows shorter
    /// than a register block and rows of two blocks and a remainder.
    #[test]
    fn sandwich_is_c_d_ct_in_both_builds() {
        for len in [3, 5, LANES, 2 * LANES + 5] {
            sandwich_case(len);
        }
    }

    /// Every build gives, value by value, the bits of the scalar fused sum (each value
    /// `fma(C[y][q], src, ·)` from zero, term by term in order, then the same over `u`), for
    /// row lengths with every tail: whole blocks, tails of [`TAIL_LANES`] blocks, an
    /// overlapping last block (rows shorter than [`TAIL_LANES`] take the unchanged scalar
    /// loop, which multiplies and adds separately). The fused builds before the tail
    /// blocks (one overlapping block of [`LANES`]) computed the same per-value sums, so these
    /// are also their bits.
    #[test]
    fn every_block_layout_gives_the_scalar_fused_bits() {
        for shape in [
            (4, 8),
            (8, 8),
            (8, 4),
            (6, 6),
            (4, 6),
            (6, 4),
            (8, 5),
            (3, 6),
        ] {
            block_layout_case(shape);
        }
    }

    fn block_layout_case((n_out, n_in): (usize, usize)) {
        let c: Vec<f64> = (0..n_out * n_in)
            .map(|i| {
                if i % 3 == 1 {
                    0.0
                } else {
                    (i as f64 * 0.61).cos() * 2.5
                }
            })
            .collect();
        for len in (TAIL_LANES..=40).chain([48, 60, 64, 67]) {
            let src: Vec<f64> = (0..n_in * n_in * len)
                .map(|i| (i as f64 * 0.917).sin())
                .collect();
            let mut tmp = vec![0.0; n_in * n_out * len];
            for u in 0..n_in {
                for y in 0..n_out {
                    for t in 0..len {
                        let mut a = 0.0f64;
                        for q in 0..n_in {
                            let k = c[y * n_in + q];
                            if k != 0.0 {
                                a = k.mul_add(src[(u * n_in + q) * len + t], a);
                            }
                        }
                        tmp[(u * n_out + y) * len + t] = a;
                    }
                }
            }
            let mut expected = vec![0.0; n_out * n_out * len];
            for x in 0..n_out {
                for y in 0..n_out {
                    for t in 0..len {
                        let mut a = 0.0f64;
                        for u in 0..n_in {
                            let k = c[x * n_in + u];
                            if k != 0.0 {
                                a = k.mul_add(tmp[(u * n_out + y) * len + t], a);
                            }
                        }
                        expected[(x * n_out + y) * len + t] = a;
                    }
                }
            }
            let s = Sandwich::new(&c, n_out, n_in);
            let run = |build: usize| {
                applied(&src, len, n_out, n_in, |rows| match build {
                    // SAFETY: run only where the CPU has the features (checked below).
                    #[cfg(target_arch = "x86_64")]
                    0 => unsafe { s.apply_fma(rows) },
                    #[cfg(target_arch = "x86_64")]
                    1 => unsafe { s.apply_avx512(rows) },
                    _ => s.apply(rows),
                })
            };
            let mut builds = vec![2];
            #[cfg(target_arch = "x86_64")]
            if crate::wide_simd::has_avx2_fma() {
                builds.push(0);
                if has_avx512f() {
                    builds.push(1);
                }
            }
            for build in builds {
                let got = run(build);
                if build == 2 && !cfg!(target_arch = "x86_64") {
                    continue; // the portable build multiplies and adds separately
                }
                for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "len {len}, build {build}, value {i}"
                    );
                }
            }
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
            applied(&src, len, n_out, n_in, |rows| {
                if fused {
                    s.apply(rows)
                } else {
                    s.body::<false>(rows)
                }
            })
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
