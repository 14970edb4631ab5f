//! The gate of a gated convolution, `h ⊙ σ(g)` where `y = [h; g]` stacks the two branches'
//! outputs along the channel axis, as one candle custom op on CPU f32/f64.
//!
//! Composed from candle ops (`narrow`, `sigmoid`, `mul`) the gate makes four passes over
//! the activations forward and, backward, a full-size zero tensor per `narrow` (candle pads
//! the slice's gradient back to the whole tensor) plus the gradient accumulations of each op.
//! Here the forward is one pass and the backward ([`GateGrad`]) writes `∂/∂h = ḡ·σ(g)` and
//! `∂/∂g = ḡ·h·σ(g)(1 − σ(g))` into one `[∂h; ∂g]` tensor in one pass. First derivatives
//! only: a VAE's training needs no more, and [`GateGrad`] has no backward of its own.

use super::im2col::contiguous_slice;
use super::ops::{dispatch_f32_f64, for_each_chunk, when_tracked};
use crate::host_par::zeros;
use crate::wide_simd::avx2_fma_fn;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};

/// `[h; g] → h ⊙ σ(g)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gate;

/// `([h; g], ḡ) → [ḡ ⊙ σ(g); ḡ ⊙ h ⊙ σ(g)(1 − σ(g))]`, the gradient of [`Gate`].
#[derive(Clone, Copy, Debug)]
struct GateGrad;

/// f32/f64 with the logistic function.
pub(super) trait Logistic: WithDType + Default {
    fn sigmoid(self) -> Self;
}

macro_rules! logistic {
    ($t:ty, $kernels:ident) => {
        impl Logistic for $t {
            /// The activation kernels' logistic (`1/(1 + e)` or `e/(1 + e)` with
            /// `e = exp(−|x|)`): no overflow, and the branch-free exponential
            /// ([`crate::ExpNonPositive`]) vectorises where libm's `exp` (a call per value, ~8% of a
            /// VAE step's samples) did not.
            #[inline(always)]
            fn sigmoid(self) -> Self {
                crate::fused::$kernels::logistic(self).0
            }
        }
    };
}
logistic!(f32, k32);
logistic!(f64, k64);

/// `(images, channel pairs n, H·W)` of a `(B, 2n, H, W)` layout.
fn geometry(l: &Layout, op: &'static str) -> candle_core::Result<(usize, usize, usize)> {
    let (b, c2, h, w) = l.shape().dims4()?;
    if c2 % 2 != 0 {
        candle_core::bail!("{op}: expected a (B, 2n, H, W) input, got {:?}", l.shape());
    }
    Ok((b, c2 / 2, h * w))
}

pub(super) fn gate_kernel<T: Logistic>(y: &[T], b: usize, m: usize) -> Vec<T> {
    let mut out = zeros(b * m);
    for_each_chunk(&mut out, m, |i, o| {
        let (h, g) = y[2 * m * i..2 * m * (i + 1)].split_at(m);
        gate_row(o, h, g);
    });
    out
}

avx2_fma_fn! {
    /// `o = h ⊙ σ(g)`.
    fn gate_row<T: Logistic>(o: &mut [T], h: &[T], g: &[T]) {
        for ((o, &h), &g) in o.iter_mut().zip(h).zip(g) {
            *o = h * g.sigmoid();
        }
    }
}

pub(super) fn gate_grad_kernel<T: Logistic>(
    y: &[T],
    grad: &[T],
    b: usize,
    m: usize,
) -> candle_core::Result<Vec<T>> {
    let mut out = zeros(2 * b * m);
    for_each_chunk(&mut out, 2 * m, |i, o| {
        let (h, g) = y[2 * m * i..2 * m * (i + 1)].split_at(m);
        let (dh, dg) = o.split_at_mut(m);
        gate_grad_row(dh, dg, [h, g, &grad[m * i..m * (i + 1)]]);
    });
    Ok(out)
}

avx2_fma_fn! {
    /// `dh = ḡ σ(g)`, `dg = ḡ h σ(g)(1 − σ(g))` from `[h, g, ḡ]`.
    fn gate_grad_row<T: Logistic>(dh: &mut [T], dg: &mut [T], rows: [&[T]; 3]) {
        let [h, g, gr] = rows;
        for ((((dh, dg), &h), &g), &gr) in dh.iter_mut().zip(dg).zip(h).zip(g).zip(gr) {
            let s = g.sigmoid();
            *dh = gr * s;
            *dg = gr * h * s * (T::one() - s);
        }
    }
}

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        "gated-product"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, n, hw) = geometry(l, self.name())?;
        let name = self.name();
        let out = match s {
            CpuStorage::F32(y) => {
                CpuStorage::F32(gate_kernel(contiguous_slice(y, l, name)?, b, n * hw))
            }
            CpuStorage::F64(y) => {
                CpuStorage::F64(gate_kernel(contiguous_slice(y, l, name)?, b, n * hw))
            }
            s => return Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), name)),
        };
        let (_, _, h, w) = l.shape().dims4()?;
        Ok((out, Shape::from((b, n, h, w))))
    }

    fn bwd(&self, y: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        when_tracked(y, || y.apply_op2(&grad.contiguous()?, GateGrad))
    }
}

impl CustomOp2 for GateGrad {
    fn name(&self) -> &'static str {
        "gated-product-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, n, hw) = geometry(l1, self.name())?;
        let (_, _, h, w) = l1.shape().dims4()?;
        if l2.shape().dims() != [b, n, h, w] {
            candle_core::bail!(
                "{}: gradient {:?} does not match input {:?}",
                self.name(),
                l2.shape(),
                l1.shape()
            );
        }
        let out = dispatch_f32_f64!(self.name(), s1, l1, s2, l2, |y, g| gate_grad_kernel(
            y,
            g,
            b,
            n * hw
        ));
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    //! Against the composed candle ops (values and gradients, f64 to 1e-14: the same
    //! formulas element by element, `σ` by another but equivalent expression; f32 to 1e-6).
    use crate::gemm_conv::gated_product;
    use crate::gemm_conv::tests::{max_abs_diff, randn};
    use candle_core::{DType, Device, Tensor, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn composed(y: &Tensor) -> Tensor {
        let n = y.dim(1).unwrap() / 2;
        let h = y.narrow(1, 0, n).unwrap();
        let g = candle_nn::ops::sigmoid(&y.narrow(1, n, n).unwrap()).unwrap();
        (h * g).unwrap()
    }

    #[test]
    fn gate_matches_composed_ops_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(5);
        // Small (sequential) and above PARALLEL_MIN_ELEMS (parallel over images).
        for shape in [[2usize, 6, 3, 4], [5, 32, 28, 20]] {
            let y =
                Var::from_tensor(&(randn(&mut rng, &shape, DType::F64) * 3.0).unwrap()).unwrap();
            let wshape = [shape[0], shape[1] / 2, shape[2], shape[3]];
            let w = randn(&mut rng, &wshape, DType::F64);
            for dtype in [DType::F64, DType::F32] {
                let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
                let yd = Var::from_tensor(&y.to_dtype(dtype).unwrap()).unwrap();
                let wd = w.to_dtype(dtype).unwrap();
                let grad_of = |out: Tensor| {
                    let g = (out * &wd).unwrap().sum_all().unwrap().backward().unwrap();
                    g.get(&yd).unwrap().clone()
                };
                let ours = gated_product(yd.as_tensor()).unwrap();
                let theirs = composed(yd.as_tensor());
                assert!(
                    max_abs_diff(&ours, &theirs) < tol,
                    "{shape:?} {dtype:?} values"
                );
                let d = max_abs_diff(&grad_of(ours), &grad_of(theirs));
                assert!(d < tol, "{shape:?} {dtype:?} gradient off by {d:e}");
            }
        }
    }

    #[test]
    fn gate_rejects_odd_channels() {
        let y = Tensor::zeros((1, 3, 2, 2), DType::F64, &Device::Cpu).unwrap();
        assert!(gated_product(&y).is_err());
    }
}
