//! Stride-1 "same" convolutions of channel-first images (`(B, C, H, W)`, 3×3 or 5×5
//! kernels) by Winograd's minimal filtering `F(m×m, r×r)`: the fused convolution ops'
//! forward, adjoint and kernel gradient ([`super::ops`]) for layers with enough channels, in
//! place of im2col and one deep product per image. The VAE's 5×5 layers are the users: its
//! Frey head `32 → 256` channels on 28×20 alone is over half of a training step's
//! multiply-adds.
//!
//! The output is cut into `m × m` tiles; tile `t`'s `α × α` input patch `D` (`α = m + r − 1`,
//! zero outside the image) gives, per input channel `c` and output channel `o`,
//! `Y = Aᵀ [(G K[o, c] Gᵀ) ⊙ (Bᵀ D B)] A` ([`CookToom`] has the matrices). With the transformed
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
//! compiler vectorises them); a chunk is whole images, about [`CHUNK_TILES`] tiles, so that
//! the transformed inputs of a chunk stay in cache for its products.

use super::cook_toom::CookToom;
use super::im2col::PatchGeometry;
use super::ops::split_batch;
use super::sandwich::{Rows, Sandwich};
use crate::host_gemm::{GemmFloat, View, matmul_into, matmul_into_rows};
use crate::host_par::zeros;
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

/// Tiles per chunk (whole images, at least one).
const CHUNK_TILES: usize = 64;

/// Output pixels per tile side.
const TILE: usize = 4;

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

/// One geometry's tiling and its matrices in `T` (row-major).
struct Plan<T> {
    m: usize,
    r: usize,
    alpha: usize,
    pad: usize,
    h: usize,
    w: usize,
    tw: usize,
    /// Tiles per image.
    tiles: usize,
    /// `Aᵀ (m × α)` and `A (α × m)`.
    at: Vec<T>,
    a: Vec<T>,
    /// `G (α × r)` and `Gᵀ (r × α)`.
    g: Vec<T>,
    gt: Vec<T>,
    /// `Bᵀ (α × α)` and `B`.
    bt: Vec<T>,
    b: Vec<T>,
}

/// `v` (`rows × cols`, f64) cast to `T`, and its transpose.
fn with_transpose<T: GemmFloat>(v: &[f64], rows: usize, cols: usize) -> (Vec<T>, Vec<T>) {
    let mut t = vec![T::zero(); rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = T::from_f64(v[i * cols + j]);
        }
    }
    (v.iter().map(|&e| T::from_f64(e)).collect(), t)
}

impl<T: GemmFloat> Plan<T> {
    fn new(g: &PatchGeometry) -> Result<Self> {
        let (r, m) = (g.kh, TILE);
        let Some(f) = CookToom::new(m, r) else {
            candle_core::bail!("winograd: no F({m}, {r}) tile");
        };
        let (at, a) = with_transpose(&f.at, m, f.alpha);
        let (gg, gt) = with_transpose(&f.g, f.alpha, r);
        let (bt, b) = with_transpose(&f.bt, f.alpha, f.alpha);
        let (th, tw) = (g.height.div_ceil(m), g.width.div_ceil(m));
        Ok(Self {
            m,
            r,
            alpha: f.alpha,
            pad: g.padding,
            h: g.height,
            w: g.width,
            tw,
            tiles: th * tw,
            at,
            a,
            g: gg,
            gt,
            bt,
            b,
        })
    }

    fn xi(&self) -> usize {
        self.alpha * self.alpha
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }

    /// `(image, row, column)` of the first output pixel of tile `t` of a chunk.
    fn origin(&self, t: usize) -> (usize, usize, usize) {
        let (img, tile) = (t / self.tiles, t % self.tiles);
        (img, self.m * (tile / self.tw), self.m * (tile % self.tw))
    }

    /// Images per chunk.
    fn chunk_images(&self) -> usize {
        (CHUNK_TILES / self.tiles.max(1)).max(1)
    }

    /// The transformed kernel `U[ξ][o][c] = (G K[o, c] Gᵀ)[ξ]` of a `(C_o, C, r, r)` kernel
    /// (`pairs = C_o·C`).
    fn kernel_transform(&self, k: &[T], pairs: usize) -> Vec<T> {
        let rr = self.r * self.r;
        let mut by_tap = vec![T::zero(); rr * pairs];
        for (p, taps) in k.chunks_exact(rr).enumerate() {
            for (j, &v) in taps.iter().enumerate() {
                by_tap[j * pairs + p] = v;
            }
        }
        let mut u = vec![T::zero(); self.xi() * pairs];
        let mut tmp = vec![T::zero(); self.r * self.alpha * pairs];
        Sandwich::new(&self.g, self.alpha, self.r).apply(Rows {
            src: &by_tap,
            src_stride: pairs,
            dst: &mut u,
            dst_stride: pairs,
            tmp: &mut tmp,
            len: pairs,
        });
        u
    }

    /// `K̄[o][c] = Gᵀ Ū[o, c] G` from `Ū[ξ][o][c]`, as a `(C_o, C, r, r)` kernel.
    fn kernel_untransform(&self, ubar: &[T], pairs: usize) -> Vec<T> {
        let rr = self.r * self.r;
        let mut by_tap = vec![T::zero(); rr * pairs];
        let mut tmp = vec![T::zero(); self.alpha * self.r * pairs];
        Sandwich::new(&self.gt, self.r, self.alpha).apply(Rows {
            src: ubar,
            src_stride: pairs,
            dst: &mut by_tap,
            dst_stride: pairs,
            tmp: &mut tmp,
            len: pairs,
        });
        let mut k = vec![T::zero(); rr * pairs];
        for (p, taps) in k.chunks_exact_mut(rr).enumerate() {
            for (j, v) in taps.iter_mut().enumerate() {
                *v = by_tap[j * pairs + p];
            }
        }
        k
    }

    /// `V[c][ξ][t] = (Bᵀ D B)[ξ]` for the patches `D` of the chunk's images `x`.
    fn input_transform(&self, x: &[T], channels: usize, s: &mut Scratch<T>) {
        let (alpha, len, plane) = (self.alpha, s.len, self.plane());
        let mats = Sandwich::new(&self.bt, alpha, alpha);
        for c in 0..channels {
            for t in 0..len {
                let (img, i0, j0) = self.origin(t);
                let src = &x[(img * channels + c) * plane..][..plane];
                for u in 0..alpha {
                    let row = (i0 + u).wrapping_sub(self.pad);
                    for q in 0..alpha {
                        let col = (j0 + q).wrapping_sub(self.pad);
                        s.patch[(u * alpha + q) * len + t] = if row < self.h && col < self.w {
                            src[row * self.w + col]
                        } else {
                            T::zero()
                        };
                    }
                }
            }
            mats.apply(Rows {
                src: &s.patch,
                src_stride: len,
                dst: &mut s.v[c * alpha * alpha * len..],
                dst_stride: len,
                tmp: &mut s.tmp,
                len,
            });
        }
    }

    /// The chunk's images `x` `+= Σ` the patches `D̄ = B V̄ Bᵀ` of `V̄[c][ξ][t]` (in `s.v`).
    fn input_adjoint(&self, x: &mut [T], channels: usize, s: &mut Scratch<T>) {
        let (alpha, len, plane) = (self.alpha, s.len, self.plane());
        let mats = Sandwich::new(&self.b, alpha, alpha);
        for c in 0..channels {
            mats.apply(Rows {
                src: &s.v[c * alpha * alpha * len..],
                src_stride: len,
                dst: &mut s.patch,
                dst_stride: len,
                tmp: &mut s.tmp,
                len,
            });
            for t in 0..len {
                let (img, i0, j0) = self.origin(t);
                let dst = &mut x[(img * channels + c) * plane..][..plane];
                for u in 0..alpha {
                    let row = (i0 + u).wrapping_sub(self.pad);
                    if row >= self.h {
                        continue;
                    }
                    for q in 0..alpha {
                        let col = (j0 + q).wrapping_sub(self.pad);
                        if col < self.w {
                            dst[row * self.w + col] += s.patch[(u * alpha + q) * len + t];
                        }
                    }
                }
            }
        }
    }

    /// `y[o] = bias[o] + Aᵀ M[·][o] A` for the chunk's images `y` from the products
    /// `M[o][ξ][t]` (in `s.prod`).
    fn output_transform(&self, y: &mut [T], c_out: usize, bias: Option<&[T]>, s: &mut Scratch<T>) {
        let (m, len, plane) = (self.m, s.len, self.plane());
        let mats = Sandwich::new(&self.at, m, self.alpha);
        for o in 0..c_out {
            mats.apply(Rows {
                src: &s.prod[o * self.xi() * len..],
                src_stride: len,
                dst: &mut s.tile,
                dst_stride: len,
                tmp: &mut s.tmp,
                len,
            });
            let b = bias.map_or(T::zero(), |b| b[o]);
            for t in 0..len {
                let (img, i0, j0) = self.origin(t);
                let dst = &mut y[(img * c_out + o) * plane..][..plane];
                for i in 0..m.min(self.h - i0) {
                    for j in 0..m.min(self.w - j0) {
                        dst[(i0 + i) * self.w + j0 + j] = b + s.tile[(i * m + j) * len + t];
                    }
                }
            }
        }
    }

    /// `M̄[o][ξ][t] = (A Ȳ Aᵀ)[ξ]` (into `s.prod`) for the chunk's output gradients `ybar`.
    fn output_adjoint(&self, ybar: &[T], c_out: usize, s: &mut Scratch<T>) {
        let (m, len, plane) = (self.m, s.len, self.plane());
        let mats = Sandwich::new(&self.a, self.alpha, m);
        for o in 0..c_out {
            for t in 0..len {
                let (img, i0, j0) = self.origin(t);
                let src = &ybar[(img * c_out + o) * plane..][..plane];
                for i in 0..m {
                    for j in 0..m {
                        let (row, col) = (i0 + i, j0 + j);
                        s.tile[(i * m + j) * len + t] = if row < self.h && col < self.w {
                            src[row * self.w + col]
                        } else {
                            T::zero()
                        };
                    }
                }
            }
            mats.apply(Rows {
                src: &s.tile,
                src_stride: len,
                dst: &mut s.prod[o * self.xi() * len..],
                dst_stride: len,
                tmp: &mut s.tmp,
                len,
            });
        }
    }
}

/// A task's buffers for chunks of up to `cap` tiles (`len` in the current chunk).
///
/// The transformed inputs and the products are stored channel by channel (`[c][ξ][t]`), so
/// that each channel's transform reads or writes one contiguous block; the products read and
/// write them as `α²` strided matrices (`[c][t]` for each `ξ`, rows `α²·len` apart). Stored
/// entry by entry (`[ξ][c][t]`), the output transform of the VAE head read 64 rows 72 KB apart
/// per channel.
struct Scratch<T> {
    len: usize,
    /// Transformed inputs `[c][ξ][t]`.
    v: Vec<T>,
    /// Products or output adjoints `[o][ξ][t]`.
    prod: Vec<T>,
    /// One channel's input patches `[u][q][t]`.
    patch: Vec<T>,
    /// One channel's output tiles `[i][j][t]`.
    tile: Vec<T>,
    /// The transforms' intermediate.
    tmp: Vec<T>,
}

impl<T: GemmFloat> Scratch<T> {
    fn new(p: &Plan<T>, channels: usize, c_out: usize, cap: usize) -> Self {
        let (xi, m) = (p.xi(), p.m);
        Self {
            len: cap,
            v: vec![T::zero(); xi * channels * cap],
            prod: vec![T::zero(); xi * c_out * cap],
            patch: vec![T::zero(); xi * cap],
            tile: vec![T::zero(); m * m * cap],
            tmp: vec![T::zero(); xi * cap],
        }
    }
}

/// Entry `ξ` of channel-by-channel transformed tiles (`[c][ξ][t]`, see [`Scratch`]) as a
/// `channels × len` matrix.
fn entry_rows<T>(buf: &[T], e: usize, channels: usize, len: usize, xi: usize) -> View<'_, T> {
    View {
        data: &buf[e * len..],
        rows: channels,
        cols: len,
        rs: xi * len,
        cs: 1,
    }
}

/// The `(C, C_o, r, r)` kernel of `A_Kᵀ` seen as a convolution from a `(C_o, C, r, r)` kernel
/// `K`: transposed channels, each window rotated by 180°.
fn flipped<T: GemmFloat>(k: &[T], c_out: usize, c: usize, rr: usize) -> Vec<T> {
    let mut f = vec![T::zero(); k.len()];
    for o in 0..c_out {
        for ch in 0..c {
            let src = &k[(o * c + ch) * rr..][..rr];
            let dst = &mut f[(ch * c_out + o) * rr..][..rr];
            for (d, &s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = s;
            }
        }
    }
    f
}

/// Runs `chunk(dst_chunk, src_chunk, scratch)` over the batch: tasks split by
/// [`split_batch`], chunks of [`Plan::chunk_images`] images within a task.
#[allow(clippy::too_many_arguments)]
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
            let len = s.len;
            for e in 0..xi {
                matmul_into_rows(
                    &mut s.prod[e * len..],
                    xi * len,
                    View::row_major(&u[e * c_out * c..][..c_out * c], c_out, c),
                    entry_rows(&s.v, e, c, len, xi),
                    false,
                    par,
                )?;
            }
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
    if let Some(bias) = bias {
        for (n, v) in x.iter_mut().enumerate() {
            *v = bias[n / plane % c];
        }
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
            let len = s.len;
            for e in 0..xi {
                matmul_into_rows(
                    &mut s.v[e * len..],
                    xi * len,
                    View::row_major(&u[e * c_out * c..][..c_out * c], c_out, c).t(),
                    entry_rows(&s.prod, e, c_out, len, xi),
                    false,
                    par,
                )?;
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
        let f = flipped(k, c_out, c, g.kh * g.kw);
        let g_f = PatchGeometry {
            channels: c_out,
            ..*g
        };
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
        let f = flipped(k, c_out, c, g.kh * g.kw);
        let g_f = PatchGeometry {
            channels: c_out,
            ..*g
        };
        direct(y, &f, bias, &g_f, b, c)
    }
}

/// `K̄ = Σ_b` the kernel gradient of `⟨A_K x_b, ȳ_b⟩` (see [`super::ops::kernel_grad_cpu`]):
/// one partial sum per task, added in task order (deterministic for a fixed thread count).
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
    let (per_task, par) = split_batch(b);
    let per_chunk = p.chunk_images();
    let partials = x
        .par_chunks(per_task * image_len)
        .zip(ybar.par_chunks(per_task * out_len))
        .map(|(x_task, y_task)| {
            let mut s = Scratch::new(&p, c, c_out, per_chunk * p.tiles);
            let mut ubar = vec![T::zero(); xi * pairs];
            for (x_ch, y_ch) in x_task
                .chunks(per_chunk * image_len)
                .zip(y_task.chunks(per_chunk * out_len))
            {
                s.len = x_ch.len() / image_len * p.tiles;
                let len = s.len;
                p.input_transform(x_ch, c, &mut s);
                p.output_adjoint(y_ch, c_out, &mut s);
                for e in 0..xi {
                    matmul_into(
                        &mut ubar[e * pairs..][..pairs],
                        entry_rows(&s.prod, e, c_out, len, xi),
                        entry_rows(&s.v, e, c, len, xi).t(),
                        true,
                        par,
                    )?;
                }
            }
            Ok(ubar)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parts = partials.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![T::zero(); xi * pairs]);
    for part in parts {
        for (t, q) in total.iter_mut().zip(part) {
            *t += q;
        }
    }
    Ok(p.kernel_untransform(&total, pairs))
}

#[cfg(test)]
#[path = "winograd_tests.rs"]
mod tests;
