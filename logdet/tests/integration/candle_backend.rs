//! Tensor backend (feature `candle`): surrogate gradients through candle autodiff, SLQ on
//! tensors, exact log-det of a (B, d, d) tensor, and probe tensors.
#![cfg(feature = "candle")]
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use candle_core::{DType, Device, Tensor, Var};
use faer::Mat;
use faer::linalg::solvers::DenseSolveCore;
use krylov::{CgParams, DenseFaerOperator, DenseTensorOperator, FnOperator, KrylovError};
use logdet::{
    SlqParams, cg_surrogate, exact_logdet, exact_logdet_tensor, rademacher_like, slq_logdet,
};

fn to_tensor(m: &Mat<f64>, dev: &Device) -> Tensor {
    let d = m.nrows();
    let data: Vec<f64> = (0..d * d).map(|k| m[(k / d, k % d)]).collect();
    Tensor::from_vec(data, (d, d), dev).unwrap()
}

/// Rows x ↦ rows of A(θ)ᵀA(θ)x + αx (batch (P, d)).
fn hvp(x: &Tensor, a: &Tensor, alpha: f64) -> candle_core::Result<Tensor> {
    let ax = x.matmul(&a.t()?)?;
    ax.matmul(a)? + (x * alpha)?
}

/// cpflow's use: the operator is a closure over detached tensors, CG gives u (detached), and
/// candle's first-order backward of S = mean_p u_pᵀ H(θ) v_p gives ≈ ∂θ log det H(θ).
/// Tolerance: 4σ/√P with σ² the exact Rademacher variance for M = H⁻¹ ∂θH (as in the host test).
#[test]
fn surrogate_gradient_through_candle_autodiff() {
    let dev = Device::Cpu;
    let d = 10;
    let alpha = 0.5;
    let mut r = rng(12);
    let s = 1.0 / (d as f64).sqrt();
    let a0 = gaussian_mat(&mut r, d, d) * faer::Scale(s);
    let a1 = gaussian_mat(&mut r, d, d) * faer::Scale(s);
    let theta0 = 0.4;
    let h_of = |t: f64| {
        let a = &a0 + &a1 * faer::Scale(t);
        a.transpose() * &a + Mat::<f64>::identity(d, d) * faer::Scale(alpha)
    };
    let step = 1e-5;
    let exact = (exact_logdet(&[h_of(theta0 + step)]).unwrap()[0]
        - exact_logdet(&[h_of(theta0 - step)]).unwrap()[0])
        / (2.0 * step);

    let theta = Var::new(&[theta0], &dev).unwrap();
    let a = (to_tensor(&a0, &dev)
        + to_tensor(&a1, &dev)
            .broadcast_mul(theta.as_tensor())
            .unwrap())
    .unwrap();
    let a_det = a.detach();
    let op = FnOperator::new(
        |x: &Tensor, _active: &[bool]| -> Result<Tensor, KrylovError> {
            Ok(hvp(x, &a_det, alpha)?)
        },
    );
    let probes = 2000;
    let like = Tensor::zeros((probes, d), DType::F64, &dev).unwrap();
    let v = rademacher_like(&like, &mut rng(13)).unwrap();
    let sur = cg_surrogate(&op, &v, &CgParams::default().with_rtol(1e-12)).unwrap();
    assert!(sur.report.all_converged());
    let s_val = (sur
        .u
        .mul(&hvp(&v, &a, alpha).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        / probes as f64)
        .unwrap();
    let grads = s_val.backward().unwrap();
    let got = grads
        .get(theta.as_tensor())
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];

    let h = h_of(theta0);
    let dh = (h_of(theta0 + 1e-4) - h_of(theta0 - 1e-4)) * faer::Scale(0.5e4);
    let m = h.llt(faer::Side::Lower).unwrap().inverse() * &dh;
    let sigma = (rademacher_variance(&m) / probes as f64).sqrt();
    assert!(
        (got - exact).abs() <= 4.0 * sigma,
        "candle surrogate {got} vs exact {exact} (σ/√P {sigma})"
    );
    assert!(4.0 * sigma < 0.5 * exact.abs().max(0.5));
}

/// SLQ on tensors draws the same probes from the same seed as on the host backend, so f64
/// estimates agree to rounding; f32 agrees to single precision. Exact log-det of a tensor
/// equals the host one.
#[test]
fn slq_and_exact_on_tensors_agree_with_host() {
    let dev = Device::Cpu;
    let (d, bsz) = (15, 4);
    let mut r = rng(14);
    let mats: Vec<Mat<f64>> = (0..bsz)
        .map(|_| {
            let q = random_orthogonal(&mut r, d);
            let eigs: Vec<f64> = (0..d).map(|k| 1.0 + k as f64).collect();
            with_eigs(&q, &eigs)
        })
        .collect();
    let stacked = Tensor::stack(
        &mats.iter().map(|m| to_tensor(m, &dev)).collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    let exact = exact_logdet(&mats).unwrap();
    let from_tensor = exact_logdet_tensor(&stacked).unwrap();
    for (a, b) in exact.iter().zip(&from_tensor) {
        assert!((a - b).abs() < 1e-12 * a.abs());
    }
    assert!(exact_logdet_tensor(&Tensor::zeros((2, 3), DType::F64, &dev).unwrap()).is_err());

    let params = SlqParams::default().with_probes(5).with_lanczos_steps(8);
    let host = slq_logdet(
        &DenseFaerOperator::new(mats.clone()).unwrap(),
        &Mat::<f64>::zeros(d, bsz),
        &mut rng(15),
        &params,
    )
    .unwrap();
    for (dtype, tol) in [(DType::F64, 1e-9), (DType::F32, 1e-4)] {
        let op = DenseTensorOperator::new(stacked.to_dtype(dtype).unwrap()).unwrap();
        let like = Tensor::zeros((bsz, d), dtype, &dev).unwrap();
        let est = slq_logdet(&op, &like, &mut rng(15), &params).unwrap();
        for i in 0..bsz {
            assert!(
                (est.estimate[i] - host.estimate[i]).abs() < tol * host.estimate[i].abs(),
                "{dtype:?}"
            );
        }
    }
}

/// Probe tensors take the dtype, device and shape of the reference, and are ±1.
#[test]
fn rademacher_tensor_probes() {
    let like = Tensor::zeros((3, 7), DType::F32, &Device::Cpu).unwrap();
    let v = rademacher_like(&like, &mut rng(1)).unwrap();
    assert_eq!(v.dims(), &[3, 7]);
    assert_eq!(v.dtype(), DType::F32);
    let vals = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(vals.iter().all(|x| x.abs() == 1.0));
    assert!(vals.iter().any(|x| *x > 0.0) && vals.iter().any(|x| *x < 0.0));
    let again = rademacher_like(&like, &mut rng(1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(vals, again);
}
