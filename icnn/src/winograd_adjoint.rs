//! The adjoints of [`super::forward`]: with respect to the input (the transposed Winograd
//! algorithm, on the forward's own transformed kernel) and with respect to the kernel.
//!
//! **Input.** The forward convolution of a tile is `y = Aᵀ [U ⊙ (Bᵀ d B)] A`, summed over the
//! input channels by the products `M_ξ = V_ξ · U_ξ`. Read backwards, per tile,
//! ```text
//! M̄ = A ȳ Aᵀ,   V̄_ξ = M̄_ξ · U_ξᵀ,   d̄ += B V̄ Bᵀ
//! ```
//! and the `6×6` patches `d̄`, which overlap their neighbours by two pixels, are added into
//! the input cotangent (dropping the padding). This is the exact transpose of the forward's
//! arithmetic with the same `U` (read transposed: 36 products of inner dimension `C_o`), so a
//! layer keeps one transformed kernel, 4 values per kernel value, instead of a second one
//! for the flipped, transposed kernel (the forward convolution of which the adjoint used to
//! be: 4 more copies of the conv weights in a training step).
//!
//! **Kernel.** `K̄[o, c] = Gᵀ Ū G` with `Ū_ξ = Σ_t V_ξᵀ M̄_ξ` and `M̄ = A Ȳ Aᵀ` per tile
//! (36 products of inner dimension "tiles").

use std::ops::Range;

use super::{IN, OUT, Tiling, TransformedKernel, XI, input_transform, parts, parts_mut, plane_row};
use crate::gemm_conv::{PatchGeometry, product_parallelism, reduction_tasks, sum_in_order};
use crate::host_gemm::{Par, View, matmul_into};
use crate::scratch::Scratch;
use crate::shifted_conv::{for_tasks, task_partials};
use crate::surrogate_host::Real;
use crate::wide_simd::avx2_fma_fn;
use candle_core::Result;
use rayon::prelude::*;

/// `y = A x` along one axis (the adjoint of [`super::at`]), element-wise.
#[inline(always)]
fn a<T: Real>(x: [&[T]; OUT], y: [&mut [T]; IN]) {
    let n = y[0].len();
    let [x0, x1, x2, x3] = x.map(|s| &s[..n]);
    let [y0, y1, y2, y3, y4, y5] = y.map(|s| &mut s[..n]);
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    for i in 0..n {
        let (p, q, r, s) = (x0[i], x1[i], x2[i], x3[i]);
        let (even1, odd1, even2, odd2) = (p + r, q + s, p + four * r, two * q + eight * s);
        y0[i] = p;
        y1[i] = even1 + odd1;
        y2[i] = even1 - odd1;
        y3[i] = even2 + odd2;
        y4[i] = even2 - odd2;
        y5[i] = s;
    }
}

avx2_fma_fn! {
    /// The adjoint of [`super::output_transform`]: `m̄ = A ȳ Aᵀ` per tile of global tile
    /// rows `rows` of the cotangent images `y` (`(H, W, c_out)` each; 0 outside the image)
    /// into `mbar` (`[ξ][t][o]`).
    fn output_adjoint<T: Real>(
        tl: &Tiling,
        c_out: usize,
        y: &[T],
        rows: Range<usize>,
        mbar: &mut [T],
    ) {
        let co = c_out;
        let plane = rows.len() * tl.tw * co;
        let mut patch = Scratch::<T>::take(OUT * OUT * co);
        let mut half = Scratch::<T>::take(IN * OUT * co);
        for (lr, tr) in rows.enumerate() {
            let (b, ti) = (tr / tl.th, tr % tl.th);
            let img = &y[b * tl.h * tl.w * co..(b + 1) * tl.h * tl.w * co];
            for tj in 0..tl.tw {
                // The tile's 4 rows of 4 pixels: straight from the image inside it, else
                // copied with zeros for the pixels outside.
                let cols = tl.cols(tj);
                let tile_row_at = |i: usize| (i * tl.w + OUT * tj) * co;
                let x: [&[T]; OUT] = if cols == OUT && OUT * ti + OUT <= tl.h {
                    std::array::from_fn(|r| &img[tile_row_at(OUT * ti + r)..][..OUT * co])
                } else {
                    patch.fill(T::zero());
                    for (r, dst) in patch.chunks_exact_mut(OUT * co).enumerate() {
                        let i = OUT * ti + r;
                        if i >= tl.h {
                            break;
                        }
                        dst[..cols * co].copy_from_slice(&img[tile_row_at(i)..][..cols * co]);
                    }
                    parts(&patch, OUT * co)
                };
                // half[r] (4 pixels each): the patch's rows combined; then each row's
                // pixels, straight to their planes.
                a(x, parts_mut(&mut half, OUT * co));
                let at = (lr * tl.tw + tj) * co;
                for (r, src) in half.chunks_exact(OUT * co).enumerate() {
                    a(parts(src, co), plane_row(mbar, plane, r, at, co));
                }
            }
        }
    }
}

/// `Gᵀ x`: the adjoint of [`super::g6`], 6 values to 3.
fn g6t<T: Real>(x: [T; IN]) -> [T; 3] {
    let f = |v: f64| T::from_f64(v);
    let (s12, d12, s34, d34) = (x[1] + x[2], x[2] - x[1], x[3] + x[4], x[3] - x[4]);
    [
        x[0] * f(0.25) - s12 * f(1.0 / 6.0) + s34 * f(1.0 / 24.0),
        d12 * f(1.0 / 6.0) + d34 * f(1.0 / 12.0),
        (s34 - s12) * f(1.0 / 6.0) + x[5],
    ]
}

/// [`g6t`] element-wise over slices: `y[·][i] = g6t(x[0][i], …, x[5][i])`.
#[inline(always)]
fn g6t_slices<T: Real>(x: [&[T]; IN], y: [&mut [T]; 3]) {
    let n = y[0].len();
    let [x0, x1, x2, x3, x4, x5] = x.map(|s| &s[..n]);
    let [y0, y1, y2] = y.map(|s| &mut s[..n]);
    for i in 0..n {
        let [v0, v1, v2] = g6t([x0[i], x1[i], x2[i], x3[i], x4[i], x5[i]]);
        (y0[i], y1[i], y2[i]) = (v0, v1, v2);
    }
}

/// `dst (C_o, C, 3, 3) += Gᵀ Ū G` for the transformed-kernel gradient `ū` (`[ξ][c][o]`):
/// the adjoint of [`TransformedKernel::of`]. Blocks of output channels run in parallel, each
/// adding into its own rows of `dst` (no per-channel gradient is kept aside). The blocks
/// follow the thread count, but each output channel's arithmetic is the same in any block
/// (element-wise, channels in order).
fn kernel_adjoint<T: Real>(ubar: &[T], c_out: usize, c_in: usize, dst: &mut [T]) {
    let plane = c_in * c_out;
    if plane == 0 {
        return;
    }
    // Blocks of up to 64 output channels (the slices the transforms run along), at least
    // four per thread where there are enough channels.
    let block = c_out
        .div_ceil(4 * rayon::current_num_threads().max(1))
        .clamp(1, 64);
    let rows_len = c_in * 9;
    dst[..c_out * rows_len]
        .par_chunks_mut(block * rows_len)
        .enumerate()
        .for_each(|(k, rows)| {
            let (o0, ob) = (k * block, rows.len() / rows_len);
            // cols[s][i][o]: column s (entries 6r + s, r = 0..6) by Gᵀ; grad[t][o] for tap t.
            let (mut cols, mut grad) = (vec![T::zero(); IN * 3 * ob], vec![T::zero(); 9 * ob]);
            for c in 0..c_in {
                let at = c * c_out + o0;
                let seg = |xi: usize| &ubar[xi * plane + at..xi * plane + at + ob];
                for (s, col) in cols.chunks_exact_mut(3 * ob).enumerate() {
                    g6t_slices(std::array::from_fn(|r| seg(IN * r + s)), parts_mut(col, ob));
                }
                for (i, row) in grad.chunks_exact_mut(3 * ob).enumerate() {
                    let x = std::array::from_fn(|s| &cols[(s * 3 + i) * ob..(s * 3 + i + 1) * ob]);
                    g6t_slices(x, parts_mut(row, ob));
                }
                for o in 0..ob {
                    let g = &mut rows[(o * c_in + c) * 9..(o * c_in + c) * 9 + 9];
                    for (t, v) in g.iter_mut().enumerate() {
                        *v += grad[t * ob + o];
                    }
                }
            }
        });
}

/// Bytes of transformed kernel gradient (`Ū`, 36 values per `C·C_o`) that the tasks of
/// [`param_grad`] may hold together: each task keeps a `Ū` of its own (4 copies of the
/// layer's kernel: 151 MB a task for 1,024 channels in f32), all of them until they are
/// added. Above, one task takes all images and runs its 36 products on rayon's threads
/// instead (whatever the thread count, so that the sum is the same). 64 MiB is what two
/// threads' tasks held at most when there was one task per thread; with the 8 tasks of a
/// batch of 8 or more images, layers up to about 240 × 240 channels in f32 keep them (a
/// width-64 layer's `Ū` is 0.6 MB).
pub(crate) const MAX_PARTIAL_GRADIENT_BYTES: usize = 64 << 20;

/// `dst (C_o, C, 3, 3) += Σ_b ∂⟨cot_b, conv(src_b, K)⟩/∂K` (channel-last rows); the sum over
/// images runs over fixed tasks in task order (the same bits for any thread count).
pub(crate) fn param_grad<T: Real>(
    g: &PatchGeometry,
    c_out: usize,
    dst: &mut [T],
    cot: &[T],
    src: &[T],
    rows: usize,
) -> Result<()> {
    param_grad_split(g, c_out, dst, cot, src, rows, MAX_PARTIAL_GRADIENT_BYTES)
}

/// [`param_grad`], splitting the images among the tasks of [`task_partials`] only while
/// their `Ū` take at most `max_partial_bytes` together (one task for all of them
/// otherwise). The task partials `Ū` are added in task order and transformed back once.
pub(crate) fn param_grad_split<T: Real>(
    g: &PatchGeometry,
    c_out: usize,
    dst: &mut [T],
    cot: &[T],
    src: &[T],
    rows: usize,
    max_partial_bytes: usize,
) -> Result<()> {
    let (tl, c) = (Tiling::of(g), g.channels);
    let (in_len, out_len) = (g.image_len(), c_out * g.height * g.width);
    let task = |ys: &[T], xs: &[T], par: Par| -> Result<Vec<T>> {
        let mut ubar = vec![T::zero(); XI * c * c_out];
        let (zero, mut half) = (vec![T::zero(); tl.w * c], Scratch::take(tl.strip_len(c)));
        let mut v = Scratch::take(tl.chunk_len(c));
        let mut mbar = Scratch::take(tl.chunk_len(c_out));
        for (i, chunk) in tl.chunks(xs.len() / in_len).enumerate() {
            let tiles = chunk.len() * tl.tw;
            let (v, mbar) = (&mut v[..XI * tiles * c], &mut mbar[..XI * tiles * c_out]);
            input_transform(&tl, c, xs, chunk.clone(), &zero, &mut half, v);
            output_adjoint(&tl, c_out, ys, chunk, mbar);
            for (xi, ux) in ubar.chunks_exact_mut(c * c_out).enumerate() {
                let vx = View::row_major(&v[xi * tiles * c..], tiles, c);
                let mx = View::row_major(&mbar[xi * tiles * c_out..], tiles, c_out);
                matmul_into(ux, vx.t(), mx, i > 0, par)?;
            }
        }
        Ok(ubar)
    };
    let ubar_len = XI * c * c_out;
    let tasks = reduction_tasks(rows).len();
    let partials = if tasks * ubar_len * std::mem::size_of::<T>() > max_partial_bytes {
        // One task: its products on rayon's threads.
        let par = product_parallelism(1);
        let (ys, xs) = (&cot[..rows * out_len], &src[..rows * in_len]);
        vec![task(ys, xs, par)?]
    } else {
        task_partials(cot, out_len, src, in_len, rows, task)?
    };
    kernel_adjoint(&sum_in_order(partials, ubar_len), c_out, c, dst);
    Ok(())
}

/// `B x` for one position (the adjoint of [`super::bt`]): `(Σ_s Bᵀ[s][j] x_s)_j`.
#[inline(always)]
fn b6<T: Real>([a, b, c, d, e, f]: [T; IN]) -> [T; IN] {
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    let (s12, d21, s34, d43) = (b + c, c - b, d + e, e - d);
    [
        four * a,
        four * (d21 + f) + two * d43,
        -(five * a + four * s12 + s34),
        -(d21 + two * d43 + five * f),
        a + s12 + s34,
        f,
    ]
}

/// `y += B x` along one axis, element-wise over the slices; with `OVERLAP`, only the first
/// two slices are added to and the other four stored (the pixel slots of a tile that shares
/// two with the tile before it, the tiles of a row in order).
#[inline(always)]
fn b_add<T: Real, const OVERLAP: bool>(x: [&[T]; IN], y: [&mut [T]; IN]) {
    let n = y[0].len();
    let [x0, x1, x2, x3, x4, x5] = x.map(|s| &s[..n]);
    let [y0, y1, y2, y3, y4, y5] = y.map(|s| &mut s[..n]);
    for i in 0..n {
        let [v0, v1, v2, v3, v4, v5] = b6([x0[i], x1[i], x2[i], x3[i], x4[i], x5[i]]);
        (y0[i], y1[i]) = (y0[i] + v0, y1[i] + v1);
        if OVERLAP {
            (y2[i], y3[i], y4[i], y5[i]) = (v2, v3, v4, v5);
        } else {
            (y2[i], y3[i], y4[i], y5[i]) = (y2[i] + v2, y3[i] + v3, y4[i] + v4, y5[i] + v5);
        }
    }
}

/// Row `r` of a tile's transformed `6×6` in planar buffers `[ξ][t][len]`, read-only: the
/// `len` values at `at` of planes `ξ = 6r .. 6r + 6`, each plane `plane` values long.
fn plane_row_of<T>(planes: &[T], plane: usize, r: usize, at: usize, len: usize) -> [&[T]; IN] {
    let mut it = planes.chunks_exact(plane).skip(IN * r);
    std::array::from_fn(|_| it.next().map_or(&[][..], |p| &p[at..at + len]))
}

/// Work space of [`input_adjoint`] for `c` channels: [`Tiling::strip_len`] values and
/// [`IN`] image rows.
fn input_adjoint_work(tl: &Tiling, c: usize) -> usize {
    tl.strip_len(c) + IN * tl.w * c
}

avx2_fma_fn! {
    /// The adjoint of [`input_transform`]: `d̄ = B v̄ Bᵀ` per tile of global tile rows `rows`
    /// from `vbar` (`[ξ][t][c]`), added into the images `xbar` (`(H, W, c)` each) where the
    /// tile's `6×6` patch lies inside the image. The tiles of a tile row are combined along
    /// the columns into `half` ([`IN`] padded rows of [`Tiling::strip_row`] pixels, as in
    /// [`input_transform`]; neighbours add into their two shared columns), then its rows into
    /// the image rows. `work` is work space of [`input_adjoint_work`] values whatever they
    /// are on entry: `half` and the rows above and below the image.
    /// `fresh`: `xbar`'s values are stale and overwritten (the tile rows of each image come
    /// in order, from its first).
    fn input_adjoint<T: Real>(
        tl: &Tiling,
        c: usize,
        vbar: &[T],
        rows: Range<usize>,
        fresh: bool,
        work: &mut [T],
        xbar: &mut [T],
    ) {
        let (sr, line) = (tl.strip_row() * c, tl.w * c);
        let plane = rows.len() * tl.tw * c;
        let (half, spare) = work.split_at_mut(tl.strip_len(c));
        for (lr, tr) in rows.enumerate() {
            for row in half.chunks_exact_mut(sr) {
                row[..2 * c].fill(T::zero());
            }
            for tj in 0..tl.tw {
                let (from, at) = (OUT * tj * c, (lr * tl.tw + tj) * c);
                for (r, row) in half.chunks_exact_mut(sr).enumerate() {
                    b_add::<T, true>(
                        plane_row_of(vbar, plane, r, at, c),
                        parts_mut(&mut row[from..from + IN * c], c),
                    );
                }
            }
            // Padded row r of the tile row is image row 4a + r − 1: those inside the image
            // are consecutive rows of it, the others go to `spare`. With `fresh`, the rows
            // that no earlier tile row reached (from 4a + 1, or 0) are set to zero first.
            let (b, a) = (tr / tl.th, tr % tl.th);
            let (lo, hi) = ((OUT * a).saturating_sub(1), (OUT * a + IN - 1).min(tl.h));
            let img = &mut xbar[(b * tl.h + lo) * line..(b * tl.h + hi) * line];
            if fresh {
                let first = if a == 0 { 0 } else { OUT * a + 1 };
                img[(first.min(hi) - lo) * line..].fill(T::zero());
            }
            let (mut inside, mut outside) = (img.chunks_exact_mut(line), spare.chunks_exact_mut(line));
            let dst = std::array::from_fn(|r| {
                let i = (OUT * a + r).wrapping_sub(1);
                let next = if i < tl.h { inside.next() } else { outside.next() };
                next.unwrap_or_default()
            });
            b_add::<T, false>(parts::<T, IN>(half, sr).map(|h| &h[c..c + line]), dst);
        }
    }
}

/// `dst (rows × H·W·C) (+)= Kᵀ src (rows × H·W·C_o)`: the adjoint of [`super::forward`] with
/// the same [`TransformedKernel::of`] `K` (`C_o, C`; `C = g.channels`): per task and per chunk
/// of tile rows, `M̄ = A ȳ Aᵀ`, 36 products `V̄_ξ = M̄_ξ U_ξᵀ` and `d̄ = B V̄ Bᵀ`, added into
/// `dst` with `acc`, stored without.
pub(crate) fn adjoint<T: Real>(
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
            "Winograd adjoint: a kernel of {} input channels for images of {c}",
            kernel.c_in
        );
    }
    let u = &kernel.u;
    let (src_len, dst_len) = (c_out * g.height * g.width, g.image_len());
    for_tasks(src, src_len, dst, dst_len, rows, |ys, xs, par| {
        let mut work = Scratch::take(input_adjoint_work(&tl, c));
        let (mut vbar, mut mbar) = (
            Scratch::take(tl.chunk_len(c)),
            Scratch::take(tl.chunk_len(c_out)),
        );
        for chunk in tl.chunks(ys.len() / src_len) {
            let tiles = chunk.len() * tl.tw;
            let (vbar, mbar) = (&mut vbar[..XI * tiles * c], &mut mbar[..XI * tiles * c_out]);
            output_adjoint(&tl, c_out, ys, chunk.clone(), mbar);
            for (xi, vx) in vbar.chunks_exact_mut(tiles * c).enumerate() {
                let mx = View::row_major(&mbar[xi * tiles * c_out..], tiles, c_out);
                let ux = View::row_major(&u[xi * c * c_out..], c, c_out).t();
                matmul_into(vx, mx, ux, false, par)?;
            }
            input_adjoint(&tl, c, vbar, chunk, !acc, &mut work, xs);
        }
        Ok(())
    })
}
