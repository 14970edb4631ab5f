//! Each image layer: exact inverse, and its log-det against the log |det| of its Jacobian
//! computed densely by central differences on tiny images (f64).

// Index loops over rows read more plainly than zipped iterators in these checks.
#![allow(clippy::needless_range_loop)]

use crate::image_common::{fd_jacobian, host, log_abs_det, max_abs_diff, uniform_rows};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use cpflow::image::{
    ChannelActNorm, ImageFlow, ImageFlowConfig, ImageLayerConfig, LogitTransform, Squeeze,
    dequantize, squeeze_permutation,
};
use cpflow::{BlockConfig, FloatType, GaussianPrior, InverseParams, PotentialConfig};
use icnn::{Icnn2Config, Icnn3Config, ImageShape};
use rand::SeedableRng;

/// log-dets are O(10); the central-difference Jacobian entries carry ≈1e-10 absolute error,
/// so log |det| agrees to ≈1e-8 relative; 1e-6 leaves margin and still catches any missing
/// factor (the smallest term tested, log(1 − 2α) with α = 1e-6, is 2e-6 per pixel·D).
const LOGDET_TOL: f64 = 1e-6;

fn shapes() -> [ImageShape; 2] {
    [ImageShape::new(1, 4, 4), ImageShape::new(2, 4, 4)]
}

#[test]
fn logit_inverse_and_logdet_match_finite_differences() {
    for shape in shapes() {
        for alpha in [1e-6, 0.05] {
            let t = LogitTransform::new(alpha).unwrap();
            let d = shape.dim();
            let x = uniform_rows(3, d, 0.1, 0.9, 1);
            let (y, ld) = t.forward(&x).unwrap();
            // Inverse: σ and logit are well conditioned on [0.1, 0.9]; rounding ≈ 1e-16.
            assert!(max_abs_diff(&t.inverse(&y).unwrap(), &x) < 1e-10);
            let ld = host(&ld);
            for (r, ldr) in ld.iter().enumerate() {
                let xr = host(&x.narrow(0, r, 1).unwrap());
                let jac = fd_jacobian(&|v| t.forward(v).unwrap().0, &xr);
                let fd = log_abs_det(&jac);
                assert!(
                    (fd - ldr).abs() < LOGDET_TOL * fd.abs().max(1.0),
                    "{fd} vs {ldr}"
                );
            }
        }
    }
    assert!(LogitTransform::new(0.5).is_err());
}

/// Near `x = 1` the f32 forward keeps f32's relative precision: `1 − s` is formed from the
/// exact `1 − x`, not from the rounded `s`. The f64 forward of the same (f32-representable)
/// points is the reference. With `1 − s` taken from `s`, the f32 `y` at `x = 1` with
/// `α = 10⁻⁶` was off by about 1.3e-2 (the f32 spacing near 1, 6e-8, against `α`).
#[test]
fn logit_forward_in_f32_is_accurate_near_one() {
    let t = LogitTransform::new(1e-6).unwrap();
    let xs: Vec<f32> = vec![
        1.0,
        1.0 - f32::EPSILON / 2.0,
        1.0 - 4.0 * f32::EPSILON,
        0.999,
        0.5,
    ];
    let n = xs.len();
    let x32 = Tensor::from_vec(xs.clone(), (1, n), &Device::Cpu).unwrap();
    let x64 = x32.to_dtype(DType::F64).unwrap();
    let (y32, ld32) = t.forward(&x32).unwrap();
    let (y64, ld64) = t.forward(&x64).unwrap();
    let y32 = y32.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let y32 = y32.to_vec1::<f64>().unwrap();
    let y64 = y64.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    // |y| ≤ 14: each f32 op (affine, log, difference) adds ≈ 6e-8 relative, so a few 1e-6
    // absolute; 1e-5 leaves margin and is 1000× below the old error.
    for (a, b) in y32.iter().zip(&y64) {
        assert!((a - b).abs() < 1e-5, "f32 y {a} vs f64 y {b}");
    }
    let ld32 = ld32.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let ld64 = ld64.to_vec1::<f64>().unwrap();
    // The log-det sums 5 terms of size ≤ 14: 1e-4 absolute is a few f32 roundings of the sum.
    assert!(
        (ld32[0] - ld64[0]).abs() < 1e-4,
        "{} vs {}",
        ld32[0],
        ld64[0]
    );
}

#[test]
fn channel_actnorm_inverse_and_logdet_match_finite_differences() {
    for shape in shapes() {
        let vm = VarMap::new();
        let an = ChannelActNorm::new(&vm, "an", shape, DType::F64, &Device::Cpu).unwrap();
        let x = uniform_rows(5, shape.dim(), -2.0, 3.0, 2);
        assert!(an.forward(&x).is_err(), "uninitialised ActNorm must refuse");
        an.initialize(&x).unwrap();
        let (y, ld) = an.forward(&x).unwrap();
        // Per channel the output has mean 0 over batch × pixels (data-dependent init).
        let yv = host(&y);
        let hw = shape.height * shape.width;
        for c in 0..shape.channels {
            let m: f64 = (0..5)
                .flat_map(|b| (0..hw).map(move |p| (b, p)))
                .map(|(b, p)| yv[b * shape.dim() + c * hw + p])
                .sum::<f64>();
            assert!(m.abs() < 1e-10);
        }
        assert!(max_abs_diff(&an.inverse(&y).unwrap(), &x) < 1e-10);
        let xr = host(&x.narrow(0, 0, 1).unwrap());
        let fd = log_abs_det(&fd_jacobian(&|v| an.forward(v).unwrap().0, &xr));
        let ld = ld.to_scalar::<f64>().unwrap();
        assert!(
            (fd - ld).abs() < LOGDET_TOL * fd.abs().max(1.0),
            "{fd} vs {ld}"
        );
    }
}

#[test]
fn squeeze_is_space_to_depth_with_exact_inverse() {
    for shape in shapes() {
        let sq = Squeeze::new(shape, &Device::Cpu).unwrap();
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        assert_eq!(sq.output_shape(), ImageShape::new(4 * c, h / 2, w / 2));
        let x = uniform_rows(2, shape.dim(), -1.0, 1.0, 3);
        let y = sq.forward(&x).unwrap();
        // PyTorch: view(B, C, H/2, 2, W/2, 2).permute(0, 1, 3, 5, 2, 4): output channel
        // 4c + 2i + j at (y, x) is input channel c at (2y + i, 2x + j).
        let (xv, yv) = (host(&x), host(&y));
        let d = shape.dim();
        for b in 0..2 {
            for ch in 0..c {
                for i in 0..2 {
                    for j in 0..2 {
                        for yy in 0..h / 2 {
                            for xx in 0..w / 2 {
                                let o = ((4 * ch + 2 * i + j) * (h / 2) + yy) * (w / 2) + xx;
                                let src = (ch * h + 2 * yy + i) * w + 2 * xx + j;
                                assert_eq!(yv[b * d + o], xv[b * d + src]);
                            }
                        }
                    }
                }
            }
        }
        // A permutation: the inverse is exact (bit for bit) and |det| = 1.
        assert_eq!(host(&sq.inverse(&y).unwrap()), xv);
        let fd = log_abs_det(&fd_jacobian(&|v| sq.forward(v).unwrap(), &xv[..d]));
        assert!(fd.abs() < 1e-9);
        let mut p = squeeze_permutation(shape).unwrap();
        p.sort_unstable();
        assert_eq!(p, (0..d).collect::<Vec<_>>());
    }
    assert!(Squeeze::new(ImageShape::new(1, 3, 4), &Device::Cpu).is_err());
}

#[test]
fn dequantize_adds_uniform_noise_below_one_level() {
    let k: Vec<u8> = (0..=255).collect();
    let levels = Tensor::from_vec(k.clone(), (4, 64), &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let x = host(&dequantize(&levels, DType::F64, &mut rng).unwrap());
    for (xi, ki) in x.iter().zip(&k) {
        let u = 256.0 * xi - f64::from(*ki);
        assert!((0.0..1.0).contains(&u), "noise {u}");
    }
    let bad = Tensor::new(&[[256.0f64]], &Device::Cpu).unwrap();
    assert!(dequantize(&bad, DType::F64, &mut rng).is_err());
}

/// A flow made of one layer list, f64, initialised on a batch.
fn single_layer_flow(shape: ImageShape, layers: Vec<ImageLayerConfig>, x: &Tensor) -> ImageFlow {
    let cfg = ImageFlowConfig {
        image: shape,
        layers,
        prior: GaussianPrior::standard(),
        float: FloatType::F64,
        init_seed: 7,
    };
    let flow = ImageFlow::new(cfg, &Device::Cpu).unwrap();
    flow.initialize(x).unwrap();
    flow
}

fn potentials(shape: ImageShape) -> Vec<PotentialConfig> {
    #[allow(unused_mut)]
    let mut p = vec![
        PotentialConfig::Icnn2(Icnn2Config {
            dim: shape.dim(),
            width: 8,
            depth: 2,
            ..Default::default()
        }),
        PotentialConfig::Icnn3(Icnn3Config {
            dim: shape.dim(),
            width: 8,
            depth: 2,
            ..Default::default()
        }),
    ];
    {
        p.push(PotentialConfig::ConvIcnn(icnn::ConvIcnnConfig {
            image: shape,
            width: 4,
            depth: 2,
            num_pooling: 0,
        }));
        p.push(PotentialConfig::ConvIcnn2(icnn::ConvIcnn2Config {
            image: shape,
            width: 4,
            depth: 2,
        }));
        p.push(PotentialConfig::ConvIcnn3(icnn::ConvIcnn3Config {
            image: shape,
            width: 4,
            depth: 2,
            ..Default::default()
        }));
    }
    p
}

#[test]
fn cpf_block_and_feature_actnorm_logdets_match_finite_differences() {
    for shape in shapes() {
        for pot in potentials(shape) {
            let x = uniform_rows(4, shape.dim(), -1.0, 1.0, 5);
            let layers = vec![
                ImageLayerConfig::FeatureActNorm,
                ImageLayerConfig::Cpf(BlockConfig::new(pot.clone())),
            ];
            let flow = single_layer_flow(shape, layers, &x);
            let (z, ld) = flow.transform(&x).unwrap();
            let ld = host(&ld);
            for r in 0..2 {
                let xr = host(&x.narrow(0, r, 1).unwrap());
                let fd = log_abs_det(&fd_jacobian(&|v| flow.transform(v).unwrap().0, &xr));
                assert!(
                    (fd - ld[r]).abs() < LOGDET_TOL * fd.abs().max(1.0),
                    "{pot:?}: {fd} vs {}",
                    ld[r]
                );
            }
            // Block inverse (Newton–CG to a 1e-12 gradient residual; H ⪰ sp(w₀)I = I, so the
            // error in x is at most the residual).
            let p = InverseParams {
                abs_tolerance: Some(1e-12),
                ..Default::default()
            };
            let inv = flow.inverse_with(&z, &p).unwrap();
            assert!(inv.report.all_converged());
            assert!(max_abs_diff(&inv.x, &x) < 1e-10, "{pot:?}");
        }
    }
}
