//! [`scaled_kernel`]: a layer's kernel times its ActNorm scale, `map(W)[o, …]·γ[o]` with `map`
//! the identity or a positive layer's `softplus(·)/fan_in`, as one candle op with its own
//! backward (CPU, f32 and f64).
//!
//! Composed of candle ops (softplus, affine, broadcast_mul), a training step's graph keeps
//! every intermediate (a copy of the kernel each) until the backward pass, and the backward
//! makes several more kernel-sized tensors per layer: each side's gradient of the product,
//! the full-size gradient of the broadcast scale, candle's zero-initialised sums. The host
//! kernels' weights are prepared once per step for every layer, so for a wide network these
//! were several copies of all its weights at the step's peak. One op keeps its output only,
//! and its backward makes the kernel's gradient and the scale's in one pass.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::activation::{ActivationKind, fused_supported};
use crate::fused::{ActSpec, contiguous_slice, unsupported};
use crate::surrogate_host::Real;

/// Plain softplus (no shift, no symmetry).
const SOFTPLUS: ActSpec = ActSpec {
    kind: ActivationKind::Softplus,
    shift: 0.0,
    symmetric: false,
};

/// How a network's preparation multiplies a kernel (or a dense weight) by its ActNorm scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum KernelGraph {
    /// candle ops (softplus, affine, broadcast product): differentiable any number of times.
    Composed,
    /// One op ([`scaled_kernel`]) on CPU f32/f64 weights (elsewhere the composed ops): the
    /// same values, a first-order backward and no weight-sized intermediates.
    Fused,
}

/// What is applied to the kernel before the scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum KernelMap {
    /// `W` (a plain layer).
    Identity,
    /// `softplus(W)·inv_fan_in` (a positive layer's effective kernel).
    Softplus { inv_fan_in: f64 },
}

/// `map(w)[o, …]·gamma[o]` for a kernel `w` `(C_o, …)` (or a dense weight `(out, in)`) and
/// a scale `gamma` `(C_o,)`, with the values of the composed candle ops bit for bit. CPU
/// f32/f64 tensors of one dtype only ([`fused_scaled_kernel`] checks); the backward is
/// first-order (the host kernels' ops are too).
pub(crate) fn scaled_kernel(w: &Tensor, gamma: &Tensor, map: KernelMap) -> Result<Tensor> {
    w.contiguous()?
        .apply_op2(&gamma.contiguous()?, ScaledKernel(map))
}

/// [`scaled_kernel`] where `graph` is [`KernelGraph::Fused`] and `w` is a CPU f32/f64
/// tensor; `None` where the caller composes the candle ops instead.
pub(crate) fn fused_scaled_kernel(
    w: &Tensor,
    gamma: &Tensor,
    map: KernelMap,
    graph: KernelGraph,
) -> Result<Option<Tensor>> {
    if graph == KernelGraph::Fused && fused_supported(w) {
        Ok(Some(scaled_kernel(w, gamma, map)?))
    } else {
        Ok(None)
    }
}

/// The op of [`scaled_kernel`].
struct ScaledKernel(KernelMap);

/// Its backward: `(∂/∂w, ∂/∂γ)` of `⟨ḡ, map(w)·γ⟩` as one vector, `w`'s gradient first.
struct ScaledKernelGrad(KernelMap);

/// `body` on the host slices of two or three CPU tensors of one float type.
macro_rules! on_slices {
    ([$($s:ident: $l:ident),+], |$($v:ident),+| $body:expr) => {
        match ($($s),+) {
            ($(CpuStorage::F32($v)),+) => {
                $(let $v = contiguous_slice($v, $l)?;)+
                let out: Vec<f32> = $body;
                CpuStorage::F32(out)
            }
            ($(CpuStorage::F64($v)),+) => {
                $(let $v = contiguous_slice($v, $l)?;)+
                let out: Vec<f64> = $body;
                CpuStorage::F64(out)
            }
            _ => return Err(unsupported()),
        }
    };
}

impl CustomOp2 for ScaledKernel {
    fn name(&self) -> &'static str {
        "icnn-scaled-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let map = self.0;
        let out = on_slices!([s1: l1, s2: l2], |w, gamma| forward(w, gamma, map)?);
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        w: &Tensor,
        gamma: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // On detached inputs: a gradient that tracked `w` (a variable) would keep, through
        // candle's graph of the sum it is added into, the zeros that sum started from and the
        // whole output of this pass, for every layer until the backward pass ends.
        let n = w.elem_count();
        let both = w.detach().apply_op3(
            &gamma.detach(),
            &grad.detach().contiguous()?,
            ScaledKernelGrad(self.0),
        )?;
        let dw = both.narrow(0, 0, n)?.reshape(w.shape())?;
        // A copy, so that the scale's gradient (kept until its node's turn) does not keep the
        // kernel's alive.
        let dgamma = both
            .narrow(0, n, gamma.elem_count())?
            .copy()?
            .reshape(gamma.shape())?;
        Ok((Some(dw), Some(dgamma)))
    }
}

impl CustomOp3 for ScaledKernelGrad {
    fn name(&self) -> &'static str {
        "icnn-scaled-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let map = self.0;
        let out = on_slices!([s1: l1, s2: l2, s3: l3], |w, gamma, grad| {
            backward(w, gamma, grad, map)?
        });
        let len = l1.shape().elem_count() + l2.shape().elem_count();
        Ok((out, Shape::from(len)))
    }
}

/// The length of a row (one output channel) of a kernel of `len` values with `rows` rows,
/// at least 1 (rayon's chunks are never empty: an empty kernel has no chunk at all).
fn row_len(len: usize, rows: usize) -> Result<usize> {
    if rows == 0 || !len.is_multiple_of(rows) {
        candle_core::bail!("scaled kernel: {len} kernel values for {rows} output channels");
    }
    Ok((len / rows).max(1))
}

/// `map(w)·γ` row by row (in parallel), the composed ops' arithmetic: `(sp(w)·inv + 0)·γ`.
fn forward<T: Real>(w: &[T], gamma: &[T], map: KernelMap) -> Result<Vec<T>> {
    let row = row_len(w.len(), gamma.len())?;
    let mut out = vec![T::zero(); w.len()];
    out.par_chunks_mut(row)
        .zip(w.par_chunks(row))
        .zip(gamma.par_iter())
        .for_each(|((out, w), &g)| match map {
            KernelMap::Identity => {
                for (o, &v) in out.iter_mut().zip(w) {
                    *o = v * g;
                }
            }
            KernelMap::Softplus { inv_fan_in } => {
                let inv = T::from_f64(inv_fan_in);
                T::derivative_into(&SOFTPLUS, 0, w, out);
                for o in out.iter_mut() {
                    *o = (*o * inv + T::zero()) * g;
                }
            }
        });
    Ok(out)
}

/// `[∂w; ∂γ]` for the cotangent `grad`, row by row (in parallel), the composed ops'
/// arithmetic: `∂w = (ḡ·γ)·inv·σ(w)`, `∂γ[o] = Σ ḡ·map(w)` summed in order.
fn backward<T: Real>(w: &[T], gamma: &[T], grad: &[T], map: KernelMap) -> Result<Vec<T>> {
    let (n, c) = (w.len(), gamma.len());
    let row = row_len(n, c)?;
    if grad.len() != n {
        candle_core::bail!("scaled kernel: a gradient of {} values for {n}", grad.len());
    }
    let mut out = vec![T::zero(); n + c];
    let (dw, dgamma) = out.split_at_mut(n);
    dw.par_chunks_mut(row)
        .zip(dgamma.par_iter_mut())
        .zip(w.par_chunks(row).zip(grad.par_chunks(row)))
        .zip(gamma.par_iter())
        // The softplus values of a row, in a buffer that each rayon job reuses.
        .for_each_init(Vec::new, |value, (((dw, dg), (w, grad)), &g)| match map {
            KernelMap::Identity => {
                let mut sum = T::zero();
                for ((d, &v), &b) in dw.iter_mut().zip(w).zip(grad) {
                    *d = b * g;
                    sum += b * v;
                }
                *dg = sum;
            }
            KernelMap::Softplus { inv_fan_in } => {
                let inv = T::from_f64(inv_fan_in);
                value.clear();
                value.resize(w.len(), T::zero());
                T::derivative_into(&SOFTPLUS, 0, w, value);
                T::derivative_into(&SOFTPLUS, 1, w, dw);
                let mut sum = T::zero();
                for ((d, &b), &s) in dw.iter_mut().zip(grad).zip(value.iter()) {
                    *d = (b * g * inv + T::zero()) * *d;
                    sum += b * (s * inv + T::zero());
                }
                *dg = sum;
            }
        });
    Ok(out)
}

#[cfg(test)]
#[path = "scaled_kernel_tests.rs"]
mod tests;
