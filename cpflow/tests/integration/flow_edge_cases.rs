//! Batches at the edges of what a flow evaluates, found by an external audit:
//! - a row that overflows the flow (`[1e308, 0.5]` in f64: an ActNorm scale above 1 takes it
//!   to ∞, and the block's Hessian there is NaN) failed the whole batch with logdet's
//!   "not positive definite (Cholesky failed)" (SLQ: "non-finite Lanczos coefficients"); it
//!   now gets a NaN log-density on its own, as a row whose `z` merely overflows (`1e200`)
//!   already got `−∞`, and the other rows keep their values;
//! - `sample(0)` failed with "data is empty (0 rows)"; it now gives a `(0, d)` sample, as
//!   zuko and torch do, and the evaluation passes give `(0,)` results for 0 rows.

use candle_core::{DType, Device, Tensor};
use cpflow::{
    Dataset, FloatType, Flow, FlowConfig, FlowRng, InverseParams, InverseSolver, NllEstimator,
    SlqConfig, nll_estimate,
};

use crate::flow_common::{data, icnn3, two_block_flow};

/// A two-block flow whose first ActNorm scales by ~50 (initialised on data of spread ~0.02):
/// a coordinate of `huge` (near the float type's maximum) overflows to ∞ there.
fn flow_that_overflows(float: FloatType) -> Flow {
    let cfg = FlowConfig::tabular(2, 2, icnn3(2, 8, 3))
        .with_float(float)
        .with_init_seed(3);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x = (data(64, 2, 4) * 0.01)
        .unwrap()
        .to_dtype(float.dtype())
        .unwrap();
    flow.initialize(&x).unwrap();
    flow
}

/// Rows of ordinary points (f64), the kind the flow was initialised on.
fn ordinary_rows(n: usize) -> Vec<[f64; 2]> {
    data(n, 2, 7)
        .affine(0.01, 0.0)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(|r| [r[0], r[1]])
        .collect()
}

fn tensor(rows: &[[f64; 2]], dtype: DType) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

#[test]
fn a_row_that_overflows_gets_nan_alone_in_the_exact_pass() {
    for (float, huge, tol) in [(FloatType::F64, 1e308, 1e-12), (FloatType::F32, 3e38, 1e-4)] {
        let flow = flow_that_overflows(float);
        let dtype = float.dtype();
        let good = ordinary_rows(4);
        // [good 0, good 1, overflow, good 2, z overflows (f64) or overflow (f32), good 3]
        let far = if float == FloatType::F64 {
            1e200
        } else {
            -huge
        };
        let rows = [good[0], good[1], [huge, 0.5], good[2], [far, 0.5], good[3]];
        let lp = values(&flow.log_prob_exact(&tensor(&rows, dtype)).unwrap());
        let want = values(&flow.log_prob_exact(&tensor(&good, dtype)).unwrap());
        for (got, want) in [lp[0], lp[1], lp[3], lp[5]].into_iter().zip(&want) {
            assert!(
                (got - want).abs() <= tol * want.abs().max(1.0),
                "{float:?}: {got} vs {want}"
            );
        }
        assert!(lp[2].is_nan(), "{float:?}: {lp:?}");
        assert!(!lp[4].is_finite(), "{float:?}: {lp:?}");
        if float == FloatType::F64 {
            // z overflows, the Jacobian is fine: −∞ from the prior, as before.
            assert_eq!(lp[4], f64::NEG_INFINITY);
        }
        // `transform` and the `log_prob` alias agree.
        let (_, ld) = flow.transform(&tensor(&rows, dtype)).unwrap();
        assert!(values(&ld)[2].is_nan());
        let alias = values(&flow.log_prob(&tensor(&rows, dtype)).unwrap());
        assert_eq!(format!("{alias:?}"), format!("{lp:?}"));
    }
}

#[test]
fn a_row_that_overflows_gets_nan_alone_in_the_slq_pass() {
    let params = SlqConfig {
        probes: 3,
        steps: 2,
    };
    for (float, huge, tol) in [(FloatType::F64, 1e308, 1e-12), (FloatType::F32, 3e38, 1e-5)] {
        let flow = flow_that_overflows(float);
        let good = ordinary_rows(5);
        // The same batch with row 2 ordinary: every row draws the same probes, so the other
        // rows' estimates must not change (rows are independent systems of one Lanczos run).
        let with = [good[0], good[1], [huge, 0.5], good[3], good[4]];
        let without = [good[0], good[1], good[2], good[3], good[4]];
        let run = |rows: &[[f64; 2]]| {
            let mut rng = FlowRng::seed_from_u64(11);
            flow.log_prob_slq(&tensor(rows, float.dtype()), &params, &mut rng)
                .unwrap()
        };
        let (bad, reference) = (run(&with), run(&without));
        let (lp, want) = (values(&bad.log_prob), values(&reference.log_prob));
        for i in [0, 1, 3, 4] {
            assert!(
                (lp[i] - want[i]).abs() <= tol * want[i].abs().max(1.0),
                "{float:?}: {lp:?} vs {want:?}"
            );
            assert!((bad.std_err[i] - reference.std_err[i]).abs() <= tol);
            assert!(bad.std_err[i].is_finite());
        }
        assert!(
            lp[2].is_nan() && bad.std_err[2].is_nan(),
            "{float:?}: {lp:?} {:?}",
            bad.std_err
        );
    }

    // The data-set scores: one non-finite row counted, no error, with either estimator.
    let flow = flow_that_overflows(FloatType::F64);
    let mut rows = ordinary_rows(5);
    rows[2] = [1e308, 0.5];
    let ds = Dataset::new(tensor(&rows, DType::F64));
    for estimator in [NllEstimator::Exact, NllEstimator::Slq(params.clone())] {
        let mut rng = FlowRng::seed_from_u64(12);
        let est = nll_estimate(&flow, &ds, &estimator, 2, &mut rng).unwrap();
        assert_eq!((est.n, est.non_finite), (5, 1), "{estimator:?}");
        assert!(est.mean.is_nan(), "{est:?}");
    }
}

#[test]
fn sampling_zero_points_gives_an_empty_sample() {
    let flow = two_block_flow(3, 5);
    flow.initialize(&data(32, 3, 6)).unwrap();
    let mut rng = FlowRng::seed_from_u64(0);
    let empty_report = |s: &cpflow::FlowInverse| {
        assert_eq!(s.x.dims(), &[0, 3]);
        assert_eq!(s.x.dtype(), DType::F64);
        assert!(s.report.converged.is_empty() && s.report.blocks.is_empty());
        assert!(s.report.all_converged() && s.report.num_failed() == 0);
    };
    empty_report(&flow.sample(0, &mut rng).unwrap());
    let params = InverseParams {
        solver: InverseSolver::LbfgsFlat,
        ..Default::default()
    };
    empty_report(&flow.sample_with(0, &params, &mut rng).unwrap());
    let (s, lp) = flow.sample_and_log_prob(0, &mut rng).unwrap();
    empty_report(&s);
    assert_eq!(lp.dims(), &[0]);
    let (s, lp) = flow.sample_and_log_prob_with(0, &params, &mut rng).unwrap();
    empty_report(&s);
    assert_eq!(lp.dims(), &[0]);

    // The evaluation passes and the inverse of 0 rows: empty results of the right shapes.
    let none = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
    assert_eq!(flow.log_prob(&none).unwrap().dims(), &[0]);
    let (z, ld) = flow.transform(&none).unwrap();
    assert_eq!((z.dims(), ld.dims()), (&[0, 3][..], &[0][..]));
    let slq = flow
        .log_prob_slq(&none, &SlqConfig::default(), &mut rng)
        .unwrap();
    assert_eq!(slq.log_prob.dims(), &[0]);
    assert!(slq.std_err.is_empty());
    empty_report(&flow.inverse(&none).unwrap());
    // Still checked: the column count, and `check_input` (documented: at least one row).
    let wrong = Tensor::zeros((0, 2), DType::F64, &Device::Cpu).unwrap();
    assert!(flow.log_prob(&wrong).is_err());
    assert!(flow.check_input(&none, None).is_err());
}

/// Inverting a batch with one huge but finite row (`1e308` or `1e200`, f64): the block's
/// potential is not finite at the solver's initial point for that row. Before the fix the
/// per-row solvers refused the whole batch ("non-finite values in potential … at the initial
/// point", no row named); now the row is reported failed on its own and the other rows get
/// exactly the inversion of the batch without it.
#[test]
fn a_huge_row_fails_alone_in_the_inverse() {
    for blocks in [1, 2] {
        let cfg = FlowConfig::tabular(2, blocks, icnn3(2, 8, 2))
            .with_float(FloatType::F64)
            .with_init_seed(5);
        let flow = Flow::new(cfg, &Device::Cpu).unwrap();
        flow.initialize(&data(64, 2, 6)).unwrap();
        let good = data(4, 2, 8);
        let (z_good, _) = flow.transform(&good).unwrap();
        let zg = z_good.to_vec2::<f64>().unwrap();
        for huge in [1e308, 1e200] {
            let rows = [
                [zg[0][0], zg[0][1]],
                [huge, 0.0],
                [zg[1][0], zg[1][1]],
                [zg[2][0], zg[2][1]],
                [zg[3][0], zg[3][1]],
            ];
            let z = tensor(&rows, DType::F64);
            for solver in [InverseSolver::NewtonCg, InverseSolver::LbfgsBatched] {
                let what = format!("{blocks} blocks, {huge:e}, {solver:?}");
                let p = InverseParams {
                    solver,
                    ..Default::default()
                };
                let inv = flow
                    .inverse_with(&z, &p)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let alone = flow.inverse_with(&z_good, &p).unwrap();
                assert!(alone.report.all_converged(), "{what}");
                assert!(!inv.report.converged[1], "{what}");
                assert_eq!(inv.report.num_failed(), 1, "{what}");
                let x = inv.x.to_vec2::<f64>().unwrap();
                let xa = alone.x.to_vec2::<f64>().unwrap();
                for (k, r) in [0, 2, 3, 4].into_iter().enumerate() {
                    assert!(inv.report.converged[r], "{what}");
                    assert!(
                        x[r].iter()
                            .zip(&xa[k])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: row {r}: {:?} vs {:?}",
                        x[r],
                        xa[k]
                    );
                }
            }
        }
    }
}
