//! A convolution and a transposed convolution with their per-channel bias, each one candle
//! custom op on CPU f32/f64: [`ConvForwardBiased`] `(x, K, b) → A_K x + b` and
//! [`ConvAdjointBiased`] `(y, K, b) → A_Kᵀ y + b`.
//!
//! The products start from the bias instead of zero, so the bias costs no pass of its own;
//! and candle, which accumulates every gradient into a fresh zero tensor and adds it
//! (`GradStore::or_insert`), sees one op instead of two. On the VAE's `(100, 256, 28, 20)`
//! output head that is a 115 MB pass forward and a zero fill, an addition and a copy
//! backward per convolution. The backward is the unbiased ops' (see `ops.rs`) plus
//! [`super::channel_bias::channel_sum`] of the output gradient for the bias.

use super::channel_bias::channel_sum;
use super::im2col::{PatchGeometry, contiguous_slice};
use super::ops::{
    adjoint_cpu, conv_adjoint, conv_forward, conv_kernel_grad, forward_cpu, when_tracked,
};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// `(x, K, b) → A_K x + b`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvForwardBiased(pub PatchGeometry);

/// `(y, K, b) → A_Kᵀ y + b`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvAdjointBiased(pub PatchGeometry);

pub(super) fn conv_forward_biased(
    x: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    g: PatchGeometry,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&k.contiguous()?, &bias.contiguous()?, ConvForwardBiased(g))
}

pub(super) fn conv_adjoint_biased(
    y: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    g: PatchGeometry,
) -> candle_core::Result<Tensor> {
    y.contiguous()?
        .apply_op3(&k.contiguous()?, &bias.contiguous()?, ConvAdjointBiased(g))
}

/// Checks `(B, channels, h, w)` and returns `B`.
fn batch(l: &Layout, (c, h, w): (usize, usize, usize), what: &str) -> candle_core::Result<usize> {
    let (b, c2, h2, w2) = l.shape().dims4()?;
    if (c2, h2, w2) != (c, h, w) {
        candle_core::bail!(
            "{what} has shape {:?}, expected (B, {c}, {h}, {w})",
            l.shape()
        );
    }
    Ok(b)
}

/// The kernel's `(C_o, C, kh, kw)` against the geometry, the bias against `(bias_len,)`.
fn check_kernel_and_bias(
    g: &PatchGeometry,
    lk: &Layout,
    lb: &Layout,
    bias_len: usize,
    op: &str,
) -> candle_core::Result<usize> {
    let c_out = lk.shape().dims4()?.0;
    batch(lk, (g.channels, g.kh, g.kw), &format!("{op} kernel"))?;
    if lb.shape().dims() != [bias_len] {
        candle_core::bail!(
            "{op}: bias has shape {:?}, expected ({bias_len},)",
            lb.shape()
        );
    }
    Ok(c_out)
}

/// Runs `f` on the three storages' contiguous f32 or f64 slices.
macro_rules! dispatch3 {
    ($name:expr, ($s1:expr, $l1:expr), ($s2:expr, $l2:expr), ($s3:expr, $l3:expr),
     |$a:ident, $b:ident, $c:ident| $body:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(d1), CpuStorage::F32(d2), CpuStorage::F32(d3)) => {
                let $a = contiguous_slice(d1, $l1, $name)?;
                let $b = contiguous_slice(d2, $l2, $name)?;
                let $c = contiguous_slice(d3, $l3, $name)?;
                CpuStorage::F32($body?)
            }
            (CpuStorage::F64(d1), CpuStorage::F64(d2), CpuStorage::F64(d3)) => {
                let $a = contiguous_slice(d1, $l1, $name)?;
                let $b = contiguous_slice(d2, $l2, $name)?;
                let $c = contiguous_slice(d3, $l3, $name)?;
                CpuStorage::F64($body?)
            }
            (s1, s2, s3) => candle_core::bail!(
                "{}: expected f32 or f64 arguments of one type, got {:?}, {:?}, {:?}",
                $name,
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        }
    };
}

impl CustomOp3 for ConvForwardBiased {
    fn name(&self) -> &'static str {
        "conv2d-gemm-biased"
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
        let (g, name) = (self.0, self.name());
        g.check_valid(name)?;
        let b = batch(
            l1,
            (g.channels, g.height, g.width),
            "conv2d-gemm-biased input",
        )?;
        let c_out = l2.shape().dims4()?.0;
        check_kernel_and_bias(&g, l2, l3, c_out, name)?;
        let out = dispatch3!(name, (s1, l1), (s2, l2), (s3, l3), |x, k, bias| {
            forward_cpu(x, k, Some(bias), &g, b, c_out)
        });
        Ok((out, Shape::from((b, c_out, g.out_h, g.out_w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((
            when_tracked(x, || conv_adjoint(grad, k, self.0))?,
            when_tracked(k, || conv_kernel_grad(x, grad, self.0))?,
            when_tracked(bias, || channel_sum(grad))?,
        ))
    }
}

impl CustomOp3 for ConvAdjointBiased {
    fn name(&self) -> &'static str {
        "conv-transpose2d-gemm-biased"
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
        let (g, name) = (self.0, self.name());
        g.check_valid(name)?;
        let c_out = l2.shape().dims4()?.0;
        let b = batch(
            l1,
            (c_out, g.out_h, g.out_w),
            "conv-transpose2d-gemm-biased input",
        )?;
        check_kernel_and_bias(&g, l2, l3, g.channels, name)?;
        let out = dispatch3!(name, (s1, l1), (s2, l2), (s3, l3), |y, k, bias| {
            adjoint_cpu(y, k, Some(bias), &g, b, c_out)
        });
        Ok((out, Shape::from((b, g.channels, g.height, g.width))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        _x: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((
            when_tracked(y, || conv_forward(grad, k, self.0))?,
            when_tracked(k, || conv_kernel_grad(grad, y, self.0))?,
            when_tracked(bias, || channel_sum(grad))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    //! The biased ops and the dense (full-window) paths against candle's `conv2d` /
    //! `conv_transpose2d` plus `broadcast_add`: values and the gradients of `⟨f(x, K, b), r⟩`
    //! for `x`, `K` and `b`, in f64. Tolerances as in `gemm_conv/tests.rs`: values sum at
    //! most `C·kh·kw ≤ 3·35` products of standard normals (1e-12); gradients also sum over the
    //! batch and positions (1e-10).
    use crate::gemm_conv::tests::{max_abs_diff, randn};
    use crate::gemm_conv::{
        conv_transpose2d_gemm, conv_transpose2d_gemm_biased, conv2d_gemm, conv2d_gemm_biased,
    };
    use candle_core::{DType, Tensor, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    type Grads = (Tensor, Tensor, Tensor);
    /// `(batch, C_in, C_out, (H, W), (kh, kw), stride, padding)`.
    type ConvCase = (
        usize,
        usize,
        usize,
        (usize, usize),
        (usize, usize),
        usize,
        usize,
    );
    /// A [`ConvCase`] and the output padding.
    type TransposedCase = (
        usize,
        usize,
        usize,
        (usize, usize),
        (usize, usize),
        usize,
        usize,
        usize,
    );

    /// Gradients of `sum(f(x, k, b) ⊙ r)` w.r.t. `x`, `k` and `b`.
    fn grads3(
        x: &Tensor,
        k: &Tensor,
        b: &Tensor,
        r: &Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    ) -> Grads {
        let vars = [x, k, b].map(|t| Var::from_tensor(t).unwrap());
        let out = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        );
        let g = (out * r).unwrap().sum_all().unwrap().backward().unwrap();
        let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
        (get(&vars[0]), get(&vars[1]), get(&vars[2]))
    }

    fn plus_bias(y: Tensor, b: &Tensor) -> Tensor {
        let c = b.dim(0).unwrap();
        y.broadcast_add(&b.reshape((1, c, 1, 1)).unwrap()).unwrap()
    }

    fn assert_close(ours: (&Tensor, Grads), theirs: (&Tensor, Grads), what: &str) {
        let ev = max_abs_diff(ours.0, theirs.0);
        assert!(ev < 1e-12, "{what}: value error {ev:e}");
        let (a, b) = (ours.1, theirs.1);
        let errs = [
            max_abs_diff(&a.0, &b.0),
            max_abs_diff(&a.1, &b.1),
            max_abs_diff(&a.2, &b.2),
        ];
        assert!(
            errs.iter().all(|&e| e < 1e-10),
            "{what}: gradient errors (x, K, b) {errs:?}"
        );
    }

    /// `(batch, C_in, C_out, (H, W), (kh, kw), stride, padding)`: pointwise (1×1, stride
    /// 1, no padding), general, strided, and full-window (the dense path).
    const CONVS: [ConvCase; 5] = [
        (3, 4, 5, (6, 7), (1, 1), 1, 0),
        (2, 3, 4, (8, 7), (5, 5), 1, 2),
        (3, 2, 3, (9, 9), (3, 3), 2, 1),
        (3, 3, 4, (7, 5), (7, 5), 1, 0),
        (1, 2, 6, (4, 4), (4, 4), 2, 0),
    ];

    #[test]
    fn biased_conv2d_matches_candle_conv_plus_bias() {
        let mut rng = StdRng::seed_from_u64(21);
        for (batch, c_in, c_out, (h, w), (kh, kw), s, p) in CONVS {
            let x = randn(&mut rng, &[batch, c_in, h, w], DType::F64);
            let k = randn(&mut rng, &[c_out, c_in, kh, kw], DType::F64);
            let b = randn(&mut rng, &[c_out], DType::F64);
            let theirs = plus_bias(x.conv2d(&k, p, s, 1, 1).unwrap(), &b);
            let r = randn(&mut rng, theirs.dims(), DType::F64);
            let reference = grads3(&x, &k, &b, &r, |x, k, b| {
                plus_bias(x.conv2d(k, p, s, 1, 1).unwrap(), b)
            });
            let biased =
                |x: &Tensor, k: &Tensor, b: &Tensor| conv2d_gemm_biased(x, k, b, p, s).unwrap();
            let what = format!("conv {c_in}→{c_out} {h}×{w} k {kh}×{kw} s {s} p {p}");
            let ours = biased(&x, &k, &b);
            assert_close(
                (&ours, grads3(&x, &k, &b, &r, biased)),
                (&theirs, reference.clone()),
                &what,
            );
            // The unbiased op on the same geometry (the dense path included).
            let unbiased =
                |x: &Tensor, k: &Tensor, b: &Tensor| plus_bias(conv2d_gemm(x, k, p, s).unwrap(), b);
            let ours = unbiased(&x, &k, &b);
            assert_close(
                (&ours, grads3(&x, &k, &b, &r, unbiased)),
                (&theirs, reference),
                &format!("{what} (unbiased)"),
            );
        }
    }

    /// `(batch, C_in, C_out, (H, W), (kh, kw), stride, padding, output padding)`: pointwise,
    /// general, upsampling, and a 1×1 input (the dense path).
    const TRANSPOSED: [TransposedCase; 5] = [
        (3, 4, 5, (6, 7), (1, 1), 1, 0, 0),
        (2, 3, 4, (7, 5), (5, 5), 1, 2, 0),
        (3, 2, 3, (4, 5), (5, 5), 2, 2, 1),
        (3, 5, 4, (1, 1), (7, 5), 1, 0, 0),
        (2, 3, 2, (1, 1), (3, 3), 2, 0, 0),
    ];

    #[test]
    fn biased_conv_transpose2d_matches_candle_plus_bias() {
        let mut rng = StdRng::seed_from_u64(22);
        for (batch, c_in, c_out, (h, w), (kh, kw), s, p, op) in TRANSPOSED {
            let x = randn(&mut rng, &[batch, c_in, h, w], DType::F64);
            let k = randn(&mut rng, &[c_in, c_out, kh, kw], DType::F64);
            let b = randn(&mut rng, &[c_out], DType::F64);
            let candle = |x: &Tensor, k: &Tensor, b: &Tensor| {
                plus_bias(x.conv_transpose2d(k, p, op, s, 1).unwrap(), b)
            };
            let theirs = candle(&x, &k, &b);
            let r = randn(&mut rng, theirs.dims(), DType::F64);
            let reference = grads3(&x, &k, &b, &r, candle);
            let biased = |x: &Tensor, k: &Tensor, b: &Tensor| {
                conv_transpose2d_gemm_biased(x, k, b, p, op, s).unwrap()
            };
            let what = format!("transposed {c_in}→{c_out} {h}×{w} k {kh}×{kw} s {s} p {p} op {op}");
            let ours = biased(&x, &k, &b);
            assert_close(
                (&ours, grads3(&x, &k, &b, &r, biased)),
                (&theirs, reference.clone()),
                &what,
            );
            let unbiased = |x: &Tensor, k: &Tensor, b: &Tensor| {
                plus_bias(conv_transpose2d_gemm(x, k, p, op, s).unwrap(), b)
            };
            let ours = unbiased(&x, &k, &b);
            assert_close(
                (&ours, grads3(&x, &k, &b, &r, unbiased)),
                (&theirs, reference),
                &format!("{what} (unbiased)"),
            );
        }
    }

    #[test]
    fn biased_convs_reject_a_wrong_bias() {
        let mut rng = StdRng::seed_from_u64(23);
        let x = randn(&mut rng, &[1, 2, 5, 5], DType::F64);
        let k = randn(&mut rng, &[3, 2, 3, 3], DType::F64);
        let b = randn(&mut rng, &[2], DType::F64);
        assert!(conv2d_gemm_biased(&x, &k, &b, 1, 1).is_err());
        let kt = randn(&mut rng, &[2, 3, 3, 3], DType::F64);
        assert!(conv_transpose2d_gemm_biased(&x, &kt, &b, 1, 0, 1).is_err());
        let b32 = randn(&mut rng, &[3], DType::F32);
        assert!(conv2d_gemm_biased(&x, &k, &b32, 1, 1).is_err());
    }
}
