//! The CG gradient surrogate: probe averages of ∂θ[uᵀ H(θ) v] (u = CG solution, held fixed)
//! match the exact ∂θ log det H(θ) within the Monte-Carlo error, and the bias from a loose CG
//! tolerance respects the documented bound.
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use faer::linalg::solvers::DenseSolveCore;
use krylov::{BatchVectors, CgParams, DenseFaerOperator};
use logdet::{cg_surrogate, exact_logdet, rademacher_probes};

const D: usize = 12;
const ALPHA: f64 = 0.5;

/// `H(θ) = A(θ)ᵀ A(θ) + α I` with `A(θ) = A₀ + Σ_k θ_k A_k` (3 parameters).
struct Family {
    a: Vec<Mat<f64>>,
}

impl Family {
    fn new(seed: u64) -> Self {
        let mut r = rng(seed);
        let scale = 1.0 / (D as f64).sqrt();
        let a = (0..4)
            .map(|_| gaussian_mat(&mut r, D, D) * faer::Scale(scale))
            .collect();
        Self { a }
    }

    fn a_of(&self, theta: &[f64]) -> Mat<f64> {
        let mut a = self.a[0].clone();
        for (k, t) in theta.iter().enumerate() {
            a += &self.a[k + 1] * faer::Scale(*t);
        }
        a
    }

    fn h(&self, theta: &[f64]) -> Mat<f64> {
        let a = self.a_of(theta);
        a.transpose() * &a + Mat::<f64>::identity(D, D) * faer::Scale(ALPHA)
    }

    /// Exact ∂θ_k log det H by central differences of faer's Cholesky log-det (step 1e-5:
    /// truncation O(h²·|∂³ log det|) ≈ 1e-10, rounding O(u·|log det|/h) ≈ 1e-10).
    fn exact_grad(&self, theta: &[f64]) -> Vec<f64> {
        let h = 1e-5;
        (0..theta.len())
            .map(|k| {
                let mut tp = theta.to_vec();
                let mut tm = theta.to_vec();
                tp[k] += h;
                tm[k] -= h;
                let lp = exact_logdet(&[self.h(&tp)]).unwrap()[0];
                let lm = exact_logdet(&[self.h(&tm)]).unwrap()[0];
                (lp - lm) / (2.0 * h)
            })
            .collect()
    }
}

/// `Σ_p u_pᵀ H(θ) v_p / P`; with `u` fixed this is a quadratic polynomial in θ, so a central
/// difference differentiates it exactly up to rounding.
fn surrogate_value(fam: &Family, theta: &[f64], u: &[f64], v: &[f64], probes: usize) -> f64 {
    let h = fam.h(theta);
    let mut s = 0.0;
    for p in 0..probes {
        let (up, vp) = (&u[p * D..(p + 1) * D], &v[p * D..(p + 1) * D]);
        for i in 0..D {
            for j in 0..D {
                s += up[i] * h[(i, j)] * vp[j];
            }
        }
    }
    s / probes as f64
}

fn surrogate_grad(fam: &Family, theta: &[f64], u: &[f64], v: &[f64], probes: usize) -> Vec<f64> {
    let h = 1e-4;
    (0..theta.len())
        .map(|k| {
            let mut tp = theta.to_vec();
            let mut tm = theta.to_vec();
            tp[k] += h;
            tm[k] -= h;
            (surrogate_value(fam, &tp, u, v, probes) - surrogate_value(fam, &tm, u, v, probes))
                / (2.0 * h)
        })
        .collect()
}

/// Acceptance: P = 2,000 Rademacher probes (one batch of P systems sharing H(θ), solved by one
/// batched CG call). The probe average of ∂θ_k[uᵀ H v] must match ∂θ_k log det H within
/// 4σ_k/√P, where σ_k² = 2(‖M_s‖_F² − Σ M_ii²) is the exact per-probe variance of the
/// Rademacher estimator of tr M, M = H⁻¹ ∂θ_k H (∂θ_k H by central differences of H, exact for
/// a quadratic). CG runs to rtol 1e-12, so its bias (see `cg_surrogate` docs) is ≪ σ/√P.
#[test]
fn surrogate_gradient_matches_exact_logdet_gradient() {
    let fam = Family::new(3);
    let theta = [0.3, -0.2, 0.5];
    let probes = 2000;
    let h = fam.h(&theta);
    let op = DenseFaerOperator::new(vec![h.clone(); probes]).unwrap();
    let v = rademacher_probes(&mut rng(17), probes, D).unwrap();
    let vb = Mat::<f64>::from_fn(D, probes, |i, j| v[j * D + i]);
    let s = cg_surrogate(&op, &vb, &CgParams::default().with_rtol(1e-12)).unwrap();
    assert!(s.report.all_converged());
    let u = s.u.to_host().unwrap();
    let got = surrogate_grad(&fam, &theta, &u, &v, probes);
    let exact = fam.exact_grad(&theta);
    let h_inv = h.llt(faer::Side::Lower).unwrap().inverse();
    for k in 0..theta.len() {
        let step = 1e-4;
        let mut tp = theta.to_vec();
        let mut tm = theta.to_vec();
        tp[k] += step;
        tm[k] -= step;
        let dh = (fam.h(&tp) - fam.h(&tm)) * faer::Scale(0.5 / step);
        let m = &h_inv * &dh;
        let sigma = (rademacher_variance(&m) / probes as f64).sqrt();
        assert!(
            (got[k] - exact[k]).abs() <= 4.0 * sigma,
            "θ_{k}: surrogate {} vs exact {} (σ/√P = {sigma})",
            got[k],
            exact[k]
        );
        // Not vacuous: the tolerance is small compared with the gradient itself.
        assert!(
            4.0 * sigma < 0.5 * exact[k].abs().max(0.5),
            "σ {sigma} vs {}",
            exact[k]
        );
    }
}

/// The bias of a loose CG solve obeys the documented bound
/// |Δ(∂θ S)| ≤ ‖r‖₂ ‖H⁻¹‖₂ ‖∂θH‖₂ ‖v‖₂ per probe, where r is CG's final residual.
#[test]
fn loose_tolerance_bias_within_documented_bound() {
    let fam = Family::new(4);
    let theta = [0.1, 0.2, -0.3];
    let probes = 50;
    let h = fam.h(&theta);
    let op = DenseFaerOperator::new(vec![h.clone(); probes]).unwrap();
    let v = rademacher_probes(&mut rng(18), probes, D).unwrap();
    let vb = Mat::<f64>::from_fn(D, probes, |i, j| v[j * D + i]);
    let tight = cg_surrogate(&op, &vb, &CgParams::default().with_rtol(1e-13)).unwrap();
    let loose = cg_surrogate(
        &op,
        &vb,
        &CgParams::default().with_rtol(0.0).with_atol(1e-2),
    )
    .unwrap();
    assert!(loose.report.all_converged());
    assert!(loose.report.total_applications() < tight.report.total_applications());
    let (ut, ul) = (tight.u.to_host().unwrap(), loose.u.to_host().unwrap());
    let eig = eigh(&h).0;
    let h_inv_norm = 1.0 / eig[0];
    for k in 0..theta.len() {
        let step = 1e-4;
        let mut tp = theta.to_vec();
        let mut tm = theta.to_vec();
        tp[k] += step;
        tm[k] -= step;
        let dh = (fam.h(&tp) - fam.h(&tm)) * faer::Scale(0.5 / step);
        let dh_eigs = eigh(&dh).0;
        let dh_norm = dh_eigs[0].abs().max(dh_eigs[D - 1].abs());
        for p in 0..probes {
            let one = |u: &[f64]| -> f64 {
                let (up, vp) = (&u[p * D..(p + 1) * D], &v[p * D..(p + 1) * D]);
                (0..D)
                    .map(|i| (0..D).map(|j| up[i] * dh[(i, j)] * vp[j]).sum::<f64>())
                    .sum()
            };
            let bias = (one(&ul) - one(&ut)).abs();
            // ‖r‖₂ ≤ √d·‖r‖∞; ‖v‖₂ = √d for Rademacher.
            let r2 = (D as f64).sqrt() * loose.report.residual_norms[p];
            let bound = r2 * h_inv_norm * dh_norm * (D as f64).sqrt();
            assert!(
                bias <= bound * 1.0001 + 1e-12,
                "probe {p}: bias {bias} > bound {bound}"
            );
        }
    }
}
