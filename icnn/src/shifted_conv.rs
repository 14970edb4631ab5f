//! "Same" convolutions (stride 1, odd `k × k` kernel, padding `p = (k − 1)/2`) as sums of
//! `k²` shifted matrix products, without im2col: the host kernels' convolutions on the
//! ConvICNN's 3×3 layers (`host_link`).
//!
//! Each image is copied once into a padded layout whose rows share their zero padding: `p`
//! zero rows above and below, and per row `p` zero slots followed by the `W` pixels, so a row
//! has `W_r = W + p` slots and the slots after a row's pixels are the next row's zeros. In
//! that layout the input pixel under kernel tap `(ki, kj)` for output `(i, j)` sits at
//! `(i + ki)·W_r + j + kj`: a fixed offset from the output index `i·W_r + j`. So with the
//! output computed on a *wide* grid of `H × W_r` positions (the last `p` columns of each row
//! are discarded),
//! ```text
//! forward:     Y_w  (C_o × H·W_r) = Σ_{ki,kj} K[:, :, ki, kj]   (C_o × C) · X_p[shift(ki, kj)]
//! adjoint:     X̄_w (C × H·W_r)   = Σ_{ki,kj} K[:, :, ki, kj]ᵀ  (C × C_o) · Ȳ_p[shift(k−1−ki, k−1−kj)]
//! kernel grad: K̄[:, :, ki, kj]   += Ȳ_w (C_o × H·W_r) · X_p[shift(ki, kj)]ᵀ
//! ```
//! where `X_p[shift]` is a strided view into the padded image (row stride: one channel's
//! padded plane) and `Ȳ_w` is `Ȳ` on the wide grid with zeros in the discarded columns. The
//! products see strided views; nothing is gathered. Measured on the ConvICNN's 64 → 64
//! layers (one thread, 16 images, f32): 28×28 and 14×14 run at 1.6× im2col + product,
//! although the wide grid adds `p/W` to the arithmetic.

use candle_core::Result;
use rayon::prelude::*;

use crate::gemm_conv::{PatchGeometry, split_batch};
use crate::host_gemm::{Par, View, matmul_into};
use crate::surrogate_host::Real;

/// Whether `g` is a convolution these kernels cover: stride 1, a square odd kernel, padding
/// `(k − 1)/2`, so the output has the input's size.
pub(crate) fn covers(g: &PatchGeometry) -> bool {
    g.stride == 1 && g.kh == g.kw && g.kh % 2 == 1 && g.padding * 2 + 1 == g.kh
}

/// Below this many channels summed over per tap (the input's for [`forward`], the output's
/// for [`adjoint`]) each tap's product is too thin and im2col + one product is faster:
/// measured one thread, 16 images, f32, 3×3: 1 → 64 channels at 28×28 0.30 ms with im2col,
/// 0.95 ms shifted; 4 → 64 at 14×14 0.23 vs 0.31 ms; 16 → 64 at 7×7 0.27 vs 0.24 ms.
pub(crate) const MIN_TAP_CHANNELS: usize = 16;

/// The padded layout of one `(C, H, W)` image for geometry `g`.
#[derive(Clone, Copy)]
struct Layout {
    channels: usize,
    h: usize,
    w: usize,
    p: usize,
}

impl Layout {
    fn of(channels: usize, g: &PatchGeometry) -> Self {
        Self {
            channels,
            h: g.height,
            w: g.width,
            p: g.padding,
        }
    }

    /// Slots per padded row.
    fn row(&self) -> usize {
        self.w + self.p
    }

    /// Slots per padded channel plane.
    fn plane(&self) -> usize {
        (self.h + 2 * self.p) * self.row()
    }

    /// The padded buffer's length (the last tap reads `2p` slots past the last plane).
    fn len(&self) -> usize {
        self.channels * self.plane() + 2 * self.p
    }

    /// Positions of the wide grid.
    fn wide(&self) -> usize {
        self.h * self.row()
    }
}

/// Copies the image `img` `(C, H, W)` into the data slots of `padded` (laid out as `l`).
fn pad_into<T: Copy>(l: &Layout, img: &[T], padded: &mut [T]) {
    let (row, plane) = (l.row(), l.plane());
    for c in 0..l.channels {
        for i in 0..l.h {
            let dst = c * plane + (i + l.p) * row + l.p;
            padded[dst..dst + l.w].copy_from_slice(&img[(c * l.h + i) * l.w..][..l.w]);
        }
    }
}

/// `img (C, H, W) (+)=` the data columns of the wide grid `wide` `(C, H·W_r)`.
fn unwide_into<T: Real>(l: &Layout, wide: &[T], img: &mut [T], acc: bool) {
    let row = l.row();
    for (c_img, c_wide) in img
        .chunks_exact_mut(l.h * l.w)
        .zip(wide.chunks_exact(l.wide()))
    {
        for (dst, src) in c_img.chunks_exact_mut(l.w).zip(c_wide.chunks_exact(row)) {
            if acc {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            } else {
                dst.copy_from_slice(&src[..l.w]);
            }
        }
    }
}

/// Copies `img` `(C, H, W)` into the wide grid `wide` `(C, H·W_r)` (its extra columns untouched).
fn wide_from<T: Copy>(l: &Layout, img: &[T], wide: &mut [T]) {
    let row = l.row();
    for (c_img, c_wide) in img
        .chunks_exact(l.h * l.w)
        .zip(wide.chunks_exact_mut(l.wide()))
    {
        for (src, dst) in c_img.chunks_exact(l.w).zip(c_wide.chunks_exact_mut(row)) {
            dst[..l.w].copy_from_slice(src);
        }
    }
}

/// The view of tap `(ki, kj)` into a padded buffer: `(C × H·W_r)`, row stride one plane.
fn tap<'a, T>(l: &Layout, padded: &'a [T], ki: usize, kj: usize) -> View<'a, T> {
    View {
        data: &padded[ki * l.row() + kj..],
        rows: l.channels,
        cols: l.wide(),
        rs: l.plane(),
        cs: 1,
    }
}

/// `K[:, :, ki, kj]` `(C_o × C)` of a row-major `(C_o, C, k, k)` kernel.
fn kernel_tap<T>(k: &[T], c_out: usize, c_in: usize, kk: usize, s: usize) -> View<'_, T> {
    View {
        data: &k[s..],
        rows: c_out,
        cols: c_in,
        rs: c_in * kk,
        cs: kk,
    }
}

/// Runs `f(images of the task, outputs of the task)` over the batch split as `gemm_conv`
/// splits it (one task per thread), with the product parallelism to use inside.
fn for_tasks<T: Real>(
    src: &[T],
    src_len: usize,
    dst: &mut [T],
    dst_len: usize,
    rows: usize,
    f: impl Fn(&[T], &mut [T], Par) -> Result<()> + Sync,
) -> Result<()> {
    let (per_task, par) = split_batch(rows);
    dst[..rows * dst_len]
        .par_chunks_mut(per_task * dst_len)
        .zip(src[..rows * src_len].par_chunks(per_task * src_len))
        .try_for_each(|(d, s)| f(s, d, par))
}

/// `dst (rows × C_o·H·W) (+)= conv(src (rows × C·H·W), K)`.
pub(crate) fn forward<T: Real>(
    k: &[T],
    g: &PatchGeometry,
    c_out: usize,
    src: &[T],
    dst: &mut [T],
    rows: usize,
    acc: bool,
) -> Result<()> {
    let (lin, lout) = (Layout::of(g.channels, g), Layout::of(c_out, g));
    let kk = g.kh * g.kw;
    let (in_len, out_len) = (g.image_len(), c_out * g.height * g.width);
    for_tasks(src, in_len, dst, out_len, rows, |xs, ys, par| {
        let mut padded = vec![T::zero(); lin.len()];
        let mut wide = vec![T::zero(); c_out * lin.wide()];
        for (x, y) in xs.chunks_exact(in_len).zip(ys.chunks_exact_mut(out_len)) {
            pad_into(&lin, x, &mut padded);
            for s in 0..kk {
                let (ki, kj) = (s / g.kw, s % g.kw);
                let kt = kernel_tap(k, c_out, g.channels, kk, s);
                matmul_into(&mut wide, kt, tap(&lin, &padded, ki, kj), s > 0, par)?;
            }
            unwide_into(&lout, &wide, y, acc);
        }
        Ok(())
    })
}

/// `dst (rows × C·H·W) (+)= Kᵀ src (rows × C_o·H·W)`: the adjoint of [`forward`].
pub(crate) fn adjoint<T: Real>(
    k: &[T],
    g: &PatchGeometry,
    c_out: usize,
    src: &[T],
    dst: &mut [T],
    rows: usize,
    acc: bool,
) -> Result<()> {
    let (lin, lout) = (Layout::of(g.channels, g), Layout::of(c_out, g));
    let kk = g.kh * g.kw;
    let (in_len, out_len) = (g.image_len(), c_out * g.height * g.width);
    for_tasks(src, out_len, dst, in_len, rows, |ys, xs, par| {
        let mut padded = vec![T::zero(); lout.len()];
        let mut wide = vec![T::zero(); g.channels * lout.wide()];
        for (y, x) in ys.chunks_exact(out_len).zip(xs.chunks_exact_mut(in_len)) {
            pad_into(&lout, y, &mut padded);
            for s in 0..kk {
                let (ki, kj) = (s / g.kw, s % g.kw);
                let kt = kernel_tap(k, c_out, g.channels, kk, s).t();
                let yt = tap(&lout, &padded, g.kh - 1 - ki, g.kw - 1 - kj);
                matmul_into(&mut wide, kt, yt, s > 0, par)?;
            }
            unwide_into(&lin, &wide, x, acc);
        }
        Ok(())
    })
}

/// `dst (C_o, C, k, k) += Σ_b ∂⟨cot_b, conv(src_b, K)⟩/∂K`; the sum over images runs in task
/// order (deterministic for a fixed thread count).
pub(crate) fn param_grad<T: Real>(
    g: &PatchGeometry,
    c_out: usize,
    dst: &mut [T],
    cot: &[T],
    src: &[T],
    rows: usize,
) -> Result<()> {
    let lin = Layout::of(g.channels, g);
    let lout = Layout::of(c_out, g);
    let kk = g.kh * g.kw;
    let (in_len, out_len) = (g.image_len(), c_out * g.height * g.width);
    let tap_len = c_out * g.channels;
    let (per_task, par) = split_batch(rows);
    let partials = cot[..rows * out_len]
        .par_chunks(per_task * out_len)
        .zip(src[..rows * in_len].par_chunks(per_task * in_len))
        .map(|(ys, xs)| {
            // Shift-major partial sums: tap s is `acc[s·C_o·C..]` `(C_o × C)`.
            let mut acc = vec![T::zero(); kk * tap_len];
            let mut padded = vec![T::zero(); lin.len()];
            let mut wide = vec![T::zero(); lout.channels * lout.wide()];
            for (i, (y, x)) in ys
                .chunks_exact(out_len)
                .zip(xs.chunks_exact(in_len))
                .enumerate()
            {
                pad_into(&lin, x, &mut padded);
                wide_from(&lout, y, &mut wide);
                let yw = View::row_major(&wide, c_out, lout.wide());
                for (s, a) in acc.chunks_exact_mut(tap_len).enumerate() {
                    let (ki, kj) = (s / g.kw, s % g.kw);
                    matmul_into(a, yw, tap(&lin, &padded, ki, kj).t(), i > 0, par)?;
                }
            }
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    for part in partials {
        for (s, a) in part.chunks_exact(tap_len).enumerate() {
            for (o, row) in a.chunks_exact(g.channels).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    dst[(o * g.channels + c) * kk + s] += v;
                }
            }
        }
    }
    Ok(())
}
