//! A convolution or a transposed convolution with its per-channel bias as one candle custom
//! op on CPU f32/f64: [`ConvBiased`] `(x, K, b) → A x + b` for the [`BiasedMap`] `A` (`A_K`
//! or `A_Kᵀ`, see `ops.rs`).
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
use super::winograd_backward;
use crate::host_gemm::GemmFloat;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};

/// The linear map of a biased op.
#[derive(Clone, Copy, Debug)]
pub(super) enum BiasedMap {
    /// `A_K x`: the convolution of geometry `g`, kernel `(C_o, C, kh, kw)`.
    Conv(PatchGeometry),
    /// `A_Kᵀ x`: the transposed convolution whose output image is the patch source of `g`,
    /// kernel `(C, C_o, kh, kw)`.
    Transposed(PatchGeometry),
}

/// Sizes of a biased op's arguments: batch, input and output channels, output shape.
#[derive(Clone, Copy, Debug)]
pub(super) struct BiasedShapes {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub out: [usize; 4],
}

/// Gradients of `⟨A x + b, ḡ⟩` for `x`, `K` and `b`.
pub(super) type BiasedGrads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl BiasedMap {
    /// The layouts of `(x, K, b)` checked against the map.
    pub(super) fn shapes(
        &self,
        (lx, lk, lb): (&Layout, &Layout, &Layout),
        op: &'static str,
    ) -> candle_core::Result<BiasedShapes> {
        let (b, c_in, h, w) = lx.shape().dims4()?;
        let (k0, k1, kh, kw) = lk.shape().dims4()?;
        let (g, ok, c_out, out_hw) = match *self {
            Self::Conv(g) => (
                g,
                (c_in, h, w, k1) == (g.channels, g.height, g.width, g.channels),
                k0,
                (g.out_h, g.out_w),
            ),
            Self::Transposed(g) => (
                g,
                (h, w, k0, k1) == (g.out_h, g.out_w, c_in, g.channels),
                g.channels,
                (g.height, g.width),
            ),
        };
        g.check_valid(op)?;
        if !ok || (kh, kw) != (g.kh, g.kw) {
            candle_core::bail!(
                "{op}: input {:?} and kernel {:?} do not match {self:?}",
                lx.shape(),
                lk.shape()
            );
        }
        if lb.shape().dims() != [c_out] {
            candle_core::bail!("{op}: bias has shape {:?}, expected ({c_out},)", lb.shape());
        }
        Ok(BiasedShapes {
            batch: b,
            c_in,
            c_out,
            out: [b, c_out, out_hw.0, out_hw.1],
        })
    }

    /// `A x + b` on contiguous slices.
    pub(super) fn apply<T: GemmFloat>(
        &self,
        (x, k, bias): (&[T], &[T], &[T]),
        s: BiasedShapes,
    ) -> candle_core::Result<Vec<T>> {
        match *self {
            Self::Conv(g) => forward_cpu(x, k, Some(bias), &g, s.batch, s.c_out),
            Self::Transposed(g) => adjoint_cpu(x, k, Some(bias), &g, s.batch, s.c_in),
        }
    }

    /// The gradients of `⟨A x + b, ḡ⟩` for the arguments candle tracks.
    pub(super) fn backward(
        &self,
        (x, k, bias): (&Tensor, &Tensor, &Tensor),
        grad: &Tensor,
    ) -> candle_core::Result<BiasedGrads> {
        let (dx, dk) = match *self {
            Self::Conv(g) => match one_pass_conv_grads((x, k), grad, g)? {
                Some((dx, dk)) => (Some(dx), Some(dk)),
                None => (
                    when_tracked(x, || conv_adjoint(grad, k, g))?,
                    when_tracked(k, || conv_kernel_grad(x, grad, g))?,
                ),
            },
            Self::Transposed(g) => (
                when_tracked(x, || conv_forward(grad, k, g))?,
                when_tracked(k, || conv_kernel_grad(grad, x, g))?,
            ),
        };
        Ok((dx, dk, when_tracked(bias, || channel_sum(grad))?))
    }
}

/// Whether candle keeps the graph of the backward pass (`CANDLE_GRAD_DO_NOT_DETACH` set to
/// anything but empty or `0`, as candle reads it): then gradients must be ops of the graph.
fn backward_keeps_graph() -> bool {
    std::env::var("CANDLE_GRAD_DO_NOT_DETACH").is_ok_and(|s| !s.is_empty() && s != "0")
}

/// `(A_Kᵀ ḡ, KG(x, ḡ))` of a convolution in one pass over the batch
/// ([`winograd_backward::adjoint_and_kernel_grad`], the same bits as the two ops), where both
/// are wanted and no gradient of them is: `x` and `K` tracked, `ḡ` not, candle detaching
/// (the results hold no graph); f64 on the CPU where Winograd runs the adjoint transposed.
/// `None` where any of that fails: the caller runs the two ops.
fn one_pass_conv_grads(
    (x, k): (&Tensor, &Tensor),
    grad: &Tensor,
    g: PatchGeometry,
) -> candle_core::Result<Option<(Tensor, Tensor)>> {
    let (Ok((b, _, _, _)), Ok((c_out, _, _, _))) = (x.dims4(), k.dims4()) else {
        return Ok(None);
    };
    let wanted = x.track_op() && k.track_op() && !grad.track_op() && !backward_keeps_graph();
    let host_f64 = [x, k, grad]
        .iter()
        .all(|t| crate::takes_host_kernels(t.device()) && t.dtype() == DType::F64);
    if !wanted || !host_f64 || !winograd_backward::covers::<f64>(&g, c_out) {
        return Ok(None);
    }
    let name = "conv2d-gemm one-pass gradients";
    let (x, k, grad) = (x.contiguous()?, k.contiguous()?, grad.contiguous()?);
    let (dx, dk) = {
        let (sx, lx) = x.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F64(xs)), Storage::Cpu(CpuStorage::F64(ks))) = (&*sx, &*sk)
        else {
            return Ok(None);
        };
        let Storage::Cpu(CpuStorage::F64(gs)) = &*sg else {
            return Ok(None);
        };
        if lg.shape().dims() != [b, c_out, g.out_h, g.out_w] {
            candle_core::bail!("{name}: gradient {:?} for a batch of {b}", lg.shape());
        }
        winograd_backward::adjoint_and_kernel_grad(
            contiguous_slice(xs, lx, name)?,
            contiguous_slice(gs, lg, name)?,
            contiguous_slice(ks, lk, name)?,
            &g,
            b,
            c_out,
        )?
    };
    Ok(Some((
        Tensor::from_vec(dx, x.shape(), x.device())?,
        Tensor::from_vec(dk, k.shape(), k.device())?,
    )))
}

/// `(x, K, b) → A x + b`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvBiased(pub BiasedMap);

pub(super) fn conv_biased(
    x: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    map: BiasedMap,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&k.contiguous()?, &bias.contiguous()?, ConvBiased(map))
}

/// Runs `$body` on the three storages' contiguous f32 or f64 slices `$s`, wrapping its
/// `Result<Vec<_>>` back into a storage of that type.
macro_rules! dispatch3 {
    ($name:expr, ($s1:expr, $l1:expr), ($s2:expr, $l2:expr), ($s3:expr, $l3:expr),
     |$s:ident| $body:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(d1), CpuStorage::F32(d2), CpuStorage::F32(d3)) => {
                let $s = (
                    contiguous_slice(d1, $l1, $name)?,
                    contiguous_slice(d2, $l2, $name)?,
                    contiguous_slice(d3, $l3, $name)?,
                );
                CpuStorage::F32($body?)
            }
            (CpuStorage::F64(d1), CpuStorage::F64(d2), CpuStorage::F64(d3)) => {
                let $s = (
                    contiguous_slice(d1, $l1, $name)?,
                    contiguous_slice(d2, $l2, $name)?,
                    contiguous_slice(d3, $l3, $name)?,
                );
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
pub(super) use dispatch3;

impl CustomOp3 for ConvBiased {
    fn name(&self) -> &'static str {
        match self.0 {
            BiasedMap::Conv(_) => "conv2d-gemm-biased",
            BiasedMap::Transposed(_) => "conv-transpose2d-gemm-biased",
        }
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
        let shapes = self.0.shapes((l1, l2, l3), name)?;
        let out = dispatch3!(name, (s1, l1), (s2, l2), (s3, l3), |args| {
            self.0.apply(args, shapes)
        });
        Ok((out, Shape::from(shapes.out.to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<BiasedGrads> {
        self.0.backward((x, k, bias), grad)
    }
}

#[cfg(test)]
pub(super) mod tests {
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

    pub(in crate::gemm_conv) type Grads = (Tensor, Tensor, Tensor);
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
    pub(in crate::gemm_conv) fn grads3(
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
