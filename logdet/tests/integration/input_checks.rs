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
            Err(LogdetError::NonPositiveRitzValue {
                system: 1,
                ritz_value,
                largest,
                ..
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
        Err(LogdetError::NonPositiveRitzValue { system: 0, .. })
    ));
    // The quadrature on its own.
    assert!(matches!(
        slq_quadrature_logdet(&[-2.0], &[], 3.0),
        Err(LogdetError::NonPositiveRitzValue { system: 0, .. })
    ));
}

/// Ritz values are floored only relative to the largest: within the round-off level
/// `100·u·max|θ|` of zero they count as that level, below minus it the matrix is refused.
/// They used to be floored at an absolute 1e-8 (diag(−1e-12, 1, 2) gave `log 1e-8 + log 2`,
/// `1e-12·I` gave `log 1e-8` per dimension). With m = d and a diagonal H each Rademacher probe
/// gives `Σ log max(h_i, level)` exactly (1e-9).
#[test]
fn ritz_values_are_floored_relative_to_the_largest_and_negative_ones_refused() {
    let mut r = rng(3);
    let params = SlqParams::default().with_probes(2).with_lanczos_steps(3);
    let like = DMatrix::<f64>::zeros(3, 1);
    for diag in [[-1e-3, 1.0, 2.0], [-0.5, 1.0, 2.0]] {
        assert!(
            matches!(
                slq_logdet(&diag_op(&[&diag]), &like, &mut r, &params),
                Err(LogdetError::NonPositiveRitzValue { system: 0, .. })
            ),
            "{diag:?}"
        );
    }
    let level = 100.0 * f64::EPSILON * 2.0;
    for diag in [[-1e-15, 1.0, 2.0], [0.0, 1.0, 2.0], [1e-15, 1.0, 2.0]] {
        let est = slq_logdet(&diag_op(&[&diag]), &like, &mut r, &params).unwrap();
        let expected = level.ln() + 2f64.ln();
        assert!(
            (est.estimate[0] - expected).abs() < 1e-9,
            "{diag:?}: {est:?}"
        );
    }
    // Rotated singular matrices: the value SLQ gives is checked in singular_floor.rs.
    let h = DMatrix::from_row_slice(3, 3, &[1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0]);
    let hf = Mat::<f64>::from_fn(3, 3, |i, j| h[(i, j)]);
    assert!(matches!(
        exact_logdet(&[Mat::<f64>::identity(3, 3), hf]),
        Err(LogdetError::NotPositiveDefinite { system: 1 })
    ));
    // Above the level: diag(1e-12, 1, 2) is kept. With m = d each Rademacher probe gives
    // Σ log θ_k, and the Ritz value of 1e-12 carries the absolute round-off O(u·‖H‖) ≈ 4e-16
    // of the Lanczos run, i.e. a relative (and log) error ≈ 4e-4 (measured 9e-5): 1e-3.
    let est = slq_logdet(&diag_op(&[&[1e-12, 1.0, 2.0]]), &like, &mut r, &params).unwrap();
    let expected = 1e-12f64.ln() + 2f64.ln();
    assert!(
        (est.estimate[0] - expected).abs() < 1e-3,
        "{:?} vs {expected}",
        est.estimate
    );
}

/// The quadrature's inputs are checked: a negative, NaN or infinite `‖v‖²` (−1 gave
/// `Ok(−0.69)`, NaN `Ok(NaN)`) is an invalid parameter; too few off-diagonal coefficients are
/// reported as such (they were reported as "non-finite Lanczos coefficients").
#[test]
fn quadrature_inputs_are_checked() {
    for norm_sq in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                slq_quadrature_logdet(&[2.0], &[], norm_sq),
                Err(LogdetError::InvalidParameter(_))
            ),
            "{norm_sq}"
        );
    }
    assert_eq!(slq_quadrature_logdet(&[2.0], &[], 0.0).unwrap(), 0.0);
    let e = slq_quadrature_logdet(&[1.0, 2.0, 3.0], &[0.5], 1.0).unwrap_err();
    assert!(
        matches!(
            e,
            LogdetError::CoefficientCountMismatch {
                system: 0,
                alphas: 3,
                betas: 1
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("off-diagonal"), "{e}");
    // Extra off-diagonal values are ignored (documented); non-finite ones are QuadratureFailed.
    let a = slq_quadrature_logdet(&[2.0, 3.0], &[0.5, 7.0], 1.0).unwrap();
    let b = slq_quadrature_logdet(&[2.0, 3.0], &[0.5], 1.0).unwrap();
    assert_eq!(a, b);
    assert!(matches!(
        slq_quadrature_logdet(&[2.0, f64::NAN], &[0.5], 1.0),
        Err(LogdetError::QuadratureFailed { system: 0 })
    ));
    // A finite norm whose product overflows is an error, not ±Inf.
    assert!(matches!(
        slq_quadrature_logdet(&[1e300], &[], 1e307),
        Err(LogdetError::QuadratureOverflow { system: 0, .. })
    ));
}

/// `slq_logdet_from_lanczos` with start vectors of huge or tiny norm: `vᵀ log(H) v` is
/// `‖v‖²·Σ τ² log θ`. For `H = diag(1, e, e²)` and `v = c·(1, 1, 1)` it is `3c²`: correct for
/// c = 1e150 (3e300) and 1e-160 (3e-320, subnormal: relative 1e-3), `QuadratureOverflow` for
/// c = 1e160 (3e320; the run used to be empty and the quadrature 0). `H = I` gives 0 for any
/// c (log I = 0), even when `‖v‖²` itself overflows.
#[test]
fn quadrature_of_huge_and_tiny_start_vectors() {
    let e = 1f64.exp();
    let scales = [1e150, 1e-160, 1e160, 1.0];
    let diag = [1.0, e, e * e];
    let op = diag_op(&[&diag[..]; 4]);
    let v0 = DMatrix::<f64>::from_fn(3, 4, |_, j| scales[j]);
    let res = lanczos(&op, &v0, &LanczosParams::default()).unwrap();
    assert_eq!(res.sizes, vec![3; 4]);
    match slq_logdet_from_lanczos(&res) {
        Err(LogdetError::QuadratureOverflow {
            system: 2,
            norm_sq,
            gauss_sum,
        }) => {
            assert_eq!(norm_sq, f64::INFINITY);
            assert!((gauss_sum - 1.0).abs() < 1e-12, "{gauss_sum}");
        }
        other => panic!("{other:?}"),
    }
    // Without the overflowing system: the correct values (the quadrature is exact with m = d;
    // relative 1e-12 for the normal ones).
    let v0 = DMatrix::<f64>::from_fn(3, 3, |_, j| [scales[0], scales[1], scales[3]][j]);
    let op = diag_op(&[&diag[..]; 3]);
    let q =
        slq_logdet_from_lanczos(&lanczos(&op, &v0, &LanczosParams::default()).unwrap()).unwrap();
    assert!((q[0] / 3e300 - 1.0).abs() < 1e-12, "{q:?}");
    assert!((q[1] / 3e-320 - 1.0).abs() < 1e-3, "{q:?}");
    assert!((q[2] - 3.0).abs() < 1e-12, "{q:?}");
    let eye = diag_op(&[&[1.0; 3]]);
    for c in [1e160, 1e308] {
        let res = lanczos(
            &eye,
            &DMatrix::<f64>::from_element(3, 1, c),
            &LanczosParams::default(),
        )
        .unwrap();
        assert_eq!(slq_logdet_from_lanczos(&res).unwrap(), vec![0.0], "{c}");
    }
}

/// SLQ keeps valid small (and large) eigenvalues: no absolute floor. A 4×4 `s·I` gave −73.68
/// for both s = 1e-9 (exact 4·log s = −82.89) and 1e-12 (−110.52): every Ritz value was
/// floored at 1e-8. For diagonal matrices with m = d every Rademacher probe gives the exact
/// log-det (up to round-off: 1e-12 relative); for a rotated matrix the estimate of `s·H` is
/// that of `H` plus `d·log s` (same seed: the Lanczos run of `s·H` is that of `H` scaled).
#[test]
fn slq_keeps_small_scale_eigenvalues() {
    let like = DMatrix::<f64>::zeros(4, 1);
    let params = SlqParams::default().with_probes(3).with_lanczos_steps(4);
    for s in [1e-9, 1e-12, 1e-200, 1e200] {
        for base in [[1.0; 4], [1.0, 2.0, 3.0, 4.0]] {
            let diag: Vec<f64> = base.iter().map(|b| s * b).collect();
            let est = slq_logdet(&diag_op(&[&diag]), &like, &mut rng(11), &params).unwrap();
            let exact: f64 = diag.iter().map(|v| v.ln()).sum();
            let ch = exact_logdet(&[Mat::<f64>::from_fn(4, 4, |i, j| {
                if i == j { diag[i] } else { 0.0 }
            })])
            .unwrap();
            assert!((ch[0] - exact).abs() < 1e-12 * exact.abs(), "{ch:?}");
            assert!(
                (est.estimate[0] - exact).abs() < 1e-12 * exact.abs(),
                "s = {s}: {} vs {exact}",
                est.estimate[0]
            );
            assert!(est.std_err[0] < 1e-12 * exact.abs());
        }
    }
    let mut r = rng(12);
    let d = 10;
    let eigs: Vec<f64> = (0..d).map(|k| 1.0 + 10.0 * k as f64).collect();
    let h = with_eigs(&random_orthogonal(&mut r, d), &eigs);
    let like = DMatrix::<f64>::zeros(d, 1);
    let params = SlqParams::default().with_probes(5).with_lanczos_steps(d);
    let est = |scale: f64| {
        let op = DenseNalgebraOperator::new(vec![DMatrix::from_fn(d, d, |i, j| scale * h[(i, j)])])
            .unwrap();
        slq_logdet(&op, &like, &mut rng(13), &params)
            .unwrap()
            .estimate[0]
    };
    let base = est(1.0);
    for s in [1e-12f64, 1e-100] {
        let shift = d as f64 * s.ln();
        // Round-off of the Lanczos run and the logs: 1e-10 of the magnitude.
        assert!(
            (est(s) - base - shift).abs() < 1e-10 * shift.abs(),
            "s = {s}: {} vs {}",
            est(s),
            base + shift
        );
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
        HutchinsonParams, LogdetError, ProbeDistribution, SlqParams, cg_surrogate, exact_logdet,
        exact_logdet_flat, exact_logdet_tensor, hutchinson_trace, probes_like, rademacher_like,
        slq_logdet,
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
    /// vectors: diag(1e-6, 1, 2) is at round-off level in f32 (1e-6 ≤ 100·u₃₂·2 = 2.4e-5:
    /// counted as that level) but not in f64 (level 4.4e-14: kept, and exact with m = d up to
    /// f64 round-off); diag(1e-3, 1, 2) is kept in both (f32: to f32 round-off of the Ritz values,
    /// relative ~1e-4 of 1e-3 per log, 1e-3 absolute is loose). (f32 used to floor
    /// round-off-level negatives and return a number; f64 floored positive ones.)
    #[test]
    fn tensor_slq_round_off_level_follows_the_precision() {
        let params = SlqParams::default().with_probes(2).with_lanczos_steps(3);
        for dtype in [DType::F32, DType::F64] {
            let like = Tensor::zeros((1, 3), dtype, &Device::Cpu).unwrap();
            assert!(matches!(
                slq_logdet(&diag_tensor(&[-2.0; 3], dtype), &like, &mut rng(8), &params),
                Err(LogdetError::NonPositiveRitzValue { system: 0, .. })
            ));
            let small = slq_logdet(
                &diag_tensor(&[1e-6, 1.0, 2.0], dtype),
                &like,
                &mut rng(8),
                &params,
            );
            match dtype {
                // Counted at the f32 round-off level 100·u₃₂·2 (its Ritz value carries f32
                // round-off of O(u₃₂·2), far below the level, so the floor is exact).
                DType::F32 => {
                    let level = 100.0 * f64::from(f32::EPSILON) * 2.0;
                    let expected = level.ln() + 2f64.ln();
                    let got = small.unwrap().estimate[0];
                    assert!((got - expected).abs() < 1e-3, "{got} vs {expected}");
                }
                _ => {
                    let expected = 1e-6f64.ln() + 2f64.ln();
                    assert!((small.unwrap().estimate[0] - expected).abs() < 1e-9);
                }
            }
            let kept = slq_logdet(
                &diag_tensor(&[1e-3, 1.0, 2.0], dtype),
                &like,
                &mut rng(8),
                &params,
            )
            .unwrap();
            let expected = 1e-3f64.ln() + 2f64.ln();
            assert!(
                (kept.estimate[0] - expected).abs() < 1e-3,
                "{dtype:?}: {kept:?}"
            );
        }
    }

    /// Probe tensors are float: a U32 `like` gave a u32 tensor of ones.
    #[test]
    fn probes_like_refuses_non_float_tensors() {
        for dtype in [DType::U32, DType::U8, DType::I64] {
            let like = Tensor::zeros((2, 3), dtype, &Device::Cpu).unwrap();
            for dist in [ProbeDistribution::Rademacher, ProbeDistribution::Gaussian] {
                assert!(matches!(
                    probes_like(&like, &mut rng(14), dist),
                    Err(LogdetError::NotFloat { .. })
                ));
            }
            assert!(matches!(
                rademacher_like(&like, &mut rng(14)),
                Err(LogdetError::NotFloat { .. })
            ));
        }
        let like = Tensor::zeros((2, 3), DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(
            rademacher_like(&like, &mut rng(14)).unwrap().dtype(),
            DType::BF16
        );
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

/// A probe batch (`like`) of another shape than the operator's is refused before any work,
/// naming the estimator and its argument: SLQ's error named lanczos's "start vectors", an
/// argument the caller never passed (Hutchinson's named itself).
#[test]
fn estimators_name_themselves_in_shape_mismatches() {
    let op = diag_op(&[&[1.0, 2.0, 3.0]]);
    let wrong = DMatrix::<f64>::zeros(2, 1);
    let context = |r: Result<logdet::StochasticEstimate, LogdetError>| match r {
        Err(LogdetError::Krylov(krylov::KrylovError::ShapeMismatch {
            context,
            expected,
            found,
        })) => {
            assert_eq!((expected, found), ((1, 3), (1, 2)));
            context
        }
        other => panic!("unexpected {other:?}"),
    };
    let slq = slq_logdet(&op, &wrong, &mut rng(0), &SlqParams::default());
    assert_eq!(context(slq), "slq_logdet: probe batch (like) vs operator");
    let hutch = hutchinson_trace(&op, &wrong, &mut rng(0), &HutchinsonParams::default());
    assert_eq!(
        context(hutch),
        "hutchinson_trace: probe batch (like) vs operator"
    );
}
