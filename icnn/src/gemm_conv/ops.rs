//! The three fused convolution ops on CPU, each im2col/col2im + a matrix product per image
//! (the patch matrix of one image lives in a per-task buffer; tasks split the batch as
//! [`super::batch_split`] says):
//!
//! With `cols(x_b)` the `(C·kh·kw, P)` patch matrix of image `b` (`P = out_h·out_w`):
//! - [`ConvForward`] `(x, K) → y`: the convolution `A_K x` of images `x (B, C, H, W)` with a
//!   kernel `K (C_o, C, kh, kw)` onto the patch grid `y (B, C_o, out_h, out_w)`:
//!   `y_b = K · cols(x_b)`;
//! - [`ConvAdjoint`] `(y, K) → x`: its adjoint `A_Kᵀ y` (a transposed convolution):
//!   `x_b = col2im(Kᵀ · y_b)`;
//! - [`ConvKernelGrad`] `(x, y) → K`: the kernel gradient `Σ_b y_b · cols(x_b)ᵀ`, i.e. the
//!   `K` with `⟨G, K⟩ = ⟨A_G x, y⟩` for every `G`.
//!
//! The three are bilinear and close under differentiation, so each op's backward pass is
//! made of the other two (double backward works when candle keeps the graph):
//! `d⟨A_K x, g⟩ = ⟨dx, A_Kᵀ g⟩ + ⟨dK, KG(x, g)⟩`, `d⟨A_Kᵀ y, g⟩ = ⟨dy, A_K g⟩ + ⟨dK, KG(g, y)⟩`,
//! `d⟨KG(x, y), G⟩ = ⟨dx, A_Gᵀ y⟩ + ⟨dy, A_G x⟩`. A gradient is computed only for arguments
//! that candle tracks (variables or results of tracked ops).

use super::batch_split::{reduce_over_batch, split_batch, sum_in_order};
use super::im2col::{PatchGeometry, col2im_image, contiguous_slice, im2col_image};
use super::winograd;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::host_gemm::{GemmFloat, View, matmul_into};
use crate::host_par::zeros;
use rayon::prelude::*;

/// `(x, K) → A_K x`, see the module docs.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvForward(pub PatchGeometry);

/// `(y, K) → A_Kᵀ y`, see the module docs.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvAdjoint(pub PatchGeometry);

/// `(x, y) → Σ_b y_b · im2col(x_b)` shaped as a kernel, see the module docs.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvKernelGrad(pub PatchGeometry);

/// `A_K x` (both made contiguous first).
pub(super) fn conv_forward(
    x: &Tensor,
    k: &Tensor,
    g: PatchGeometry,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&k.contiguous()?, ConvForward(g))
}

/// `A_Kᵀ y` (both made contiguous first).
pub(super) fn conv_adjoint(
    y: &Tensor,
    k: &Tensor,
    g: PatchGeometry,
) -> candle_core::Result<Tensor> {
    y.contiguous()?.apply_op2(&k.contiguous()?, ConvAdjoint(g))
}

/// `KG(x, y)` (both made contiguous first).
pub(super) fn conv_kernel_grad(
    x: &Tensor,
    y: &Tensor,
    g: PatchGeometry,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&y.contiguous()?, ConvKernelGrad(g))
}

/// The gradient for `arg` only when candle tracks it.
pub(super) fn when_tracked(
    arg: &Tensor,
    grad: impl FnOnce() -> candle_core::Result<Tensor>,
) -> candle_core::Result<Option<Tensor>> {
    if arg.track_op() {
        grad().map(Some)
    } else {
        Ok(None)
    }
}

/// Checks a 4-D layout against the expected `(_, c, h, w)` and returns the batch size.
fn batch_of(
    layout: &Layout,
    expected: (usize, usize, usize),
    what: &str,
) -> candle_core::Result<usize> {
    let (b, c, h, w) = layout.shape().dims4()?;
    if (c, h, w) != expected {
        candle_core::bail!(
            "{what} has shape {:?}, expected (B, {}, {}, {})",
            layout.shape(),
            expected.0,
            expected.1,
            expected.2
        );
    }
    Ok(b)
}

/// Runs `f` on the two storages as slices of one float type (f32 or f64).
macro_rules! dispatch_f32_f64 {
    ($name:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(d1), CpuStorage::F32(d2)) => {
                let $a = contiguous_slice(d1, $l1, $name)?;
                let $b = contiguous_slice(d2, $l2, $name)?;
                CpuStorage::F32($body?)
            }
            (CpuStorage::F64(d1), CpuStorage::F64(d2)) => {
                let $a = contiguous_slice(d1, $l1, $name)?;
                let $b = contiguous_slice(d2, $l2, $name)?;
                CpuStorage::F64($body?)
            }
            (s1, s2) if s1.dtype() != s2.dtype() => {
                return Err(candle_core::Error::DTypeMismatchBinaryOp {
                    lhs: s1.dtype(),
                    rhs: s2.dtype(),
                    op: $name,
                });
            }
            (s1, _) => return Err(candle_core::Error::UnsupportedDTypeForOp(s1.dtype(), $name)),
        }
    };
}
pub(super) use dispatch_f32_f64;

/// Below this many elements the element-wise ops of this module (channel bias, gate) run on
/// the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// Runs `f(chunk index, chunk)` over `out`'s consecutive chunks of `len` elements, on rayon's
/// threads when `out` has at least `PARALLEL_MIN_ELEMS` elements.
pub(super) fn for_each_chunk<T: Send>(
    out: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if len == 0 {
        return;
    }
    if out.len() >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(i, o)| f(i, o));
    }
}

/// Whether `len` elements are enough for the parallel path of [`for_each_chunk`].
pub(super) fn runs_parallel(len: usize) -> bool {
    len >= PARALLEL_MIN_ELEMS
}

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "conv2d-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_valid(self.name())?;
        let b = batch_of(l1, (g.channels, g.height, g.width), "conv2d-gemm input")?;
        let c_out = l2.shape().dims4()?.0;
        batch_of(l2, (g.channels, g.kh, g.kw), "conv2d-gemm kernel")?;
        let out = dispatch_f32_f64!(self.name(), s1, l1, s2, l2, |x, k| forward_cpu(
            x, k, None, &g, b, c_out
        ));
        Ok((out, Shape::from((b, c_out, g.out_h, g.out_w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            when_tracked(x, || conv_adjoint(grad, k, self.0))?,
            when_tracked(k, || conv_kernel_grad(x, grad, self.0))?,
        ))
    }
}

impl CustomOp2 for ConvAdjoint {
    fn name(&self) -> &'static str {
        "conv-transpose2d-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_valid(self.name())?;
        let c_out = l2.shape().dims4()?.0;
        let b = batch_of(l1, (c_out, g.out_h, g.out_w), "conv-transpose2d-gemm input")?;
        batch_of(l2, (g.channels, g.kh, g.kw), "conv-transpose2d-gemm kernel")?;
        let out = dispatch_f32_f64!(self.name(), s1, l1, s2, l2, |y, k| adjoint_cpu(
            y, k, None, &g, b, c_out
        ));
        Ok((out, Shape::from((b, g.channels, g.height, g.width))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        k: &Tensor,
        _x: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            when_tracked(y, || conv_forward(grad, k, self.0))?,
            when_tracked(k, || conv_kernel_grad(grad, y, self.0))?,
        ))
    }
}

impl CustomOp2 for ConvKernelGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        g.check_valid(self.name())?;
        let b = batch_of(l1, (g.channels, g.height, g.width), "kernel-grad image")?;
        let (b2, c_out, _, _) = l2.shape().dims4()?;
        batch_of(l2, (c_out, g.out_h, g.out_w), "kernel-grad output gradient")?;
        if b2 != b {
            candle_core::bail!("kernel-grad: batch sizes {b} and {b2} differ");
        }
        let out = dispatch_f32_f64!(self.name(), s1, l1, s2, l2, |x, y| kernel_grad_cpu(
            x, y, &g, b, c_out
        ));
        Ok((out, Shape::from((c_out, g.channels, g.kh, g.kw))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        _k: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            when_tracked(x, || conv_adjoint(y, grad, self.0))?,
            when_tracked(y, || conv_forward(x, grad, self.0))?,
        ))
    }
}

/// Rows `c` of a `(C × P)` block set to `bias[c]`.
fn fill_rows<T: GemmFloat>(block: &mut [T], bias: &[T], row_len: usize) {
    for (row, &v) in block.chunks_exact_mut(row_len).zip(bias) {
        row.fill(v);
    }
}

/// A thread's patch-matrix buffer: empty for a pointwise geometry, whose patch matrix is the
/// image itself (see [`patch_matrix`]).
fn patch_buffer<T: GemmFloat>(g: &PatchGeometry) -> Vec<T> {
    if g.is_pointwise() {
        Vec::new()
    } else {
        vec![T::zero(); g.positions() * g.patch_len()]
    }
}

/// The `(C·kh·kw × P)` patch matrix of image `x_b`: `x_b` itself for a pointwise geometry
/// (1×1 kernel, stride 1, no padding), otherwise its im2col written into `cols`.
fn patch_matrix<'a, T: GemmFloat>(
    x_b: &'a [T],
    g: &PatchGeometry,
    cols: &'a mut [T],
) -> View<'a, T> {
    if g.is_pointwise() {
        View::row_major(x_b, g.patch_len(), g.positions())
    } else {
        im2col_image(x_b, g, cols);
        View::row_major(cols, g.patch_len(), g.positions())
    }
}

/// `y_b (C_o × P) = K (C_o × C·kh·kw) · cols(x_b) (C·kh·kw × P) [+ bias]` for each image.
pub(crate) fn forward_cpu<T: GemmFloat>(
    x: &[T],
    k: &[T],
    bias: Option<&[T]>,
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> candle_core::Result<Vec<T>> {
    if winograd::covers::<T>(g, c_out) {
        return winograd::forward(x, k, bias, g, b, c_out);
    }
    let (positions, patch_len, image_len) = (g.positions(), g.patch_len(), g.image_len());
    let out_len = c_out * positions;
    let mut y = zeros(b * out_len);
    if y.is_empty() {
        return Ok(y);
    }
    let (per_task, par) = split_batch(b);
    y.par_chunks_mut(per_task * out_len)
        .zip(x.par_chunks(per_task * image_len))
        .try_for_each(|(y_task, x_task)| {
            let mut cols = patch_buffer(g);
            for (y_b, x_b) in y_task
                .chunks_exact_mut(out_len)
                .zip(x_task.chunks_exact(image_len))
            {
                let patches = patch_matrix(x_b, g, &mut cols);
                if let Some(bias) = bias {
                    fill_rows(y_b, bias, positions);
                }
                let kernel = View::row_major(k, c_out, patch_len);
                matmul_into(y_b, kernel, patches, bias.is_some(), par)?;
            }
            Ok::<(), candle_core::Error>(())
        })?;
    Ok(y)
}

/// `x_b = col2im(Kᵀ (C·kh·kw × C_o) · y_b (C_o × P)) [+ bias]` for each image (for a
/// pointwise geometry the product lands in `x_b` directly).
pub(crate) fn adjoint_cpu<T: GemmFloat>(
    y: &[T],
    k: &[T],
    bias: Option<&[T]>,
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> candle_core::Result<Vec<T>> {
    if winograd::covers::<T>(g, c_out) {
        return winograd::adjoint(y, k, bias, g, b, c_out);
    }
    let (positions, patch_len, image_len) = (g.positions(), g.patch_len(), g.image_len());
    let in_len = c_out * positions;
    let mut x = zeros(b * image_len);
    if x.is_empty() {
        return Ok(x);
    }
    let plane = g.height * g.width;
    if in_len == 0 {
        if let Some(bias) = bias {
            x.chunks_exact_mut(image_len)
                .for_each(|x_b| fill_rows(x_b, bias, plane));
        }
        return Ok(x);
    }
    let (per_task, par) = split_batch(b);
    x.par_chunks_mut(per_task * image_len)
        .zip(y.par_chunks(per_task * in_len))
        .try_for_each(|(x_task, y_task)| {
            let mut cols = patch_buffer(g);
            for (i, x_b) in x_task.chunks_exact_mut(image_len).enumerate() {
                if let Some(bias) = bias {
                    fill_rows(x_b, bias, plane);
                }
                let y_b = &y_task[i * in_len..][..in_len];
                let kernel_t = View::row_major(k, c_out, patch_len).t();
                let grid = View::row_major(y_b, c_out, positions);
                if g.is_pointwise() {
                    matmul_into(x_b, kernel_t, grid, bias.is_some(), par)?;
                } else {
                    matmul_into(&mut cols, kernel_t, grid, false, par)?;
                    col2im_image(&cols, g, x_b);
                }
            }
            Ok::<(), candle_core::Error>(())
        })?;
    Ok(x)
}

/// `Σ_b y_b (C_o × P) · cols(x_b)ᵀ (P × C·kh·kw)`: one partial sum per task of
/// [`reduce_over_batch`], added in task order (the same bits for any thread count).
pub(crate) fn kernel_grad_cpu<T: GemmFloat>(
    x: &[T],
    y: &[T],
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> candle_core::Result<Vec<T>> {
    if winograd::covers::<T>(g, c_out) {
        return winograd::kernel_grad(x, y, g, b, c_out);
    }
    let (positions, patch_len, image_len) = (g.positions(), g.patch_len(), g.image_len());
    let y_len = c_out * positions;
    let k_len = c_out * patch_len;
    if b == 0 || k_len == 0 || y_len == 0 || image_len == 0 {
        return Ok(vec![T::zero(); k_len]);
    }
    let partials = reduce_over_batch(b, |images, par| {
        let mut acc = vec![T::zero(); k_len];
        let mut cols = patch_buffer(g);
        for (i, img) in images.enumerate() {
            let x_b = &x[img * image_len..][..image_len];
            let y_b = &y[img * y_len..][..y_len];
            let patches_t = patch_matrix(x_b, g, &mut cols).t();
            let grad = View::row_major(y_b, c_out, positions);
            matmul_into(&mut acc, grad, patches_t, i > 0, par)?;
        }
        Ok(acc)
    })?;
    Ok(sum_in_order(partials, k_len))
}
