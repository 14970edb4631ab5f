//! What `slq_logdet` reports about its own bias (`StochasticEstimate::premature_breakdowns`,
//! `StochasticEstimate::floored_ritz_values`), Hutchinson's standard error at extreme scale,
//! and `exact_logdet` on a non-finite entry above the diagonal.
//!
//! Before these counts an SLQ estimate gave no sign of the bias that every probe shares (its
//! standard error is 0 then): f32 `diag(1 … 1e6)` with `m = d = 30` was 214.996 for a true
//! 207.233 (Lanczos stops at step 26 on krylov's `100·u` breakdown floor, `β ≈ 6` absolute),
//! and the singular `diag(1, 0)` was −31.44 instead of −∞ (the Ritz floor).

use faer::Mat;
use krylov::{DenseNalgebraOperator, LanczosParams, lanczos};
use logdet::{
    HutchinsonParams, LogdetError, SlqParams, exact_logdet, exact_logdet_flat, hutchinson_trace,
    slq_logdet,
};
use nalgebra::{DMatrix, DVector};

use crate::common::*;

/// `diag(10^(6k/(d−1)))`, `k = 0 … d−1`: condition number 1e6, log det `3·d·ln 10`.
#[cfg(feature = "candle")]
fn log_spaced(d: usize) -> Vec<f64> {
    (0..d)
        .map(|k| 10f64.powf(6.0 * k as f64 / (d - 1) as f64))
        .collect()
}

/// The audit's f32 case (condition number 1e6, beyond f32's `1/(100·u)` = 8.4e4): every probe
/// stops early, is counted, and the estimate is the biased 214.996 with standard error 0.
/// For a diagonal `H` a Rademacher probe's run is that of the all-ones probe up to signs, so
/// every probe gives the same value: the estimate does not depend on the seed, and the
/// standard error is 0 up to the rounding of the mean (1e-9 of 215 is far below f32's own
/// 1e-7 relative rounding). Bias bound: the value is 7.76 above the truth (measured), more
/// than 1 asserted; the truth is `Σ ln λ_k` in f64 (the f32 entries are within 6e-8 relative
/// of the f64 ones: 30 · 6e-8 ≈ 2e-6 in the sum).
#[cfg(feature = "candle")]
#[test]
fn f32_ill_conditioned_run_counts_its_premature_breakdowns() {
    use candle_core::{DType, Device, Tensor};
    use krylov::DenseTensorOperator;
    let d = 30;
    let diag = log_spaced(d);
    let truth: f64 = diag.iter().map(|l| l.ln()).sum();
    let mut m = vec![0.0f64; d * d];
    for (k, l) in diag.iter().enumerate() {
        m[k * d + k] = *l;
    }
    let dev = Device::Cpu;
    let h = Tensor::from_vec(m, (1, d, d), &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let op = DenseTensorOperator::new(h).unwrap();
    let like = Tensor::zeros((1, d), DType::F32, &dev).unwrap();
    let probes = 8;
    let params = SlqParams::default()
        .with_probes(probes)
        .with_lanczos_steps(d);
    let est = slq_logdet(&op, &like, &mut rng(21), &params).unwrap();
    assert!(
        est.estimate[0] - truth > 1.0 && est.std_err[0] < 1e-9 * truth,
        "estimate {} ± {} for a true {truth}",
        est.estimate[0],
        est.std_err[0]
    );
    assert!(
        (est.estimate[0] - 214.9958).abs() < 1e-3,
        "{}",
        est.estimate[0]
    );
    assert_eq!(est.premature_breakdowns, vec![probes], "{est:?}");
    assert_eq!(est.floored_ritz_values, vec![2 * probes], "{est:?}");
    // Lanczos itself: the stop before d, and the coupling it dropped, far above round-off.
    let ones = Tensor::ones((1, d), DType::F32, &dev).unwrap();
    let run = lanczos(&op, &ones, &LanczosParams::default().with_steps(d)).unwrap();
    assert!(run.breakdown[0] && run.sizes[0] < d, "{:?}", run.sizes);
    let smallest = run.ritz_values(0).unwrap()[0];
    // Measured: size 26, β = 6.01, θ_min = 1.56; both Ritz values below the floor
    // 100·u·1e6 = 11.9 of every probe are raised to it.
    assert!(
        run.breakdown_betas[0] > 1.0 * smallest,
        "dropped β {} vs smallest Ritz value {smallest}",
        run.breakdown_betas[0]
    );
}

/// `diag(1, 0)`: the zero eigenvalue is raised to the Ritz floor, so the estimate is finite
/// (−31.44, standard error 0: every Rademacher probe sees weight ½ on each eigenvalue) and
/// each probe counts one floored Ritz value. With `m = d = 2` no probe stops early.
#[test]
fn singular_matrix_counts_its_floored_ritz_value() {
    let op = DenseNalgebraOperator::new(vec![DMatrix::from_diagonal(&DVector::from_vec(vec![
        1.0f64, 0.0,
    ]))])
    .unwrap();
    let probes = 4;
    let params = SlqParams::default()
        .with_probes(probes)
        .with_lanczos_steps(2);
    let est = slq_logdet(&op, &DMatrix::<f64>::zeros(2, 1), &mut rng(22), &params).unwrap();
    // 2·(½ ln 1 + ½ ln(100·u·1)) = ln(100·u) = −31.44.
    let floored = (100.0 * f64::EPSILON).ln();
    assert!(
        (est.estimate[0] - floored).abs() < 1e-9,
        "{} vs {floored}",
        est.estimate[0]
    );
    assert_eq!(est.floored_ritz_values, vec![probes], "{est:?}");
    assert_eq!(est.premature_breakdowns, vec![0], "{est:?}");
}

/// Well-conditioned f64 operators give both counts 0: a rotated SPD matrix (condition number
/// 10, `m = d`), and `3·I`, whose Krylov space is invariant after one step, a breakdown before
/// the requested steps at round-off (an exact stop, not counted). Two systems in one batch.
#[test]
fn well_conditioned_operators_count_nothing() {
    let d = 8;
    let mut r = rng(23);
    let q = random_orthogonal(&mut r, d);
    let eigs: Vec<f64> = (0..d)
        .map(|k| 1.0 + 9.0 * k as f64 / (d - 1) as f64)
        .collect();
    let rotated = with_eigs(&q, &eigs);
    let mats = vec![
        DMatrix::from_fn(d, d, |i, j| rotated[(i, j)]),
        DMatrix::<f64>::identity(d, d) * 3.0,
    ];
    let op = DenseNalgebraOperator::new(mats).unwrap();
    let like = DMatrix::<f64>::zeros(d, 2);
    let params = SlqParams::default().with_probes(4).with_lanczos_steps(d);
    let est = slq_logdet(&op, &like, &mut r, &params).unwrap();
    assert_eq!(est.premature_breakdowns, vec![0, 0], "{est:?}");
    assert_eq!(est.floored_ritz_values, vec![0, 0], "{est:?}");
    // The identity's run did stop early (so the count had something to judge).
    let run = lanczos(
        &op,
        &DMatrix::from_element(d, 2, 1.0),
        &LanczosParams::default().with_steps(d),
    )
    .unwrap();
    assert_eq!((run.breakdown[1], run.sizes[1]), (true, 1), "{run:?}");
    assert!(
        run.breakdown_betas[1] <= 1e-14 * 3.0,
        "{:?}",
        run.breakdown_betas
    );
    assert_eq!((run.breakdown[0], run.breakdown_betas[0]), (false, 0.0));
}

/// Hutchinson on `c·[[4, 1], [1, 3]]`: Rademacher samples are `c·(7 ± 2)`. At `c = 1e300`
/// the squared deviations (4e600) overflowed and the standard error was `inf`; it is now
/// `c` times that of `c = 1` with the same probes, and both match the closed form from the
/// count of `9`s among the samples (the mean gives it). Tolerance 1e-14 relative: a few
/// roundings of sums of 8 terms (the power-of-two rescaling itself is exact).
#[test]
fn hutchinson_std_err_at_1e300_is_finite_and_scaled() {
    let run = |c: f64| {
        let op = DenseNalgebraOperator::new(vec![DMatrix::from_row_slice(
            2,
            2,
            &[4.0 * c, c, c, 3.0 * c],
        )])
        .unwrap();
        let params = HutchinsonParams::default().with_probes(8);
        hutchinson_trace(&op, &DMatrix::<f64>::zeros(2, 1), &mut rng(24), &params).unwrap()
    };
    let unit = run(1.0);
    let huge = run(1e300);
    let n = 8.0;
    let nines = ((unit.estimate[0] - 5.0) * n / 4.0).round();
    let mean = (9.0 * nines + 5.0 * (n - nines)) / n;
    let var = (nines * (9.0 - mean).powi(2) + (n - nines) * (5.0 - mean).powi(2)) / (n - 1.0);
    let se = (var / n).sqrt();
    assert!(se > 0.0, "the probes should not all agree: {unit:?}");
    assert!(
        (unit.std_err[0] - se).abs() <= 1e-14 * se,
        "{unit:?} vs {se}"
    );
    assert!(
        huge.std_err[0].is_finite() && (huge.std_err[0] / 1e300 - se).abs() <= 1e-14 * se,
        "{:?} vs {se}e300",
        huge.std_err
    );
    assert!((huge.estimate[0] / 1e300 - mean).abs() <= 1e-14 * mean);
    assert_eq!(
        (
            huge.premature_breakdowns.clone(),
            huge.floored_ritz_values.clone()
        ),
        (vec![0], vec![0])
    );
}

/// A NaN or ±Inf above the diagonal, which the Cholesky does not read, is refused by every
/// entry point, naming the entry (it gave the log-det of the lower triangle: 0 for a NaN above
/// an identity).
#[test]
fn exact_logdet_refuses_a_non_finite_entry_above_the_diagonal() {
    for value in [f64::NAN, f64::INFINITY] {
        let named = |r: Result<Vec<f64>, LogdetError>, what: &str| match r {
            Err(LogdetError::NonFiniteInput {
                system: 1,
                row: 0,
                col: 2,
                value: v,
            }) => assert_eq!(v.is_nan(), value.is_nan(), "{what}"),
            other => panic!("{what}: {other:?}"),
        };
        let bad = Mat::<f64>::from_fn(3, 3, |i, j| match (i, j) {
            (0, 2) => value,
            _ => f64::from(u8::from(i == j)),
        });
        let batch = [Mat::<f64>::identity(3, 3), bad.clone()];
        named(exact_logdet(&batch), "f64");
        let batch32: Vec<Mat<f32>> = batch
            .iter()
            .map(|m| Mat::from_fn(3, 3, |i, j| m[(i, j)] as f32))
            .collect();
        named(exact_logdet(&batch32), "f32");
        // Row-major: entry (0, 2) of matrix 1 is data[9 + 2].
        let mut flat = vec![0.0; 18];
        for k in 0..3 {
            flat[k * 4] = 1.0;
            flat[9 + k * 4] = 1.0;
        }
        flat[9 + 2] = value;
        named(exact_logdet_flat(&flat, 2, 3), "flat");
        #[cfg(feature = "candle")]
        {
            let t =
                candle_core::Tensor::from_vec(flat.clone(), (2, 3, 3), &candle_core::Device::Cpu)
                    .unwrap();
            named(logdet::exact_logdet_tensor(&t), "tensor");
        }
    }
}
