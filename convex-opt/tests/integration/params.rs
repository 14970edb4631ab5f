//! Parameter validation of the L-BFGS solvers (every out-of-range field is an
//! `InvalidParameter` naming it, before any evaluation) and the flat solver's evaluation cap.

use argmin::core::{CostFunction, Error, Gradient};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, ConvexOptError, FlatLbfgsParams, FnPotential, InversionOptions,
    LbfgsParams, LineSearch, QuadraticPotential, Termination, invert_lbfgs_batched,
    invert_lbfgs_flat, minimize_lbfgs,
};
use nalgebra::{DMatrix, DVector};

/// `f(x) = ½ Σ_j (j + 1)(x_j − 1)²`.
struct Bowl;

impl CostFunction for Bowl {
    type Param = DVector<f64>;
    type Output = f64;
    fn cost(&self, x: &DVector<f64>) -> Result<f64, Error> {
        Ok(x.iter()
            .enumerate()
            .map(|(j, v)| 0.5 * (j + 1) as f64 * (v - 1.0).powi(2))
            .sum())
    }
}

impl Gradient for Bowl {
    type Param = DVector<f64>;
    type Gradient = DVector<f64>;
    fn gradient(&self, x: &DVector<f64>) -> Result<DVector<f64>, Error> {
        Ok(DVector::from_iterator(
            x.len(),
            x.iter()
                .enumerate()
                .map(|(j, v)| (j + 1) as f64 * (v - 1.0)),
        ))
    }
}

/// A potential that must never be evaluated: validation comes first.
fn never_called() -> impl convex_opt::BatchedPotential {
    FnPotential::new(|_x: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
        Err(candle_core::Error::Msg(
            "the potential was evaluated".into(),
        ))
    })
}

fn y() -> Tensor {
    Tensor::new(&[[1.0f64, -2.0, 3.0]], &Device::Cpu).unwrap()
}

/// `err` is an `InvalidParameter` whose message names `field`.
fn assert_names(err: ConvexOptError, field: &str) {
    match err {
        ConvexOptError::InvalidParameter(m) => assert!(m.contains(field), "{field}: {m}"),
        other => panic!("{field}: expected InvalidParameter, got {other:?}"),
    }
}

#[test]
fn hager_zhang_refuses_c1_of_one_half_or_more() {
    // Before the fix: Ok, not converged, LineSearchFailed after 1 iteration, with argmin's
    // "Potential bug … please file a report" as the termination text.
    for c1 in [0.5, 0.6] {
        let params = LbfgsParams::default().with_wolfe(c1, 0.9);
        let err = minimize_lbfgs(&Bowl, DVector::zeros(3), &params).unwrap_err();
        assert_names(err, "LbfgsParams.c1");
        let flat = FlatLbfgsParams::default().with_wolfe(c1, 0.9);
        let err = invert_lbfgs_flat(&never_called(), &y(), &InversionOptions::default(), &flat)
            .unwrap_err();
        assert_names(err, "FlatLbfgsParams.c1");
    }
    // Moré–Thuente takes any 0 < c1 < c2 < 1.
    let mt = LbfgsParams::default()
        .with_wolfe(0.6, 0.9)
        .with_line_search(LineSearch::MoreThuente);
    let res = minimize_lbfgs(&Bowl, DVector::zeros(3), &mt).unwrap();
    assert!(res.converged, "{}", res.termination);
    let a = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0, 2.0, 3.0]));
    for dtype in [DType::F64, DType::F32] {
        let pot = QuadraticPotential::new(&a, None, dtype, &Device::Cpu).unwrap();
        let flat = FlatLbfgsParams::default()
            .with_wolfe(0.6, 0.9)
            .with_line_search(LineSearch::MoreThuente);
        let y = y().to_dtype(dtype).unwrap();
        let res = invert_lbfgs_flat(&pot, &y, &InversionOptions::default(), &flat).unwrap();
        assert!(res.all_converged(), "{dtype:?}: {res}");
    }
}

#[test]
fn every_out_of_range_lbfgs_field_is_named() {
    let lbfgs = LbfgsParams::default();
    let cases = [
        (lbfgs.with_history(0), "LbfgsParams.history"),
        (lbfgs.with_wolfe(0.0, 0.9), "LbfgsParams.c1"),
        (lbfgs.with_wolfe(f64::NAN, 0.9), "LbfgsParams.c1"),
        (lbfgs.with_wolfe(1e-4, 1.0), "LbfgsParams.c2"),
        (lbfgs.with_wolfe(1e-4, f64::NAN), "LbfgsParams.c2"),
        (
            lbfgs.with_wolfe(0.3, 0.2),
            "LbfgsParams.c1 = 0.3 is not below",
        ),
        (
            lbfgs.with_gradient_tolerance(-1.0),
            "LbfgsParams.gradient_tolerance",
        ),
        (
            lbfgs.with_gradient_tolerance(f64::NAN),
            "LbfgsParams.gradient_tolerance",
        ),
        (
            lbfgs.with_cost_tolerance(-1e-12),
            "LbfgsParams.cost_tolerance",
        ),
    ];
    for (params, field) in cases {
        assert_names(
            minimize_lbfgs(&Bowl, DVector::zeros(3), &params).unwrap_err(),
            field,
        );
    }

    let flat = FlatLbfgsParams::default();
    let cases = [
        (flat.with_history(0), "FlatLbfgsParams.history"),
        (flat.with_wolfe(-1e-4, 0.9), "FlatLbfgsParams.c1"),
        (flat.with_wolfe(1e-4, 1.5), "FlatLbfgsParams.c2"),
        (
            flat.with_wolfe(0.3, 0.2)
                .with_line_search(LineSearch::MoreThuente),
            "FlatLbfgsParams.c1 = 0.3 is not below",
        ),
        (
            flat.with_cost_tolerance(f64::NAN),
            "FlatLbfgsParams.cost_tolerance",
        ),
    ];
    for (params, field) in cases {
        let err = invert_lbfgs_flat(&never_called(), &y(), &InversionOptions::default(), &params)
            .unwrap_err();
        assert_names(err, field);
    }

    let batched = BatchedLbfgsParams::default();
    let cases = [
        (batched.with_history(0), "BatchedLbfgsParams.history"),
        (batched.with_wolfe(0.0, 0.9), "BatchedLbfgsParams.c1"),
        (batched.with_wolfe(1e-4, 1.0), "BatchedLbfgsParams.c2"),
        (
            batched.with_wolfe(0.5, 0.1),
            "BatchedLbfgsParams.c1 = 0.5 is not below",
        ),
        (
            batched.with_max_line_search_evals(0),
            "BatchedLbfgsParams.max_line_search_evals",
        ),
        (
            batched.with_compaction_threshold(1.5),
            "BatchedLbfgsParams.compaction_threshold",
        ),
    ];
    for (params, field) in cases {
        let err =
            invert_lbfgs_batched(&never_called(), &y(), &InversionOptions::default(), &params)
                .unwrap_err();
        assert_names(err, field);
    }
}

#[test]
fn flat_evaluation_cap_is_its_own_parameter() {
    // The auditor's 5-d SPD quadratic: solved in 11 (f32) or 13 (f64) iterations, but the
    // default cap (1.25·max_iterations = 20 evaluations) stops a 16-iteration run early.
    let a = DMatrix::from_fn(5, 5, |i, j| if i == j { 1.0 + 3.0 * i as f64 } else { 0.1 });
    for dtype in [DType::F64, DType::F32] {
        let pot = QuadraticPotential::new(&a, None, dtype, &Device::Cpu).unwrap();
        let y = Tensor::new(&[[1.0f64, -2.0, 3.0, 0.5, 4.0]], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let opts = InversionOptions::default().with_max_iterations(16);
        let default = FlatLbfgsParams::default();
        assert_eq!(default.max_evaluations, None);
        let res = invert_lbfgs_flat(&pot, &y, &opts, &default).unwrap();
        assert_eq!(
            res.termination,
            vec![Termination::EvaluationBudget],
            "{dtype:?}"
        );
        assert!(res.iterations[0] < 16);
        // A cap of its own: the run converges within its 16 iterations...
        let raised = default.with_max_evaluations(200);
        let res = invert_lbfgs_flat(&pot, &y, &opts, &raised).unwrap();
        assert!(res.all_converged(), "{dtype:?}: {res}");
        assert!(res.iterations[0] <= 16, "{:?}", res.iterations);
        assert!(res.stats.gradient_calls > 20, "{:?}", res.stats);
        // ...and max_iterations still bounds it.
        let short = InversionOptions::default().with_max_iterations(5);
        let res = invert_lbfgs_flat(&pot, &y, &short, &raised).unwrap();
        assert_eq!(
            res.termination,
            vec![Termination::MaxIterations],
            "{dtype:?}"
        );
        assert_eq!(res.iterations, vec![5]);
        // A tight cap stops the run early (tested after each iteration, so one runs).
        let tight = default.with_max_evaluations(1);
        let res = invert_lbfgs_flat(&pot, &y, &opts, &tight).unwrap();
        assert_eq!(
            res.termination,
            vec![Termination::EvaluationBudget],
            "{dtype:?}"
        );
        assert_eq!(res.iterations, vec![1]);
    }
}

/// A history larger than the run can fill ("keep every pair": `usize::MAX`) used to be
/// allocated up front: a capacity-overflow panic in all three L-BFGS solvers, and for
/// `minimize_lbfgs` with `2⁴⁰` pairs an aborted allocation of 32 TiB. Each run stores one
/// pair per iteration, so such a history behaves as one of `max_iterations` pairs: the
/// results equal, bit for bit, those of a history of 1000 (more than the run's iterations).
#[test]
fn histories_longer_than_the_run_are_not_allocated() {
    let a = DMatrix::from_fn(5, 5, |i, j| if i == j { 1.0 + 3.0 * i as f64 } else { 0.1 });
    let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1.0f64, -2.0, 3.0, 0.5, 4.0]], &Device::Cpu).unwrap();
    let opts = InversionOptions::default().with_max_iterations(40);
    let bits = |t: &Tensor| -> Vec<u64> {
        let v: Vec<f64> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    for history in [usize::MAX, 1 << 40] {
        let batched = |m| {
            let params = BatchedLbfgsParams::default().with_history(m);
            invert_lbfgs_batched(&pot, &y, &opts, &params).unwrap()
        };
        let (long, finite) = (batched(history), batched(1000));
        assert!(long.all_converged(), "{long}");
        assert_eq!(bits(&long.x), bits(&finite.x));
        assert_eq!(long.iterations, finite.iterations);

        let flat = |m| {
            let params = FlatLbfgsParams::default()
                .with_history(m)
                .with_max_evaluations(200);
            invert_lbfgs_flat(&pot, &y, &opts, &params).unwrap()
        };
        let (long, finite) = (flat(history), flat(1000));
        assert!(long.all_converged(), "{long}");
        assert_eq!(bits(&long.x), bits(&finite.x));
        assert_eq!(long.iterations, finite.iterations);

        for max_iterations in [5, 200] {
            let run = |m| {
                let params = LbfgsParams::default()
                    .with_history(m)
                    .with_max_iterations(max_iterations)
                    .with_gradient_tolerance(1e-12);
                minimize_lbfgs(&Bowl, DVector::zeros(8), &params).unwrap()
            };
            let (long, finite) = (run(history), run(1000));
            assert_eq!(long.x, finite.x, "max_iterations {max_iterations}");
            assert_eq!(long.iterations, finite.iterations);
            assert_eq!(long.converged, finite.converged);
        }
    }
}
