//! The gate of a gated convolution, `h ⊙ σ(g)` where `y = [h; g]` stacks the two branches'
//! outputs along the channel axis, as one candle custom op on CPU f32/f64.
//!
//! Composed from candle ops (`narrow`, `sigmoid`, `mul`) the gate makes four passes over
//! the activations forward and, backward, a full-size zero tensor per `narrow` (candle pads
//! the slice's gradient back to the whole tensor) plus the gradient accumulations of each op.
//! Here the forward is one pass and the backward ([`GateGrad`]) writes `∂/∂h = ḡ·σ(g)` and
//! `∂/∂g = ḡ·h·σ(g)(1 − σ(g))` into one `[∂h; ∂g]` tensor in one pass. First derivatives
//! only: the VAE's training needs no more, and [`GateGrad`] has no backward of its own.
//! Other devices and dtypes use the composed ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Below this many output elements the kernels run on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// `h ⊙ σ(g)` for `y = [h; g]` `(B, 2n, H, W)`: the output `(B, n, H, W)` (see
/// [`GatedConv::forward`](super::GatedConv::forward) for an example).
pub(crate) fn gated_product(y: &Tensor) -> Result<Tensor> {
    let (_, c2, _, _) = y.dims4()?;
    if c2 % 2 != 0 {
        return Err(crate::error::CpflowError::InvalidInput(format!(
            "gated_product: {c2} channels do not split into [h; g]"
        )));
    }
    let n = c2 / 2;
    if !(y.device().is_cpu() && matches!(y.dtype(), DType::F32 | DType::F64)) {
        let h = y.narrow(1, 0, n)?;
        let g = candle_nn::ops::sigmoid(&y.narrow(1, n, n)?)?;
        return Ok((h * g)?);
    }
    Ok(y.contiguous()?.apply_op1(Gate)?)
}

/// `[h; g] → h ⊙ σ(g)`.
#[derive(Clone, Copy, Debug)]
struct Gate;

/// `([h; g], ḡ) → [ḡ ⊙ σ(g); ḡ ⊙ h ⊙ σ(g)(1 − σ(g))]`, the gradient of [`Gate`].
#[derive(Clone, Copy, Debug)]
struct GateGrad;

/// f32/f64 with the logistic function.
trait Logistic: candle_core::WithDType {
    fn sigmoid(self) -> Self;
}

impl Logistic for f32 {
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
}

impl Logistic for f64 {
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
}

/// `(images, channel pairs n, H·W)` of a contiguous `(B, 2n, H, W)` layout.
fn geometry(l: &Layout, op: &'static str) -> candle_core::Result<(usize, usize, usize)> {
    let (b, c2, h, w) = l.shape().dims4()?;
    if c2 % 2 != 0 || l.contiguous_offsets().is_none() {
        candle_core::bail!(
            "{op}: expected a contiguous (B, 2n, H, W) input, got {:?}",
            l.shape()
        );
    }
    Ok((b, c2 / 2, h * w))
}

fn slice<'a, T>(data: &'a [T], l: &Layout) -> &'a [T] {
    match l.contiguous_offsets() {
        Some((start, end)) => &data[start..end],
        None => &data[..0],
    }
}

/// Runs `f(image index, output chunk)` over the output's per-image chunks of `len`.
fn per_image<T: Send>(out: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
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

fn gate_kernel<T: Logistic>(y: &[T], b: usize, m: usize) -> Vec<T> {
    let mut out = vec![T::zero(); b * m];
    per_image(&mut out, m, |i, o| {
        let (h, g) = y[2 * m * i..2 * m * (i + 1)].split_at(m);
        for ((o, &h), &g) in o.iter_mut().zip(h).zip(g) {
            *o = h * g.sigmoid();
        }
    });
    out
}

fn gate_grad_kernel<T: Logistic>(y: &[T], grad: &[T], b: usize, m: usize) -> Vec<T> {
    let mut out = vec![T::zero(); 2 * b * m];
    per_image(&mut out, 2 * m, |i, o| {
        let (h, g) = y[2 * m * i..2 * m * (i + 1)].split_at(m);
        let gr = &grad[m * i..m * (i + 1)];
        let (dh, dg) = o.split_at_mut(m);
        for ((((dh, dg), &h), &g), &gr) in dh.iter_mut().zip(dg).zip(h).zip(g).zip(gr) {
            let s = g.sigmoid();
            *dh = gr * s;
            *dg = gr * h * s * (T::one() - s);
        }
    });
    out
}

impl CustomOp1 for Gate {
    fn name(&self) -> &'static str {
        "gated-product"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, n, hw) = geometry(l, self.name())?;
        let out = match s {
            CpuStorage::F32(y) => CpuStorage::F32(gate_kernel(slice(y, l), b, n * hw)),
            CpuStorage::F64(y) => CpuStorage::F64(gate_kernel(slice(y, l), b, n * hw)),
            s => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    s.dtype(),
                    self.name(),
                ));
            }
        };
        let (_, _, h, w) = l.shape().dims4()?;
        Ok((out, Shape::from((b, n, h, w))))
    }

    fn bwd(&self, y: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !y.track_op() {
            return Ok(None);
        }
        y.apply_op2(&grad.contiguous()?, GateGrad).map(Some)
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
        if l2.shape().dims() != [b, n, h, w] || l2.contiguous_offsets().is_none() {
            candle_core::bail!(
                "{}: gradient {:?} does not match input {:?}",
                self.name(),
                l2.shape(),
                l1.shape()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => {
                CpuStorage::F32(gate_grad_kernel(slice(y, l1), slice(g, l2), b, n * hw))
            }
            (CpuStorage::F64(y), CpuStorage::F64(g)) => {
                CpuStorage::F64(gate_grad_kernel(slice(y, l1), slice(g, l2), b, n * hw))
            }
            (s, _) => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    s.dtype(),
                    self.name(),
                ));
            }
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    //! Against the composed candle ops (values and gradients, f64 to 1e-14: the same
    //! formulas element by element, `σ` by another but equivalent expression; f32 to 1e-6).
    use super::*;
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};

    fn composed(y: &Tensor) -> Tensor {
        let n = y.dim(1).unwrap() / 2;
        let h = y.narrow(1, 0, n).unwrap();
        let g = candle_nn::ops::sigmoid(&y.narrow(1, n, n).unwrap()).unwrap();
        (h * g).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn gate_matches_composed_ops_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(5);
        // Small (sequential) and above PARALLEL_MIN_ELEMS (parallel over images).
        for shape in [[2usize, 6, 3, 4], [5, 16, 28, 20]] {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    3.0 * z
                })
                .collect();
            let y = Var::from_vec(v, &shape[..], &Device::Cpu).unwrap();
            let wshape = [shape[0], shape[1] / 2, shape[2], shape[3]];
            let wv: Vec<f64> = (0..n / 2)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let w = Tensor::from_vec(wv, &wshape[..], &Device::Cpu).unwrap();
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
