//! Both gradients of a Winograd convolution whose adjoint runs transposed ([`super::winograd`])
//! in one pass over the batch: the adjoint `A_Kᵀ ȳ` and the kernel gradient `KG(x, ȳ)` each
//! start, per tile, from the same output adjoint `M̄ = A Ȳ Aᵀ` of `ȳ`. Computed apart, as
//! candle's backward of the convolution asks for them, that transform and its gather ran
//! twice per image: on the VAE's Frey head (`32 → 256` channels at 28×20) about a tenth of a
//! training step's CPU time in all.
//!
//! The values are those of the two separate functions to the bit: the kernel gradient runs
//! the tasks and chunks of [`super::winograd::kernel_grad`] with the same operations in the
//! same order, and each image's adjoint is the same products and patch sums as in the
//! separate adjoint (whose chunks follow the thread count, which the tests of both check
//! does not change a bit); `winograd_backward_tests` compares them bit by bit.

use super::batch_split::{product_parallelism, reduction_tasks, sum_in_order};
use super::im2col::PatchGeometry;
use super::winograd::{add_kernel_grad_chunk, entry_products};
use super::winograd_plan::{Plan, Scratch};
use crate::host_gemm::{GemmFloat, View};
use crate::host_par::zeros;
use candle_core::Result;
use rayon::prelude::*;

/// Whether [`adjoint_and_kernel_grad`] computes the gradients of the convolution of geometry
/// `g` with `c_out` output channels: Winograd covers it and its adjoint runs transposed (more
/// output than input channels).
pub(super) fn covers<T: GemmFloat>(g: &PatchGeometry, c_out: usize) -> bool {
    super::winograd::covers::<T>(g, c_out) && c_out > g.channels
}

/// `(A_Kᵀ ȳ, KG(x, ȳ))` for `b` images `x (B, C, H, W)`, output gradients `ȳ (B, C_o, H, W)`
/// and a kernel `(C_o, C, r, r)`, where [`covers`] holds: the bits of
/// `winograd::adjoint(ȳ, K, None, ..)` and `winograd::kernel_grad(x, ȳ, ..)`.
pub(super) fn adjoint_and_kernel_grad<T: GemmFloat>(
    x: &[T],
    ybar: &[T],
    k: &[T],
    g: &PatchGeometry,
    b: usize,
    c_out: usize,
) -> Result<(Vec<T>, Vec<T>)> {
    let p = Plan::<T>::new(g)?;
    let (c, plane, xi) = (g.channels, p.plane(), p.xi());
    let pairs = c_out * c;
    let (image_len, out_len) = (c * plane, c_out * plane);
    let mut dx = zeros(b * image_len);
    if b == 0 || pairs == 0 || plane == 0 {
        return Ok((dx, vec![T::zero(); pairs * g.kh * g.kw]));
    }
    let u = p.kernel_transform(k, pairs);
    let per_chunk = p.chunk_images();
    let tasks = reduction_tasks(b);
    let par = product_parallelism(tasks.len());
    // The tasks' slices of the adjoint, in task order.
    let mut pieces = Vec::with_capacity(tasks.len());
    let mut rest = dx.as_mut_slice();
    for r in &tasks {
        let (piece, tail) = rest.split_at_mut(r.len() * image_len);
        pieces.push(piece);
        rest = tail;
    }
    let partials = tasks
        .into_par_iter()
        .zip(pieces)
        .map(|(images, dx_task)| {
            let x_task = &x[images.start * image_len..images.end * image_len];
            let y_task = &ybar[images.start * out_len..images.end * out_len];
            let mut s = Scratch::new(&p, c, c_out, per_chunk * p.tiles);
            let mut ubar = vec![T::zero(); xi * pairs];
            for ((x_ch, y_ch), dx_ch) in x_task
                .chunks(per_chunk * image_len)
                .zip(y_task.chunks(per_chunk * out_len))
                .zip(dx_task.chunks_mut(per_chunk * image_len))
            {
                s.len = x_ch.len() / image_len * p.tiles;
                // The kernel gradient's chunk, as in `winograd::kernel_grad`.
                add_kernel_grad_chunk(&p, x_ch, y_ch, (c, c_out), &mut s, &mut ubar, par)?;
                // The adjoint's, as in `winograd::transposed` (no bias), from the same `M̄`:
                // `V̄_ξ = U_ξᵀ M̄_ξ` over the transformed inputs, then the patches.
                let kernel_t = |e| View::row_major(&u[e * pairs..][..pairs], c_out, c).t();
                entry_products(&mut s.v, kernel_t, &s.prod, (c_out, s.len, xi), par)?;
                p.input_adjoint(dx_ch, c, &mut s);
            }
            Ok(ubar)
        })
        .collect::<Result<Vec<_>>>()?;
    let dk = p.kernel_untransform(&sum_in_order(partials, xi * pairs), pairs);
    Ok((dx, dk))
}

#[cfg(test)]
#[path = "winograd_backward_tests.rs"]
mod tests;
