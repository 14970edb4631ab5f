//! Patch extraction (im2col) and its adjoint (col2im, a scatter-add): the per-image kernels
//! [`im2col_image`] / [`col2im_image`] used by the convolution ops, and the batched custom ops
//! [`Im2Col`] / [`Col2Im`].
//!
//! A patch at grid position `(oh, ow)` reads image pixel
//! `(oh·stride − padding + ki, ow·stride − padding + kj)` for `(ki, kj)` in the kernel window;
//! pixels outside the image read 0. Layouts: images are `(B, C, H, W)` (contiguous); the
//! per-image patch matrix is `(C·kh·kw, P)`, one row per `(c, ki, kj)` and one column per
//! position `oh·out_w + ow` (rows of length `P` make long contiguous copies and adds); the
//! batched ops use `(B·P, C·kh·kw)`, one row per `(b, oh, ow)` and one column per
//! `(c, ki, kj)` (the layout of a flattened candle kernel `(·, C, kh, kw)`).
//!
//! The two maps are adjoint linear maps, `⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩`, so each op's
//! backward pass is the other op applied to the incoming gradient (with autodiff tracked, so
//! double backward works when candle keeps the graph).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::ops::Range;

/// Geometry shared by [`Im2Col`] and [`Col2Im`]: the image `(channels, height, width)`, the
/// kernel window `(kh, kw)`, stride, zero padding (same on all four sides), and the grid of
/// patch positions `(out_h, out_w)`.
///
/// For a convolution of the image, `out_h = (height + 2·padding − kh) / stride + 1` (and the
/// same for `out_w`, see [`PatchGeometry::for_conv`]); for a transposed convolution the grid is
/// the transposed convolution's input and the image is its output. Any grid size is valid:
/// patch pixels that fall outside the image read 0 (im2col) or are dropped (col2im).
///
/// ```
/// use icnn::gemm_conv::PatchGeometry;
/// // A 2×2 kernel over a 1×3×3 image: a 2×2 grid of patches of 4 pixels.
/// let g = PatchGeometry::for_conv(1, (3, 3), (2, 2), 1, 0).unwrap();
/// assert_eq!((g.out_h, g.out_w, g.patch_len()), (2, 2, 4));
/// // With padding 1 and stride 2: ⌊(3 + 2 − 2)/2⌋ + 1 = 2 positions per axis.
/// let g = PatchGeometry::for_conv(1, (3, 3), (2, 2), 2, 1).unwrap();
/// assert_eq!((g.out_h, g.out_w), (2, 2));
/// // A kernel larger than the padded image, or stride 0, has no geometry.
/// assert!(PatchGeometry::for_conv(1, (3, 3), (4, 4), 1, 0).is_none());
/// assert!(PatchGeometry::for_conv(1, (3, 3), (2, 2), 0, 0).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGeometry {
    /// Image channels `C`.
    pub channels: usize,
    /// Image height `H`.
    pub height: usize,
    /// Image width `W`.
    pub width: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride between patch positions (both axes).
    pub stride: usize,
    /// Implicit zero padding on each side of the image (both axes).
    pub padding: usize,
    /// Patch positions along the height.
    pub out_h: usize,
    /// Patch positions along the width.
    pub out_w: usize,
}

impl PatchGeometry {
    /// The geometry of a convolution of a `(channels, height, width)` image with a `kh × kw`
    /// kernel: the patch grid is the convolution's output size. `None` when the stride is 0,
    /// the kernel is empty, the kernel does not fit in the padded image, or the padded image,
    /// the patch grid or one image's patch matrix has more elements than memory can address
    /// (see [`PatchGeometry::sizes_fit`]; a padding of `2⁴⁰` overflowed `usize` in the grid
    /// size and panicked).
    pub fn for_conv(
        channels: usize,
        (height, width): (usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Option<Self> {
        if stride == 0 || kh == 0 || kw == 0 {
            return None;
        }
        let padded = |n: usize| padding.checked_mul(2)?.checked_add(n);
        let out_h = padded(height)?.checked_sub(kh)? / stride + 1;
        let out_w = padded(width)?.checked_sub(kw)? / stride + 1;
        let g = Self {
            channels,
            height,
            width,
            kh,
            kw,
            stride,
            padding,
            out_h,
            out_w,
        };
        g.sizes_fit().then_some(g)
    }

    /// Whether one image (`C·H·W`), its patch grid (`out_h·out_w`), one patch (`C·kh·kw`)
    /// and its patch matrix (`C·kh·kw · out_h·out_w`) each have at most `isize::MAX / 8`
    /// elements (the most f64 values one allocation may hold), so that the size arithmetic
    /// of the ops ([`PatchGeometry::patch_len`] and the like) cannot overflow.
    ///
    /// ```
    /// use icnn::gemm_conv::PatchGeometry;
    /// let g = PatchGeometry::for_conv(3, (28, 28), (3, 3), 1, 1).unwrap();
    /// assert!(g.sizes_fit() && (g.out_h, g.out_w) == (28, 28));
    /// // A padding of 2⁴⁰ would make a grid of about 2⁸² patches: no geometry, no panic.
    /// assert!(PatchGeometry::for_conv(3, (28, 28), (3, 3), 1, 1 << 40).is_none());
    /// // A hand-built geometry that cannot be addressed is refused by the ops likewise.
    /// let absurd = PatchGeometry { out_h: 1 << 40, out_w: 1 << 40, ..g };
    /// assert!(!absurd.sizes_fit());
    /// // An empty patch grid does not hide a patch longer than an allocation (3·2⁶²).
    /// let empty = PatchGeometry { channels: 1 << 31, kh: 1 << 31, out_h: 0, ..g };
    /// assert!(!empty.sizes_fit());
    /// ```
    pub fn sizes_fit(&self) -> bool {
        let fits = |dims: &[usize]| elements(dims).is_some();
        fits(&[self.channels, self.height, self.width])
            && fits(&[self.out_h, self.out_w])
            && fits(&[self.channels, self.kh, self.kw])
            && fits(&[self.channels, self.kh, self.kw, self.out_h, self.out_w])
    }

    /// Columns of the patch matrix, `C·kh·kw`: exact for a geometry that
    /// [`PatchGeometry::sizes_fit`] accepts (every one [`PatchGeometry::for_conv`] returns);
    /// the product of a hand-built geometry that it refuses may overflow.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kh * self.kw
    }

    /// Elements of one image, `C·H·W`.
    pub(crate) fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Patch positions per image, `out_h·out_w`.
    pub(crate) fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// A 1×1 kernel at stride 1 without padding: the patch matrix of an image is the image.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == 1
            && self.padding == 0
            && (self.out_h, self.out_w) == (self.height, self.width)
    }

    /// A kernel that covers the whole unpadded source (a 1×1 patch grid): the convolution is
    /// a dense layer.
    pub(crate) fn is_full_window(&self) -> bool {
        (self.out_h, self.out_w, self.padding) == (1, 1, 0)
            && (self.kh, self.kw) == (self.height, self.width)
    }

    pub(super) fn check_valid(&self, op: &'static str) -> candle_core::Result<()> {
        if self.stride == 0 || self.kh == 0 || self.kw == 0 {
            candle_core::bail!("{op}: stride and kernel size must be positive, got {self:?}");
        }
        if !self.sizes_fit() {
            candle_core::bail!("{op}: the sizes of geometry {self:?} overflow");
        }
        Ok(())
    }
}

/// The most elements an array of the convolutions may have: `isize::MAX` bytes of f64
/// (Rust's limit on one allocation), so that no element count or byte size overflows.
pub(crate) const MAX_ELEMENTS: usize = isize::MAX as usize / std::mem::size_of::<f64>();

/// `Π dims`, or `None` when it exceeds [`MAX_ELEMENTS`].
pub(crate) fn elements(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

/// Patch extraction `(B, C, H, W) → (B·out_h·out_w, C·kh·kw)` (see the module docs for the
/// layouts). CPU only, f32 and f64; backward is [`Col2Im`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::gemm_conv::{Im2Col, PatchGeometry};
/// let g = PatchGeometry::for_conv(1, (3, 3), (2, 2), 1, 0).unwrap();
/// // Pixels 0..9 of one 1×3×3 image, row-major.
/// let x = Tensor::arange(0.0f64, 9.0, &Device::Cpu)?.reshape((1, 1, 3, 3))?;
/// let cols = x.apply_op1(Im2Col(g))?.to_vec2::<f64>()?;
/// // One row per patch position (0,0), (0,1), (1,0), (1,1); columns (ki, kj) of the window.
/// assert_eq!(cols, vec![
///     vec![0.0, 1.0, 3.0, 4.0],
///     vec![1.0, 2.0, 4.0, 5.0],
///     vec![3.0, 4.0, 6.0, 7.0],
///     vec![4.0, 5.0, 7.0, 8.0],
/// ]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Im2Col(pub PatchGeometry);

/// The adjoint of [`Im2Col`]: scatter-add `(B·out_h·out_w, C·kh·kw) → (B, C, H, W)`.
/// CPU only, f32 and f64; backward is [`Im2Col`].
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use icnn::gemm_conv::{Col2Im, Im2Col, PatchGeometry};
/// let g = PatchGeometry::for_conv(1, (3, 3), (2, 2), 1, 0).unwrap();
/// // Scatter-adding ones counts the patches that cover each pixel.
/// let ones = Tensor::ones((4, 4), DType::F64, &Device::Cpu)?;
/// let cover = ones.apply_op1(Col2Im(g))?.reshape((3, 3))?.to_vec2::<f64>()?;
/// assert_eq!(cover, vec![vec![1.0, 2.0, 1.0], vec![2.0, 4.0, 2.0], vec![1.0, 2.0, 1.0]]);
/// // Adjointness: ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩.
/// let x = Tensor::arange(0.0f64, 9.0, &Device::Cpu)?.reshape((1, 1, 3, 3))?;
/// let y = Tensor::arange(0.0f64, 16.0, &Device::Cpu)?.reshape((4, 4))?.cos()?;
/// let lhs = (x.apply_op1(Im2Col(g))? * &y)?.sum_all()?.to_scalar::<f64>()?;
/// let rhs = (&x * y.apply_op1(Col2Im(g))?)?.sum_all()?.to_scalar::<f64>()?;
/// assert!((lhs - rhs).abs() < 1e-12);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Col2Im(pub PatchGeometry);

/// `im2col` of a `(B, C, H, W)` tensor, made contiguous first; tracked by autodiff.
pub(crate) fn apply_im2col(x: &Tensor, g: PatchGeometry) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Im2Col(g))
}

/// `col2im` of a `(B·out_h·out_w, C·kh·kw)` tensor, made contiguous first; tracked by autodiff.
pub(crate) fn apply_col2im(cols: &Tensor, g: PatchGeometry) -> candle_core::Result<Tensor> {
    cols.contiguous()?.apply_op1(Col2Im(g))
}

/// The contiguous slice of `storage` described by `layout`.
pub(super) fn contiguous_slice<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_valid("im2col")?;
        let (b, c, h, w) = layout.shape().dims4()?;
        if (c, h, w) != (g.channels, g.height, g.width) {
            candle_core::bail!(
                "im2col: input {:?} does not match the geometry's image {:?}",
                layout.shape(),
                (g.channels, g.height, g.width)
            );
        }
        if elements(&[b, g.positions(), g.patch_len()]).is_none() {
            candle_core::bail!("im2col: the patches of {b} images of geometry {g:?} overflow");
        }
        let shape = Shape::from((b * g.positions(), g.patch_len()));
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(im2col_kernel(
                contiguous_slice(data, layout, "im2col")?,
                &g,
                b,
            )),
            CpuStorage::F64(data) => CpuStorage::F64(im2col_kernel(
                contiguous_slice(data, layout, "im2col")?,
                &g,
                b,
            )),
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "im2col",
                ));
            }
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(apply_col2im(grad_res, self.0)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_valid("col2im")?;
        let (rows, cols) = layout.shape().dims2()?;
        if cols != g.patch_len() || g.positions() == 0 || rows % g.positions() != 0 {
            candle_core::bail!(
                "col2im: input {:?} is not (B·{}, {}) for geometry {g:?}",
                layout.shape(),
                g.positions(),
                g.patch_len()
            );
        }
        let b = rows / g.positions();
        if elements(&[b, g.image_len()]).is_none() {
            candle_core::bail!("col2im: {b} images of geometry {g:?} overflow");
        }
        let shape = Shape::from((b, g.channels, g.height, g.width));
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(col2im_kernel(
                contiguous_slice(data, layout, "col2im")?,
                &g,
                b,
            )),
            CpuStorage::F64(data) => CpuStorage::F64(col2im_kernel(
                contiguous_slice(data, layout, "col2im")?,
                &g,
                b,
            )),
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "col2im",
                ));
            }
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(apply_im2col(grad_res, self.0)?))
    }
}

/// Patch extraction on a contiguous `(b, C, H, W)` slice, parallel over images: the
/// per-image `(C·kh·kw, P)` patch matrix, transposed into the op's `(P, C·kh·kw)` rows.
fn im2col_kernel<T: WithDType>(x: &[T], g: &PatchGeometry, b: usize) -> Vec<T> {
    let per_image = g.positions() * g.patch_len();
    let mut out = vec![T::zero(); b * per_image];
    if per_image == 0 || g.image_len() == 0 {
        return out;
    }
    out.par_chunks_mut(per_image)
        .zip(x.par_chunks(g.image_len()))
        .for_each(|(rows, img)| {
            let mut cols = vec![T::zero(); per_image];
            im2col_image(img, g, &mut cols);
            transpose_into(&cols, g.patch_len(), g.positions(), rows);
        });
    out
}

/// Scatter-add of a contiguous `(b·P, C·kh·kw)` slice into `(b, C, H, W)`, parallel over
/// images (each image's rows transposed into a `(C·kh·kw, P)` patch matrix first).
fn col2im_kernel<T: WithDType>(rows: &[T], g: &PatchGeometry, b: usize) -> Vec<T> {
    let per_image = g.positions() * g.patch_len();
    let mut out = vec![T::zero(); b * g.image_len()];
    if per_image == 0 || g.image_len() == 0 {
        return out;
    }
    out.par_chunks_mut(g.image_len())
        .zip(rows.par_chunks(per_image))
        .for_each(|(img, src)| {
            let mut cols = vec![T::zero(); per_image];
            transpose_into(src, g.positions(), g.patch_len(), &mut cols);
            col2im_image(&cols, g, img);
        });
    out
}

/// `dst (n × m) = srcᵀ` for a row-major `src (m × n)`.
fn transpose_into<T: Copy>(src: &[T], m: usize, n: usize, dst: &mut [T]) {
    for (i, row) in src.chunks_exact(n).take(m).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            dst[j * m + i] = v;
        }
    }
}

/// The output positions `ow` (or `oh`) whose pixel `ow·stride − padding + kj` lies in
/// `[0, len)`, for a grid of `out` positions.
fn valid_positions(
    len: usize,
    out: usize,
    stride: usize,
    padding: usize,
    kj: usize,
) -> Range<usize> {
    // ow·s + kj ≥ p  ⇔  ow ≥ ⌈(p − kj)/s⌉;  ow·s + kj − p ≤ len − 1  ⇔  ow ≤ ⌊(len − 1 + p − kj)/s⌋.
    let lo = padding.saturating_sub(kj).div_ceil(stride).min(out);
    let hi = match (len + padding).checked_sub(kj + 1) {
        Some(span) => (span / stride + 1).min(out),
        None => 0,
    };
    lo..hi.max(lo)
}

/// Writes the patch matrix `(C·kh·kw, P)` of one image `img` (`C·H·W`) into `cols`: row
/// `(c, ki, kj)` holds pixel `(oh·s − p + ki, ow·s − p + kj)` of channel `c` at column
/// `oh·out_w + ow`. Every entry is written (padding included), so `cols` can be a reused
/// buffer.
pub(super) fn im2col_image<T: WithDType>(img: &[T], g: &PatchGeometry, cols: &mut [T]) {
    let (positions, plane) = (g.positions(), g.height * g.width);
    for (r, dst_row) in cols.chunks_exact_mut(positions).enumerate() {
        let (c, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let ows = valid_positions(g.width, g.out_w, g.stride, g.padding, kj);
        let ohs = valid_positions(g.height, g.out_h, g.stride, g.padding, ki);
        for (oh, seg) in dst_row.chunks_exact_mut(g.out_w).enumerate() {
            if !ohs.contains(&oh) || ows.is_empty() {
                seg.fill(T::zero());
                continue;
            }
            let ih = oh * g.stride + ki - g.padding;
            let src = &img[c * plane + ih * g.width..][..g.width];
            seg[..ows.start].fill(T::zero());
            seg[ows.end..].fill(T::zero());
            let iw0 = ows.start * g.stride + kj - g.padding;
            if g.stride == 1 {
                seg[ows.clone()].copy_from_slice(&src[iw0..iw0 + ows.len()]);
            } else {
                for (d, &v) in seg[ows.clone()]
                    .iter_mut()
                    .zip(src[iw0..].iter().step_by(g.stride))
                {
                    *d = v;
                }
            }
        }
    }
}

/// Adds the patch matrix `cols` `(C·kh·kw, P)` of one image (layout of [`im2col_image`])
/// into `img` (`C·H·W`).
pub(super) fn col2im_image<T: WithDType>(cols: &[T], g: &PatchGeometry, img: &mut [T]) {
    let (positions, plane) = (g.positions(), g.height * g.width);
    for (r, src_row) in cols.chunks_exact(positions).enumerate() {
        let (c, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let ows = valid_positions(g.width, g.out_w, g.stride, g.padding, kj);
        let ohs = valid_positions(g.height, g.out_h, g.stride, g.padding, ki);
        if ows.is_empty() {
            continue;
        }
        let iw0 = ows.start * g.stride + kj - g.padding;
        for oh in ohs {
            let ih = oh * g.stride + ki - g.padding;
            let dst = &mut img[c * plane + ih * g.width..][..g.width];
            let seg = &src_row[oh * g.out_w..][..g.out_w][ows.clone()];
            if g.stride == 1 {
                for (d, &v) in dst[iw0..iw0 + ows.len()].iter_mut().zip(seg) {
                    *d += v;
                }
            } else {
                for (d, &v) in dst[iw0..].iter_mut().step_by(g.stride).zip(seg) {
                    *d += v;
                }
            }
        }
    }
}
