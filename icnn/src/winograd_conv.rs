//! 3×3 "same" convolutions (stride 1, padding 1) of channel-last images by Winograd's
//! minimal filtering `F(4×4, 3×3)` (Lavin & Gray, *Fast Algorithms for Convolutional Neural
//! Networks*, CVPR 2016): the host kernels' convolutions on the ConvICNN's 64 → 64 layers
//! (`host_link`), where they replace [`crate::shifted_conv`]'s nine taps.
//!
//! The output is cut into `4×4` tiles; tile `t`'s `6×6` input patch `d` (zero outside the
//! image) and its output `y` are related, per input channel `c` and output channel `o`, by
//! ```text
//! y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (g = K[o, c], the 3×3 kernel)
//! ```
//! with the interpolation points `0, ±1, ±2, ∞` (the matrices are in [`bt`], [`at`] and
//! [`TransformedKernel::of`]). With `V_ξ (tiles × C)` the 36 entries `ξ` of the transformed
//! inputs and `U_ξ (C × C_o)` those of the transformed kernel, a convolution is **36
//! products** `M_ξ = V_ξ · U_ξ` of inner dimension `C` and the output transform: 36·HW/16
//! multiply-adds per channel pair against the 9·HW of the direct form (4× fewer; 4.1× fewer
//! than [`crate::shifted_conv`]'s wide grid at 28×28; images whose size is not a multiple of
//! 4 pay for whole tiles: 1.3× at 14×14 and 7×7).
//!
//! Rounding: the transforms multiply by 4, 5 and 8 and the kernel's by 1/6 and 1/24, so the
//! error grows over the direct form's: relative to the largest output, ~3e-6 on average and
//! ~1e-5 at most over 200 random 64-channel tiles in f32 (a NumPy check against the direct
//! sum in f64), ~5e-15 in f64. The f32 training loss is a mean over images of sums that CG
//! solves to a tolerance of 1e-3; the tests hold the convolutions to the direct loop within
//! 1e-12 (f64) and 5e-5 (f32) relative.
//!
//! Through a whole network that amplification costs f32 about one digit against candle's
//! direct convolutions, more on large weights (measured, the f32 precision audit: a ConvICNN
//! on 4×14×14 images, width 64, errors relative to f64): with the weights ×10, the host
//! Hessian-vector product is off by 1.4e-3 against candle's 9.6e-5; with the weights ×3,
//! 4.2e-6 against 5.9e-7; an exact log-det of ≈ 1263 nats by 5.1e-3 against 2.5e-3 nats.
//! At ordinary scales the errors are far below training's 1e-3 CG tolerance; f64 is unaffected
//! (host and candle Hessian-vector products agree to 4e-12 relative with the weights ×10,
//! 1e-15 at scale 1).
//!
//! The input adjoint and the kernel gradient are the same algorithm read backwards
//! (`winograd_adjoint.rs`): the input adjoint on the forward's own transformed kernel.
//!
//! The tiles are processed in chunks of whole tile rows (about [`CHUNK_TILES`] tiles) so that
//! a chunk's transformed inputs and products (`[ξ][t][c]`: 36 row-major matrices each) stay
//! in a core's cache between the transforms and the products, and the buffers are small and
//! reused: with whole groups of images (4 MiB per buffer in f32) the same products ran
//! 1.5–2.5× slower than on warm buffers (fresh pages and cache misses).

use std::ops::Range;

use crate::gemm_conv::PatchGeometry;
use crate::host_gemm::{View, matmul_into};
use crate::scratch::Scratch;
use crate::shifted_conv::for_tasks;
use crate::surrogate_host::Real;
use crate::wide_simd::avx2_fma_fn;
use candle_core::Result;
use rayon::prelude::*;

/// Output pixels per tile side.
const OUT: usize = 4;
/// Input pixels per tile side (`OUT + 2`).
const IN: usize = 6;
/// Entries of a transformed `6×6` tile.
const XI: usize = IN * IN;

/// Below this many channels (input or output) a product `V_ξ · U_ξ` is too thin to pay for
/// the transforms, and [`crate::shifted_conv`] keeps the convolution (the ConvICNN's first
/// layers read 1 or 4 channels; `configs/mnist-cpu.toml`'s layers 16). Measured one thread,
/// 16 images, f32, forward, two runs (Winograd / shifted, ms): 16 channels 28×28 0.72 / 0.86
/// and 1.39 / 1.20, 14×14 0.25 / 0.22 and 0.41 / 0.29, 7×7 0.07 / 0.06 and 0.13 / 0.08;
/// 32 channels 28×28 2.05 / 3.78 and 3.08 / 4.83, 14×14 0.64 / 0.98 and 0.91 / 1.19,
/// 7×7 0.24 / 0.28 and 0.31 / 0.32.
pub(crate) const MIN_CHANNELS: usize = 32;

/// Tiles per chunk (rounded down to whole tile rows, at least one): 64 tiles of 64 channels
/// are 576 KiB of transformed inputs in f32.
const CHUNK_TILES: usize = 64;

/// Whether `g` with `c_out` output channels is a convolution these kernels cover: 3×3,
/// stride 1, padding 1, at least [`MIN_CHANNELS`] channels on both sides.
pub(crate) fn covers(g: &PatchGeometry, c_out: usize) -> bool {
    g.stride == 1
        && g.kh == 3
        && g.kw == 3
        && g.padding == 1
        && g.channels >= MIN_CHANNELS
        && c_out >= MIN_CHANNELS
}

/// The `⌈H/4⌉ × ⌈W/4⌉` tiles of an `H × W` image. Tile `(a, b)` reads the `6×6` input
/// pixels from `(4a − 1, 4b − 1)` (zero outside the image) and writes the output pixels
/// `(4a..4a + 4, 4b..4b + 4)` inside it. A task's tile rows are numbered across its images
/// (`image · ⌈H/4⌉ + a`) and cut into chunks of [`Tiling::chunk_rows`].
#[derive(Clone, Copy)]
struct Tiling {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Tiling {
    fn of(g: &PatchGeometry) -> Self {
        Self {
            h: g.height,
            w: g.width,
            th: g.height.div_ceil(OUT),
            tw: g.width.div_ceil(OUT),
        }
    }

    /// Tile rows per chunk.
    fn chunk_rows(&self) -> usize {
        (CHUNK_TILES / self.tw).max(1)
    }

    /// Pixel slots of a padded input row: a zero pixel, the `W` pixels, zeros up to
    /// `4⌈W/4⌉ + 2`.
    fn strip_row(&self) -> usize {
        OUT * self.tw + 2
    }

    /// The chunks of `n` images' tile rows, as ranges of global tile rows.
    fn chunks(&self, n: usize) -> impl Iterator<Item = Range<usize>> + use<> {
        let (total, per) = (n * self.th, self.chunk_rows());
        (0..total)
            .step_by(per)
            .map(move |r| r..(r + per).min(total))
    }

    /// Buffer length of [`IN`] padded rows ([`Tiling::strip_row`] pixels) of `c` channels.
    fn strip_len(&self, c: usize) -> usize {
        IN * self.strip_row() * c
    }

    /// Buffer length of a chunk's [`XI`] matrices of `c` columns.
    fn chunk_len(&self, c: usize) -> usize {
        XI * self.chunk_rows() * self.tw * c
    }

    /// The [`IN`] image rows under global tile row `tr` of the channel-last images `imgs`
    /// (`W·c` values each): padded row `4a + r` of image `b` is its row `4a + r − 1`, and
    /// `zero` (`W·c` zeros) above and below the image.
    fn input_rows<'a, T>(
        &self,
        c: usize,
        imgs: &'a [T],
        tr: usize,
        zero: &'a [T],
    ) -> [&'a [T]; IN] {
        let (b, a) = (tr / self.th, tr % self.th);
        let line = self.w * c;
        let img = &imgs[b * self.h * line..(b + 1) * self.h * line];
        std::array::from_fn(|r| {
            let i = (OUT * a + r).wrapping_sub(1);
            if i < self.h {
                &img[i * line..(i + 1) * line]
            } else {
                zero
            }
        })
    }

    /// The output pixels of tile column `tj` inside the image (4, or fewer at the right edge).
    fn cols(&self, tj: usize) -> usize {
        (self.w - OUT * tj).min(OUT)
    }
}

/// `s` cut into its first `N` parts of `len` values (`s` holds at least `N·len`).
fn parts<T, const N: usize>(s: &[T], len: usize) -> [&[T]; N] {
    let mut it = s.chunks_exact(len);
    std::array::from_fn(|_| it.next().unwrap_or_default())
}

/// [`parts`], mutable.
fn parts_mut<T, const N: usize>(s: &mut [T], len: usize) -> [&mut [T]; N] {
    let mut it = s.chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().unwrap_or_default())
}

/// Row `r` of a tile's transformed `6×6` in planar buffers `[ξ][t][len]`: the `len` values
/// at `at` of planes `ξ = 6r .. 6r + 6`, each plane `plane` values long.
fn plane_row<T>(planes: &mut [T], plane: usize, r: usize, at: usize, len: usize) -> [&mut [T]; IN] {
    let mut it = planes.chunks_exact_mut(plane).skip(IN * r);
    std::array::from_fn(|_| match it.next() {
        Some(p) => &mut p[at..at + len],
        None => &mut [],
    })
}

/// `y = Bᵀ x` along one axis, element-wise over the slices:
/// ```text
/// Bᵀ = [ 4  0 −5  0  1  0 ]
///      [ 0 −4 −4  1  1  0 ]
///      [ 0  4 −4 −1  1  0 ]
///      [ 0 −2 −1  2  1  0 ]
///      [ 0  2 −1 −2  1  0 ]
///      [ 0  4  0 −5  0  1 ]
/// ```
#[inline(always)]
fn bt<T: Real>(x: [&[T]; IN], y: [&mut [T]; IN]) {
    let n = y[0].len();
    let [x0, x1, x2, x3, x4, x5] = x.map(|s| &s[..n]);
    let [y0, y1, y2, y3, y4, y5] = y.map(|s| &mut s[..n]);
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    for i in 0..n {
        let (a, b, c, d, e, f) = (x0[i], x1[i], x2[i], x3[i], x4[i], x5[i]);
        y0[i] = four * a - five * c + e;
        y1[i] = e + d - four * (b + c);
        y2[i] = e - d + four * (b - c);
        y3[i] = e - c + two * (d - b);
        y4[i] = e - c - two * (d - b);
        y5[i] = four * b - five * d + f;
    }
}

/// `y = Aᵀ x` along one axis, element-wise:
/// ```text
/// Aᵀ = [ 1  1  1  1  1  0 ]
///      [ 0  1 −1  2 −2  0 ]
///      [ 0  1  1  4  4  0 ]
///      [ 0  1 −1  8 −8  1 ]
/// ```
#[inline(always)]
fn at<T: Real>(x: [&[T]; IN], y: [&mut [T]; OUT]) {
    let n = y[0].len();
    let [x0, x1, x2, x3, x4, x5] = x.map(|s| &s[..n]);
    let [y0, y1, y2, y3] = y.map(|s| &mut s[..n]);
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    for i in 0..n {
        let (a, b, c, d, e, f) = (x0[i], x1[i], x2[i], x3[i], x4[i], x5[i]);
        let (bp, bm, dp, dm) = (b + c, b - c, d + e, d - e);
        y0[i] = a + bp + dp;
        y1[i] = bm + two * dm;
        y2[i] = bp + four * dp;
        y3[i] = bm + eight * dm + f;
    }
}

avx2_fma_fn! {
    /// The transformed inputs `Bᵀ d B` of the tiles of global tile rows `rows` of the images
    /// `imgs` (`(H, W, c)` each) into `v` (`[ξ][t][c]`, `t` the tile's index in the chunk).
    /// The 6 image rows under a tile row are combined once for all its tiles (neighbouring
    /// tiles share two input columns) into `half` ([`IN`] padded rows of
    /// [`Tiling::strip_row`] pixels: a zero pixel, the `W` combined ones, zeros), then each
    /// tile's 6 pixels per row go straight to their planes. `half` is work space of
    /// [`Tiling::strip_len`] values whatever they are on entry; `zero` is `W·c` zeros.
    fn input_transform<T: Real>(
        tl: &Tiling,
        c: usize,
        imgs: &[T],
        rows: Range<usize>,
        zero: &[T],
        half: &mut [T],
        v: &mut [T],
    ) {
        let (sr, line) = (tl.strip_row() * c, tl.w * c);
        let plane = rows.len() * tl.tw * c;
        // The padding pixels: bt of zeros is zero, and the rows below write only the image's.
        for row in half.chunks_exact_mut(sr) {
            row[..c].fill(T::zero());
            row[c + line..].fill(T::zero());
        }
        for (lr, tr) in rows.enumerate() {
            let inside = parts_mut::<T, IN>(half, sr).map(|h| &mut h[c..c + line]);
            bt(tl.input_rows(c, imgs, tr, zero), inside);
            for tj in 0..tl.tw {
                let (from, at) = (OUT * tj * c, (lr * tl.tw + tj) * c);
                for (r, row) in half.chunks_exact(sr).enumerate() {
                    bt(
                        parts(&row[from..from + IN * c], c),
                        plane_row(v, plane, r, at, c),
                    );
                }
            }
        }
    }
}

avx2_fma_fn! {
    /// The output transform `Aᵀ m A` of the products `m` (`[ξ][t][o]`) of the tiles of global
    /// tile rows `rows` into the images `y` (`(H, W, c_out)` each), stored or added.
    fn output_transform<T: Real>(
        tl: &Tiling,
        c_out: usize,
        m: &[T],
        rows: Range<usize>,
        y: &mut [T],
        acc: bool,
    ) {
        let co = c_out;
        let plane = rows.len() * tl.tw * co;
        let mut half = Scratch::<T>::take(OUT * IN * co);
        let mut out = Scratch::<T>::take(OUT * OUT * co);
        for (lr, tr) in rows.enumerate() {
            let (b, ti) = (tr / tl.th, tr % tl.th);
            let img = &mut y[b * tl.h * tl.w * co..(b + 1) * tl.h * tl.w * co];
            for tj in 0..tl.tw {
                let t = (lr * tl.tw + tj) * co;
                // half[r][s]: the rows combined (r < 4), per patch column s.
                for s in 0..IN {
                    let x = std::array::from_fn(|r| {
                        let at = (r * IN + s) * plane + t;
                        &m[at..at + co]
                    });
                    let mut hs = half.chunks_exact_mut(co).skip(s).step_by(IN);
                    at(x, std::array::from_fn(|_| hs.next().unwrap_or_default()));
                }
                for (src, dst) in half
                    .chunks_exact(IN * co)
                    .zip(out.chunks_exact_mut(OUT * co))
                {
                    at(parts(src, co), parts_mut(dst, co));
                }
                let cols = tl.cols(tj);
                for (r, src) in out.chunks_exact(OUT * co).enumerate() {
                    let i = OUT * ti + r;
                    if i >= tl.h {
                        break;
                    }
                    let at = (i * tl.w + OUT * tj) * co;
                    let dst = &mut img[at..at + cols * co];
                    let src = &src[..cols * co];
                    if acc {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    }
}

/// The rows of `G` (the kernel transform) at `(p, q, r)`:
/// `(p/4, −(p+q+r)/6, −(p−q+r)/6, p/24 + q/12 + r/6, p/24 − q/12 + r/6, r)`.
fn g6<T: Real>(p: T, q: T, r: T) -> [T; IN] {
    let f = |v: f64| T::from_f64(v);
    let (e, o) = (p * f(1.0 / 24.0) + r * f(1.0 / 6.0), q * f(1.0 / 12.0));
    [
        p * f(0.25),
        (p + q + r) * f(-1.0 / 6.0),
        (p - q + r) * f(-1.0 / 6.0),
        e + o,
        e - o,
        r,
    ]
}

/// [`g6`] element-wise over slices: `y[·][i] = g6(x[0][i], x[1][i], x[2][i])`.
#[inline(always)]
fn g6_slices<T: Real>(x: [&[T]; 3], y: [&mut [T]; IN]) {
    let n = y[0].len();
    let [p, q, r] = x.map(|s| &s[..n]);
    let [y0, y1, y2, y3, y4, y5] = y.map(|s| &mut s[..n]);
    for i in 0..n {
        let [v0, v1, v2, v3, v4, v5] = g6(p[i], q[i], r[i]);
        (y0[i], y1[i], y2[i], y3[i], y4[i], y5[i]) = (v0, v1, v2, v3, v4, v5);
    }
}

/// A kernel `K (C_o, C, 3, 3)` transformed for [`forward`]: the [`XI`] matrices
/// `U_ξ = (G g Gᵀ)_ξ`, each row-major `(C × C_o)` (`[ξ][c][o]`).
///
/// A layer's kernel stays the same for every convolution of a training step (the forward
/// pass, each CG iteration's tangent pass, the adjoints), so [`crate::host_link`] transforms
/// it once and keeps it (transformed on every call, the kernel took 11% of the CPU samples of
/// an MNIST step). The input adjoint ([`adjoint`]) reads the same transform, transposed.
#[derive(Debug, Clone)]
pub(crate) struct TransformedKernel<T> {
    u: Vec<T>,
    c_in: usize,
    c_out: usize,
}

impl<T: Real> TransformedKernel<T> {
    /// The transform of `k` `(C_o, C, 3, 3)` row-major. The input channels run in parallel,
    /// each over all output channels at once (a link's first call waits for it: 0.5 ms for
    /// a 64 × 64 kernel one pair at a time, a hundred kernels per MNIST step).
    pub(crate) fn of(k: &[T], c_out: usize, c_in: usize) -> Self {
        let plane = c_in * c_out;
        let mut u = vec![T::zero(); XI * plane];
        if plane == 0 {
            return Self { u, c_in, c_out };
        }
        // Input channel `c`'s `C_o` values in each of the 36 planes.
        let mut segments: Vec<Vec<&mut [T]>> = (0..c_in).map(|_| Vec::with_capacity(XI)).collect();
        for p in u.chunks_exact_mut(plane) {
            for (seg, row) in segments.iter_mut().zip(p.chunks_exact_mut(c_out)) {
                seg.push(row);
            }
        }
        segments
            .into_par_iter()
            .enumerate()
            .for_each(|(c, mut segs)| {
                // taps[t][o] = K[o, c, t]; rows[i][s][o]: kernel row i (taps 3i..3i + 3) by G.
                let mut taps = vec![T::zero(); 9 * c_out];
                for o in 0..c_out {
                    let g = &k[(o * c_in + c) * 9..(o * c_in + c) * 9 + 9];
                    for (t, &v) in g.iter().enumerate() {
                        taps[t * c_out + o] = v;
                    }
                }
                let mut rows = vec![T::zero(); 3 * IN * c_out];
                for (tr, row) in taps
                    .chunks_exact(3 * c_out)
                    .zip(rows.chunks_exact_mut(IN * c_out))
                {
                    g6_slices(parts(tr, c_out), parts_mut(row, c_out));
                }
                // Column s of the three rows by G: entries ξ = 6r + s, r = 0..6.
                for s in 0..IN {
                    let x =
                        [0, 1, 2].map(|i| &rows[(i * IN + s) * c_out..(i * IN + s + 1) * c_out]);
                    let mut out = segs.iter_mut().skip(s).step_by(IN).map(|v| &mut **v);
                    g6_slices(x, std::array::from_fn(|_| out.next().unwrap_or_default()));
                }
            });
        Self { u, c_in, c_out }
    }
}

/// `dst (rows × H·W·C_o) (+)= conv(src (rows × H·W·C), K)`, channel-last rows, `K` of shape
/// `(C_o, C, 3, 3)` given as its [`TransformedKernel::of`]: per task and per chunk of tile
/// rows, the input transform, 36 products and the output transform into `dst`.
pub(crate) fn forward<T: Real>(
    kernel: &TransformedKernel<T>,
    g: &PatchGeometry,
    src: &[T],
    dst: &mut [T],
    rows: usize,
    acc: bool,
) -> Result<()> {
    let (tl, c, c_out) = (Tiling::of(g), g.channels, kernel.c_out);
    if kernel.c_in != c {
        candle_core::bail!(
            "Winograd convolution: a kernel of {} input channels on images of {c}",
            kernel.c_in
        );
    }
    let u = &kernel.u;
    let (src_len, dst_len) = (g.image_len(), c_out * g.height * g.width);
    for_tasks(src, src_len, dst, dst_len, rows, |xs, ys, par| {
        let (zero, mut half) = (vec![T::zero(); tl.w * c], Scratch::take(tl.strip_len(c)));
        let (mut v, mut m) = (
            Scratch::take(tl.chunk_len(c)),
            Scratch::take(tl.chunk_len(c_out)),
        );
        for chunk in tl.chunks(xs.len() / src_len) {
            let tiles = chunk.len() * tl.tw;
            let (v, m) = (&mut v[..XI * tiles * c], &mut m[..XI * tiles * c_out]);
            input_transform(&tl, c, xs, chunk.clone(), &zero, &mut half, v);
            for (xi, mx) in m.chunks_exact_mut(tiles * c_out).enumerate() {
                let vx = View::row_major(&v[xi * tiles * c..], tiles, c);
                let ux = View::row_major(&u[xi * c * c_out..], c, c_out);
                matmul_into(mx, vx, ux, false, par)?;
            }
            output_transform(&tl, c_out, m, chunk, ys, acc);
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "winograd_conv_tests.rs"]
mod tests;

#[path = "winograd_adjoint.rs"]
mod adjoints;
#[cfg(test)]
pub(crate) use adjoints::param_grad_split;
pub(crate) use adjoints::{adjoint, param_grad};
