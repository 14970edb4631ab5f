//! Inputs the estimators cannot handle give typed errors, never a confident number or a panic:
//! operators that are not positive definite (SLQ), non-finite operator products (Hutchinson),
//! invalid Ritz floors, sizes that overflow; the exact entry points read the same triangle.

use faer::Mat;
use krylov::{DenseNalgebraOperator, LanczosParams, lanczos};
use logdet::{
    HutchinsonParams, LogdetError, SlqParams, exact_logdet, exact_logdet_flat, gaussian_probes,
    hutchinson_trace, rademacher_probes, slq_logdet, slq_logdet_from_lanczos,
    slq_quadrature_logdet,
};
use nalgebra::DMatrix;

use crate::common::*;

fn diag_op(diags: &[&[f64]]) -> DenseNalgebraOperator<f64> {
    DenseNalgebraOperator::new(
        diags
            .iter()
            .map(|d| DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(d)))
            .collect(),
    )
    .unwrap()
}

/// −2·I and diag(1, 2, −3) used to give confident numbers (3·ln 1e-8 = −55.3 with std_err 0,
/// and −17.7): every negative Ritz value was replaced by the floor. With `m = d` the Ritz
/// values are the eigenvalues, so the most negative one is reported, with the system.
#[test]
fn slq_refuses_operators_that_are_not_positive_definite() {
    let like = DMatrix::<f64>::zeros(3, 2);
    let params = SlqParams::default().with_probes(3).with_lanczos_steps(3);
    for (bad, most_negative) in [
        (&[-2.0, -2.0, -2.0][..], -2.0),
        (&[1.0, 2.0, -3.0][..], -3.0),
    ] {
        let op = diag_op(&[&[1.0, 2.0, 3.0], bad]);
        match slq_logdet(&op, &like, &mut rng(1), &params) {
            Err(LogdetError::NegativeRitzValue {
                system: 1,
                ritz_value,
                largest,
            }) => {
                // Ritz values of a diagonal matrix from m = d steps: exact to round-off.
                assert!((ritz_value - most_negative).abs() < 1e-12, "{ritz_value}");
                assert!(largest >= 2.0 - 1e-12, "{largest}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // With fewer steps than d the Ritz values still see the negative part.
    let op = diag_op(&[&[-2.0; 6]]);
    assert!(matches!(
        slq_logdet(
            &op,
            &DMatrix::<f64>::zeros(6, 1),
            &mut rng(2),
            &SlqParams::default().with_lanczos_steps(2)
        ),
        Err(LogdetError::NegativeRitzValue { system: 0, .. })
    ));
    // The quadrature on its own.
    assert!(matches!(
        slq_quadrature_logdet(&[-2.0], &[], 3.0, 1e-8),
        Err(LogdetError::NegativeRitzValue { system: 0, .. })
    ));
}

/// Round-off-level negative Ritz values are floored, not refused: a singular PSD matrix
/// (eigenvalue 0, computed Ritz value O(u‖H‖) of either sign) and diag(−1e-12, 1, 2)
/// (relative −5e-13, far above the f64 threshold −√u ≈ −1.5e-8) give finite estimates; at
/// diag(−1e-6, 1, 2) (relative −5e-7) f64 Lanczos cannot be blamed and it is refused.
#[test]
fn slq_floors_round_off_negatives() {
    let mut r = rng(3);
    let d = 12;
    let eigs: Vec<f64> = (0..d).map(|k| k as f64).collect();
    let singular = with_eigs(&random_orthogonal(&mut r, d), &eigs);
    let op =
        DenseNalgebraOperator::new(vec![DMatrix::from_fn(d, d, |i, j| singular[(i, j)])]).unwrap();
    let est = slq_logdet(
        &op,
        &DMatrix::<f64>::zeros(d, 1),
        &mut r,
        &SlqParams::default().with_probes(4).with_lanczos_steps(d),
    )
    .unwrap();
    assert!(est.estimate[0].is_finite());

    let params = SlqParams::default().with_probes(2).with_lanczos_steps(3);
    let like = DMatrix::<f64>::zeros(3, 1);
    let est = slq_logdet(&diag_op(&[&[-1e-12, 1.0, 2.0]]), &like, &mut r, &params).unwrap();
    // Rademacher probe, m = d: each probe gives Σ_k log max(λ_k, 1e-8) exactly.
    let expected = 1e-8f64.ln() + 2f64.ln();
    assert!(
        (est.estimate[0] - expected).abs() < 1e-9,
        "{:?}",
        est.estimate
    );
    assert!(matches!(
        slq_logdet(&diag_op(&[&[-1e-6, 1.0, 2.0]]), &like, &mut r, &params),
        Err(LogdetError::NegativeRitzValue { system: 0, .. })
    ));
}

/// The Ritz floor must be finite and > 0 (−1 and NaN used to be accepted; 0 gives log 0).
#[test]
fn ritz_floor_must_be_positive_and_finite() {
    let op = diag_op(&[&[1.0, 2.0, 3.0]]);
    let like = DMatrix::<f64>::zeros(3, 1);
    let res = lanczos(&op, &like.add_scalar(1.0), &LanczosParams::default()).unwrap();
    for floor in [-1.0, 0.0, f64::NAN, f64::INFINITY] {
        let params = SlqParams::default().with_ritz_floor(floor);
        assert!(
            matches!(
                slq_logdet(&op, &like, &mut rng(4), &params),
                Err(LogdetError::InvalidParameter(_))
            ),
            "{floor}"
        );
        assert!(matches!(
            slq_quadrature_logdet(&[1.0], &[], 1.0, floor),
            Err(LogdetError::InvalidParameter(_))
        ));
        assert!(matches!(
            slq_logdet_from_lanczos(&res, floor),
            Err(LogdetError::InvalidParameter(_))
        ));
    }
}

/// A NaN (or Inf) operator gives a typed error naming the system, as SLQ's QuadratureFailed
/// does (it used to return Ok with a NaN estimate).
#[test]
fn hutchinson_reports_non_finite_products() {
    let like = DMatrix::<f64>::zeros(3, 2);
    for bad in [f64::NAN, f64::INFINITY] {
        let op = DenseNalgebraOperator::new(vec![
            DMatrix::<f64>::identity(3, 3),
            DMatrix::from_element(3, 3, bad),
        ])
        .unwrap();
        match hutchinson_trace(
            &op,
            &like,
            &mut rng(5),
            &HutchinsonParams::default().with_probes(3),
        ) {
            Err(LogdetError::NonFiniteSample { system: 1, value }) => {
                assert!(!value.is_finite())
            }
            other => panic!("{bad}: {other:?}"),
        }
        assert!(matches!(
            slq_logdet(&op, &like, &mut rng(5), &SlqParams::default()),
            Err(LogdetError::QuadratureFailed { system: 1 })
        ));
    }
}

/// Sizes whose element count overflows are typed errors, not arithmetic-overflow panics
/// (debug) or wrapped products (release).
#[test]
fn overflowing_sizes_are_errors() {
    assert!(matches!(
        exact_logdet_flat(&[1.0], usize::MAX / 2, 2),
        Err(LogdetError::SizeOverflow { .. })
    ));
    assert!(matches!(
        exact_logdet_flat(&[1.0], 2, usize::MAX / 2),
        Err(LogdetError::SizeOverflow { .. })
    ));
    // d = 0: any B matches the empty slice, but B results must be allocatable (it pushed
    // zeros until memory ran out); a modest B of empty matrices gives B zeros.
    assert!(matches!(
        exact_logdet_flat(&[], usize::MAX, 0),
        Err(LogdetError::SizeOverflow { .. })
    ));
    assert_eq!(exact_logdet_flat(&[], 3, 0).unwrap(), vec![0.0; 3]);
    // B·d·d fits but does not match: the length error.
    assert!(matches!(
        exact_logdet_flat(&[1.0], 1, 2),
        Err(LogdetError::WrongLength {
            expected: 4,
            found: 1
        })
    ));
    // Probe batches: the product overflows, or it fits in usize but not in memory.
    for (b, d) in [(usize::MAX, 2), (usize::MAX / 4, 1)] {
        assert!(matches!(
            rademacher_probes(&mut rng(6), b, d),
            Err(LogdetError::SizeOverflow { .. })
        ));
        assert!(matches!(
            gaussian_probes(&mut rng(6), b, d),
            Err(LogdetError::SizeOverflow { .. })
        ));
    }
}

/// Row-major flat data of `mats`.
fn flat(mats: &[Mat<f64>]) -> Vec<f64> {
    let d = mats[0].nrows();
    mats.iter()
        .flat_map(|m| (0..d * d).map(move |k| m[(k / d, k % d)]))
        .collect()
}

/// The exact entry points read the same (lower) triangle of a non-symmetric input: for
/// [[1, 100], [0, 1]] `exact_logdet` gave 0 and the flat one NotPositiveDefinite. A matrix
/// with an SPD lower triangle and garbage above gives the log-det of the symmetric matrix
/// built from its lower triangle, through both entry points.
#[test]
fn exact_entry_points_read_the_same_triangle() {
    let upper = Mat::<f64>::from_fn(2, 2, |i, j| {
        if i == j {
            1.0
        } else if i < j {
            100.0
        } else {
            0.0
        }
    });
    let lower = upper.transpose().to_owned();
    assert_eq!(
        exact_logdet(std::slice::from_ref(&upper)).unwrap(),
        vec![0.0]
    );
    assert_eq!(exact_logdet_flat(&flat(&[upper]), 1, 2).unwrap(), vec![0.0]);
    assert!(matches!(
        exact_logdet(std::slice::from_ref(&lower)),
        Err(LogdetError::NotPositiveDefinite { system: 0 })
    ));
    assert!(matches!(
        exact_logdet_flat(&flat(&[lower]), 1, 2),
        Err(LogdetError::NotPositiveDefinite { system: 0 })
    ));

    let mut r = rng(7);
    let d = 6;
    let spd = with_eigs(
        &random_orthogonal(&mut r, d),
        &[1.0, 2.0, 3.0, 5.0, 8.0, 13.0],
    );
    let garbage = gaussian_mat(&mut r, d, d);
    let mixed = Mat::from_fn(d, d, |i, j| {
        if i >= j {
            spd[(i, j)]
        } else {
            50.0 * garbage[(i, j)]
        }
    });
    let expected = (2.0 * 3.0 * 5.0 * 8.0 * 13.0f64).ln();
    let a = exact_logdet(std::slice::from_ref(&mixed)).unwrap();
    let b = exact_logdet_flat(&flat(&[mixed]), 1, d).unwrap();
    // Cholesky is backward stable: error O(u·d·cond) ≪ 1e-10 at cond 13.
    assert!((a[0] - expected).abs() < 1e-10, "{a:?}");
    assert!((b[0] - expected).abs() < 1e-10, "{b:?}");
}

#[cfg(feature = "candle")]
mod candle {
    use super::{flat, with_eigs};
    use crate::common::*;
    use candle_core::{DType, Device, Tensor};
    use faer::Mat;
    use krylov::{CgParams, DenseTensorOperator};
    use logdet::{
        HutchinsonParams, LogdetError, SlqParams, cg_surrogate, exact_logdet, exact_logdet_flat,
        exact_logdet_tensor, hutchinson_trace, slq_logdet,
    };

    fn diag_tensor(diag: &[f64], dtype: DType) -> DenseTensorOperator {
        let d = diag.len();
        let data: Vec<f64> = (0..d * d)
            .map(|k| if k / d == k % d { diag[k / d] } else { 0.0 })
            .collect();
        let t = Tensor::from_vec(data, (1, d, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        DenseTensorOperator::new(t).unwrap()
    }

    /// The tensor path refuses −2·I too, and judges round-off at the precision of the Lanczos
    /// vectors: diag(−1e-6, 1, 2) is a round-off-level negative in f32 (relative −5e-7 vs
    /// the f32 threshold −√u ≈ −3.5e-4: floored) but not in f64 (threshold −1.5e-8: refused).
    #[test]
    fn tensor_slq_negative_ritz_threshold_follows_the_precision() {
        let params = SlqParams::default().with_probes(2).with_lanczos_steps(3);
        for dtype in [DType::F32, DType::F64] {
            let like = Tensor::zeros((1, 3), dtype, &Device::Cpu).unwrap();
            assert!(matches!(
                slq_logdet(&diag_tensor(&[-2.0; 3], dtype), &like, &mut rng(8), &params),
                Err(LogdetError::NegativeRitzValue { system: 0, .. })
            ));
            let near = slq_logdet(
                &diag_tensor(&[-1e-6, 1.0, 2.0], dtype),
                &like,
                &mut rng(8),
                &params,
            );
            match dtype {
                DType::F32 => assert!(near.unwrap().estimate[0].is_finite()),
                _ => assert!(matches!(near, Err(LogdetError::NegativeRitzValue { .. }))),
            }
        }
    }

    /// Empty batches give empty results (cg_surrogate used to fail with candle's "empty tensor
    /// for reduce").
    #[test]
    fn empty_tensor_batches() {
        let op =
            DenseTensorOperator::new(Tensor::zeros((0, 3, 3), DType::F64, &Device::Cpu).unwrap())
                .unwrap();
        let v = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
        let s = cg_surrogate(&op, &v, &CgParams::default()).unwrap();
        assert!(s.report.converged.is_empty());
        assert_eq!(s.u.dims(), &[0, 3]);
        let h = hutchinson_trace(&op, &v, &mut rng(9), &HutchinsonParams::default()).unwrap();
        assert!(h.estimate.is_empty());
        let e = slq_logdet(&op, &v, &mut rng(9), &SlqParams::default()).unwrap();
        assert!(e.estimate.is_empty());
    }

    /// `exact_logdet_tensor` reads the lower triangle like the other two.
    #[test]
    fn tensor_exact_logdet_reads_the_lower_triangle() {
        let mut r = rng(10);
        let d = 5;
        let spd = with_eigs(&random_orthogonal(&mut r, d), &[1.0, 2.0, 4.0, 8.0, 16.0]);
        let mixed = Mat::from_fn(d, d, |i, j| if i >= j { spd[(i, j)] } else { -40.0 });
        let data = flat(std::slice::from_ref(&mixed));
        let t = Tensor::from_vec(data.clone(), (1, d, d), &Device::Cpu).unwrap();
        let a = exact_logdet(std::slice::from_ref(&mixed)).unwrap();
        let b = exact_logdet_flat(&data, 1, d).unwrap();
        let c = exact_logdet_tensor(&t).unwrap();
        // Same data, same factorisation up to memory layout: agreement to round-off.
        assert!((a[0] - 1024f64.ln()).abs() < 1e-10, "{a:?}");
        assert!((a[0] - b[0]).abs() < 1e-12 && (a[0] - c[0]).abs() < 1e-12);
        let upper = Tensor::new(&[[[1.0f64, 100.0], [0.0, 1.0]]], &Device::Cpu).unwrap();
        assert_eq!(exact_logdet_tensor(&upper).unwrap(), vec![0.0]);
        // Integer matrices are refused (a u32 identity returned 0.0).
        let ints = Tensor::new(&[[[1u32, 0], [0, 1]]], &Device::Cpu).unwrap();
        assert!(matches!(
            exact_logdet_tensor(&ints),
            Err(LogdetError::NotFloat { .. })
        ));
    }
}
