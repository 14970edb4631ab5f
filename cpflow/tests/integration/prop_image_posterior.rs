//! Property tests (proptest, f64) for the multi-scale image flow (`cpflow::image::ImageFlow`)
//! and the VAE's amortised CP-Flow posterior (`cpflow::posterior::AmortizedPosterior`),
//! against references computed independently of the library's log-det code:
//! * image flows (every conv architecture, 1–3 scales, ActNorm, factor-out, `fc_end`, logit
//!   or none): `log p(x)` = `log N(z)` + `log|det|` of the central-difference Jacobian of the
//!   flow after its logit (at `y = logit(x)`) + the logit's closed-form log-Jacobian, and the
//!   bits per dimension from those nats; inverse of forward, sampling at a temperature,
//!   row-wise passes (batch vs one image, permutations), save/load bit for bit;
//! * posteriors (0–2 PICNN blocks, with or without scalar ActNorms): `log q(z | x)` of a
//!   sample = `log N(ε)` − `log|det ∂z/∂ε|` (central differences at fixed `μ, σ, h`),
//!   inversion by every solver, row-wise passes over contexts, the Gaussian base, and the
//!   context selecting the map.
//!
//! Fixed proptest seed, no failure persistence (as the other crates' property tests): a
//! failing case is shrunk, printed, and recurs on every run.

// Index loops over rows read more plainly than zipped iterators in these checks.
#![allow(clippy::needless_range_loop)]

#[path = "prop_image_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::image_common::{fd_jacobian, host, log_abs_det, max_abs_diff};
use crate::posterior_common::repeat_row;
use candle_core::{Device, Tensor};
use common::*;
use cpflow::image::{ImageFlow, LogitTransform, bits_per_dim};
use cpflow::{InverseParams, InverseSolver};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// `cases` cases from a fixed seed, no `proptest-regressions/` files in the source tree, and
/// shrinking capped (each case builds and initialises a flow; a failing image property
/// shrank in under 2 s).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x1ae6_e9f1),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// The reference `log p(x)` of one image and its `z`: the flow after its logit (`rest`, the
/// same weights) at `y = logit(x)` computed on the host, its Jacobian by central differences,
/// and the logit's log-Jacobian in closed form; without a logit, the whole flow at `x`.
fn reference_log_prob(flow: &ImageFlow, x: &[f64]) -> (f64, Vec<f64>) {
    let rest;
    let (map, y, logit_log_jac) = match logit_alpha(flow) {
        Some(alpha) => {
            rest = without_first_layer(flow);
            let (y, lj) = host_logit(x, alpha);
            (&rest, y, lj)
        }
        None => (flow, x.to_vec(), 0.0),
    };
    let z = host(&map.forward(&row(&y)).unwrap());
    let jac = fd_jacobian(&|u| map.forward(u).unwrap(), &y);
    let lp = standard_normal_log_density(&z) + log_abs_det(&jac) + logit_log_jac;
    (lp, z)
}

proptest! {
    #![proptest_config(config(48))]

    /// `log_prob_exact` equals the FD reference and `bits_per_dim` its closed form
    /// `−log p/(D ln 2) + 8`. Tolerance 1e-8·(1 + |log p|) (D ≤ 32): the FD log-det is good
    /// to ≈ D·1e-10·‖J⁻¹‖ (entries of J to 1e-10, `fd_jacobian`); measured over 300
    /// cases: ≤ 5.3e-10·(1 + |log p|), most ≤ 2e-10. The library's exact log-det (Cholesky
    /// of the dense Hessians) is good to rounding. A dropped logit term is ≥ D·ln 4 off, an
    /// FD Jacobian moved by 1e-6·I moves the reference by ≈ 1e-6·tr(J⁻¹).
    #[test]
    fn image_log_density_matches_the_fd_jacobian_of_the_whole_map(
        case in image_case(),
        r in 0..INIT_IMAGES,
    ) {
        let (flow, x) = case.build();
        let d = case.dim();
        let xr = host(&x.narrow(0, r, 1).unwrap());
        let (want, z_ref) = reference_log_prob(&flow, &xr);
        // The host logit and the flow's agree, so both sides score the same z (1e-10: y
        // differs by rounding, ≤ 1e-15·|y|, amplified by O(1)–O(10) Jacobians).
        let z = host(&flow.forward(&x.narrow(0, r, 1).unwrap()).unwrap());
        let dz = z.iter().zip(&z_ref).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        prop_assert!(dz <= 1e-10, "z vs z after the host logit: {}", dz);
        let got = host(&flow.log_prob_exact(&x).unwrap())[r];
        let tol = 1e-8 * (1.0 + want.abs());
        prop_assert!(
            (got - want).abs() <= tol,
            "log p {} vs reference {} (diff {:.3e})", got, want, got - want
        );
        let bpd = -want / (d as f64 * std::f64::consts::LN_2) + 8.0;
        prop_assert!(
            (bits_per_dim(got, d) - bpd).abs() <= tol / (d as f64 * std::f64::consts::LN_2) + 1e-12,
            "bpd {} vs {}", bits_per_dim(got, d), bpd
        );
    }

    /// Inverse of forward gives the images back, and a sample at temperature `T` maps forward
    /// to `T·ε` for the `ε` drawn on the host from the same seed; a logit flow's samples lie
    /// in the logit's range. The default solver stops each block at a residual of 1e-11 with
    /// `∇Φ` 1-strongly monotone (`sp(w₀) = 1` at init); the ActNorm and logit inverses (and,
    /// for the samples, the forward Jacobians) scale the errors by O(1)–O(10). Tolerances
    /// 1e-9 (images) and 2e-9 (samples); measured over 300 cases: ≤ 2.3e-11 and ≤ 1.2e-10.
    #[test]
    fn image_inverse_recovers_images_and_samples_map_back_to_their_noise(
        case in image_case(),
        temperature in 0.25f64..1.0,
        seed in 0u64..1000,
    ) {
        let (flow, x) = case.build();
        let d = case.dim();
        let inv = flow.inverse(&flow.forward(&x).unwrap()).unwrap();
        prop_assert!(inv.report.all_converged());
        let err = max_abs_diff(&inv.x, &x);
        prop_assert!(err <= 1e-9, "max |x − f⁻¹(f(x))| = {:.3e}", err);
        let n = 3;
        let s = flow.sample(n, temperature, &mut StdRng::seed_from_u64(seed)).unwrap();
        prop_assert!(s.report.all_converged());
        let mut rng = StdRng::seed_from_u64(seed);
        let eps: Vec<f64> = (0..n * d)
            .map(|_| rng.sample::<f64, _>(StandardNormal) * temperature)
            .collect();
        let back = host(&flow.forward(&s.x).unwrap());
        let err = back.iter().zip(&eps).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        prop_assert!(err <= 2e-9, "max |f(sample) − T·ε| = {:.3e}", err);
        if let Some(alpha) = case.logit_alpha {
            let (lo, hi) = LogitTransform::new(alpha).unwrap().range();
            prop_assert!(host(&s.x).iter().all(|v| (lo..=hi).contains(v)));
        }
    }

    /// A saved and loaded flow is the same flow bit for bit: configuration, every weight and
    /// init flag, log-densities, latents and samples from the same seed.
    #[test]
    fn image_save_load_round_trip_is_bit_identical(case in image_case(), seed in 0u64..1000) {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let (flow, x) = case.build();
        let dir = std::env::temp_dir().join(format!(
            "cpflow-prop-image-{}-{}",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join("flow.safetensors");
        flow.save(&path).unwrap();
        let back = ImageFlow::load(&path, &Device::Cpu).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        prop_assert_eq!(back.config(), flow.config());
        let (wa, wb) = (flow.weight_tensors(), back.weight_tensors());
        prop_assert_eq!(wa.len(), wb.len());
        for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
            prop_assert_eq!(na, nb);
            prop_assert_eq!(host(ta), host(tb), "weight {}", na);
        }
        let log_prob = |f: &ImageFlow| host(&f.log_prob_exact(&x).unwrap());
        prop_assert_eq!(log_prob(&flow), log_prob(&back));
        prop_assert_eq!(host(&flow.forward(&x).unwrap()), host(&back.forward(&x).unwrap()));
        let sample = |f: &ImageFlow| {
            host(&f.sample(2, 0.8, &mut StdRng::seed_from_u64(seed)).unwrap().x)
        };
        prop_assert_eq!(sample(&flow), sample(&back));
    }
}

// The row-wise passes run every pass once per image: fewer cases.
proptest! {
    #![proptest_config(config(16))]

    /// Every pass is row-wise: each image alone gives what it gets in the batch, and a
    /// permuted batch gives the permuted results (log-density, forward, inverse). Tolerances:
    /// forward and log-density 1e-11·(1 + |v|) (candle's products may round a row's last
    /// bits differently for another row count; the log-det adds D Cholesky steps of such
    /// rounding); inverse 1e-9 (two runs of the solver, each within 1e-8 of the truth and
    /// far closer to each other: the same Newton steps on the same row).
    #[test]
    fn image_passes_are_row_wise(
        case in image_case(),
        perm in Just((0..INIT_IMAGES).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let (flow, x) = case.build();
        let close = |a: &[f64], b: &[f64], tol: f64| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(p, q)| (p - q).abs() <= tol * (1.0 + q.abs()))
        };
        let lp = host(&flow.log_prob_exact(&x).unwrap());
        let z = flow.forward(&x).unwrap();
        let xs = flow.inverse(&z).unwrap().x;
        let (zh, xsh) = (host(&z), host(&xs));
        let d = case.dim();
        for r in 0..INIT_IMAGES {
            let xr = x.narrow(0, r, 1).unwrap();
            let lp_r = host(&flow.log_prob_exact(&xr).unwrap());
            prop_assert!(close(&lp_r, &lp[r..=r], 1e-11), "row {}: {:?} vs {}", r, lp_r, lp[r]);
            let z_r = flow.forward(&xr).unwrap();
            let z_r_batch = &zh[r * d..(r + 1) * d];
            prop_assert!(close(&host(&z_r), z_r_batch, 1e-11), "forward of row {}", r);
            let x_r = host(&flow.inverse(&z_r).unwrap().x);
            prop_assert!(close(&x_r, &xsh[r * d..(r + 1) * d], 1e-9), "inverse of row {}", r);
        }
        let xp = take_rows(&x, &perm);
        let want: Vec<f64> = perm.iter().map(|&i| lp[i]).collect();
        prop_assert!(close(&host(&flow.log_prob_exact(&xp).unwrap()), &want, 1e-11));
        let zp = flow.forward(&xp).unwrap();
        prop_assert!(close(&host(&zp), &host(&take_rows(&z, &perm)), 1e-11));
        let xp_back = host(&flow.inverse(&zp).unwrap().x);
        prop_assert!(close(&xp_back, &host(&take_rows(&xs, &perm)), 1e-9));
    }
}

/// `(z₀, z, log q, log det)` of `transform_noise_exact` on the host.
fn posterior_pass(
    q: &cpflow::posterior::AmortizedPosterior,
    case: &PosteriorCase,
    b: &PosteriorBatch,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let [mu, ls, h, eps] = case.tensors(b);
    let s = q.transform_noise_exact(&mu, &ls, &h, &eps).unwrap();
    (host(&s.z0), host(&s.z), host(&s.log_q), host(&s.log_det))
}

proptest! {
    #![proptest_config(config(96))]

    /// `log q(z | x)` of a sample equals `log N(ε; 0, I) − log|det ∂z/∂ε|` with the Jacobian of
    /// `ε ↦ z` by central differences at the row's fixed `(μ, log σ, h)`, and `log_det` (of
    /// `z₀ ↦ z`) equals that FD log-det minus `Σ log σ`. Tolerance 2e-9·(1 + |v|): d ≤ 4, so
    /// the FD log-det is good to ≈ 4·1e-10·‖J⁻¹‖ (measured over 300 cases: ≤ 1.8e-10); a
    /// Jacobian moved by 1e-6·I moves it by ≈ 1e-6·tr(J⁻¹) ≥ 1e-6·d/‖J‖.
    #[test]
    fn posterior_log_q_matches_the_fd_jacobian_of_the_noise_map(case in posterior_case()) {
        let q = case.build();
        let (d, dc, n) = (case.latent, case.context, 3);
        let b = case.batch(n, case.data_seed);
        let (_, _, log_q, log_det) = posterior_pass(&q, &case, &b);
        for r in 0..n {
            let br = b.rows(&[r], d, dc);
            let map = |e: &Tensor| {
                let m = e.dim(0).unwrap();
                let (mu, ls) = (repeat_row(&br.mu, m), repeat_row(&br.log_sigma, m));
                let h = repeat_row(&br.h, m);
                q.transform_noise_exact_detached(&mu, &ls, &h, e).unwrap().z
            };
            let fd = log_abs_det(&fd_jacobian(&map, &br.eps));
            let want_q = standard_normal_log_density(&br.eps) - fd;
            let want_det = fd - br.log_sigma.iter().sum::<f64>();
            prop_assert!(
                (log_q[r] - want_q).abs() <= 2e-9 * (1.0 + want_q.abs()),
                "row {}: log q {} vs {}", r, log_q[r], want_q
            );
            prop_assert!(
                (log_det[r] - want_det).abs() <= 2e-9 * (1.0 + want_det.abs()),
                "row {}: log det {} vs {}", r, log_det[r], want_det
            );
        }
    }

    /// Inverting a sample's `z` (every solver, per-row contexts) recovers its base point `z₀`
    /// and its `log q`. Tolerances: the solvers stop at a residual of 1e-10 per block, the
    /// blocks are 1-strongly monotone and the scalar ActNorm inverses scale by O(1)–O(10):
    /// `z₀` to 2e-9; `log q` moves by `|∇ log q|·|Δz₀|` with `|∇ log q| = O(|ε|/σ + d)`:
    /// 5e-9. Measured over 300 cases: ≤ 1.4e-10 and ≤ 2.7e-10.
    #[test]
    fn posterior_inversion_recovers_the_base_point(
        case in posterior_case(),
        solver in prop_oneof![
            Just(InverseSolver::NewtonCg),
            Just(InverseSolver::LbfgsBatched),
            Just(InverseSolver::LbfgsFlat)
        ],
    ) {
        let q = case.build();
        let b = case.batch(4, case.data_seed);
        let [mu, ls, h, eps] = case.tensors(&b);
        let s = q.transform_noise_exact(&mu, &ls, &h, &eps).unwrap();
        let params = InverseParams {
            abs_tolerance: Some(1e-10),
            rel_tolerance: Some(0.0),
            solver,
            ..Default::default()
        };
        let back = q.log_q_exact_at(&s.z, &mu, &ls, &h, &params).unwrap();
        prop_assert!(back.converged, "max residual {:.3e}", back.max_residual);
        let dz0 = max_abs_diff(&back.z0, &s.z0);
        prop_assert!(dz0 <= 2e-9, "max |Δz₀| = {:.3e}", dz0);
        let dlq = max_abs_diff(&back.log_q, &s.log_q);
        prop_assert!(dlq <= 5e-9, "max |Δ log q| = {:.3e}", dlq);
    }

    /// Rows are independent over contexts: each row alone gives what it gets in the batch,
    /// and a permuted batch gives the permuted results (exact pass and the chunked detached
    /// one). Tolerance 1e-12·(1 + |v|): rounding of products of other row counts (d ≤ 4).
    #[test]
    fn posterior_rows_are_independent_of_their_batch(
        case in posterior_case(),
        perm in Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let q = case.build();
        let (d, dc) = (case.latent, case.context);
        let b = case.batch(5, case.data_seed);
        let (z0, z, lq, ld) = posterior_pass(&q, &case, &b);
        let close = |a: &[f64], b: &[f64]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + q.abs()))
        };
        let pick = |v: &[f64], w: usize, idx: &[usize]| -> Vec<f64> {
            idx.iter().flat_map(|&i| v[i * w..(i + 1) * w].to_vec()).collect()
        };
        for r in 0..5 {
            let (z0r, zr, lqr, ldr) = posterior_pass(&q, &case, &b.rows(&[r], d, dc));
            let (z0_batch, z_batch) = (pick(&z0, d, &[r]), pick(&z, d, &[r]));
            prop_assert!(close(&z0r, &z0_batch) && close(&zr, &z_batch), "z of row {}", r);
            prop_assert!(close(&lqr, &lq[r..=r]) && close(&ldr, &ld[r..=r]), "log q of row {}", r);
        }
        let bp = b.rows(&perm, d, dc);
        let (_, zp, lqp, ldp) = posterior_pass(&q, &case, &bp);
        prop_assert!(close(&zp, &pick(&z, d, &perm)));
        prop_assert!(close(&lqp, &pick(&lq, 1, &perm)) && close(&ldp, &pick(&ld, 1, &perm)));
        let [mu, ls, h, eps] = case.tensors(&bp);
        let det = q.transform_noise_exact_detached(&mu, &ls, &h, &eps).unwrap();
        prop_assert!(close(&host(&det.z), &zp) && close(&host(&det.log_q), &lqp));
    }

    /// The base is `z₀ = μ + σ ⊙ ε` with `log q + log det = log N(z₀; μ, σ²)` (closed forms on
    /// the host); one context gives one map (two equal rows: equal outputs, bit for bit);
    /// another context gives another map when there are blocks, and the same one without
    /// (the Gaussian base and the scalar ActNorms ignore the context; with neither, `z = z₀`
    /// and `log det = 0`). Tolerances: `z₀` 4 ulp-scale (1e-15·(1 + |z₀|): candle's and the
    /// host's `exp` may differ in the last bit), `log N` 1e-12·(1 + |v|); the context moves
    /// `z` by O(0.01–1) here (gates N(0, 0.4²); measured over 300 cases: ≥ 5e-3), far above
    /// 1e-6.
    #[test]
    fn posterior_base_is_gaussian_and_the_context_selects_the_map(case in posterior_case()) {
        let q = case.build();
        let (d, dc) = (case.latent, case.context);
        // Rows 0 and 1 equal; row 2 = row 0 with another context.
        let mut b = case.batch(3, case.data_seed).rows(&[0, 0, 1], d, dc);
        for j in 0..d {
            b.mu[2 * d + j] = b.mu[j];
            b.log_sigma[2 * d + j] = b.log_sigma[j];
            b.eps[2 * d + j] = b.eps[j];
        }
        let (z0, z, lq, ld) = posterior_pass(&q, &case, &b);
        for i in 0..3 * d {
            let want = b.mu[i] + b.log_sigma[i].exp() * b.eps[i];
            let tol = 1e-15 * (1.0 + want.abs());
            prop_assert!((z0[i] - want).abs() <= tol, "z₀ {} vs {}", z0[i], want);
        }
        for r in 0..3 {
            let sl = r * d..(r + 1) * d;
            let want = standard_normal_log_density(&b.eps[sl.clone()])
                - b.log_sigma[sl].iter().sum::<f64>();
            prop_assert!(
                (lq[r] + ld[r] - want).abs() <= 1e-12 * (1.0 + want.abs()),
                "row {}: log N {} vs {}", r, lq[r] + ld[r], want
            );
        }
        prop_assert_eq!(&z[..d], &z[d..2 * d]);
        prop_assert_eq!(lq[0], lq[1]);
        let dz = z[..d].iter().zip(&z[2 * d..]).map(|(a, c)| (a - c).abs()).fold(0.0, f64::max);
        if case.blocks == 0 {
            prop_assert_eq!(&z[..d], &z[2 * d..]);
            prop_assert_eq!(lq[0], lq[2]);
            if !case.actnorm {
                prop_assert_eq!(&z, &z0);
                prop_assert!(ld.iter().all(|v| *v == 0.0));
            }
        } else {
            prop_assert!(dz > 1e-6, "another context moved z by {:.3e} only", dz);
        }
    }
}
