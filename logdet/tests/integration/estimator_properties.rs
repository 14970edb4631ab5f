//! Property tests (proptest, fixed seed) of the stochastic estimators on random SPD batches,
//! against dense nalgebra references:
//! * with `m = d` Lanczos steps SLQ's quadrature is exact, so each probe's value is
//!   `vᵀ log(H) v` up to rounding, and `slq_logdet` / `hutchinson_trace` are the means (and
//!   standard errors) of the dense forms of the probes they draw, which the tests re-draw from
//!   the same seed (`draw_probes(rng, distribution, B, d)` once per round, system-major, as
//!   both functions document);
//! * the estimators are unbiased (the mean of many probes is within 6 standard errors);
//! * the CG surrogate's probe-averaged gradient matches central differences of the exact
//!   log-det for random families `H(θ) = A(θ)ᵀA(θ) + αI`.
//!
//! Per-probe tolerance of the `m = d` quadrature ([`quadrature_tol`]): Lanczos with full
//! re-orthogonalisation is backward stable, `T` is orthogonally similar to `H + E` with
//! `‖E‖₂ ≤ c·d·u·‖H‖₂`, and the log's Fréchet derivative is bounded by `1/λ_min`, so
//! `|‖v‖² e₁ᵀ log(T) e₁ − vᵀ log(H) v| ≤ ‖v‖²·c·d·u·κ`; the dense reference has an error of
//! the same form. A breakdown at `β ≤ tol·‖H‖` (krylov's `breakdown_tol`, 1e-10 in
//! `slq_logdet`) drops a coupling of that size: `‖v‖²·tol·κ` more. The sums of logs add
//! `‖v‖²·d·u·max|log λ|`. Constants: `c = 16` for each side. Measured over 2,000 cases per
//! test: at most 0.08 of the tolerance with the `100·u` floor (κ ≤ 1e8), 3e-5 of it with
//! `slq_logdet`'s 1e-10 (κ ≤ 1e4: a first-order bound; the truncation's effect is smaller).
#![allow(clippy::needless_range_loop)] // index loops mirror the maths in these checks

use crate::common::*;
use faer::Mat;
use krylov::{BatchVectors, CgParams, DenseFaerOperator, LanczosParams, lanczos};
use logdet::{
    HutchinsonParams, ProbeDistribution, SlqParams, cg_surrogate, draw_probes, exact_logdet,
    hutchinson_trace, slq_logdet, slq_logdet_from_lanczos,
};
use nalgebra::DMatrix;
use proptest::prelude::*;
use rand::Rng;

/// Standard errors allowed between a probe mean and its expectation. The checks below use the
/// exact per-probe variance σ² (closed forms), and means of P ≥ 200 probes, whose distribution
/// is close to normal: `P(|Z| > 6) = 2e-9` per check. Rademacher samples are bounded; the
/// Gaussian-probe samples are weighted χ², whose right tail is heavier: for the worst case (all
/// weight on one eigenvalue, χ²₂₀₀/200 with P = 200) Wilson–Hilferty gives 1.5e-7 at 6σ. Over
/// the ~400 checks of a run the false-alarm probability is below 1e-4 for any seed (and the
/// fixed seed makes the outcome deterministic), while a bias of more than 6σ/√P fails. (Over
/// 2,000 cases per test, ~12,000 checks, the largest deviation seen was 4.1σ.)
const K_SIGMA: f64 = 6.0;

fn distribution(gaussian: bool) -> ProbeDistribution {
    if gaussian {
        ProbeDistribution::Gaussian
    } else {
        ProbeDistribution::Rademacher
    }
}

/// `bsz` random SPD matrices (condition number `cond`, each scaled by `10^U(−2, 2)`) and their
/// designed spectra.
fn spd_batch(seed: u64, d: usize, bsz: usize, cond: f64) -> (Vec<Mat<f64>>, Vec<Vec<f64>>) {
    let mut r = rng(seed);
    (0..bsz)
        .map(|_| {
            let s = 10f64.powf(r.random_range(-2.0..=2.0));
            spd_with_condition(&mut r, d, cond, s)
        })
        .unzip()
}

/// The probes `slq_logdet` and `hutchinson_trace` draw from `rng(seed)`: `probes[p][i]` is
/// round `p`'s probe of system `i`.
fn redraw_probes(
    seed: u64,
    dist: ProbeDistribution,
    rounds: usize,
    b: usize,
    d: usize,
) -> Vec<Vec<Vec<f64>>> {
    let mut r = rng(seed);
    (0..rounds)
        .map(|_| {
            let flat = draw_probes(&mut r, dist, b, d).unwrap();
            flat.chunks(d).map(<[f64]>::to_vec).collect()
        })
        .collect()
}

/// Per-probe tolerance of the `m = d` quadrature (module docs): `‖v‖²·(κ·(32·d·u + tol) +
/// 8·d·u·(max|log λ| + 1))`.
fn quadrature_tol(norm_sq: f64, d: usize, cond: f64, max_abs_log: f64, breakdown: f64) -> f64 {
    let d = d as f64;
    norm_sq * (cond * (32.0 * d * U + breakdown) + 8.0 * d * U * (max_abs_log + 1.0))
}

fn max_abs_log(eigs: &[f64]) -> f64 {
    eigs.iter().map(|l| l.ln().abs()).fold(0.0, f64::max)
}

fn norm_sq(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum()
}

/// Mean and standard error (sample sd / √n) as `StochasticEstimate` reports them.
fn mean_and_std_err(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Exact per-probe variance of `vᵀMv`: Rademacher `2(‖M_s‖_F² − Σ M_kk²)`, Gaussian
/// `2‖M_s‖_F²` (`M_s` the symmetric part).
fn probe_variance(m: &DMatrix<f64>, dist: ProbeDistribution) -> f64 {
    let ms = (m + m.transpose()) * 0.5;
    let fro2 = ms.norm_squared();
    match dist {
        ProbeDistribution::Gaussian => 2.0 * fro2,
        ProbeDistribution::Rademacher => 2.0 * (fro2 - ms.diagonal().norm_squared()),
    }
}

proptest! {
    #![proptest_config(proptest_config(64))]

    /// `slq_logdet` with `m = d` (4 probes) is the mean of `vᵀ log(H) v` over the probes it
    /// draws, per system, and its `std_err` their standard error, to the quadrature tolerance
    /// (d = 1…16, κ = 1…1e4, Rademacher or Gaussian). `hutchinson_trace` from the same seed is
    /// the mean of `vᵀHv` (rounding: `γ_d·|v|ᵀ|H||v| ≤ d^{3/2}·u·‖v‖²·‖H‖` per side, 4× that
    /// allowed). Scaling: SLQ of `c·H` (same seed, `c = 10^U(−6, 6)`) is that of `H` plus
    /// `mean ‖v‖²·log c`.
    #[test]
    fn slq_and_hutchinson_are_means_of_dense_forms(
        seed in any::<u64>(), d in 1usize..=16, bsz in 1usize..=4,
        log_cond in 0.0f64..=4.0, gaussian in any::<bool>(), log_c in -6.0f64..=6.0,
    ) {
        let (cond, dist, rounds) = (10f64.powf(log_cond), distribution(gaussian), 4);
        let (mats, eigs) = spd_batch(seed, d, bsz, cond);
        let like = Mat::<f64>::zeros(d, bsz);
        let op = DenseFaerOperator::new(mats.clone()).unwrap();
        let probe_seed = seed.wrapping_add(1);
        let params = SlqParams::default()
            .with_probes(rounds)
            .with_lanczos_steps(d)
            .with_distribution(dist);
        let slq = slq_logdet(&op, &like, &mut rng(probe_seed), &params).unwrap();
        let c = 10f64.powf(log_c);
        let op_c =
            DenseFaerOperator::new(mats.iter().map(|m| m * faer::Scale(c)).collect()).unwrap();
        let slq_c = slq_logdet(&op_c, &like, &mut rng(probe_seed), &params).unwrap();
        let hutch_params = HutchinsonParams::default().with_probes(rounds).with_distribution(dist);
        let hutch = hutchinson_trace(&op, &like, &mut rng(probe_seed), &hutch_params).unwrap();
        let probes = redraw_probes(probe_seed, dist, rounds, bsz, d);
        for i in 0..bsz {
            let vs: Vec<&[f64]> = probes.iter().map(|round| &round[i][..]).collect();
            let max_norm_sq = vs.iter().map(|v| norm_sq(v)).fold(0.0, f64::max);
            let mean_norm_sq = vs.iter().map(|v| norm_sq(v)).sum::<f64>() / rounds as f64;

            let log_h = dense_fn(&mats[i], f64::ln);
            let forms: Vec<f64> = vs.iter().map(|v| quad_form(&log_h, v)).collect();
            let (mean, se) = mean_and_std_err(&forms);
            let tol = quadrature_tol(max_norm_sq, d, cond, max_abs_log(&eigs[i]), 1e-10);
            prop_assert!(
                (slq.estimate[i] - mean).abs() <= tol,
                "SLQ system {}: {} vs dense {} (tol {:e})", i, slq.estimate[i], mean, tol
            );
            // |se_x − se_y| ≤ max_p |x_p − y_p| / √(P − 1).
            prop_assert!((slq.std_err[i] - se).abs() <= tol, "{} vs {}", slq.std_err[i], se);
            prop_assert_eq!(slq.applications[i], rounds * d);

            let shift = mean_norm_sq * c.ln();
            let tol_c = tol
                + quadrature_tol(max_norm_sq, d, cond, max_abs_log(&eigs[i]) + c.ln().abs(), 1e-10);
            prop_assert!(
                (slq_c.estimate[i] - slq.estimate[i] - shift).abs() <= tol_c,
                "c = {}: {} vs {} + {}", c, slq_c.estimate[i], slq.estimate[i], shift
            );

            let h = to_nalgebra(&mats[i]);
            let forms: Vec<f64> = vs.iter().map(|v| quad_form(&h, v)).collect();
            let (mean, se) = mean_and_std_err(&forms);
            let lmax = eigs[i][d - 1];
            let tol = 8.0 * (d as f64).powf(1.5) * U * max_norm_sq * lmax;
            prop_assert!(
                (hutch.estimate[i] - mean).abs() <= tol,
                "Hutchinson system {}: {} vs dense {} (tol {:e})", i, hutch.estimate[i], mean, tol
            );
            prop_assert!((hutch.std_err[i] - se).abs() <= tol, "{} vs {}", hutch.std_err[i], se);
        }
    }

    /// The quadrature of a Lanczos run with `m = d` steps is `vᵀ log(H) v` to rounding also for
    /// condition numbers up to 1e8, through `lanczos` + `slq_logdet_from_lanczos` with the
    /// smallest breakdown threshold (krylov's floor `100·u`) on given probes.
    #[test]
    fn full_krylov_quadrature_is_exact_up_to_cond_1e8(
        seed in any::<u64>(), d in 1usize..=16, bsz in 1usize..=4,
        log_cond in 0.0f64..=8.0, gaussian in any::<bool>(),
    ) {
        let cond = 10f64.powf(log_cond);
        let (mats, eigs) = spd_batch(seed, d, bsz, cond);
        let v = draw_probes(&mut rng(seed ^ 1), distribution(gaussian), bsz, d).unwrap();
        let vb = Mat::<f64>::from_fn(d, bsz, |a, j| v[j * d + a]);
        let op = DenseFaerOperator::new(mats.clone()).unwrap();
        let params = LanczosParams::default().with_steps(d).with_breakdown_tol(0.0);
        let quad = slq_logdet_from_lanczos(&lanczos(&op, &vb, &params).unwrap()).unwrap();
        for i in 0..bsz {
            let vi = &v[i * d..(i + 1) * d];
            let expected = quad_form(&dense_fn(&mats[i], f64::ln), vi);
            let tol = quadrature_tol(norm_sq(vi), d, cond, max_abs_log(&eigs[i]), 100.0 * U);
            prop_assert!(
                (quad[i] - expected).abs() <= tol,
                "system {}: {} vs {} (tol {:e})", i, quad[i], expected, tol
            );
        }
    }

    /// SLQ of one block-diagonal operator `H_1 ⊕ … ⊕ H_B ⊕ H_1` (the first block repeated: the
    /// spectrum has repeated eigenvalues, so the Krylov space is invariant after at most
    /// `B·d < n` steps) with `m = n` is the sum of the blocks' dense forms
    /// `Σ_b v_bᵀ log(H_b) v_b` of its probe, per probe (blocks of scale 1, κ ≤ 1e4). Whether
    /// Lanczos sees the invariance as a breakdown (`β ≤ 1e-10·‖H‖`) depends on how rounding
    /// grows in the basis (measured: 93 % of 2,000 cases stop early); the quadrature must be
    /// exact either way: a continued run only adds directions coupled by `β ≈ u`-level terms.
    #[test]
    fn slq_of_block_diagonal_operator_sums_the_blocks(
        seed in any::<u64>(), d in 1usize..=8, bsz in 1usize..=3,
        log_cond in 0.0f64..=4.0, gaussian in any::<bool>(),
    ) {
        let cond = 10f64.powf(log_cond);
        let mut r = rng(seed);
        let (mut blocks, mut eigs): (Vec<Mat<f64>>, Vec<Vec<f64>>) =
            (0..bsz).map(|_| spd_with_condition(&mut r, d, cond, 1.0)).unzip();
        blocks.push(blocks[0].clone());
        eigs.push(eigs[0].clone());
        let n = d * blocks.len();
        let whole = Mat::<f64>::from_fn(n, n, |i, j| {
            if i / d == j / d { blocks[i / d][(i % d, j % d)] } else { 0.0 }
        });
        let dist = distribution(gaussian);
        let params = SlqParams::default().with_probes(2).with_lanczos_steps(n).with_distribution(dist);
        let op = DenseFaerOperator::new(vec![whole]).unwrap();
        let est = slq_logdet(&op, &Mat::<f64>::zeros(n, 1), &mut rng(seed ^ 2), &params).unwrap();
        let logs: Vec<DMatrix<f64>> = blocks.iter().map(|b| dense_fn(b, f64::ln)).collect();
        let probes = redraw_probes(seed ^ 2, dist, 2, 1, n);
        let forms: Vec<f64> = probes
            .iter()
            .map(|round| {
                let v = &round[0];
                (0..blocks.len()).map(|b| quad_form(&logs[b], &v[b * d..(b + 1) * d])).sum()
            })
            .collect();
        let max_norm_sq = probes.iter().map(|round| norm_sq(&round[0])).fold(0.0, f64::max);
        let all_eigs: Vec<f64> = eigs.concat();
        let tol = quadrature_tol(max_norm_sq, n, cond, max_abs_log(&all_eigs), 1e-10);
        let mean = 0.5 * (forms[0] + forms[1]);
        prop_assert!(
            (est.estimate[0] - mean).abs() <= tol,
            "{} vs Σ blocks {} (tol {:e})", est.estimate[0], mean, tol
        );
    }
}

proptest! {
    #![proptest_config(proptest_config(48))]

    /// Unbiasedness: Hutchinson (400 probes) estimates `tr H` and SLQ (`m = d`, 200 probes)
    /// `Σ log λ` (nalgebra's eigenvalues) within `K_SIGMA` exact standard errors σ/√P, for
    /// d = 2…12, κ = 1…1e3, both probe kinds (σ² from the closed forms of [`probe_variance`];
    /// plus 1e-9 relative for rounding, which matters only where σ = 0).
    #[test]
    fn hutchinson_and_slq_are_unbiased(
        seed in any::<u64>(), d in 2usize..=12, bsz in 1usize..=3,
        log_cond in 0.0f64..=3.0, gaussian in any::<bool>(),
    ) {
        let (cond, dist) = (10f64.powf(log_cond), distribution(gaussian));
        let (mats, _) = spd_batch(seed, d, bsz, cond);
        let like = Mat::<f64>::zeros(d, bsz);
        let op = DenseFaerOperator::new(mats.clone()).unwrap();
        let (p_h, p_s) = (400, 200);
        let hutch = hutchinson_trace(
            &op, &like, &mut rng(seed ^ 3),
            &HutchinsonParams::default().with_probes(p_h).with_distribution(dist),
        ).unwrap();
        let slq = slq_logdet(
            &op, &like, &mut rng(seed ^ 4),
            &SlqParams::default().with_probes(p_s).with_lanczos_steps(d).with_distribution(dist),
        ).unwrap();
        for i in 0..bsz {
            let h = to_nalgebra(&mats[i]);
            let log_h = dense_fn(&mats[i], f64::ln);
            let log_det: f64 = nalgebra::SymmetricEigen::new(h.clone())
                .eigenvalues.iter().map(|l| l.ln()).sum();
            for (name, est, exact, m, p) in [
                ("Hutchinson", hutch.estimate[i], h.trace(), &h, p_h),
                ("SLQ", slq.estimate[i], log_det, &log_h, p_s),
            ] {
                let se = (probe_variance(m, dist) / p as f64).sqrt();
                let tol = K_SIGMA * se + 1e-9 * (1.0 + exact.abs());
                prop_assert!(
                    (est - exact).abs() <= tol,
                    "{} system {}: {} vs {} (σ/√P = {:e})", name, i, est, exact, se
                );
            }
        }
    }
}

/// `A(θ) = A₀ + Σ_k θ_k A_k` and `H(θ) = A(θ)ᵀA(θ) + αI`, `∂_k H = A_kᵀA + AᵀA_k`.
struct Family {
    a: Vec<Mat<f64>>,
    alpha: f64,
}

impl Family {
    fn a_of(&self, theta: &[f64]) -> Mat<f64> {
        let mut a = self.a[0].clone();
        for (k, t) in theta.iter().enumerate() {
            a += &self.a[k + 1] * faer::Scale(*t);
        }
        a
    }

    fn h(&self, theta: &[f64]) -> Mat<f64> {
        let (a, d) = (self.a_of(theta), self.a[0].nrows());
        a.transpose() * &a + Mat::<f64>::identity(d, d) * faer::Scale(self.alpha)
    }

    fn dh(&self, theta: &[f64], k: usize) -> Mat<f64> {
        let a = self.a_of(theta);
        self.a[k + 1].transpose() * &a + a.transpose() * &self.a[k + 1]
    }
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// The CG surrogate on random families (d = 2…10, 1–3 parameters, α ∈ [0.2, 1], both probe
    /// kinds, P = 1,000 probes solved as one batch at rtol 1e-12): the probe mean of
    /// `∂θ_k[uᵀH(θ)v] = uᵀ(∂_k H)v` (u held fixed) matches the central difference (step 1e-5)
    /// of `exact_logdet`, within `K_SIGMA·σ/√P` (σ² the exact variance of `vᵀH⁻¹(∂_kH)v`) plus
    /// the documented CG bias bound `mean_p ‖r_p‖₂‖H⁻¹‖₂‖∂_kH‖₂‖v_p‖₂` (r_p = v_p − H u_p,
    /// recomputed here) plus the central difference's own error, measured against Jacobi's
    /// formula `tr(H⁻¹∂_kH)` (which it must match to 1e-6 relative).
    #[test]
    fn surrogate_gradient_matches_central_differences(
        seed in any::<u64>(), d in 2usize..=10, n_params in 1usize..=3,
        alpha in 0.2f64..=1.0, gaussian in any::<bool>(),
    ) {
        let mut r = rng(seed);
        let scale = 1.0 / (d as f64).sqrt();
        let fam = Family {
            a: (0..=n_params).map(|_| gaussian_mat(&mut r, d, d) * faer::Scale(scale)).collect(),
            alpha,
        };
        let theta: Vec<f64> = (0..n_params).map(|_| r.random_range(-1.0..=1.0)).collect();
        let probes = 1000;
        let dist = distribution(gaussian);
        let h = fam.h(&theta);
        let v = draw_probes(&mut r, dist, probes, d).unwrap();
        let vb = Mat::<f64>::from_fn(d, probes, |a, j| v[j * d + a]);
        let op = DenseFaerOperator::new(vec![h.clone(); probes]).unwrap();
        let s = cg_surrogate(&op, &vb, &CgParams::default().with_rtol(1e-12)).unwrap();
        prop_assert!(s.report.all_converged());
        let u = s.u.to_host().unwrap();

        let hn = to_nalgebra(&h);
        let eig = nalgebra::SymmetricEigen::new(hn.clone()).eigenvalues;
        let h_inv_norm = 1.0 / eig.min();
        let h_inv = hn.clone().cholesky().unwrap().inverse();
        // ‖r_p‖₂·‖v_p‖₂ averaged over the probes.
        let residual_mass = (0..probes)
            .map(|p| {
                let (up, vp) = (&u[p * d..(p + 1) * d], &v[p * d..(p + 1) * d]);
                let rp = nalgebra::DVector::from_column_slice(vp)
                    - &hn * nalgebra::DVector::from_column_slice(up);
                rp.norm() * norm_sq(vp).sqrt()
            })
            .sum::<f64>() / probes as f64;
        for k in 0..n_params {
            let dh = to_nalgebra(&fam.dh(&theta, k));
            let got = (0..probes)
                .map(|p| {
                    let up = nalgebra::DVector::from_column_slice(&u[p * d..(p + 1) * d]);
                    let vp = nalgebra::DVector::from_column_slice(&v[p * d..(p + 1) * d]);
                    up.dot(&(&dh * vp))
                })
                .sum::<f64>() / probes as f64;

            let step = 1e-5;
            let (mut tp, mut tm) = (theta.clone(), theta.clone());
            tp[k] += step;
            tm[k] -= step;
            let ld = exact_logdet(&[fam.h(&tp), fam.h(&tm)]).unwrap();
            let fd = (ld[0] - ld[1]) / (2.0 * step);
            let m = &h_inv * &dh;
            let jacobi = m.trace();
            let fd_err = (fd - jacobi).abs();
            prop_assert!(fd_err <= 1e-6 * (1.0 + jacobi.abs()), "FD {} vs Jacobi {}", fd, jacobi);

            let se = (probe_variance(&m, dist) / probes as f64).sqrt();
            let dh_norm = nalgebra::SymmetricEigen::new(dh.clone())
                .eigenvalues.iter().fold(0.0f64, |acc, l| acc.max(l.abs()));
            let bias = residual_mass * h_inv_norm * dh_norm;
            let tol = K_SIGMA * se + bias + fd_err + 1e-9 * (1.0 + jacobi.abs());
            prop_assert!(
                (got - fd).abs() <= tol,
                "θ_{}: surrogate {} vs FD {} (σ/√P {:e}, bias bound {:e})", k, got, fd, se, bias
            );
        }
    }
}
