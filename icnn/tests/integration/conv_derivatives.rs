//! Input derivatives of the convolutional ICNNs: central differences (f64) of the potential
//! and of the gradient on 1×4×4 and 3×4×4 images (and 2×4×5 for the stride-2 pooling path),
//! symmetric positive semi-definite Hessians, consistency of the cached products, f32 runs.

use crate::conv_common::{ARCHS, BATCH, all_cases, assert_close, build, flat, max_abs_diff, randn};
use candle_core::{DType, Device, Tensor};
use icnn::ImageShape;
use nalgebra::{DMatrix, SymmetricEigen};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn images() -> Vec<ImageShape> {
    vec![
        ImageShape::new(1, 4, 4),
        ImageShape::new(3, 4, 4),
        ImageShape::new(2, 4, 5),
    ]
}

/// Central differences of `f` at `x` along `e` with step `h`.
fn central<F: Fn(&Tensor) -> Tensor>(f: F, x: &Tensor, e: &Tensor, h: f64) -> Tensor {
    let xp = (x + (e * h).unwrap()).unwrap();
    let xm = (x - (e * h).unwrap()).unwrap();
    ((f(&xp) - f(&xm)).unwrap() / (2.0 * h)).unwrap()
}

fn unit(batch: usize, dim: usize, i: usize) -> Tensor {
    let mut v = vec![0.0f64; batch * dim];
    for b in 0..batch {
        v[b * dim + i] = 1.0;
    }
    Tensor::from_vec(v, (batch, dim), &Device::Cpu).unwrap()
}

#[test]
fn gradient_matches_central_differences_of_potential() {
    let mut rng = StdRng::seed_from_u64(20);
    for case in all_cases(&images(), 1) {
        let d = case.image.dim();
        let x = randn(&mut rng, (BATCH, d), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        assert_close(
            &flat(&lin.potential()),
            &flat(&case.net.potential(&x).unwrap()),
            1e-13,
            &format!("{} potential of linearize vs potential", case.name),
        );
        let grad = lin.gradient();
        let mut fd = Vec::new();
        for i in 0..d {
            let e = unit(BATCH, d, i);
            fd.push(central(|y| case.net.potential(y).unwrap(), &x, &e, 1e-5));
        }
        let fd = Tensor::stack(&fd, 1).unwrap();
        // Central-difference error ≈ h²|F'''|/6 ≈ 1e-11 plus rounding ≈ 1e-16·|F|/h ≈ 1e-11;
        // a layout or adjoint mistake gives errors of the size of the gradient (≥ 1e-3).
        assert_close(&flat(&grad), &flat(&fd), 1e-8, &format!("{} ∇F", case.name));
    }
}

#[test]
fn hvp_matches_central_differences_of_gradient() {
    let mut rng = StdRng::seed_from_u64(21);
    for case in all_cases(&images(), 2) {
        let d = case.image.dim();
        let x = randn(&mut rng, (BATCH, d), 1.0);
        let v = randn(&mut rng, (BATCH, d), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        let hv = lin.hvp(&v).unwrap();
        let fd = central(|y| case.net.linearize(y).unwrap().gradient(), &x, &v, 1e-5);
        // Same error budget as above (‖v‖ ≈ √d ≤ 7 scales it by at most 50).
        assert_close(&flat(&hv), &flat(&fd), 1e-8, &format!("{} Hv", case.name));
        // The cheap gradient-only path agrees with the full linearisation.
        let (val, grad) = case.net.value_and_gradient(&x).unwrap();
        assert_eq!(max_abs_diff(&flat(&val), &flat(&lin.potential())), 0.0);
        assert_eq!(max_abs_diff(&flat(&grad), &flat(&lin.gradient())), 0.0);
    }
}

#[test]
fn hessian_is_symmetric_positive_semidefinite() {
    let mut rng = StdRng::seed_from_u64(22);
    for case in all_cases(&images(), 3) {
        let d = case.image.dim();
        // Points far from the data, where the softplus curvatures are small and uneven.
        let x = randn(&mut rng, (BATCH, d), 3.0);
        let hess = case.net.linearize(&x).unwrap().hessian().unwrap();
        let all = flat(&hess);
        for b in 0..BATCH {
            let h = DMatrix::from_row_slice(d, d, &all[b * d * d..(b + 1) * d * d]);
            let scale = h.amax().max(1e-300);
            let asym = (&h - h.transpose()).amax();
            // Hv is computed by a forward and a reverse pass with different rounding: the
            // asymmetry is rounding only (≈ 1e-16 relative), far below any real mistake.
            assert!(
                asym <= 1e-12 * scale,
                "{}: asymmetry {asym} vs {scale}",
                case.name
            );
            let eig = SymmetricEigen::new((&h + h.transpose()) * 0.5).eigenvalues;
            let min = eig.min();
            assert!(
                min >= -1e-12 * scale,
                "{}: eigenvalue {min} (max |H| {scale})",
                case.name
            );
            assert!(eig.max() > 0.0, "{}: Hessian is zero", case.name);
        }
    }
}

#[test]
fn cached_products_agree() {
    let mut rng = StdRng::seed_from_u64(23);
    for case in all_cases(&[ImageShape::new(3, 4, 4)], 4) {
        let d = case.image.dim();
        let x = randn(&mut rng, (BATCH, d), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        let det = lin.detach();
        let vs: Vec<Tensor> = (0..3).map(|_| randn(&mut rng, (BATCH, d), 1.0)).collect();
        let many = det.hvp_many(&Tensor::stack(&vs, 1).unwrap()).unwrap();
        let hess = det.hessian().unwrap();
        for (k, v) in vs.iter().enumerate() {
            let hv = lin.hvp(v).unwrap();
            // Detached cache: the same numbers exactly.
            assert_eq!(max_abs_diff(&flat(&det.hvp(v).unwrap()), &flat(&hv)), 0.0);
            // hvp_many and H·v run the same convolutions on stacked tangents: rounding only.
            let hk = many.narrow(1, k, 1).unwrap().squeeze(1).unwrap();
            assert_close(
                &flat(&hk),
                &flat(&hv),
                1e-13,
                &format!("{} hvp_many", case.name),
            );
            let hv2 = hess
                .matmul(&v.unsqueeze(2).unwrap())
                .unwrap()
                .squeeze(2)
                .unwrap();
            assert_close(
                &flat(&hv2),
                &flat(&hv),
                1e-12,
                &format!("{} H·v", case.name),
            );
        }
        // Images (B, C, H, W) give the same results as rows.
        let im = case.image;
        let x4 = x
            .reshape((BATCH, im.channels, im.height, im.width))
            .unwrap();
        let lin4 = case.net.linearize(&x4).unwrap();
        assert_eq!(
            max_abs_diff(&flat(&lin4.gradient()), &flat(&lin.gradient())),
            0.0
        );
    }
}

#[test]
fn f32_matches_f64() {
    let image = ImageShape::new(3, 4, 4);
    let mut rng = StdRng::seed_from_u64(24);
    let x64 = randn(&mut rng, (4, image.dim()), 1.0);
    let v64 = randn(&mut rng, (4, image.dim()), 1.0);
    let (x32, v32) = (
        x64.to_dtype(DType::F32).unwrap(),
        v64.to_dtype(DType::F32).unwrap(),
    );
    for (i, arch) in ARCHS.into_iter().enumerate() {
        // Same config and seed: the f32 weights are the f64 draws rounded.
        let (_, n64) = build(arch, image, DType::F64, i as u64);
        let (_, n32) = build(arch, image, DType::F32, i as u64);
        let l64 = n64.linearize(&x64).unwrap();
        let l32 = n32.linearize(&x32).unwrap();
        assert_eq!(l32.gradient().dtype(), DType::F32);
        // f32 rounding (6e-8) through a few layers and the ActNorm statistics: 1e-4 leaves a
        // wide margin while a real mismatch (another layer, layout) is O(1).
        let what = format!("{arch:?} f32");
        assert_close(
            &flat(&l32.potential()),
            &flat(&l64.potential()),
            1e-4,
            &what,
        );
        assert_close(&flat(&l32.gradient()), &flat(&l64.gradient()), 1e-4, &what);
        let (h32, h64) = (l32.hvp(&v32).unwrap(), l64.hvp(&v64).unwrap());
        assert_close(&flat(&h32), &flat(&h64), 1e-4, &what);
    }
}
