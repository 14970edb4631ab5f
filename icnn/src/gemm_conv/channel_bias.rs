//! The per-channel bias of a convolution, `y + b` with `b (C,)` broadcast over
//! `y (B, C, H, W)`, as a candle custom op whose backward sums the gradient per channel in
//! one contiguous pass.
//!
//! candle's `broadcast_add` back-propagates into `b` with `sum_keepdim` over the axes
//! `(0, 2, 3)`, which its CPU backend runs as a strided scalar fold: 8.7% of a VAE training
//! step on Frey Faces (`perf`, batch 100, f64), 2% of an MNIST image-flow step. Here the
//! gradient of `b` is [`ChannelSum`]: for each channel, the rows `(b, c, ·, ·)` of `H·W`
//! contiguous elements summed with independent lanes, channels split over rayon's threads.
//! [`ChannelSum`]'s own backward is a broadcast, so double backward keeps working.

use super::im2col::contiguous_slice;
use super::ops::{dispatch_f32_f64, for_each_chunk, runs_parallel, when_tracked};
use crate::host_par::zeros;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// `(y (B, C, H, W), b (C,)) → y + b` broadcast over channels (both contiguous).
#[derive(Clone, Copy, Debug)]
pub(super) struct ChannelBiasAdd;

/// `y (B, C, H, W) → (C,)`, the sum of each channel over batch and positions.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChannelSum;

/// `y + b`, `b` broadcast over the channel axis of `y` (both made contiguous first).
pub(super) fn channel_bias_add(y: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    y.contiguous()?.apply_op2(&b.contiguous()?, ChannelBiasAdd)
}

/// `Σ_{b,h,w} y[b, c, h, w]` for each `c` (made contiguous first).
pub(super) fn channel_sum(y: &Tensor) -> candle_core::Result<Tensor> {
    y.contiguous()?.apply_op1(ChannelSum)
}

/// `(B, C, H·W)` of a 4-D layout.
fn rows_of(layout: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (b, c, h, w) = layout.shape().dims4()?;
    Ok((b, c, h * w))
}

fn bias_add_kernel<T: WithDType + Default>(
    y: &[T],
    bias: &[T],
    channels: usize,
    hw: usize,
) -> candle_core::Result<Vec<T>> {
    let mut out = zeros(y.len());
    for_each_chunk(&mut out, hw, |r, o| {
        let b = bias[r % channels];
        for (o, &y) in o.iter_mut().zip(&y[r * hw..]) {
            *o = y + b;
        }
    });
    Ok(out)
}

/// The sum of a slice with eight independent accumulators (vectorisable; the order of the
/// additions differs from a left fold by rounding only).
fn lane_sum<T: WithDType>(x: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = chunks.remainder().iter().fold(T::zero(), |s, &v| s + v);
    for a in acc {
        s += a;
    }
    s
}

fn channel_sum_kernel<T: WithDType>(y: &[T], batch: usize, channels: usize, hw: usize) -> Vec<T> {
    let one = |c: usize| {
        (0..batch)
            .map(|b| lane_sum(&y[(b * channels + c) * hw..][..hw]))
            .fold(T::zero(), |s, v| s + v)
    };
    if runs_parallel(y.len()) {
        (0..channels).into_par_iter().map(one).collect()
    } else {
        (0..channels).map(one).collect()
    }
}

impl CustomOp2 for ChannelBiasAdd {
    fn name(&self) -> &'static str {
        "channel-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, hw) = rows_of(l1)?;
        if l2.shape().dims() != [c] {
            candle_core::bail!(
                "channel-bias-add: bias has shape {:?}, expected ({c},) for input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let out = dispatch_f32_f64!(self.name(), s1, l1, s2, l2, |y, b| bias_add_kernel(
            y, b, c, hw
        ));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        b: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            when_tracked(y, || Ok(grad.clone()))?,
            when_tracked(b, || channel_sum(grad))?,
        ))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, hw) = rows_of(l)?;
        let name = self.name();
        let out = match s {
            CpuStorage::F32(y) => {
                CpuStorage::F32(channel_sum_kernel(contiguous_slice(y, l, name)?, b, c, hw))
            }
            CpuStorage::F64(y) => {
                CpuStorage::F64(channel_sum_kernel(contiguous_slice(y, l, name)?, b, c, hw))
            }
            s => return Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), name)),
        };
        Ok((out, Shape::from(c)))
    }

    fn bwd(&self, y: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let c = grad.elem_count();
        when_tracked(y, || grad.reshape((1, c, 1, 1))?.broadcast_as(y.shape()))
    }
}

#[cfg(test)]
mod tests {
    //! Against candle's `broadcast_add` (values and autodiff gradients). Tolerances (f64):
    //! values are one addition, equal to the bit; a bias gradient sums up to 14,700 standard
    //! normals in another order than candle's fold (rounding ≲ 14,700 · 150 · 2.2e-16 ≈
    //! 5e-10 in the worst case, ≈ 1e-12 typically): 1e-9.
    use super::*;
    use crate::gemm_conv::add_channel_bias;
    use crate::gemm_conv::tests::max_abs_diff;
    use candle_core::{DType, Device, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn randn(rng: &mut StdRng, shape: &[usize]) -> Tensor {
        crate::gemm_conv::tests::randn(rng, shape, DType::F64)
    }

    /// `(out, ∂⟨w, out⟩/∂y, ∂⟨w, out⟩/∂b)` of `f(y, b)`.
    fn value_and_grads(
        f: impl Fn(&Tensor, &Tensor) -> Tensor,
        y: &Tensor,
        b: &Tensor,
        w: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let (yv, bv) = (Var::from_tensor(y).unwrap(), Var::from_tensor(b).unwrap());
        let out = f(yv.as_tensor(), bv.as_tensor());
        let g = (&out * w).unwrap().sum_all().unwrap().backward().unwrap();
        (
            out,
            g.get(&yv).unwrap().clone(),
            g.get(&bv).unwrap().clone(),
        )
    }

    #[test]
    fn channel_bias_matches_broadcast_add_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(3);
        // Small (sequential kernels), above PARALLEL_MIN_ELEMS, odd H·W (lane remainder).
        for shape in [[2, 3, 4, 5], [3, 5, 70, 70], [4, 7, 3, 3]] {
            let c = shape[1];
            // y strided (H and W swapped back): the op makes it contiguous.
            let y = randn(&mut rng, &[shape[0], c, shape[3], shape[2]])
                .transpose(2, 3)
                .unwrap();
            let b = randn(&mut rng, &[c]);
            let w = randn(&mut rng, &shape);
            let ours = value_and_grads(|y, b| add_channel_bias(y, b).unwrap(), &y, &b, &w);
            let candle = value_and_grads(
                |y, b| y.broadcast_add(&b.reshape((1, c, 1, 1)).unwrap()).unwrap(),
                &y,
                &b,
                &w,
            );
            assert_eq!(max_abs_diff(&ours.0, &candle.0), 0.0, "{shape:?} values");
            assert_eq!(max_abs_diff(&ours.1, &candle.1), 0.0, "{shape:?} ∂y");
            let gb = max_abs_diff(&ours.2, &candle.2);
            assert!(gb < 1e-9, "{shape:?} ∂b off by {gb:e}");

            // f32 against the f64 result (f32 sums of ≤ 14,700 terms: relative ≲ 1e-4).
            let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let ours32 = value_and_grads(
                |y, b| add_channel_bias(y, b).unwrap(),
                &f(&y),
                &f(&b),
                &f(&w),
            );
            let scale = 1.0 + max_abs_diff(&candle.2, &candle.2.zeros_like().unwrap());
            assert!(max_abs_diff(&ours32.0.to_dtype(DType::F64).unwrap(), &candle.0) < 1e-5);
            assert!(
                max_abs_diff(&ours32.2.to_dtype(DType::F64).unwrap(), &candle.2) < 1e-4 * scale
            );
        }
    }

    #[test]
    fn channel_sum_backward_is_the_broadcast() {
        // ⟨w, channel_sum(y)⟩ has gradient w[c] at every (b, c, h, w).
        let mut rng = StdRng::seed_from_u64(4);
        let y = Var::from_tensor(&randn(&mut rng, &[2, 3, 4, 4])).unwrap();
        let w = randn(&mut rng, &[3]);
        let s = channel_sum(y.as_tensor()).unwrap();
        let reference = y
            .sum_keepdim(0)
            .unwrap()
            .sum_keepdim(2)
            .unwrap()
            .sum_keepdim(3)
            .unwrap();
        assert!(max_abs_diff(&s, &reference.flatten_all().unwrap()) < 1e-13);
        let g = (s * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let expected = w
            .reshape((1, 3, 1, 1))
            .unwrap()
            .broadcast_as((2, 3, 4, 4))
            .unwrap();
        assert_eq!(max_abs_diff(g.get(&y).unwrap(), &expected), 0.0);
    }

    #[test]
    fn channel_bias_rejects_bad_shapes_and_falls_back_on_other_dtypes() {
        let dev = Device::Cpu;
        let y = Tensor::zeros((2, 3, 4, 4), DType::F64, &dev).unwrap();
        assert!(add_channel_bias(&y, &Tensor::zeros(4, DType::F64, &dev).unwrap()).is_err());
        assert!(add_channel_bias(&y, &Tensor::zeros((1, 3), DType::F64, &dev).unwrap()).is_err());
        let y3 = Tensor::zeros((2, 3, 4), DType::F64, &dev).unwrap();
        assert!(add_channel_bias(&y3, &Tensor::zeros(3, DType::F64, &dev).unwrap()).is_err());
        // bf16 takes candle's broadcast_add.
        let yb = Tensor::ones((1, 2, 2, 2), DType::BF16, &dev).unwrap();
        let bb = Tensor::ones(2, DType::BF16, &dev).unwrap();
        let out = add_channel_bias(&yb, &bb)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert_eq!(
            out.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            vec![2.0; 8]
        );
    }
}
