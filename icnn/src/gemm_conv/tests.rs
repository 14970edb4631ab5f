//! Tests of the gemm convolutions against candle's own `conv2d` / `conv_transpose2d` (values
//! and autodiff gradients) and of the im2col/col2im adjoint identity.
//!
//! Tolerances (f64): every output is a sum of at most `C_in·kh·kw ≤ 3·35 = 105` products of
//! standard normals (magnitude ≲ 30), and both sides sum in different orders, so rounding
//! differences are ≲ 105 · 30 · 2.2e-16 ≈ 7e-13: values to 1e-12. Gradients sum over the
//! batch and positions as well (≤ 3·10·10 = 300 more terms, magnitude ≲ 500): 1e-10.

use super::biased::tests::grads3;
use super::*;
use candle_core::{D, Device, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

pub(super) fn randn(rng: &mut StdRng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// One configuration of the shape grid.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    c_in: usize,
    c_out: usize,
    hw: (usize, usize),
    k: (usize, usize),
    stride: usize,
    padding: usize,
}

/// Grid: batch 1/3, C_in ≠ C_out, odd/even sizes, kernels 1×1, 3×3, 5×5, 7×5, stride 1/2,
/// padding 0/1/2.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for batch in [1, 3] {
        for hw in [(8, 7), (9, 10)] {
            for k in [(1, 1), (3, 3), (5, 5), (7, 5)] {
                for stride in [1, 2] {
                    for padding in [0, 1, 2] {
                        let (c_in, c_out) = if batch == 1 { (3, 2) } else { (2, 3) };
                        out.push(Case {
                            batch,
                            c_in,
                            c_out,
                            hw,
                            k,
                            stride,
                            padding,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Kernel fits the padded input (conv2d is defined).
fn conv_defined(c: &Case) -> bool {
    c.hw.0 + 2 * c.padding >= c.k.0 && c.hw.1 + 2 * c.padding >= c.k.1
}

/// Gradients of `sum(f(x, k) ⊙ r)` w.r.t. `x` and `k`.
fn grads(
    x: &Tensor,
    k: &Tensor,
    r: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> (Tensor, Tensor) {
    let (xv, kv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(k).unwrap());
    let loss = (f(xv.as_tensor(), kv.as_tensor()) * r)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    (
        g.get(xv.as_tensor()).unwrap().clone(),
        g.get(kv.as_tensor()).unwrap().clone(),
    )
}

#[test]
fn gemm_conv2d_matches_candle_values_and_gradients() {
    let mut rng = StdRng::seed_from_u64(1);
    let (mut checked, mut probed) = (0, 0);
    for c in cases().iter().filter(|c| conv_defined(c)) {
        let x = randn(&mut rng, &[c.batch, c.c_in, c.hw.0, c.hw.1], DType::F64);
        let k = randn(&mut rng, &[c.c_out, c.c_in, c.k.0, c.k.1], DType::F64);
        let ours = conv2d_gemm(&x, &k, c.padding, c.stride).unwrap();
        let theirs = x.conv2d(&k, c.padding, c.stride, 1, 1).unwrap();
        let err = max_abs_diff(&ours, &theirs);
        assert!(err < 1e-12, "{c:?}: value error {err}");

        let r = randn(&mut rng, ours.dims(), DType::F64);
        let (gx, gk) = grads(&x, &k, &r, |x, k| {
            conv2d_gemm(x, k, c.padding, c.stride).unwrap()
        });
        // candle's conv2d backward derives the input gradient's output padding from the
        // height only, and fails when the width needs another one. There, check the
        // gradients of the bilinear loss ⟨conv(x, k), r⟩ through random probes instead:
        // ⟨conv(e, k), r⟩ = ⟨e, g_x⟩ and ⟨conv(x, f), r⟩ = ⟨f, g_k⟩ (candle's forward).
        let op = |n: usize, k: usize| {
            let out = (n + 2 * c.padding - k) / c.stride + 1;
            n - ((out - 1) * c.stride + k - 2 * c.padding)
        };
        if op(c.hw.0, c.k.0) != op(c.hw.1, c.k.1) {
            let dot = |a: &Tensor, b: &Tensor| {
                (a * b)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let e = randn(&mut rng, x.dims(), DType::F64);
            let f = randn(&mut rng, k.dims(), DType::F64);
            let conv = |x: &Tensor, k: &Tensor| x.conv2d(k, c.padding, c.stride, 1, 1).unwrap();
            let ex = (dot(&conv(&e, &k), &r) - dot(&e, &gx)).abs();
            let ek = (dot(&conv(&x, &f), &r) - dot(&f, &gk)).abs();
            assert!(
                ex < 1e-10 && ek < 1e-10,
                "{c:?}: probe errors x {ex}, kernel {ek}"
            );
            probed += 1;
            continue;
        }
        let (gx_ref, gk_ref) = grads(&x, &k, &r, |x, k| {
            x.conv2d(k, c.padding, c.stride, 1, 1).unwrap()
        });
        let (ex, ek) = (max_abs_diff(&gx, &gx_ref), max_abs_diff(&gk, &gk_ref));
        assert!(
            ex < 1e-10 && ek < 1e-10,
            "{c:?}: grad errors x {ex}, kernel {ek}"
        );
        checked += 1;
    }
    // The grid must not have been filtered away.
    assert!(
        checked >= 40 && probed >= 20,
        "only {checked} gradient cases compared, {probed} probed"
    );
}

#[test]
fn gemm_conv_transpose2d_matches_candle_values_and_gradients() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut checked = 0;
    for c in cases() {
        for output_padding in [0, 1] {
            // PyTorch requires output_padding < stride; candle follows the same formula.
            if output_padding >= c.stride {
                continue;
            }
            let out_h = ((c.hw.0 - 1) * c.stride + c.k.0 + output_padding) as isize
                - 2 * c.padding as isize;
            let out_w = ((c.hw.1 - 1) * c.stride + c.k.1 + output_padding) as isize
                - 2 * c.padding as isize;
            if out_h <= 0 || out_w <= 0 {
                continue;
            }
            let x = randn(&mut rng, &[c.batch, c.c_in, c.hw.0, c.hw.1], DType::F64);
            let k = randn(&mut rng, &[c.c_in, c.c_out, c.k.0, c.k.1], DType::F64);
            let ours = conv_transpose2d_gemm(&x, &k, c.padding, output_padding, c.stride).unwrap();
            let theirs = x
                .conv_transpose2d(&k, c.padding, output_padding, c.stride, 1)
                .unwrap();
            let err = max_abs_diff(&ours, &theirs);
            assert!(err < 1e-12, "{c:?} op {output_padding}: value error {err}");

            let r = randn(&mut rng, ours.dims(), DType::F64);
            let (gx, gk) = grads(&x, &k, &r, |x, k| {
                conv_transpose2d_gemm(x, k, c.padding, output_padding, c.stride).unwrap()
            });
            let (gx_ref, gk_ref) = grads(&x, &k, &r, |x, k| {
                x.conv_transpose2d(k, c.padding, output_padding, c.stride, 1)
                    .unwrap()
            });
            let (ex, ek) = (max_abs_diff(&gx, &gx_ref), max_abs_diff(&gk, &gk_ref));
            assert!(
                ex < 1e-10 && ek < 1e-10,
                "{c:?} op {output_padding}: grad errors x {ex}, kernel {ek}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} cases checked");
}

/// ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩, including grids larger than the convolution's (patches
/// entirely in the padding) and batch 1 (the per-plane col2im split).
#[test]
fn gemm_conv_im2col_col2im_are_adjoint() {
    let mut rng = StdRng::seed_from_u64(3);
    let geometries = [
        PatchGeometry::for_conv(3, (9, 10), (7, 5), 2, 2).unwrap(),
        PatchGeometry::for_conv(2, (8, 7), (1, 1), 1, 0).unwrap(),
        PatchGeometry::for_conv(4, (5, 6), (3, 3), 1, 1).unwrap(),
        PatchGeometry {
            channels: 2,
            height: 6,
            width: 5,
            kh: 3,
            kw: 4,
            stride: 3,
            padding: 2,
            out_h: 5,
            out_w: 4,
        },
    ];
    for g in geometries {
        for batch in [1, 3] {
            let x = randn(
                &mut rng,
                &[batch, g.channels, g.height, g.width],
                DType::F64,
            );
            let cols = im2col(&x, g).unwrap();
            assert_eq!(cols.dims(), &[batch * g.out_h * g.out_w, g.patch_len()]);
            let y = randn(&mut rng, cols.dims(), DType::F64);
            let lhs = (&cols * &y).unwrap().sum_all().unwrap();
            let back = col2im(&y, g).unwrap();
            let rhs = (&x * &back).unwrap().sum_all().unwrap();
            let (lhs, rhs) = (
                lhs.to_scalar::<f64>().unwrap(),
                rhs.to_scalar::<f64>().unwrap(),
            );
            // ≤ a few hundred terms of size ~1: rounding ≪ 1e-12.
            assert!(
                (lhs - rhs).abs() < 1e-12,
                "{g:?} batch {batch}: {lhs} vs {rhs}"
            );
            assert!(lhs.abs() > 1e-3, "degenerate inner product for {g:?}");
        }
    }
}

/// f32: values and gradients agree with candle's f32 convolutions to f32 rounding
/// (≤ 105-term sums of magnitude ≲ 30: 1e-3 absolute is ~30 ulps of the largest values).
#[test]
fn gemm_conv_f32_smoke() {
    let mut rng = StdRng::seed_from_u64(4);
    let x = randn(&mut rng, &[3, 4, 9, 7], DType::F32);
    let k = randn(&mut rng, &[5, 4, 5, 5], DType::F32);
    let ours = conv2d_gemm(&x, &k, 2, 2).unwrap();
    assert_eq!(ours.dtype(), DType::F32);
    assert!(max_abs_diff(&ours, &x.conv2d(&k, 2, 2, 1, 1).unwrap()) < 1e-3);
    let r = randn(&mut rng, ours.dims(), DType::F32);
    let (gx, gk) = grads(&x, &k, &r, |x, k| conv2d_gemm(x, k, 2, 2).unwrap());
    let (gx_ref, gk_ref) = grads(&x, &k, &r, |x, k| x.conv2d(k, 2, 2, 1, 1).unwrap());
    assert!(max_abs_diff(&gx, &gx_ref) < 1e-3);
    assert!(max_abs_diff(&gk, &gk_ref) < 1e-2); // sums over 3·5·4 more terms

    let kt = randn(&mut rng, &[4, 5, 5, 5], DType::F32);
    let ours = conv_transpose2d_gemm(&x, &kt, 2, 1, 2).unwrap();
    let theirs = x.conv_transpose2d(&kt, 2, 1, 2, 1).unwrap();
    assert!(max_abs_diff(&ours, &theirs) < 1e-3);
}

/// Non-contiguous inputs and kernels (transposed views) give the same result.
#[test]
fn gemm_conv_accepts_strided_inputs() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = randn(&mut rng, &[2, 3, 7, 6], DType::F64)
        .transpose(2, 3)
        .unwrap();
    let k = randn(&mut rng, &[4, 3, 3, 3], DType::F64)
        .transpose(0, 1)
        .unwrap(); // (3, 4, 3, 3) view: a transposed-conv kernel
    assert!(!x.is_contiguous() && !k.is_contiguous());
    let ours = conv_transpose2d_gemm(&x, &k, 1, 1, 2).unwrap();
    let theirs = x
        .contiguous()
        .unwrap()
        .conv_transpose2d(&k.contiguous().unwrap(), 1, 1, 2, 1)
        .unwrap();
    assert!(max_abs_diff(&ours, &theirs) < 1e-12);
    let kc = k.transpose(0, 1).unwrap(); // back to (4, 3, 3, 3), strided twice
    let ours = conv2d_gemm(&x, &kc, 1, 1).unwrap();
    let theirs = x
        .contiguous()
        .unwrap()
        .conv2d(&kc.contiguous().unwrap(), 1, 1, 1, 1)
        .unwrap();
    assert!(max_abs_diff(&ours, &theirs) < 1e-12);
}

#[test]
fn gemm_conv_rejects_bad_shapes() {
    let mut rng = StdRng::seed_from_u64(6);
    let x = randn(&mut rng, &[1, 3, 4, 4], DType::F64);
    let k_wrong_channels = randn(&mut rng, &[2, 2, 3, 3], DType::F64);
    let k_too_big = randn(&mut rng, &[2, 3, 7, 7], DType::F64);
    let k = randn(&mut rng, &[2, 3, 3, 3], DType::F64);
    assert!(matches!(
        conv2d_gemm(&x, &k_wrong_channels, 0, 1),
        Err(IcnnError::Shape(_))
    ));
    assert!(matches!(
        conv2d_gemm(&x, &k_too_big, 1, 1),
        Err(IcnnError::Shape(_))
    ));
    assert!(matches!(
        conv2d_gemm(&x, &k, 0, 0),
        Err(IcnnError::InvalidConfig(_))
    ));
    assert!(matches!(
        conv2d_gemm(&x.flatten_all().unwrap(), &k, 0, 1),
        Err(IcnnError::Shape(_))
    ));
    let kt = randn(&mut rng, &[3, 2, 1, 1], DType::F64);
    // (1 − 1)·1 + 1 − 2·1 < 1: empty output.
    let x1 = randn(&mut rng, &[1, 3, 1, 1], DType::F64);
    assert!(matches!(
        conv_transpose2d_gemm(&x1, &kt, 1, 0, 1),
        Err(IcnnError::Shape(_))
    ));
    assert!(matches!(
        conv_transpose2d_gemm(&x, &k, 0, 0, 1),
        Err(IcnnError::Shape(_))
    ));
    // The custom op checks its input against the geometry.
    let g = PatchGeometry::for_conv(2, (4, 4), (3, 3), 1, 0).unwrap();
    assert!(im2col(&x, g).is_err());
    assert!(col2im(&randn(&mut rng, &[5, 18], DType::F64), g).is_err());
}

/// Paddings and strides whose output sizes overflow `usize` are shape errors naming the
/// overflow (a padding of 2⁴⁰ panicked with "attempt to multiply with overflow" in the grid
/// size `out_h·out_w`, and wrapped around in release builds); so are geometries built by hand
/// for the public im2col/col2im ops.
#[test]
fn gemm_conv_refuses_sizes_that_overflow() {
    let mut rng = StdRng::seed_from_u64(6);
    let x = randn(&mut rng, &[1, 3, 4, 4], DType::F64);
    let k = randn(&mut rng, &[2, 3, 3, 3], DType::F64);
    let b = randn(&mut rng, &[2], DType::F64);
    let k2 = randn(&mut rng, &[4, 3, 3, 3], DType::F64);
    let b2 = randn(&mut rng, &[4], DType::F64);
    let overflows = |r: Result<Tensor>| match r {
        Err(IcnnError::Shape(m)) => assert!(m.contains("more elements than"), "{m}"),
        other => panic!("unexpected {other:?}"),
    };
    for padding in [1usize << 40, usize::MAX / 2, usize::MAX] {
        overflows(conv2d_gemm(&x, &k, padding, 1));
        overflows(conv2d_gemm_biased(&x, &k, &b, padding, 1));
        overflows(gated_conv2d_gemm(&x, &k2, &b2, padding, 1));
        assert!(PatchGeometry::for_conv(3, (4, 4), (3, 3), 1, padding).is_none());
    }
    // A transposed convolution whose output (n − 1)·stride + k overflows.
    let kt = randn(&mut rng, &[3, 2, 3, 3], DType::F64);
    let bt = randn(&mut rng, &[2], DType::F64);
    for stride in [1usize << 40, usize::MAX / 2] {
        overflows(conv_transpose2d_gemm(&x, &kt, 0, 0, stride));
        overflows(conv_transpose2d_gemm_biased(&x, &kt, &bt, 0, 0, stride));
    }
    // Large but addressable sizes are still computed (the limit is only the overflow): a
    // padding of 100 gives a (4 + 200 − 3 + 1)² = 202×202 output.
    let y = conv2d_gemm(&x, &k, 100, 1).unwrap();
    assert_eq!(y.dims(), &[1, 2, 202, 202]);
    // A hand-built geometry with an overflowing grid is refused by the ops, not computed.
    let huge = PatchGeometry {
        out_h: 1 << 40,
        out_w: 1 << 40,
        ..PatchGeometry::for_conv(3, (4, 4), (3, 3), 1, 1).unwrap()
    };
    assert!(!huge.sizes_fit());
    assert!(im2col(&x, huge).is_err());
    assert!(col2im(&randn(&mut rng, &[1, 27], DType::F64), huge).is_err());
}

/// The kernel-gradient op on its own: its value is candle's kernel gradient of a conv2d, and
/// its backward (used by double backward) gives `A_Gᵀ y` and `A_G x` (candle's
/// conv_transpose2d / conv2d with kernel `G`).
#[test]
fn gemm_conv_kernel_grad_op_and_its_backward() {
    let mut rng = StdRng::seed_from_u64(7);
    let (stride, padding) = (2, 1);
    let g = PatchGeometry::for_conv(3, (7, 7), (3, 3), stride, padding).unwrap();
    let x = Var::from_tensor(&randn(&mut rng, &[2, 3, 7, 7], DType::F64)).unwrap();
    let y = Var::from_tensor(&randn(&mut rng, &[2, 4, g.out_h, g.out_w], DType::F64)).unwrap();
    let kg = ops::conv_kernel_grad(&x, &y, g).unwrap();
    let k = Var::from_tensor(&randn(&mut rng, &[4, 3, 3, 3], DType::F64)).unwrap();
    let loss = (x.conv2d(&k, padding, stride, 1, 1).unwrap() * y.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    let kg_ref = loss.backward().unwrap().get(&k).unwrap().clone();
    assert!(max_abs_diff(&kg, &kg_ref) < 1e-10);

    let gk = randn(&mut rng, &[4, 3, 3, 3], DType::F64);
    let grads = (&kg * &gk).unwrap().sum_all().unwrap().backward().unwrap();
    // 7 = (4 − 1)·2 − 2·1 + 3 + 0: output padding 0.
    let gx_ref = y.conv_transpose2d(&gk, padding, 0, stride, 1).unwrap();
    let gx = grads.get(&x).unwrap();
    assert!(max_abs_diff(gx, &gx_ref) < 1e-10);
    let gy_ref = x.conv2d(&gk, padding, stride, 1, 1).unwrap();
    assert!(max_abs_diff(grads.get(&y).unwrap(), &gy_ref) < 1e-10);
}

/// Arguments that candle does not track get no gradient (and none is computed).
#[test]
fn gemm_conv_skips_untracked_arguments() {
    let mut rng = StdRng::seed_from_u64(8);
    let x = randn(&mut rng, &[2, 3, 6, 5], DType::F64);
    let k = Var::from_tensor(&randn(&mut rng, &[4, 3, 3, 3], DType::F64)).unwrap();
    let y = conv2d_gemm(&x, &k, 1, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let reference = x
        .conv2d(&k, 1, 1, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(max_abs_diff(grads.get(&k).unwrap(), reference.get(&k).unwrap()) < 1e-12);
}

/// The public `im2col` layout `(B·P, C·kh·kw)`: times the flattened kernel it is candle's
/// conv2d (rows `(b, oh, ow)`, columns `(c, ki, kj)`).
#[test]
fn gemm_conv_im2col_rows_times_kernel_is_conv2d() {
    let mut rng = StdRng::seed_from_u64(9);
    let (b, c_in, c_out, (h, w), (kh, kw), stride, padding) = (2, 3, 4, (9, 8), (5, 3), 2, 1);
    let g = PatchGeometry::for_conv(c_in, (h, w), (kh, kw), stride, padding).unwrap();
    let x = randn(&mut rng, &[b, c_in, h, w], DType::F64);
    let k = randn(&mut rng, &[c_out, c_in, kh, kw], DType::F64);
    let rows = im2col(&x, g)
        .unwrap()
        .matmul(&k.reshape((c_out, g.patch_len())).unwrap().t().unwrap())
        .unwrap();
    let ours = rows
        .reshape((b, g.out_h, g.out_w, c_out))
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    let theirs = x.conv2d(&k, padding, stride, 1, 1).unwrap();
    assert!(max_abs_diff(&ours, &theirs) < 1e-12);
}

/// The stride-1 "same" convolutions that `ops.rs` sends to the Winograd kernels (f64, ≥ 32
/// channels on both sides; more input or more output channels, so both the direct and the
/// transposed algorithm run), through the public biased ops and candle's autodiff, against
/// candle's `conv2d` / `conv_transpose2d` plus the bias. Outputs are sums of ≤ 40·25
/// products of standard normals (≲ 100) and gradients sum over 2·63 more terms; the
/// Winograd errors are ~1e-14 relative (`winograd_tests.rs`): values to 1e-10, gradients to
/// 1e-9.
#[test]
fn wide_same_convolutions_match_candle_through_winograd() {
    let mut rng = StdRng::seed_from_u64(9);
    for (c_in, c_out) in [(32, 40), (40, 32)] {
        for (k, padding) in [(5, 2), (3, 1)] {
            let what = format!("{c_in}→{c_out} {k}×{k}");
            let x = randn(&mut rng, &[2, c_in, 9, 7], DType::F64);
            let w = randn(&mut rng, &[c_out, c_in, k, k], DType::F64);
            let b = randn(&mut rng, &[c_out], DType::F64);
            let plus_bias = |y: Tensor, b: &Tensor| {
                y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap()
            };
            let ours = |x: &Tensor, w: &Tensor, b: &Tensor| {
                conv2d_gemm_biased(x, w, b, padding, 1).unwrap()
            };
            let theirs = |x: &Tensor, w: &Tensor, b: &Tensor| {
                plus_bias(x.conv2d(w, padding, 1, 1, 1).unwrap(), b)
            };
            let y = ours(&x, &w, &b);
            let err = max_abs_diff(&y, &theirs(&x, &w, &b));
            assert!(err < 1e-10, "conv {what}: value error {err}");
            let r = randn(&mut rng, y.dims(), DType::F64);
            let g = grads3(&x, &w, &b, &r, ours);
            let g_ref = grads3(&x, &w, &b, &r, theirs);
            let pairs = [(g.0, g_ref.0), (g.1, g_ref.1), (g.2, g_ref.2)];
            for (name, (a, e)) in ["x", "kernel", "bias"].iter().zip(&pairs) {
                let err = max_abs_diff(a, e);
                assert!(err < 1e-9, "conv {what}: {name} gradient error {err}");
            }

            // The transposed convolution with the same window: input c_in, output c_out.
            let wt = randn(&mut rng, &[c_in, c_out, k, k], DType::F64);
            let ours_t = |x: &Tensor, w: &Tensor, b: &Tensor| {
                conv_transpose2d_gemm_biased(x, w, b, padding, 0, 1).unwrap()
            };
            let theirs_t = |x: &Tensor, w: &Tensor, b: &Tensor| {
                plus_bias(x.conv_transpose2d(w, padding, 0, 1, 1).unwrap(), b)
            };
            let y = ours_t(&x, &wt, &b);
            let err = max_abs_diff(&y, &theirs_t(&x, &wt, &b));
            assert!(err < 1e-10, "transposed {what}: value error {err}");
            let g = grads3(&x, &wt, &b, &r, ours_t);
            let g_ref = grads3(&x, &wt, &b, &r, theirs_t);
            let pairs = [(g.0, g_ref.0), (g.1, g_ref.1), (g.2, g_ref.2)];
            for (name, (a, e)) in ["x", "kernel", "bias"].iter().zip(&pairs) {
                let err = max_abs_diff(a, e);
                assert!(err < 1e-9, "transposed {what}: {name} gradient error {err}");
            }
        }
    }
}
