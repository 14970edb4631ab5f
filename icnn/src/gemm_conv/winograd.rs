//! Stride-1 "same" convolutions of channel-first images (`(B, C, H, W)`, 3×3 or 5×5
//! kernels) by Winograd's minimal filtering `F(m×m, r×r)`: the fused convolution ops'
//! forward, adjoint and kernel gradient ([`super::ops`]) for layers with enough channels, in
//! place of im2col and one deep product per image. The VAE's 5×5 layers are the users: its
//! Frey head `32 → 256` channels on 28×20 alone is over half of a training step's
//! multiply-adds.
//!
//! The output is cut into `m × m` tiles; tile `t`'s `α × α` input patch `D` (`α = m + r − 1`,
//! zero outside the image) gives, per input channel `c` and output channel `o`,
//! `Y = Aᵀ [(G K[o, c] Gᵀ) ⊙ (Bᵀ D B)] A` (`cook_toom.rs` builds the matrices). With the transformed
//! inputs `V_ξ (C × tiles)` and kernel `U_ξ (C_o × C)` for each of the `α²` entries `ξ`, a
//! convolution is `α²` products `M_ξ = U_ξ V_ξ` of inner dimension `C`, then the output
//! transform: `α²/m²` multiply-adds per output pixel and channel pair against the direct
//! form's `r²` (5×5 with `m = 4`: 4 against 25, 6.25× fewer; 3×3 with `m = 4`: 2.25 against
//! 9). Images whose sides are not multiples of `m` pay for whole tiles (7×5 with `m = 4` is
//! 1.8× its pixels).
//!
//! The kernel gradient is the algorithm read backwards: `K̄[o, c] = Gᵀ Ū G` with
//! `Ū_ξ = Σ_t M̄_ξ V_ξᵀ` and `M̄ = A Ȳ Aᵀ` per tile. The adjoint `A_Kᵀ` (a transposed
//! convolution) is either the forward algorithm with the flipped, transposed kernel (stride 1
//! and "same" padding map the geometry onto itself) or the forward algorithm transposed step
//! by step: `M̄ = A Ȳ Aᵀ` per tile, `V̄_ξ = U_ξᵀ M̄_ξ`, `D̄ = B V̄ Bᵀ`, and the overlapping
//! patches `D̄` added into the image. The input-side transform (`α³`-ish per tile and channel)
//! costs about twice the output side's, so each convolution and adjoint takes the form that
//! puts it on the side with fewer channels: the VAE head's adjoint (256 → 32 channels) runs
//! transposed.
//!
//! Tile size and rounding: `m = 4` for both kernel sizes (`α = 6` or 8). The transforms'
//! entries grow with `α` (up to 2⁶ for `α = 8`), and so does the rounding error relative to
//! the direct sum: 3e-15–2e-14 of the largest output in the tests (f64), which hold it to
//! 1e-12. Only f64 convolutions run here (see [`covers`]).
//!
//! The transforms run over all tiles of a chunk at once (contiguous rows of tiles, so the
//! compiler vectorises them); a chunk is whole images, about 64 tiles, so that
//! the transformed inputs of a chunk stay in cache for its products.

use super::batch_split::{reduce_over_batch, split_batch, sum_in_order};
use super::im2col::PatchGeometry;
use super::winograd_plan::{Plan, Scratch, entry_rows};
use crate::host_gemm::{GemmFloat, View, matmul_into, matmul_into_rows};
use crate::host_par::zeros;
use crate::shifted_conv::adjoint_problem;
use candle_core::{DType, Result};
use rayon::prelude::*;

/// Below this many channels (input or output) the products `U_ξ V_ξ` are too thin to pay for
/// the transforms, and the im2col products keep the convolution. Measured (f64, batch 100,
/// 2 threads, 5×5, best of 5, im2col / Winograd ms for forward, adjoint, kernel gradient):
/// 32 → 256 at 28×20 513 / 191, 469 / 216, 439 / 175; 32 → 64 at 28×20 160 / 41,
/// 121 / 41, 138 / 39; 32 → 64 at 14×10 32 / 12, 28 / 12, 32 / 14; 32 → 128 at 14×10
/// 59 / 31, 56 / 34, 43 / 31; 64 → 128 at 7×5 (1.8× the pixels in whole tiles) 32 / 28,
/// 30 / 30, 38 / 27.
pub(super) const MIN_CHANNELS: usize = 32;

/// Whether the convolution of geometry `g` with `c_out` output channels runs here: f64,
/// stride 1, a square 3×3 or 5×5 kernel with "same" padding, at least [`MIN_CHANNELS`]
/// channels on both sides.
///
/// f32 stays on the im2col products: the f32 layers of this workspace's VAE
/// (`configs/vae-frey-cpu.toml`: 16 → 32 and 16 → 64 channels at 28×20) were no faster by
/// Winograd (`F(2×2, 5×5)`: 15.8 / 15.3 and 26.4 / 22.9 ms forward against im2col;
/// `F(4×4, 5×5)` within the machine's noise of im2col, 14–22 / 20–21 ms), and f32 would
/// need its own error analysis.
pub(super) fn covers<T: GemmFloat>(g: &PatchGeometry, c_out: usize) -> bool {
    T::DTYPE == DType::F64
        && g.stride == 1
        && g.kh == g.kw
        && (g.kh == 3 || g.kh == 5)
        && 2 * g.padding + 1 == g.kh
        && (g.out_h, g.out_w) == (g.height, g.width)
        && g.channels >= MIN_CHANNELS
        && c_out >= MIN_CHANNELS
}

/// Runs `chunk(dst_chunk, src_chunk, scratch)` over the batch: tasks split by
/// [`split_batch`], chunks of [`Plan::chunk_images`] images within a task.
fn over_chunks<T: GemmFloat>(
    p: &Plan<T>,
    (dst, dst_image): (&mut [T], usize),
    (src, src_image): (&[T], usize),
    (c_v, c_prod): (usize, usize),
    b: usize,
    chunk: impl Fn(&mut [T], &[T], &mut Scratch<T>, faer::Par) -> Result<()> + Sync,
) -> Result<()> {
    let (per_task, par) = split_batch(b);
    let per_chunk = p.chunk_images();
    dst.par_chunks_mut(per_task * dst_image)
        .zip(src.par_chunks(per_task * src_image))
        .try_for_each(|(d_task, s_task)| {
            let mut s = Scratch::new(p, c_v, c_prod, per_chunk * p.tiles);
            for (d, x) in d_task
                .chunks_mut(per_chunk * dst_image)
                .zip(s_task.chunks(per_chunk * src_image))
            {
                s.len = x.len() / src_image * p.tiles;
                chunk(d, x, &mut s, par)?;
            }
            Ok(())
        })
}

/// `dst_ξ = lhs(ξ) · src_ξ` for each entry `ξ` of channel-by-channel transformed tiles
/// (`src` has `src_rows` channels of `len` tiles, see [`Scratch`]).
pub(super) fn entry_products<'u, T: GemmFloat>(
    dst: &mut [T],
    lhs: impl Fn(usize) -> View<'u, T>,
    src: &[T],
    (src_rows, len, xi): (usize, usize, usize),
    par: faer::Par,
) -> Result<()> {
    for e in 0..xi {
        let src_e = entry_rows(src, e, src_rows, len, xi);
        matmul_into_rows(&mut dst[e * len..], xi * len, lhs(e), src_e, false, par)?;
    }
    Ok(())
}

/// `y = A_K x + bias` by the forward algorithm: input transform on the `C` channels of `x`,
/// output transform on the `C_o` of `y`.
fn direct<T: GemmFloat>(
    x: &[T],
    k: &[T],
    bias: Option<&[T]>,
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> Result<Vec<T>> {
    let p = Plan::<T>::new(g)?;
    let (c, plane, xi) = (g.channels, p.plane(), p.xi());
    let mut y = zeros(b * c_out * plane);
    if y.is_empty() || c * plane == 0 {
        return Ok(y);
    }
    let u = p.kernel_transform(k, c_out * c);
    let geometry = ((c * plane), (c_out * plane));
    over_chunks(
        &p,
        (&mut y, geometry.1),
        (x, geometry.0),
        (c, c_out),
        b,
        |y, x, s, par| {
            p.input_transform(x, c, s);
            let kernel = |e| View::row_major(&u[e * c_out * c..][..c_out * c], c_out, c);
            entry_products(&mut s.prod, kernel, &s.v, (c, s.len, xi), par)?;
            p.output_transform(y, c_out, bias, s);
            Ok(())
        },
    )?;
    Ok(y)
}

/// `x = A_Kᵀ y + bias` by the forward algorithm transposed: output adjoint on the `C_o`
/// channels of `y`, input adjoint on the `C` of `x`.
fn transposed<T: GemmFloat>(
    y: &[T],
    k: &[T],
    bias: Option<&[T]>,
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> Result<Vec<T>> {
    let p = Plan::<T>::new(g)?;
    let (c, plane, xi) = (g.channels, p.plane(), p.xi());
    let mut x = zeros(b * c * plane);
    if x.is_empty() || c_out * plane == 0 {
        return Ok(x);
    }
    let u = p.kernel_transform(k, c_out * c);
    let geometry = ((c * plane), (c_out * plane));
    over_chunks(
        &p,
        (&mut x, geometry.0),
        (y, geometry.1),
        (c, c_out),
        b,
        |x, y, s, par| {
            p.output_adjoint(y, c_out, s);
            let kernel_t = |e| View::row_major(&u[e * c_out * c..][..c_out * c], c_out, c).t();
            entry_products(&mut s.v, kernel_t, &s.prod, (c_out, s.len, xi), par)?;
            // The chunk's planes start from their channel's bias (on the task's thread,
            // not as a serial pass over the batch); the patches are added onto it.
            if let Some(bias) = bias {
                for (n, vals) in x.chunks_exact_mut(plane).enumerate() {
                    vals.fill(bias[n % c]);
                }
            }
            p.input_adjoint(x, c, s);
            Ok(())
        },
    )?;
    Ok(x)
}

/// `y = A_K x (+ bias)` for `b` images `x (B, C, H, W)` and a kernel `(C_o, C, r, r)` (see
/// [`super::ops::forward_cpu`]).
pub(super) fn forward<T: GemmFloat>(
    x: &[T],
    k: &[T],
    bias: Option<&[T]>,
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> Result<Vec<T>> {
    let c = g.channels;
    if c > c_out {
        // A_K = (A_F)ᵀ for the flipped kernel F, a convolution from C_o to C channels.
        let (f, g_f) = adjoint_problem(k, g, c_out);
        transposed(x, &f, bias, &g_f, b, c)
    } else {
        direct(x, k, bias, g, b, c_out)
    }
}

/// `x = A_Kᵀ y (+ bias)` for `y (B, C_o, H, W)` (see [`super::ops::adjoint_cpu`]).
pub(super) fn adjoint<T: GemmFloat>(
    y: &[T],
    k: &[T],
    bias: Option<&[T]>,
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> Result<Vec<T>> {
    let c = g.channels;
    if c_out > c {
        transposed(y, k, bias, g, b, c_out)
    } else {
        let (f, g_f) = adjoint_problem(k, g, c_out);
        direct(y, &f, bias, &g_f, b, c)
    }
}

/// `K̄ = Σ_b` the kernel gradient of `⟨A_K x_b, ȳ_b⟩` (see [`super::ops::kernel_grad_cpu`]):
/// one partial `Ū` per task of [`reduce_over_batch`], added in task order (the same bits
/// for any thread count), then transformed back once.
pub(super) fn kernel_grad<T: GemmFloat>(
    x: &[T],
    ybar: &[T],
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> Result<Vec<T>> {
    let p = Plan::<T>::new(g)?;
    let (c, plane, xi) = (g.channels, p.plane(), p.xi());
    let pairs = c_out * c;
    let (image_len, out_len) = (c * plane, c_out * plane);
    if b == 0 || pairs == 0 || plane == 0 {
        return Ok(vec![T::zero(); pairs * g.kh * g.kw]);
    }
    let per_chunk = p.chunk_images();
    let partials = reduce_over_batch(b, |images, par| {
        let x_task = &x[images.start * image_len..images.end * image_len];
        let y_task = &ybar[images.start * out_len..images.end * out_len];
        let mut s = Scratch::new(&p, c, c_out, per_chunk * p.tiles);
        let mut ubar = vec![T::zero(); xi * pairs];
        for (x_ch, y_ch) in x_task
            .chunks(per_chunk * image_len)
            .zip(y_task.chunks(per_chunk * out_len))
        {
            s.len = x_ch.len() / image_len * p.tiles;
            add_kernel_grad_chunk(&p, x_ch, y_ch, (c, c_out), &mut s, &mut ubar, par)?;
        }
        Ok(ubar)
    })?;
    Ok(p.kernel_untransform(&sum_in_order(partials, xi * pairs), pairs))
}

/// Adds the kernel gradient of one chunk of `s.len / tiles` images `x_ch` and output
/// gradients `y_ch` to the transformed partial `ubar` (`ξ` blocks of `C_o · C`): the input
/// transform into `s.v`, the output adjoint `M̄` into `s.prod` (left there for
/// [`super::winograd_backward`], which takes the adjoint from it too), then `Ū_ξ += M̄_ξ V_ξᵀ`.
pub(super) fn add_kernel_grad_chunk<T: GemmFloat>(
    p: &Plan<T>,
    x_ch: &[T],
    y_ch: &[T],
    (c, c_out): (usize, usize),
    s: &mut Scratch<T>,
    ubar: &mut [T],
    par: faer::Par,
) -> Result<()> {
    let (xi, pairs, len) = (p.xi(), c_out * c, s.len);
    p.input_transform(x_ch, c, s);
    p.output_adjoint(y_ch, c_out, s);
    for e in 0..xi {
        matmul_into(
            &mut ubar[e * pairs..][..pairs],
            entry_rows(&s.prod, e, c_out, len, xi),
            entry_rows(&s.v, e, c, len, xi).t(),
            true,
            par,
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "winograd_tests.rs"]
mod tests;
