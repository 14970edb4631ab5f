//! The linear maps between the layers of a host network (`surrogate_host`): a dense matrix
//! or a convolution, each with its adjoint and the gradient with respect to its parameters.
//!
//! Every map acts on rows: a dense layer's row is a feature vector, a convolution's row is
//! one image flattened **channel-last**, `(H, W, C)`. With `x` `(rows × n)` and `y`
//! `(rows × m)`:
//! - [`Link::apply`]: `y = L x` row by row (dense: `x Wᵀ`; convolution: `conv(x_b, K)`);
//! - [`Link::adjoint`]: `x = Lᵀ y` (dense: `y W`; convolution: the transposed convolution);
//! - [`Link::param_grad`]: `θ̄ += ∂⟨ȳ, L x⟩/∂θ` (dense: `ȳᵀ x`; convolution:
//!   `Σ_b ∂⟨ȳ_b, conv(x_b, K)⟩/∂K`, `K` `(C_o, C, kh, kw)` as candle stores it).
//!
//! 3×3 "same" convolutions with at least 32 channels on both sides (the ConvICNN's hidden
//! layers at width 64) run by Winograd's `F(4×4, 3×3)` (`winograd_conv`); other "same"
//! stride-1 convolutions (thin layers, odd kernels of other sizes) as shifted products on
//! channel-last images (`shifted_conv`); any other geometry (the stride-2 pooling layers)
//! transposes each image to channel-first and runs im2col/col2im + one product, as
//! `gemm_conv` does. Dense products run on the calling thread (the dense training step runs
//! row chunks in parallel); convolutions split the images over rayon's threads.

use std::sync::OnceLock;

use candle_core::Result;

use crate::gemm_conv::{PatchGeometry, adjoint_cpu, forward_cpu, kernel_grad_cpu};
use crate::host_gemm::{Par, View, matmul_into};
use crate::shifted_conv;
use crate::surrogate_host::Real;
use crate::winograd_conv;

/// A linear map between two layers of a host network.
#[derive(Debug, Clone)]
pub(crate) enum Link<T> {
    /// `y (rows × m) = x (rows × n) · Wᵀ`, `W` `(m × n)` row-major.
    Dense { w: Vec<T>, m: usize, n: usize },
    /// `y_b = conv(x_b, K)` for each channel-last image row, `K` row-major `(C_o, C, kh, kw)`
    /// with the geometry of `geometry` (`C = geometry.channels`).
    Conv {
        k: Vec<T>,
        geometry: PatchGeometry,
        c_out: usize,
        /// `k` transformed for Winograd's algorithm, made on first use (see [`Link::conv`]).
        winograd: WinogradKernels<T>,
    },
}

/// A Winograd convolution's kernel in transformed form ([`winograd_conv::TransformedKernel`]),
/// made on its first use and kept for the link's life (one linearization: a training step's
/// forward pass, CG iterations and backward pass all convolve with the same kernel). The
/// forward convolution and its adjoint share it (4 values per kernel value).
#[derive(Debug, Clone)]
pub(crate) struct WinogradKernels<T>(OnceLock<winograd_conv::TransformedKernel<T>>);

impl<T> Default for WinogradKernels<T> {
    fn default() -> Self {
        Self(OnceLock::new())
    }
}

impl<T: Real> WinogradKernels<T> {
    /// The transform of `k` `(C_o, C, 3, 3)`, made on the first call.
    fn of(&self, k: &[T], c_out: usize, c_in: usize) -> &winograd_conv::TransformedKernel<T> {
        self.0
            .get_or_init(|| winograd_conv::TransformedKernel::of(k, c_out, c_in))
    }
}

impl<T> Link<T> {
    /// The convolution `y_b = conv(x_b, K)` with `K = k` row-major `(C_o, C, kh, kw)`
    /// (`C = geometry.channels`, `C_o = c_out`). `k` is fixed for the link's life: the
    /// Winograd path keeps its transform.
    pub(crate) fn conv(k: Vec<T>, geometry: PatchGeometry, c_out: usize) -> Self {
        Self::Conv {
            k,
            geometry,
            c_out,
            winograd: WinogradKernels::default(),
        }
    }

    /// The parameters (`W` or `K`), row-major.
    pub(crate) fn params(&self) -> &[T] {
        match self {
            Self::Dense { w, .. } | Self::Conv { k: w, .. } => w,
        }
    }

    /// `W` of a dense link; an error for a convolution (for the dense-only host Hessian).
    pub(crate) fn dense_weight(&self) -> Result<&[T]> {
        match self {
            Self::Dense { w, .. } => Ok(w),
            Self::Conv { .. } => Err(candle_core::Error::Msg(
                "host kernels: a dense layer was expected, not a convolution".into(),
            )),
        }
    }
}

/// The order of a convolutional network's rows: the flows pass images channel-first
/// `(C, H, W)`, the links work channel-last; `surrogate_host` converts at its boundary (and
/// the links' im2col fallback around `gemm_conv`'s channel-first kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelLast {
    pub channels: usize,
    pub pixels: usize,
}

impl ChannelLast {
    /// Rows `(C, H, W)` → `(H, W, C)` (each row one image).
    pub(crate) fn rows_to_channel_last<T: Copy + Default>(&self, rows: &[T]) -> Vec<T> {
        self.transposed(rows, self.channels, self.pixels)
    }

    /// Rows `(H, W, C)` → `(C, H, W)`.
    pub(crate) fn rows_to_channel_first<T: Copy + Default>(&self, rows: &[T]) -> Vec<T> {
        self.transposed(rows, self.pixels, self.channels)
    }

    /// Each row, seen as an `(r × c)` row-major matrix, transposed.
    fn transposed<T: Copy + Default>(&self, rows: &[T], r: usize, c: usize) -> Vec<T> {
        let mut out = vec![T::default(); rows.len()];
        let d = r * c;
        for (src, dst) in rows.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            for (i, line) in src.chunks_exact(c).enumerate() {
                for (j, &v) in line.iter().enumerate() {
                    dst[j * r + i] = v;
                }
            }
        }
        out
    }
}

/// `dst (+)= src`.
fn store<T: Real>(dst: &mut [T], src: &[T], acc: bool) {
    if acc {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

impl<T: Real> Link<T> {
    /// The width of an input row.
    pub(crate) fn in_width(&self) -> usize {
        match self {
            Self::Dense { n, .. } => *n,
            Self::Conv { geometry, .. } => geometry.image_len(),
        }
    }

    /// The width of an output row.
    pub(crate) fn out_width(&self) -> usize {
        match self {
            Self::Dense { m, .. } => *m,
            Self::Conv {
                geometry, c_out, ..
            } => c_out * geometry.positions(),
        }
    }

    /// The channel orders of a convolution's input and output rows.
    fn orders(g: &PatchGeometry, c_out: usize) -> (ChannelLast, ChannelLast) {
        (
            ChannelLast {
                channels: g.channels,
                pixels: g.height * g.width,
            },
            ChannelLast {
                channels: c_out,
                pixels: g.positions(),
            },
        )
    }

    /// `dst (rows × m) (+)= L src (rows × n)`.
    pub(crate) fn apply(&self, dst: &mut [T], src: &[T], rows: usize, acc: bool) -> Result<()> {
        match self {
            Self::Dense { w, m, n } => matmul_into(
                dst,
                View::row_major(src, rows, *n),
                View::row_major(w, *m, *n).t(),
                acc,
                Par::Seq,
            ),
            Self::Conv {
                k,
                geometry: g,
                c_out,
                winograd,
            } if winograd_conv::covers(g, *c_out) => {
                let u = winograd.of(k, *c_out, g.channels);
                winograd_conv::forward(u, g, src, dst, rows, acc)
            }
            Self::Conv {
                k,
                geometry: g,
                c_out,
                ..
            } if shifted_conv::covers(g) => {
                shifted_conv::forward(k, g, *c_out, src, dst, rows, acc)
            }
            Self::Conv {
                k,
                geometry: g,
                c_out,
                ..
            } => {
                // Other geometries: gemm_conv's channel-first im2col kernels.
                let (input, output) = Self::orders(g, *c_out);
                let x = input.rows_to_channel_first(&src[..rows * self.in_width()]);
                let y = forward_cpu(&x, k, None, g, rows, *c_out)?;
                let y = output.rows_to_channel_last(&y);
                store(&mut dst[..y.len()], &y, acc);
                Ok(())
            }
        }
    }

    /// `dst (rows × n) (+)= Lᵀ src (rows × m)`.
    pub(crate) fn adjoint(&self, dst: &mut [T], src: &[T], rows: usize, acc: bool) -> Result<()> {
        match self {
            Self::Dense { w, m, n } => matmul_into(
                dst,
                View::row_major(src, rows, *m),
                View::row_major(w, *m, *n),
                acc,
                Par::Seq,
            ),
            Self::Conv {
                k,
                geometry: g,
                c_out,
                winograd,
            } if winograd_conv::covers(g, *c_out) => {
                let u = winograd.of(k, *c_out, g.channels);
                winograd_conv::adjoint(u, g, src, dst, rows, acc)
            }
            Self::Conv {
                k,
                geometry: g,
                c_out,
                ..
            } if shifted_conv::covers(g) => {
                shifted_conv::adjoint(k, g, *c_out, src, dst, rows, acc)
            }
            Self::Conv {
                k,
                geometry: g,
                c_out,
                ..
            } => {
                let (input, output) = Self::orders(g, *c_out);
                let y = output.rows_to_channel_first(&src[..rows * self.out_width()]);
                let x = adjoint_cpu(&y, k, None, g, rows, *c_out)?;
                let x = input.rows_to_channel_last(&x);
                store(&mut dst[..x.len()], &x, acc);
                Ok(())
            }
        }
    }

    /// [`Link::adjoint`] into `dst`, allocated when empty (from the array pool: the adjoint
    /// overwrites it), accumulated otherwise.
    pub(crate) fn adjoint_lazy(&self, dst: &mut Vec<T>, src: &[T], rows: usize) -> Result<()> {
        let acc = !dst.is_empty();
        if !acc {
            *dst = crate::scratch::reused(rows * self.in_width());
        }
        self.adjoint(dst, src, rows, acc)
    }

    /// `dst (+)= ∂⟨cot, L src⟩/∂θ` for `cot` `(rows × m)` and `src` `(rows × n)` (always
    /// accumulates; the sum over images runs over fixed tasks in task order, the same bits for
    /// any thread count).
    pub(crate) fn param_grad(
        &self,
        dst: &mut [T],
        cot: &[T],
        src: &[T],
        rows: usize,
    ) -> Result<()> {
        match self {
            Self::Dense { m, n, .. } => matmul_into(
                dst,
                View::row_major(cot, rows, *m).t(),
                View::row_major(src, rows, *n),
                true,
                Par::Seq,
            ),
            Self::Conv {
                geometry: g, c_out, ..
            } if winograd_conv::covers(g, *c_out) => {
                winograd_conv::param_grad(g, *c_out, dst, cot, src, rows)
            }
            Self::Conv {
                geometry: g, c_out, ..
            } if shifted_conv::covers(g) => {
                shifted_conv::param_grad(g, *c_out, dst, cot, src, rows)
            }
            Self::Conv {
                geometry: g, c_out, ..
            } => {
                let (input, output) = Self::orders(g, *c_out);
                let x = input.rows_to_channel_first(&src[..rows * self.in_width()]);
                let y = output.rows_to_channel_first(&cot[..rows * self.out_width()]);
                let grad = kernel_grad_cpu(&x, &y, g, rows, *c_out)?;
                store(&mut dst[..grad.len()], &grad, true);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn randv(rng: &mut StdRng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// On channel-last rows, `L x` equals candle's convolution; `⟨y, L x⟩ = ⟨Lᵀ y, x⟩`; and
    /// the parameter gradient of `⟨y, L x⟩` equals its change along a random parameter
    /// direction (exact: the form is linear in `θ`). A dense map, and convolutions through
    /// every path: Winograd (3×3, 32 channels and more), shifted (16 channels and more),
    /// gathered (fewer), on groups of stacked images with a short last group, strided /
    /// unpadded (transposed im2col).
    #[test]
    fn adjoint_and_param_grad_are_consistent_with_apply() {
        let mut rng = StdRng::seed_from_u64(5);
        let conv = |c: usize, hw: usize, k: usize, s: usize, p: usize, co: usize| {
            let g = PatchGeometry::for_conv(c, (hw, hw + 1), (k, k), s, p).unwrap();
            (g, co)
        };
        let mut links: Vec<Link<f64>> = vec![Link::Dense {
            w: randv(&mut rng, 12),
            m: 3,
            n: 4,
        }];
        for (g, co) in [
            conv(2, 5, 3, 1, 1, 3),
            conv(3, 6, 2, 2, 2, 2),
            conv(1, 4, 3, 1, 0, 2),
            conv(4, 5, 5, 1, 2, 3),
            conv(3, 1, 3, 1, 1, 2),
            conv(16, 4, 3, 1, 1, 16),
            conv(16, 3, 5, 1, 2, 20),
            // Two 21×22 images per stacked group: 5 rows make groups of 2, 2, 1.
            conv(16, 21, 3, 1, 1, 16),
            conv(2, 21, 3, 1, 1, 3),
            // Winograd F(4×4, 3×3) (32 channels and more), 9×10 images: partial tiles.
            conv(32, 9, 3, 1, 1, 40),
        ] {
            links.push(Link::conv(randv(&mut rng, co * g.patch_len()), g, co));
        }
        let rows = 5;
        for link in &links {
            let (n, m) = (link.in_width(), link.out_width());
            let x = randv(&mut rng, rows * n);
            let y = randv(&mut rng, rows * m);
            let mut lx = vec![0.0; rows * m];
            link.apply(&mut lx, &x, rows, false).unwrap();
            if let Link::Conv {
                k,
                geometry: g,
                c_out,
                ..
            } = link
            {
                // The convolution itself, against candle's (channel-first).
                use candle_core::{Device, Tensor};
                let dev = Device::Cpu;
                let shape = (rows, g.height, g.width, g.channels);
                let xt = Tensor::from_vec(x.clone(), shape, &dev).unwrap();
                let kt = Tensor::from_vec(k.clone(), (*c_out, g.channels, g.kh, g.kw), &dev);
                let y = (xt.permute((0, 3, 1, 2)).unwrap())
                    .conv2d(&kt.unwrap(), g.padding, g.stride, 1, 1)
                    .unwrap();
                let y = y.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap();
                let y = y.to_vec1::<f64>().unwrap();
                let err = y
                    .iter()
                    .zip(&lx)
                    .fold(0.0f64, |e, (a, b)| e.max((a - b).abs()));
                assert!(err < 1e-12, "{g:?}: conv differs from candle's by {err}");
            }
            let mut lty = vec![7.0; rows * n];
            link.adjoint(&mut lty, &y, rows, false).unwrap();
            let (a, b) = (dot(&y, &lx), dot(&lty, &x));
            assert!((a - b).abs() < 1e-12 * a.abs().max(1.0), "{a} vs {b}");
            // Accumulation adds.
            let mut twice = lx.clone();
            link.apply(&mut twice, &x, rows, true).unwrap();
            assert!(
                twice
                    .iter()
                    .zip(&lx)
                    .all(|(t, l)| (t - 2.0 * l).abs() < 1e-12)
            );
            let mut lty2 = lty.clone();
            link.adjoint(&mut lty2, &y, rows, true).unwrap();
            assert!(
                lty2.iter()
                    .zip(&lty)
                    .all(|(t, l)| (t - 2.0 * l).abs() < 1e-12)
            );
            // Parameter gradient: ⟨θ̄, dθ⟩ = ⟨y, L(dθ) x⟩.
            let mut pg = vec![0.0; link.params().len()];
            link.param_grad(&mut pg, &y, &x, rows).unwrap();
            let dtheta = randv(&mut rng, pg.len());
            let moved = match link {
                Link::Dense { m, n, .. } => Link::Dense {
                    w: dtheta.clone(),
                    m: *m,
                    n: *n,
                },
                Link::Conv {
                    geometry, c_out, ..
                } => Link::conv(dtheta.clone(), *geometry, *c_out),
            };
            let mut dlx = vec![0.0; rows * m];
            moved.apply(&mut dlx, &x, rows, false).unwrap();
            let (a, b) = (dot(&pg, &dtheta), dot(&y, &dlx));
            assert!((a - b).abs() < 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}
