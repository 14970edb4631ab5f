//! A biased convolution followed by a caller's [`ConvHead`] as one candle custom op on CPU
//! f32/f64: `(x, K, b) → head(A x + b)`.
//!
//! candle accumulates the gradient of every tracked tensor into a fresh zero tensor and adds
//! the contribution (`GradStore::or_insert`): a zero fill, an allocation and an addition on
//! the calling thread while the pool waits. When a convolution's output is large and only
//! feeds a reduction (the VAE's 256-way likelihood reads `(100, 256, 28, 20)` logits, 115 MB
//! in f64, and returns one number per image), that bookkeeping is a large share of the
//! backward. Here the convolution output is not a tensor of the graph: the op keeps it for
//! its backward (freed with the graph), the head turns the output gradient into the
//! convolution output's gradient, and the biased map's backward (`biased.rs`) takes it from
//! there. First derivatives only.

use std::sync::{Arc, Mutex};

use super::biased::{BiasedGrads, BiasedMap, dispatch3};
use super::gated_conv::lock;
use super::im2col::contiguous_slice;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// A map from a convolution's output `y` `(B, C, H, W)` to a result, fused with the
/// convolution by [`super::conv2d_gemm_headed`].
///
/// The host methods see `y` as contiguous f32 or f64 storage; [`ConvHead::composed`] is the
/// same map from candle's ops, used where the host path does not apply (another device or
/// dtype, a kernel covering the whole input) and as the reference in tests.
///
/// ```
/// use std::sync::Arc;
/// use candle_core::{CpuStorage, Shape, Tensor};
/// use icnn::gemm_conv::{ConvHead, conv2d_gemm_biased, conv2d_gemm_headed};
///
/// /// `Σ y²` per image.
/// #[derive(Debug)]
/// struct SquaredNorm;
///
/// impl ConvHead for SquaredNorm {
///     fn name(&self) -> &'static str {
///         "squared-norm"
///     }
///     fn composed(&self, y: &Tensor) -> candle_core::Result<Tensor> {
///         y.sqr()?.flatten_from(1)?.sum(1)
///     }
///     fn forward(&self, y: &CpuStorage, dims: [usize; 4]) -> candle_core::Result<(CpuStorage, Shape)> {
///         let CpuStorage::F64(y) = y else { candle_core::bail!("f64 only") };
///         let per_image = dims[1] * dims[2] * dims[3];
///         let out = y.chunks(per_image).map(|c| c.iter().map(|v| v * v).sum()).collect();
///         Ok((CpuStorage::F64(out), Shape::from(dims[0])))
///     }
///     fn backward(&self, y: &CpuStorage, dims: [usize; 4], _out: &Tensor, grad: &Tensor)
///         -> candle_core::Result<Tensor> {
///         let CpuStorage::F64(y) = y else { candle_core::bail!("f64 only") };
///         let y = Tensor::from_slice(y, dims.to_vec(), grad.device())?;
///         (y * 2.0)?.broadcast_mul(&grad.reshape((dims[0], 1, 1, 1))?)
///     }
/// }
///
/// # fn main() -> icnn::Result<()> {
/// let dev = candle_core::Device::Cpu;
/// let x = Tensor::arange(0f64, 2.0 * 3.0 * 6.0 * 5.0, &dev)?.reshape((2, 3, 6, 5))?;
/// let k = (Tensor::arange(0f64, 4.0 * 3.0 * 3.0 * 3.0, &dev)?.reshape((4, 3, 3, 3))? * 1e-3)?;
/// let b = Tensor::new(&[0.1f64, -0.2, 0.3, 0.0], &dev)?;
/// let fused = conv2d_gemm_headed(&x, &k, &b, 1, 1, Arc::new(SquaredNorm))?;
/// let composed = SquaredNorm.composed(&conv2d_gemm_biased(&x, &k, &b, 1, 1)?)?;
/// let err = (fused - composed)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-9);
/// # Ok(())
/// # }
/// ```
pub trait ConvHead: Send + Sync + std::fmt::Debug + 'static {
    /// The head's name in error messages.
    fn name(&self) -> &'static str;

    /// The head applied to a convolution output `y` `(B, C, H, W)`, from candle's ops (any
    /// device and dtype; differentiable by candle's autodiff).
    fn composed(&self, y: &Tensor) -> candle_core::Result<Tensor>;

    /// The head on the host: `y` the contiguous convolution output of shape `dims` (f32 or
    /// f64). Returns the output's storage (same float type) and shape.
    fn forward(&self, y: &CpuStorage, dims: [usize; 4])
    -> candle_core::Result<(CpuStorage, Shape)>;

    /// `∂⟨head(y), ḡ⟩ / ∂y`, a `dims`-shaped tensor, from the kept `y`, the head's output
    /// `out` and its gradient `grad` (`ḡ`).
    fn backward(
        &self,
        y: &CpuStorage,
        dims: [usize; 4],
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Tensor>;
}

/// The convolution output a [`HeadedConv`] keeps for its backward, with its dims.
type Saved = Arc<Mutex<Option<(CpuStorage, [usize; 4])>>>;

/// `(x, K, b) → head(A x + b)`; keeps `A x + b` for the backward.
#[derive(Debug)]
pub(super) struct HeadedConv {
    map: BiasedMap,
    head: Arc<dyn ConvHead>,
    saved: Saved,
}

pub(super) fn headed_conv(
    x: &Tensor,
    k: &Tensor,
    bias: &Tensor,
    map: BiasedMap,
    head: Arc<dyn ConvHead>,
) -> candle_core::Result<Tensor> {
    let op = HeadedConv {
        map,
        head,
        saved: Arc::new(Mutex::new(None)),
    };
    x.contiguous()?
        .apply_op3(&k.contiguous()?, &bias.contiguous()?, op)
}

impl CustomOp3 for HeadedConv {
    fn name(&self) -> &'static str {
        self.head.name()
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
        let y = dispatch3!(name, (s1, l1), (s2, l2), (s3, l3), |args| {
            self.map.apply(args, shapes)
        });
        let (out, shape) = self.head.forward(&y, shapes.out)?;
        let len = match &out {
            CpuStorage::F32(v) if y.dtype() == out.dtype() => v.len(),
            CpuStorage::F64(v) if y.dtype() == out.dtype() => v.len(),
            _ => candle_core::bail!(
                "{name}: the head returned {:?} for a {:?} convolution",
                out.dtype(),
                y.dtype()
            ),
        };
        if len != shape.elem_count() {
            candle_core::bail!("{name}: the head returned {len} values for shape {shape:?}");
        }
        *lock(&self.saved, name)? = Some((y, shapes.out));
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<BiasedGrads> {
        let name = self.name();
        let dy = {
            let saved = lock(&self.saved, name)?;
            let Some((y, dims)) = saved.as_ref() else {
                candle_core::bail!("{name}: backward before forward");
            };
            let dy = self.head.backward(y, *dims, out, grad)?;
            if dy.dims() != dims {
                candle_core::bail!(
                    "{name}: the head's gradient {:?} does not match the convolution output {dims:?}",
                    dy.shape()
                );
            }
            dy
        };
        self.map.backward((x, k, bias), &dy)
    }
}

#[cfg(test)]
mod tests {
    //! The fused op against the head's composed form on the biased convolution (itself
    //! checked against candle in `biased.rs`): values and the gradients of `⟨f(x, K, b), r⟩`.
    //! The host head below computes what its composed form does in the same order, so f64
    //! agrees to round-off (1e-10 on outputs of size ~1e3) and f32 to 1e-2 relative.
    use super::ConvHead;
    use crate::gemm_conv::biased::tests::grads3;
    use crate::gemm_conv::tests::{max_abs_diff, randn};
    use crate::gemm_conv::{conv2d_gemm_biased, conv2d_gemm_headed};
    use candle_core::{CpuStorage, DType, Shape, Tensor, Var};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::sync::Arc;

    /// `Σ y²` per image; `broken` returns a gradient of the wrong shape, `short` one value
    /// too few for its output shape.
    #[derive(Debug)]
    struct SquaredNorm {
        broken: bool,
        short: bool,
    }

    fn per_image<T: Copy + std::ops::Mul<Output = T> + std::iter::Sum>(
        y: &[T],
        n: usize,
    ) -> Vec<T> {
        y.chunks(n)
            .map(|c| c.iter().map(|&v| v * v).sum())
            .collect()
    }

    impl ConvHead for SquaredNorm {
        fn name(&self) -> &'static str {
            "squared-norm"
        }
        fn composed(&self, y: &Tensor) -> candle_core::Result<Tensor> {
            y.sqr()?.flatten_from(1)?.sum(1)
        }
        fn forward(
            &self,
            y: &CpuStorage,
            dims: [usize; 4],
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let n = dims[1] * dims[2] * dims[3];
            let out = match y {
                CpuStorage::F32(y) => CpuStorage::F32(per_image(y, n)),
                CpuStorage::F64(y) => CpuStorage::F64(per_image(y, n)),
                _ => candle_core::bail!("f32 or f64"),
            };
            let n_out = if self.short { dims[0] + 1 } else { dims[0] };
            Ok((out, Shape::from(n_out)))
        }
        fn backward(
            &self,
            y: &CpuStorage,
            dims: [usize; 4],
            _out: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<Tensor> {
            let dev = grad.device();
            let y = match y {
                CpuStorage::F32(y) => Tensor::from_slice(y, dims.to_vec(), dev)?,
                CpuStorage::F64(y) => Tensor::from_slice(y, dims.to_vec(), dev)?,
                _ => candle_core::bail!("f32 or f64"),
            };
            let g = (y * 2.0)?.broadcast_mul(&grad.reshape((dims[0], 1, 1, 1))?)?;
            if self.broken {
                g.flatten_from(1)
            } else {
                Ok(g)
            }
        }
    }

    #[test]
    fn headed_convs_match_the_head_of_the_biased_convs() {
        let mut rng = StdRng::seed_from_u64(41);
        // (batch, C_in, C_out, (H, W), (kh, kw), stride, padding): general, strided, the
        // Winograd form (f64, ≥ 32 channels, 5×5 "same"), full-window (the composed fallback).
        let convs = [
            (3, 3, 4, (8, 7), (5, 5), 1, 2),
            (2, 2, 6, (9, 9), (3, 3), 2, 1),
            (2, 32, 32, (8, 6), (5, 5), 1, 2),
            (2, 3, 4, (7, 5), (7, 5), 1, 0),
        ];
        let head = || {
            Arc::new(SquaredNorm {
                broken: false,
                short: false,
            })
        };
        for (dtype, rel) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            for (batch, c_in, c_out, (h, w), (kh, kw), s, p) in convs {
                let x = randn(&mut rng, &[batch, c_in, h, w], dtype);
                let k = randn(&mut rng, &[c_out, c_in, kh, kw], dtype);
                let b = randn(&mut rng, &[c_out], dtype);
                let r = randn(&mut rng, &[batch], dtype);
                let fused = |x: &Tensor, k: &Tensor, b: &Tensor| {
                    conv2d_gemm_headed(x, k, b, p, s, head()).unwrap()
                };
                let composed = |x: &Tensor, k: &Tensor, b: &Tensor| {
                    head()
                        .composed(&conv2d_gemm_biased(x, k, b, p, s).unwrap())
                        .unwrap()
                };
                let ((dx, dk, db), (tx, tk, tb)) = (
                    grads3(&x, &k, &b, &r, fused),
                    grads3(&x, &k, &b, &r, composed),
                );
                let ours = [fused(&x, &k, &b), dx, dk, db];
                let theirs = [composed(&x, &k, &b), tx, tk, tb];
                for (i, (a, t)) in ours.iter().zip(&theirs).enumerate() {
                    let scale = t.abs().unwrap().max_all().unwrap().to_dtype(DType::F64);
                    let scale = scale.unwrap().to_scalar::<f64>().unwrap().max(1.0);
                    let e = max_abs_diff(a, t);
                    assert!(
                        e <= rel * scale,
                        "{dtype:?} {c_in}→{c_out} k {kh}×{kw} s {s}: part {i} (value, ∂x, ∂K, ∂b) \
                         differs by {e:e} (scale {scale:e})"
                    );
                }
            }
        }
    }

    #[test]
    fn heads_of_the_wrong_shape_are_errors() {
        let mut rng = StdRng::seed_from_u64(42);
        let x = Var::from_tensor(&randn(&mut rng, &[2, 3, 6, 5], DType::F64)).unwrap();
        let k = randn(&mut rng, &[4, 3, 3, 3], DType::F64);
        let b = randn(&mut rng, &[4], DType::F64);
        let head = Arc::new(SquaredNorm {
            broken: true,
            short: false,
        });
        let out = conv2d_gemm_headed(x.as_tensor(), &k, &b, 1, 1, head).unwrap();
        let err = out.sum_all().unwrap().backward().unwrap_err().to_string();
        assert!(
            err.contains("does not match the convolution output"),
            "{err}"
        );
        // A head whose output does not fill its shape is refused in the forward.
        let head = Arc::new(SquaredNorm {
            broken: false,
            short: true,
        });
        let err = conv2d_gemm_headed(x.as_tensor(), &k, &b, 1, 1, head).unwrap_err();
        assert!(err.to_string().contains("values for shape"), "{err}");
    }
}
