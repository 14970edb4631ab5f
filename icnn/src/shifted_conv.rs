//! "Same" convolutions (stride 1, odd `k × k` kernel, padding `p = (k − 1)/2`) of
//! channel-last images as sums of `k²` shifted matrix products, without im2col: the host
//! kernels' "same" convolutions that [`crate::winograd_conv`] does not take (the ConvICNN's
//! thin first layers, kernels other than 3×3; `host_link`).
//!
//! An image is a row `(H, W, C)` (channel-last: pixel `(i, j)` is the `C` contiguous values at
//! `(i·W + j)·C`). Each image is copied once into a padded layout whose rows share their zero
//! padding: `p` zero rows above and below, and per row `p` zero pixels followed by the `W`
//! pixels, so a row has `W_r = W + p` pixel slots and the slots after a row's pixels are the
//! next row's zeros. In that layout the input pixel under kernel tap `(ki, kj)` for output
//! `(i, j)` is slot `(i + ki)·W_r + j + kj`: a fixed offset from the output slot `i·W_r + j`.
//! So with the output computed on a *wide* grid of `n = H·W_r` slots (the last `p` of each
//! row are discarded), every product is a plain `(n × C)` matrix at an offset:
//! ```text
//! forward:     Y_w (n × C_o)  = Σ_{ki,kj} X_p[shift(ki, kj)] (n × C)       · K[:, :, ki, kj]ᵀ (C × C_o)
//! adjoint:     X̄_w (n × C)   = Σ_{ki,kj} Ȳ_p[shift(k−1−ki, k−1−kj)] (n × C_o) · K[:, :, ki, kj] (C_o × C)
//! kernel grad: K̄[:, :, ki, kj] (C_o × C) += Ȳ_wᵀ (C_o × n) · X_p[shift(ki, kj)] (n × C)
//! ```
//! with `Ȳ_w` the output cotangent on the wide grid, zero in the discarded slots. Measured on
//! the ConvICNN's 64 → 64 layers at 28×28 (one thread, 16 images, f32, faer): 142 GFLOP/s,
//! against 117 for the same shifted products on channel-first images and ~100 for im2col +
//! one product (which also pays the im2col copy), although the wide grid adds `p/W` to the
//! arithmetic.

use candle_core::Result;
use rayon::prelude::*;

use crate::gemm_conv::{PatchGeometry, reduce_over_batch, split_batch};
use crate::host_gemm::{GemmFloat, Par, View, matmul_into};
use crate::surrogate_host::Real;

/// Whether `g` is a convolution these kernels cover: stride 1, a square odd kernel, padding
/// `(k − 1)/2`, so the output has the input's size.
pub(crate) fn covers(g: &PatchGeometry) -> bool {
    g.stride == 1 && g.kh == g.kw && g.kh % 2 == 1 && g.padding * 2 + 1 == g.kh
}

/// Below this many input channels each tap's product is too thin (`C` is its inner
/// dimension) and [`forward`] / [`param_grad`] gather the taps into one `(n × k²C)` patch
/// matrix first (im2col on the wide grid) for one product: measured one thread, 16 images,
/// f32, 3×3: 1 → 64 channels at 28×28 0.30 ms with im2col, 0.95 ms shifted; 4 → 64 at
/// 14×14 0.23 vs 0.31 ms; 16 → 64 at 7×7 0.27 vs 0.24 ms.
pub(crate) const MIN_TAP_CHANNELS: usize = 16;

/// Padded rows a group of stacked images should span: small images are stacked so each
/// product has about this many rows (one 28×28 image; 4 of 14×14; 16 of 7×7): measured on the
/// MNIST flow (2 threads), one image per product ran 14×14 layers at 135 GFLOP/s and 7×7 at
/// 90, against 190 at 28×28.
const GROUP_ROWS: usize = 1024;

/// The padded layout of a group of channel-last `(H, W, C)` images for geometry `g`: the
/// images stacked vertically, consecutive images sharing `p` zero rows as consecutive rows
/// share `p` zero slots, so the whole group is one tall padded image.
#[derive(Clone, Copy)]
struct Layout {
    channels: usize,
    h: usize,
    w: usize,
    p: usize,
    /// Images per group (the buffers' capacity; a batch's last group may hold fewer).
    images: usize,
}

impl Layout {
    fn of(channels: usize, g: &PatchGeometry) -> Self {
        let (h, w, p) = (g.height, g.width, g.padding);
        Self {
            channels,
            h,
            w,
            p,
            images: (GROUP_ROWS / ((h + p) * (w + p)).max(1)).max(1),
        }
    }

    /// Pixel slots per padded row.
    fn row(&self) -> usize {
        self.w + self.p
    }

    /// The padded buffer's length: `p` zero rows, `H + p` rows per image, and the `p` rows and
    /// `2p` slots the last tap reads past them.
    fn len(&self) -> usize {
        ((self.images * (self.h + self.p) + 2 * self.p) * self.row() + 2 * self.p) * self.channels
    }

    /// Slots of the wide grid of `n` images.
    fn wide(&self, n: usize) -> usize {
        n * (self.h + self.p) * self.row()
    }

    /// The `(wide × k·C)` view of the `k` taps `(ki, 0..k)` of kernel row `ki` into a padded
    /// buffer holding `n` images: tap `(ki, kj)` of output slot `q` is slot
    /// `q + ki·W_r + kj`, so the `k` taps of a slot are `k·C` contiguous values and the rows
    /// of the view overlap (row stride `C`).
    fn tap_row<'a, T>(&self, padded: &'a [T], ki: usize, k: usize, n: usize) -> View<'a, T> {
        View {
            data: &padded[ki * self.row() * self.channels..],
            rows: self.wide(n),
            cols: k * self.channels,
            rs: self.channels,
            cs: 1,
        }
    }

    /// The data lines (`W·C` values each) of the images in `imgs`, with the slot offset of
    /// each in a padded (`lead = p`) or wide (`lead = 0`) buffer.
    fn lines(&self, n: usize, lead: usize) -> impl Iterator<Item = usize> + use<> {
        let (h, p, row, c) = (self.h, self.p, self.row(), self.channels);
        (0..n * h).map(move |l| {
            let (b, i) = (l / h, l % h);
            ((lead + b * (h + p) + i) * row + lead) * c
        })
    }

    /// Copies the images `imgs` (`n × (H, W, C)`) into the data slots of `padded` (its zero
    /// slots untouched).
    fn pad_into<T: Real>(&self, imgs: &[T], padded: &mut [T]) {
        let line = self.w * self.channels;
        let n = imgs.len() / (self.h * line);
        for (src, at) in imgs.chunks_exact(line).zip(self.lines(n, self.p)) {
            padded[at..at + line].copy_from_slice(src);
        }
        if n < self.images {
            // A short last group: the taps read a few rows past it, which must be zero, not
            // the previous group's images.
            padded[(self.p + n * (self.h + self.p)) * self.row() * self.channels..].fill(T::zero());
        }
    }

    /// `imgs (n × (H, W, C)) (+)=` the data slots of the wide grid `wide`.
    fn unwide_into<T: Real>(&self, wide: &[T], imgs: &mut [T], acc: bool) {
        let line = self.w * self.channels;
        let n = imgs.len() / (self.h * line);
        for (dst, at) in imgs.chunks_exact_mut(line).zip(self.lines(n, 0)) {
            let src = &wide[at..at + line];
            if acc {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }

    /// Copies `imgs` into the data slots of the wide grid `wide` (its discarded slots
    /// untouched).
    fn wide_from<T: Copy>(&self, imgs: &[T], wide: &mut [T]) {
        let line = self.w * self.channels;
        let n = imgs.len() / (self.h * line);
        for (src, at) in imgs.chunks_exact(line).zip(self.lines(n, 0)) {
            wide[at..at + line].copy_from_slice(src);
        }
    }
}

/// The `(n × k²C)` patch matrix of a padded group of `n` images (`wide` rows): row `q` holds
/// the `C` values under each tap `s`, in tap order.
fn gather_taps<T: Copy>(l: &Layout, kw: usize, kk: usize, n: usize, padded: &[T], cols: &mut [T]) {
    let (c, rows) = (l.channels, l.wide(n));
    for s in 0..kk {
        let off = ((s / kw) * l.row() + s % kw) * c;
        let src = &padded[off..off + rows * c];
        if c == 1 {
            // One value per tap: a strided copy (a `copy_from_slice` per value would call
            // memmove for each).
            for (row, &v) in cols[..rows * kk].chunks_exact_mut(kk).zip(src) {
                row[s] = v;
            }
            continue;
        }
        for (row, px) in cols[..rows * kk * c]
            .chunks_exact_mut(kk * c)
            .zip(src.chunks_exact(c))
        {
            for (d, &v) in row[s * c..(s + 1) * c].iter_mut().zip(px) {
                *d = v;
            }
        }
    }
}

/// Runs `f(images of the task, outputs of the task, product parallelism)` over the batch
/// split as `gemm_conv` splits an image-by-image map (one task per thread: each image's
/// output is the same whatever task computes it).
pub(crate) fn for_tasks<T: Real>(
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

/// Runs `f(output cotangents of the task, inputs of the task, product parallelism)` over the
/// batch split into the fixed tasks of [`reduce_over_batch`] (they depend on `rows` only,
/// not on the thread count), each task returning its partial kernel gradient, collected in
/// task order.
pub(crate) fn task_partials<T: Real>(
    cot: &[T],
    out_len: usize,
    src: &[T],
    in_len: usize,
    rows: usize,
    f: impl Fn(&[T], &[T], Par) -> Result<Vec<T>> + Sync + Send,
) -> Result<Vec<Vec<T>>> {
    reduce_over_batch(rows, |images, par| {
        let ys = &cot[images.start * out_len..images.end * out_len];
        let xs = &src[images.start * in_len..images.end * in_len];
        f(ys, xs, par)
    })
}

/// The adjoint of a "same" stride-1 convolution as a forward one: the kernel
/// [`flipped_transposed`] and the geometry with the `C_o` channels as input.
pub(crate) fn adjoint_problem<T: GemmFloat>(
    k: &[T],
    g: &PatchGeometry,
    c_out: usize,
) -> (Vec<T>, PatchGeometry) {
    let flipped = flipped_transposed(k, c_out, g.channels, g.kh * g.kw);
    let swapped = PatchGeometry {
        channels: c_out,
        ..*g
    };
    (flipped, swapped)
}

/// The kernel `(C_o, C, k, k)` as `(k²C × C_o)` rows in [`gather_taps`]' order: row
/// `(ki·k + kj)·C + c` holds `K[:, c, ki, kj]`, so kernel row `ki` is the `(k·C × C_o)` block
/// that multiplies [`Layout::tap_row`]`(ki)`.
fn gathered_kernel<T: Real>(k: &[T], c_out: usize, c_in: usize, kk: usize) -> Vec<T> {
    let mut out = vec![T::zero(); kk * c_in * c_out];
    for o in 0..c_out {
        for c in 0..c_in {
            for s in 0..kk {
                out[(s * c_in + c) * c_out + o] = k[(o * c_in + c) * kk + s];
            }
        }
    }
    out
}

/// The kernel of [`adjoint`]: `K'[c, o, i, j] = K[o, c, k − 1 − i, k − 1 − j]`, row-major
/// `(C, C_o, k, k)` (channels swapped, taps turned by 180°): the adjoint of a "same"
/// stride-1 convolution is the convolution with this kernel.
pub(crate) fn flipped_transposed<T: GemmFloat>(
    kern: &[T],
    c_out: usize,
    c_in: usize,
    kk: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); kk * c_out * c_in];
    for c in 0..c_in {
        for o in 0..c_out {
            for s in 0..kk {
                out[(c * c_out + o) * kk + s] = kern[(o * c_in + c) * kk + (kk - 1 - s)];
            }
        }
    }
    out
}

/// `dst (rows × H·W·C_o) (+)= conv(src (rows × H·W·C), K)`, channel-last rows: per task and
/// per group of `n` images, pad the images, fill the wide output grid by the products, and
/// store its data slots into `dst`.
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
    let (kk, patch, block) = (g.kh * g.kw, g.kh * g.kw * g.channels, g.kw * g.channels);
    let kg = gathered_kernel(k, c_out, g.channels, kk);
    let gathered = g.channels < MIN_TAP_CHANNELS;
    let (src_len, dst_len, group) = (g.image_len(), c_out * g.height * g.width, lin.images);
    for_tasks(src, src_len, dst, dst_len, rows, |xs, ys, par| {
        let mut padded = vec![T::zero(); lin.len()];
        let mut wide = vec![T::zero(); lout.wide(group) * c_out];
        let mut cols = vec![T::zero(); if gathered { lin.wide(group) * patch } else { 0 }];
        for (x, y) in xs
            .chunks(group * src_len)
            .zip(ys.chunks_mut(group * dst_len))
        {
            let n = x.len() / src_len;
            let wide = &mut wide[..lout.wide(n) * c_out];
            lin.pad_into(x, &mut padded);
            if gathered {
                gather_taps(&lin, g.kw, kk, n, &padded, &mut cols);
                let cv = View::row_major(&cols, lin.wide(n), patch);
                matmul_into(wide, cv, View::row_major(&kg, patch, c_out), false, par)?;
            } else {
                // One product per kernel row: its k taps are contiguous in the padded layout.
                for ki in 0..g.kh {
                    let kt = View::row_major(&kg[ki * block * c_out..], block, c_out);
                    let xt = lin.tap_row(&padded, ki, g.kw, n);
                    matmul_into(wide, xt, kt, ki > 0, par)?;
                }
            }
            lout.unwide_into(wide, y, acc);
        }
        Ok(())
    })
}

/// `dst (rows × H·W·C) (+)= Kᵀ src (rows × H·W·C_o)`: the adjoint of [`forward`], which is
/// [`forward`] with the [`flipped_transposed`] kernel (`C_o` channels in, `C` out).
pub(crate) fn adjoint<T: Real>(
    k: &[T],
    g: &PatchGeometry,
    c_out: usize,
    src: &[T],
    dst: &mut [T],
    rows: usize,
    acc: bool,
) -> Result<()> {
    let (flipped, swapped) = adjoint_problem(k, g, c_out);
    forward(&flipped, &swapped, g.channels, src, dst, rows, acc)
}

/// `dst (C_o, C, k, k) += Σ_b ∂⟨cot_b, conv(src_b, K)⟩/∂K` (channel-last rows); the sum over
/// images runs over the fixed tasks of [`task_partials`], in task order (the same bits for
/// any thread count).
pub(crate) fn param_grad<T: Real>(
    g: &PatchGeometry,
    c_out: usize,
    dst: &mut [T],
    cot: &[T],
    src: &[T],
    rows: usize,
) -> Result<()> {
    let (lin, lout) = (Layout::of(g.channels, g), Layout::of(c_out, g));
    let (kk, group) = (g.kh * g.kw, lin.images);
    let (in_len, out_len) = (g.image_len(), c_out * g.height * g.width);
    let tap_len = c_out * g.channels;
    let gathered = g.channels < MIN_TAP_CHANNELS;
    let patch = kk * g.channels;
    let partials = task_partials(cot, out_len, src, in_len, rows, |ys, xs, par| {
        // Per kernel row ki a `(C_o × k·C)` block at `acc[ki·k·C_o·C..]` (columns: tap
        // `kj`, then channel); gathered, one `(C_o × k²C)` matrix (tap `s`, then channel).
        let mut acc = vec![T::zero(); kk * tap_len];
        let mut padded = vec![T::zero(); lin.len()];
        // Zero in the discarded slots, which the products read.
        let mut wide = vec![T::zero(); lout.wide(group) * c_out];
        let mut cols = vec![T::zero(); if gathered { lin.wide(group) * patch } else { 0 }];
        for (i, (y, x)) in ys
            .chunks(group * out_len)
            .zip(xs.chunks(group * in_len))
            .enumerate()
        {
            let n = x.len() / in_len;
            lin.pad_into(x, &mut padded);
            lout.wide_from(y, &mut wide);
            let yw = View::row_major(&wide, lout.wide(n), c_out).t();
            if gathered {
                gather_taps(&lin, g.kw, kk, n, &padded, &mut cols);
                let cv = View::row_major(&cols, lin.wide(n), patch);
                matmul_into(&mut acc, yw, cv, i > 0, par)?;
                continue;
            }
            for (ki, a) in acc.chunks_exact_mut(g.kw * tap_len).enumerate() {
                let xt = lin.tap_row(&padded, ki, g.kw, n);
                matmul_into(a, yw, xt, i > 0, par)?;
            }
        }
        Ok(acc)
    })?;
    for part in partials {
        if gathered {
            // (C_o × k²C), columns in tap-then-channel order.
            for (o, row) in part.chunks_exact(kk * g.channels).enumerate() {
                for (sc, &v) in row.iter().enumerate() {
                    let (s, c) = (sc / g.channels, sc % g.channels);
                    dst[(o * g.channels + c) * kk + s] += v;
                }
            }
            continue;
        }
        for (ki, a) in part.chunks_exact(g.kw * tap_len).enumerate() {
            for (o, row) in a.chunks_exact(g.kw * g.channels).enumerate() {
                for (jc, &v) in row.iter().enumerate() {
                    let (kj, c) = (jc / g.channels, jc % g.channels);
                    dst[(o * g.channels + c) * kk + ki * g.kw + kj] += v;
                }
            }
        }
    }
    Ok(())
}
