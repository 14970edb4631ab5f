//! The 256-way categorical log-likelihood as one candle custom op on CPU f32/f64.
//!
//! Composed from candle ops (`max`, `broadcast_sub`, `exp`, `sum`, `log`, `gather`, `sub`,
//! `sum`), the likelihood of Frey Faces' `(100, 256, 28, 20)` logits makes about eight passes
//! over 115 MB forward and as many backward, each gradient accumulated by candle into a
//! fresh zero tensor: 0.4 s of a 3 s VAE step. Here the forward is two passes over the
//! logits per image (the maximum, then the sum of exponentials) and the backward one pass
//! that writes `∂ℓ/∂l = ḡ·(onehot − softmax)`.
//!
//! The op's output is `(B, 1 + N)`: column 0 the per-image log-likelihood
//! `Σₙ l[tₙ, n] − lseₙ`, columns `1..` the per-pixel `lseₙ = log Σₖ exp l[k, n]`. The
//! backward reads `lse` from there instead of recomputing it, and is exact for upstream
//! gradients on either part (`∂ lseₙ / ∂l[k, n] = softmax[k, n]`).
//!
//! [`CategoricalHead`] is the same likelihood as an [`icnn::gemm_conv::ConvHead`]: with the
//! decoder's last convolution it forms one op (`icnn::gemm_conv::conv2d_gemm_headed`), so the
//! logits are not a tensor of candle's graph, and candle does not zero-fill, allocate and add
//! a 115 MB gradient for them on the calling thread.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Storage, Tensor, WithDType};
use icnn::ExpNonPositive;
use icnn::gemm_conv::ConvHead;
use rayon::prelude::*;

use super::likelihood::composed_categorical_parts;
use super::shape_text::tuple_text;

/// f32/f64 with the exponential and logarithm. Both exponentials of this op have non-positive
/// arguments (`l − max`, `l − lse`): they use the branch-free [`ExpNonPositive`], which
/// vectorises (libm's `exp`, a call per value, was ~8% of a VAE step's samples with the gates').
trait ExpLog: WithDType + ExpNonPositive {
    const NEG_INFINITY: Self;
    fn ln(self) -> Self;
}

macro_rules! exp_log {
    ($t:ty) => {
        impl ExpLog for $t {
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
        }
    };
}
exp_log!(f32);
exp_log!(f64);

/// `(logits, targets) → (B, 1 + N)`: `[Σₙ l[tₙ, n] − lseₙ, lse₁, …, lse_N]` per image.
#[derive(Clone, Copy, Debug)]
pub(super) struct CategoricalLogLikelihood;

/// `(B, K, N)` of a contiguous `(B, K, H, W)` logits layout.
fn logits_geometry(l: &Layout, op: &'static str) -> candle_core::Result<(usize, usize, usize)> {
    let (b, k, h, w) = l.shape().dims4()?;
    if !l.is_contiguous() || k == 0 {
        candle_core::bail!("{op}: expected contiguous (B, K ≥ 1, H, W) logits");
    }
    Ok((b, k, h * w))
}

fn contiguous<'a, T>(data: &'a [T], l: &Layout, op: &'static str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

/// The targets as `u32`, each checked below `k`.
fn targets_of<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    (b, k, n): (usize, usize, usize),
    op: &'static str,
) -> candle_core::Result<&'a [u32]> {
    let CpuStorage::U32(t) = s else {
        candle_core::bail!("{op}: targets must be u32, got {}", s.dtype().as_str());
    };
    if l.shape().dims() != [b, n] {
        candle_core::bail!(
            "{op}: targets {} must be (B, H·W) = ({b}, {n})",
            tuple_text(l.shape().dims())
        );
    }
    let t = contiguous(t, l, op)?;
    if let Some(bad) = t.iter().find(|&&c| c as usize >= k) {
        candle_core::bail!("{op}: target class {bad} is not below {k}");
    }
    Ok(t)
}

/// Per image: `lse` into `out[1..]` and the log-likelihood into `out[0]`.
fn forward_image<T: ExpLog>(l: &[T], t: &[u32], n: usize, out: &mut [T]) {
    let (total, lse) = out.split_at_mut(1);
    let mut max = vec![T::NEG_INFINITY; n];
    for row in l.chunks_exact(n) {
        for (m, &v) in max.iter_mut().zip(row) {
            if v > *m {
                *m = v;
            }
        }
    }
    // Rows whose maximum is infinite (or NaN) keep it: exp(v − m) is then NaN or 0/1 as the
    // composed ops give.
    let mut sum = vec![T::zero(); n];
    for row in l.chunks_exact(n) {
        for ((s, &v), &m) in sum.iter_mut().zip(row).zip(&max) {
            *s += (v - m).exp_nonpositive();
        }
    }
    let mut acc = 0.0f64;
    for (i, ((lse, &s), &m)) in lse.iter_mut().zip(&sum).zip(&max).enumerate() {
        *lse = s.ln() + m;
        acc += (l[t[i] as usize * n + i] - *lse).to_f64();
    }
    total[0] = T::from_f64(acc);
}

fn forward_kernel<T: ExpLog>(l: &[T], t: &[u32], (b, k, n): (usize, usize, usize)) -> Vec<T> {
    let mut out = vec![T::zero(); b * (1 + n)];
    out.par_chunks_mut(1 + n)
        .zip(l.par_chunks(k * n))
        .zip(t.par_chunks(n))
        .for_each(|((o, l), t)| forward_image(l, t, n, o));
    out
}

/// `ḡ_b·(onehot − p) + ḡ_lse·p` with `p = exp(l − lse)`, per image.
fn grad_kernel<T: ExpLog>(
    l: &[T],
    t: &[u32],
    out_and_grad: &[T],
    (b, k, n): (usize, usize, usize),
) -> Vec<T> {
    // Every value is written below: the zero fill only makes the buffer safe to hand out,
    // so it runs on the pool rather than as a serial memset.
    let mut d = Vec::with_capacity(b * k * n);
    d.par_extend(rayon::iter::repeat_n(T::zero(), b * k * n).with_min_len(1 << 15));
    let w = 1 + n;
    d.par_chunks_mut(k * n)
        .zip(l.par_chunks(k * n))
        .zip(t.par_chunks(n))
        .zip(out_and_grad.par_chunks(2 * w))
        .for_each(|(((d, l), t), og)| {
            let (out, grad) = og.split_at(w);
            let (lse, g_lse) = (&out[1..], &grad[1..]);
            let g = grad[0];
            for (d_row, l_row) in d.chunks_exact_mut(n).zip(l.chunks_exact(n)) {
                for (((d, &v), &lse), &gl) in d_row.iter_mut().zip(l_row).zip(lse).zip(g_lse) {
                    *d = (gl - g) * (v - lse).exp_nonpositive();
                }
            }
            for (i, &c) in t.iter().enumerate() {
                let x = &mut d[c as usize * n + i];
                *x += g;
            }
        });
    d
}

impl CustomOp2 for CategoricalLogLikelihood {
    fn name(&self) -> &'static str {
        "categorical-log-likelihood"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let geo = logits_geometry(l1, name)?;
        let t = targets_of(s2, l2, geo, name)?;
        let out = match s1 {
            CpuStorage::F32(l) => CpuStorage::F32(forward_kernel(contiguous(l, l1, name)?, t, geo)),
            CpuStorage::F64(l) => CpuStorage::F64(forward_kernel(contiguous(l, l1, name)?, t, geo)),
            s => return Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), name)),
        };
        Ok((out, Shape::from((geo.0, 1 + geo.2))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !logits.track_op() {
            return Ok((None, None));
        }
        let name = self.name();
        let (l, ll) = logits.storage_and_layout();
        let (t, lt) = targets.storage_and_layout();
        let (Storage::Cpu(l), Storage::Cpu(t)) = (&*l, &*t) else {
            candle_core::bail!("{name}: expected CPU tensors");
        };
        let geo = logits_geometry(ll, name)?;
        let t = targets_of(t, lt, geo, name)?;
        let d = logits_grad(name, l, ll, t, geo, res, grad_res)?;
        Ok((Some(d.reshape(logits.shape())?), None))
    }
}

/// `∂ℓ/∂logits` `(B, K·N)` from the logits, the op's output `res` and its gradient `grad_res`.
fn logits_grad(
    name: &'static str,
    logits: &CpuStorage,
    l: &Layout,
    t: &[u32],
    geo: (usize, usize, usize),
    res: &Tensor,
    grad_res: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, _, n) = geo;
    if res.dims() != [b, 1 + n] || grad_res.dims() != [b, 1 + n] {
        candle_core::bail!(
            "{name}: output {} and its gradient {} do not match ({b}, {})",
            tuple_text(res.dims()),
            tuple_text(grad_res.dims()),
            1 + n
        );
    }
    let og = Tensor::cat(&[res, grad_res], 1)?;
    match logits {
        CpuStorage::F32(l32) => grad_tensor(contiguous(l32, l, name)?, t, &og, geo),
        CpuStorage::F64(l64) => grad_tensor(contiguous(l64, l, name)?, t, &og, geo),
        s => Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), name)),
    }
}

/// [`grad_kernel`] as a `(B, K·N)` tensor, `og` the output and its gradient side by side.
fn grad_tensor<T: ExpLog>(
    l: &[T],
    t: &[u32],
    og: &Tensor,
    geo: (usize, usize, usize),
) -> candle_core::Result<Tensor> {
    let og = og.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?;
    let (b, k, n) = geo;
    Tensor::from_vec(grad_kernel(l, t, &og, geo), (b, k * n), &Device::Cpu)
}

/// The 256-way likelihood as the head of the decoder's last convolution: the convolution
/// output `(B, K, H, W)` are the logits, the output is [`CategoricalLogLikelihood`]'s
/// `(B, 1 + H·W)` (column 0 the per-image log-likelihood).
#[derive(Debug)]
pub(super) struct CategoricalHead {
    /// `(B, H·W)` classes, `u32`.
    targets: Tensor,
}

impl CategoricalHead {
    pub(super) fn new(targets: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            targets: targets.contiguous()?,
        })
    }

    /// The host targets checked against logits of `dims`, for `f`.
    fn with_targets<R>(
        &self,
        dims: [usize; 4],
        f: impl FnOnce(&[u32], (usize, usize, usize)) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        let name = self.name();
        let [b, k, h, w] = dims;
        if k == 0 {
            candle_core::bail!("{name}: no classes");
        }
        let geo = (b, k, h * w);
        let (t, lt) = self.targets.storage_and_layout();
        let Storage::Cpu(t) = &*t else {
            candle_core::bail!("{name}: targets must be on the CPU");
        };
        f(targets_of(t, lt, geo, name)?, geo)
    }
}

impl ConvHead for CategoricalHead {
    fn name(&self) -> &'static str {
        "conv-categorical-log-likelihood"
    }

    fn composed(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        let (ll, lse) = composed_categorical_parts(y, &self.targets)?;
        Tensor::cat(&[ll.unsqueeze(1)?, lse], 1)
    }

    fn forward(
        &self,
        y: &CpuStorage,
        dims: [usize; 4],
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        self.with_targets(dims, |t, geo| {
            let out = match y {
                CpuStorage::F32(l) => CpuStorage::F32(forward_kernel(l, t, geo)),
                CpuStorage::F64(l) => CpuStorage::F64(forward_kernel(l, t, geo)),
                s => return Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), name)),
            };
            Ok((out, Shape::from((geo.0, 1 + geo.2))))
        })
    }

    fn backward(
        &self,
        y: &CpuStorage,
        dims: [usize; 4],
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let name = self.name();
        let layout = Layout::contiguous(dims.to_vec());
        self.with_targets(dims, |t, geo| {
            logits_grad(name, y, &layout, t, geo, out, grad)?.reshape(dims.to_vec())
        })
    }
}

/// The fused likelihood: `(B,)` from logits `(B, K, H, W)` and targets `(B, H·W)` (CPU,
/// f32/f64, checked by the caller).
pub(super) fn fused_categorical_log_likelihood(
    logits: &Tensor,
    targets: &Tensor,
) -> candle_core::Result<Tensor> {
    let out = logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CategoricalLogLikelihood)?;
    out.narrow(1, 0, 1)?.squeeze(1)
}

#[cfg(test)]
mod tests {
    //! Against the composed candle ops: values and gradients (f64 to 1e-12: the same
    //! log-sum-exp with the maximum subtracted, summed in another order; f32 to 1e-4 on
    //! per-image sums of 20 terms of size ~10).
    use super::super::likelihood::{
        categorical_log_likelihood, composed_categorical_log_likelihood,
    };
    use super::CategoricalHead;
    use crate::vae::tests::max_abs_diff;
    use crate::vae::{Decoder, VaeArchitecture, VaeLikelihood};
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::VarMap;
    use icnn::gemm_conv::{ConvHead, conv2d_gemm_biased, conv2d_gemm_headed};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    #[test]
    fn fused_likelihood_matches_composed_ops_values_and_gradients() {
        let mut rng = StdRng::seed_from_u64(11);
        let (b, k, h, w) = (3, 7, 4, 5);
        let logits: Vec<f64> = (0..b * k * h * w)
            .map(|_| 4.0 * (rng.random::<f64>() - 0.5))
            .collect();
        let targets: Vec<u32> = (0..b * h * w)
            .map(|_| rng.random_range(0..k as u32))
            .collect();
        let weights: Vec<f64> = (0..b).map(|_| rng.random::<f64>() - 0.3).collect();
        let dev = Device::Cpu;
        let t = Tensor::from_vec(targets, (b, h * w), &dev).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            let l = Var::from_tensor(
                &Tensor::from_vec(logits.clone(), (b, k, h, w), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let wt = Tensor::from_vec(weights.clone(), b, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let grad_of = |ll: &Tensor| {
                let g = (ll * &wt).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(&l).unwrap().clone()
            };
            let ours = categorical_log_likelihood(l.as_tensor(), &t).unwrap();
            let theirs = composed_categorical_log_likelihood(l.as_tensor(), &t).unwrap();
            let d = max_abs_diff(&ours, &theirs);
            assert!(d < tol, "{dtype:?}: values differ by {d:e}");
            let d = max_abs_diff(&grad_of(&ours), &grad_of(&theirs));
            assert!(d < tol, "{dtype:?}: gradients differ by {d:e}");
        }
    }

    /// The decoder's fused head (its merged 5×5 convolution and the likelihood as one op)
    /// against the likelihood of its logits: the same kernels in the same order, so values
    /// and every decoder parameter's gradient are identical (candle's accumulation adds the
    /// one gradient to zero). Heads on the im2col path (2 channels, f64 and f32) and on the
    /// Winograd path (32 channels, f64).
    #[test]
    fn fused_head_equals_the_likelihood_of_the_decoders_logits() {
        let mut rng = StdRng::seed_from_u64(12);
        let dev = Device::Cpu;
        for (channels, dtype) in [(2, DType::F64), (32, DType::F64), (2, DType::F32)] {
            let arch = VaeArchitecture {
                channels,
                feature_dim: 4,
                head_channels: 8,
            };
            let vm = VarMap::new();
            let cat = VaeLikelihood::Categorical256;
            let dec =
                Decoder::new(&vm, "d", &arch, (28, 20), 3, cat, dtype, &dev, &mut rng).unwrap();
            let z: Vec<f64> = (0..6).map(|_| rng.random::<f64>() - 0.5).collect();
            let z = Tensor::from_vec(z, (2, 3), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let t: Vec<u32> = (0..2 * 560).map(|_| rng.random_range(0..256)).collect();
            let t = Tensor::from_vec(t, (2, 560), &dev).unwrap();
            let w = Tensor::new(&[0.7f64, -1.3], &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let fused = dec.categorical_log_likelihood(&z, &t).unwrap();
            let plain = categorical_log_likelihood(&dec.forward(&z).unwrap(), &t).unwrap();
            assert_eq!(
                max_abs_diff(&fused, &plain),
                0.0,
                "{channels} {dtype:?}: values"
            );
            let grads = |ll: &Tensor| (ll * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gp) = (grads(&fused), grads(&plain));
            let vars = vm.all_vars();
            assert!(vars.len() > 10);
            for v in vars {
                let (a, b) = (gf.get(v.as_tensor()), gp.get(v.as_tensor()));
                let d = max_abs_diff(a.unwrap(), b.unwrap());
                assert_eq!(d, 0.0, "{channels} {dtype:?}: a gradient {:?}", v.dims());
            }
            // Both paths refuse targets of another integer type, with the same error.
            let t64 = t.to_dtype(DType::I64).unwrap();
            let fused = dec.categorical_log_likelihood(&z, &t64).unwrap_err();
            let plain = categorical_log_likelihood(&dec.forward(&z).unwrap(), &t64).unwrap_err();
            assert_eq!(fused.to_string(), plain.to_string());
            assert!(
                fused.to_string().contains("must be u32, got i64"),
                "{fused}"
            );
        }
    }

    /// The head's composed form (candle's ops: other devices and dtypes) against its host
    /// form on random logits, both parts of the output `[ℓ, lse₁, …]` and the gradient of a
    /// weighted sum of them, f64 to 1e-12 relative.
    #[test]
    fn categorical_heads_composed_form_matches_its_host_form() {
        let mut rng = StdRng::seed_from_u64(13);
        let dev = Device::Cpu;
        let (b, c, k, h, w) = (2, 3, 5, 4, 3);
        let rand = |rng: &mut StdRng, n: usize| -> Vec<f64> {
            (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
        };
        let x = Tensor::from_vec(rand(&mut rng, b * c * h * w), (b, c, h, w), &dev).unwrap();
        let kernel = Tensor::from_vec(rand(&mut rng, k * c * 9), (k, c, 3, 3), &dev).unwrap();
        let bias = Tensor::from_vec(rand(&mut rng, k), k, &dev).unwrap();
        let t: Vec<u32> = (0..b * h * w)
            .map(|_| rng.random_range(0..k as u32))
            .collect();
        let t = Tensor::from_vec(t, (b, h * w), &dev).unwrap();
        let r = Tensor::from_vec(rand(&mut rng, b * (1 + h * w)), (b, 1 + h * w), &dev).unwrap();
        let head = Arc::new(CategoricalHead::new(&t).unwrap());
        let run = |fused: bool| {
            let vars = [&x, &kernel, &bias].map(|t| Var::from_tensor(t).unwrap());
            let [xv, kv, bv] = [0, 1, 2].map(|i| vars[i].as_tensor());
            let out = if fused {
                conv2d_gemm_headed(xv, kv, bv, 1, 1, head.clone()).unwrap()
            } else {
                head.composed(&conv2d_gemm_biased(xv, kv, bv, 1, 1).unwrap())
                    .unwrap()
            };
            let g = (&out * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut parts = vec![out];
            parts.extend(vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()));
            parts
        };
        for (i, (a, c)) in run(true).iter().zip(run(false)).enumerate() {
            let scale = c
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let d = max_abs_diff(a, &c);
            assert!(
                d <= 1e-12 * scale.max(1.0),
                "part {i} (out, ∂x, ∂K, ∂b): {d:e}"
            );
        }
        // Targets the logits do not cover are refused by the host form.
        let bad = Tensor::from_vec(vec![k as u32; b * h * w], (b, h * w), &dev).unwrap();
        let bad = Arc::new(CategoricalHead::new(&bad).unwrap());
        assert!(conv2d_gemm_headed(&x, &kernel, &bias, 1, 1, bad).is_err());
    }

    #[test]
    fn fused_likelihood_rejects_bad_targets_and_propagates_nan() {
        let dev = Device::Cpu;
        let l = Tensor::zeros((1, 4, 1, 2), DType::F64, &dev).unwrap();
        let out_of_range = Tensor::new(&[[1u32, 4]], &dev).unwrap();
        assert!(categorical_log_likelihood(&l, &out_of_range).is_err());
        let wrong_type = Tensor::new(&[[1i64, 2]], &dev).unwrap();
        assert!(categorical_log_likelihood(&l, &wrong_type).is_err());
        let nan = Tensor::new(
            &[[[[f64::NAN, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]],
            &dev,
        )
        .unwrap();
        let t = Tensor::new(&[[1u32, 2]], &dev).unwrap();
        let v = categorical_log_likelihood(&nan, &t)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(v[0].is_nan());
    }
}
