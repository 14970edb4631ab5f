//! A gated convolution `h ⊙ σ(g)` with `[h; g] = A x + b` (a [`BiasedMap`]) as one candle
//! custom op on CPU f32/f64.
//!
//! As two ops (biased convolution, gate) the pre-activation `[h; g]` is a tracked tensor:
//! candle accumulates its gradient into a fresh zero tensor and adds (`GradStore::or_insert`),
//! a zero fill, an addition and an allocation of `2·C_out` channel maps per layer, on the
//! calling thread while the pool waits. Here the op keeps the pre-activation for its backward
//! ([`GatedConv`]'s `saved`, freed with the graph), and the backward turns the output gradient
//! into the pre-activation gradient ([`GateGradFromSaved`]) and hands that to the biased
//! map's backward (`biased.rs`). First derivatives only, like the gate.

use std::sync::{Arc, Mutex, MutexGuard};

use super::biased::{BiasedGrads, BiasedMap, dispatch3};
use super::gate::{gate_grad_kernel, gate_kernel};
use super::im2col::contiguous_slice;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

/// The pre-activation a [`GatedConv`] keeps for its backward.
type Saved = Arc<Mutex<Option<CpuStorage>>>;

/// `(x, K, b) → h ⊙ σ(g)`, `[h; g] = A x + b`; keeps `[h; g]` for the backward.
#[derive(Debug)]
pub(super) struct GatedConv {
    map: BiasedMap,
    saved: Saved,
}

/// `ḡ → [ḡ ⊙ σ(g); ḡ ⊙ h ⊙ σ(g)(1 − σ(g))]` with `[h; g]` the saved pre-activation.
#[derive(Debug)]
struct GateGradFromSaved(Saved);

pub(super) fn gated_conv(
    x: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    map: BiasedMap,
) -> candle_core::Result<Tensor> {
    let op = GatedConv {
        map,
        saved: Arc::new(Mutex::new(None)),
    };
    x.contiguous()?
        .apply_op3(&k.contiguous()?, &bias.contiguous()?, op)
}

/// The lock of what an op kept for its backward (here and in `headed.rs`).
pub(super) fn lock<'a, T>(
    saved: &'a Mutex<Option<T>>,
    op: &str,
) -> candle_core::Result<MutexGuard<'a, Option<T>>> {
    saved
        .lock()
        .map_err(|_| candle_core::Error::Msg(format!("{op}: saved forward values poisoned")))
}

impl CustomOp3 for GatedConv {
    fn name(&self) -> &'static str {
        "gated-conv-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let shapes = self.map.shapes((l1, l2, l3), name)?;
        let [b, c2, h, w] = shapes.out;
        if !c2.is_multiple_of(2) {
            candle_core::bail!("{name}: {c2} output channels do not split into [h; g]");
        }
        let y = dispatch3!(name, (s1, l1), (s2, l2), (s3, l3), |args| {
            self.map.apply(args, shapes)
        });
        let m = c2 / 2 * h * w;
        let out = match &y {
            CpuStorage::F32(y) => CpuStorage::F32(gate_kernel(y, b, m)),
            CpuStorage::F64(y) => CpuStorage::F64(gate_kernel(y, b, m)),
            other => candle_core::bail!("{name}: unexpected {:?}", other.dtype()),
        };
        *lock(&self.saved, name)? = Some(y);
        Ok((out, Shape::from((b, c2 / 2, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<BiasedGrads> {
        let dy = grad
            .contiguous()?
            .apply_op1_no_bwd(&GateGradFromSaved(self.saved.clone()))?;
        self.map.backward((x, k, bias), &dy)
    }
}

impl CustomOp1 for GateGradFromSaved {
    fn name(&self) -> &'static str {
        "gated-conv-gemm-gate-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (b, n, h, w) = l.shape().dims4()?;
        let saved = lock(&self.0, name)?;
        let m = n * h * w;
        let out = match (saved.as_ref(), s) {
            (Some(CpuStorage::F32(y)), CpuStorage::F32(g)) if y.len() == 2 * b * m => {
                CpuStorage::F32(gate_grad_kernel(y, contiguous_slice(g, l, name)?, b, m)?)
            }
            (Some(CpuStorage::F64(y)), CpuStorage::F64(g)) if y.len() == 2 * b * m => {
                CpuStorage::F64(gate_grad_kernel(y, contiguous_slice(g, l, name)?, b, m)?)
            }
            _ => candle_core::bail!(
                "{name}: gradient {:?} does not match the saved pre-activation",
                l.shape()
            ),
        };
        Ok((out, Shape::from((b, 2 * n, h, w))))
    }
}

#[cfg(test)]
mod tests {
    //! The fused gated convolutions against the gate of the biased convolutions (themselves
    //! checked against candle in `biased.rs`): values and the gradients of `⟨f(x, K, b), r⟩`
    //! in f64, to 1e-12 (the same sums in the same order; only the gate's pass differs) and
    //! f32 to 1e-5.
    use crate::gemm_conv::tests::{max_abs_diff, randn};
    use crate::gemm_conv::{
        conv_transpose2d_gemm_biased, conv2d_gemm_biased, gated_conv_transpose2d_gemm,
        gated_conv2d_gemm, gated_product,
    };
    use candle_core::{DType, Tensor, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Value and gradients (x, K, b) of `sum(f(x, k, b) ⊙ r)`.
    fn eval(
        x: &Tensor,
        k: &Tensor,
        b: &Tensor,
        r: &Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    ) -> [Tensor; 4] {
        let vars = [x, k, b].map(|t| Var::from_tensor(t).unwrap());
        let out = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        );
        let g = (&out * r).unwrap().sum_all().unwrap().backward().unwrap();
        let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
        [out, get(&vars[0]), get(&vars[1]), get(&vars[2])]
    }

    fn assert_same(ours: [Tensor; 4], theirs: [Tensor; 4], tol: f64, what: &str) {
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let e = max_abs_diff(a, b);
            assert!(
                e < tol,
                "{what}: part {i} (value, ∂x, ∂K, ∂b) differs by {e:e}"
            );
        }
    }

    #[test]
    fn gated_convs_match_the_gate_of_the_biased_convs() {
        let mut rng = StdRng::seed_from_u64(31);
        // (batch, C_in, 2n, (H, W), (kh, kw), stride, padding): general, strided, pointwise,
        // full-window (the dense fallback).
        let convs = [
            (3, 3, 4, (8, 7), (5, 5), 1, 2),
            (2, 2, 6, (9, 9), (3, 3), 2, 1),
            (3, 4, 2, (5, 6), (1, 1), 1, 0),
            (2, 3, 4, (7, 5), (7, 5), 1, 0),
        ];
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            for (batch, c_in, c2, (h, w), (kh, kw), s, p) in convs {
                let x = randn(&mut rng, &[batch, c_in, h, w], dtype);
                let k = randn(&mut rng, &[c2, c_in, kh, kw], dtype);
                let b = randn(&mut rng, &[c2], dtype);
                let want = gated_product(&conv2d_gemm_biased(&x, &k, &b, p, s).unwrap()).unwrap();
                let r = randn(&mut rng, want.dims(), dtype);
                let ours = eval(&x, &k, &b, &r, |x, k, b| {
                    gated_conv2d_gemm(x, k, b, p, s).unwrap()
                });
                let theirs = eval(&x, &k, &b, &r, |x, k, b| {
                    gated_product(&conv2d_gemm_biased(x, k, b, p, s).unwrap()).unwrap()
                });
                assert_same(
                    ours,
                    theirs,
                    tol,
                    &format!("{dtype:?} conv k {kh}×{kw} s {s}"),
                );
            }
        }
        // (batch, C_in, 2n, (H, W), (kh, kw), stride, padding, output padding): upsampling
        // (the adjoint form), stride 1 (the flipped form), more input than output channels
        // (the adjoint form at stride 1), a 1×1 input (the dense fallback).
        let transposed = [
            (3, 4, 2, (4, 5), (5, 5), 2, 2, 1),
            (2, 2, 4, (6, 5), (5, 5), 1, 2, 0),
            (2, 6, 4, (6, 5), (3, 3), 1, 1, 0),
            (3, 5, 4, (1, 1), (7, 5), 1, 0, 0),
        ];
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            for (batch, c_in, c2, (h, w), (kh, kw), s, p, op) in transposed {
                let x = randn(&mut rng, &[batch, c_in, h, w], dtype);
                let k = randn(&mut rng, &[c_in, c2, kh, kw], dtype);
                let b = randn(&mut rng, &[c2], dtype);
                let biased = |x: &Tensor, k: &Tensor, b: &Tensor| {
                    conv_transpose2d_gemm_biased(x, k, b, p, op, s).unwrap()
                };
                let want = gated_product(&biased(&x, &k, &b)).unwrap();
                let r = randn(&mut rng, want.dims(), dtype);
                let ours = eval(&x, &k, &b, &r, |x, k, b| {
                    gated_conv_transpose2d_gemm(x, k, b, p, op, s).unwrap()
                });
                let theirs = eval(&x, &k, &b, &r, |x, k, b| {
                    gated_product(&biased(x, k, b)).unwrap()
                });
                let what = format!("{dtype:?} transposed {c_in}→{c2} k {kh}×{kw} s {s}");
                assert_same(ours, theirs, tol, &what);
            }
        }
    }

    #[test]
    fn gated_convs_reject_odd_channels_and_wrong_biases() {
        let mut rng = StdRng::seed_from_u64(32);
        let x = randn(&mut rng, &[1, 2, 5, 5], DType::F64);
        let k = randn(&mut rng, &[3, 2, 3, 3], DType::F64);
        assert!(gated_conv2d_gemm(&x, &k, &randn(&mut rng, &[3], DType::F64), 1, 1).is_err());
        let k = randn(&mut rng, &[4, 2, 3, 3], DType::F64);
        assert!(gated_conv2d_gemm(&x, &k, &randn(&mut rng, &[2], DType::F64), 1, 1).is_err());
        let kt = randn(&mut rng, &[2, 3, 3, 3], DType::F64);
        let b = randn(&mut rng, &[3], DType::F64);
        assert!(gated_conv_transpose2d_gemm(&x, &kt, &b, 1, 0, 1).is_err());
    }
}
