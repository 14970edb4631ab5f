//! The tiling and the transforms of the channel-first Winograd convolutions
//! ([`super::winograd`]): one geometry's [`Plan`] (tiles of `m × m` outputs, the `F(m, r)`
//! matrices in the element type) with the transforms between images and transformed tiles,
//! and a task's [`Scratch`] buffers.

use super::cook_toom::CookToom;
use super::im2col::PatchGeometry;
use super::sandwich::{Rows, Sandwich};
use crate::host_gemm::{GemmFloat, View};
use candle_core::Result;

/// Tiles per chunk (whole images, at least one).
const CHUNK_TILES: usize = 64;

/// Output pixels per tile side.
const TILE: usize = 4;

/// One geometry's tiling and its matrices in `T` (row-major).
pub(super) struct Plan<T> {
    pub(super) m: usize,
    pub(super) r: usize,
    pub(super) alpha: usize,
    pub(super) pad: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) tw: usize,
    /// Tiles per image.
    pub(super) tiles: usize,
    /// `Aᵀ (m × α)` and `A (α × m)`.
    pub(super) at: Vec<T>,
    pub(super) a: Vec<T>,
    /// `G (α × r)` and `Gᵀ (r × α)`.
    pub(super) g: Vec<T>,
    pub(super) gt: Vec<T>,
    /// `Bᵀ (α × α)` and `B`.
    pub(super) bt: Vec<T>,
    pub(super) b: Vec<T>,
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
    pub(super) fn new(g: &PatchGeometry) -> Result<Self> {
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

    pub(super) fn xi(&self) -> usize {
        self.alpha * self.alpha
    }

    pub(super) fn plane(&self) -> usize {
        self.h * self.w
    }

    /// `(image, row, column)` of the first output pixel of tile `t` of a chunk.
    pub(super) fn origin(&self, t: usize) -> (usize, usize, usize) {
        let (img, tile) = (t / self.tiles, t % self.tiles);
        (img, self.m * (tile / self.tw), self.m * (tile % self.tw))
    }

    /// `(image, tile row, first tile)` of each row of tiles of a chunk of `len` tiles (whole
    /// images), in tile order: tile `t0 + tj` is [`Self::origin`]'s `(image, m·tile row,
    /// m·tj)` for `tj < tw`.
    pub(super) fn tile_rows(&self, len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let rows = self.tiles / self.tw.max(1);
        (0..len / self.tw.max(1)).map(move |r| (r / rows, r % rows, r * self.tw))
    }

    /// Images per chunk.
    pub(super) fn chunk_images(&self) -> usize {
        (CHUNK_TILES / self.tiles.max(1)).max(1)
    }

    /// The transformed kernel `U[ξ][o][c] = (G K[o, c] Gᵀ)[ξ]` of a `(C_o, C, r, r)` kernel
    /// (`pairs = C_o·C`).
    pub(super) fn kernel_transform(&self, k: &[T], pairs: usize) -> Vec<T> {
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
    pub(super) fn kernel_untransform(&self, ubar: &[T], pairs: usize) -> Vec<T> {
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
    pub(super) fn input_transform(&self, x: &[T], channels: usize, s: &mut Scratch<T>) {
        let (alpha, len, plane) = (self.alpha, s.len, self.plane());
        let mats = Sandwich::new(&self.bt, alpha, alpha);
        for c in 0..channels {
            // Patch entry (u, q) of the tiles of one tile row, `tw` consecutive values, read
            // `m` apart from one image row: contiguous writes (tile by tile they were `α²`
            // writes `len` apart).
            for (img, ti, t0) in self.tile_rows(len) {
                let src = &x[(img * channels + c) * plane..][..plane];
                for u in 0..alpha {
                    let row = (self.m * ti + u).wrapping_sub(self.pad);
                    for q in 0..alpha {
                        let dst = &mut s.patch[(u * alpha + q) * len + t0..][..self.tw];
                        if row < self.h {
                            let src_row = &src[row * self.w..][..self.w];
                            for (tj, d) in dst.iter_mut().enumerate() {
                                let col = (self.m * tj + q).wrapping_sub(self.pad);
                                *d = if col < self.w {
                                    src_row[col]
                                } else {
                                    T::zero()
                                };
                            }
                        } else {
                            dst.fill(T::zero());
                        }
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
    pub(super) fn input_adjoint(&self, x: &mut [T], channels: usize, s: &mut Scratch<T>) {
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
    pub(super) fn output_transform(
        &self,
        y: &mut [T],
        c_out: usize,
        bias: Option<&[T]>,
        s: &mut Scratch<T>,
    ) {
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
            // Tile entry (i, j) of one tile row's tiles into one image row, `m` apart.
            for (img, ti, t0) in self.tile_rows(len) {
                let dst = &mut y[(img * c_out + o) * plane..][..plane];
                let i0 = m * ti;
                for i in 0..m.min(self.h - i0) {
                    let dst_row = &mut dst[(i0 + i) * self.w..][..self.w];
                    for j in 0..m {
                        let vals = &s.tile[(i * m + j) * len + t0..][..self.tw];
                        for (tj, &v) in vals.iter().enumerate() {
                            let col = m * tj + j;
                            if col < self.w {
                                dst_row[col] = b + v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `M̄[o][ξ][t] = (A Ȳ Aᵀ)[ξ]` (into `s.prod`) for the chunk's output gradients `ybar`.
    pub(super) fn output_adjoint(&self, ybar: &[T], c_out: usize, s: &mut Scratch<T>) {
        let (m, len, plane) = (self.m, s.len, self.plane());
        let mats = Sandwich::new(&self.a, self.alpha, m);
        for o in 0..c_out {
            // As in `input_transform`: one tile row's entry (i, j) at a time.
            for (img, ti, t0) in self.tile_rows(len) {
                let src = &ybar[(img * c_out + o) * plane..][..plane];
                for i in 0..m {
                    let row = m * ti + i;
                    for j in 0..m {
                        let dst = &mut s.tile[(i * m + j) * len + t0..][..self.tw];
                        if row < self.h {
                            let src_row = &src[row * self.w..][..self.w];
                            for (tj, d) in dst.iter_mut().enumerate() {
                                let col = m * tj + j;
                                *d = if col < self.w {
                                    src_row[col]
                                } else {
                                    T::zero()
                                };
                            }
                        } else {
                            dst.fill(T::zero());
                        }
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
pub(super) struct Scratch<T> {
    pub(super) len: usize,
    /// Transformed inputs `[c][ξ][t]`.
    pub(super) v: Vec<T>,
    /// Products or output adjoints `[o][ξ][t]`.
    pub(super) prod: Vec<T>,
    /// One channel's input patches `[u][q][t]`.
    pub(super) patch: Vec<T>,
    /// One channel's output tiles `[i][j][t]`.
    pub(super) tile: Vec<T>,
    /// The transforms' intermediate.
    pub(super) tmp: Vec<T>,
}

impl<T: GemmFloat> Scratch<T> {
    pub(super) fn new(p: &Plan<T>, channels: usize, c_out: usize, cap: usize) -> Self {
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
pub(super) fn entry_rows<T>(
    buf: &[T],
    e: usize,
    channels: usize,
    len: usize,
    xi: usize,
) -> View<'_, T> {
    View {
        data: &buf[e * len..],
        rows: channels,
        cols: len,
        rs: xi * len,
        cs: 1,
    }
}

#[cfg(test)]
#[path = "winograd_plan_tests.rs"]
mod tests;
