use super::*;
use crate::{FloatType, FlowConfig, FlowRng, PotentialConfig, SlqConfig, TrainConfig, Trainer};
use candle_core::Device;

/// A conditional f64 flow `[AN, CPF, AN]` on a PICNN (2 inputs, 1 context feature),
/// initialised, and its 6 rows of data and context.
fn conditional_flow() -> (Flow, Tensor, Tensor) {
    let pot = PotentialConfig::Picnn(icnn::PicnnConfig {
        dim: 2,
        context_dim: 1,
        width: 4,
        depth: 2,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64) * 0.4 - 0.9).collect();
    let x = Tensor::from_vec(x, (6, 2), &Device::Cpu).unwrap();
    let c: Vec<f64> = (0..6).map(|i| i as f64 * 0.3 - 0.5).collect();
    let c = Tensor::from_vec(c, (6, 1), &Device::Cpu).unwrap();
    flow.initialize_given(&x, &c).unwrap();
    (flow, x, c)
}

/// A data set whose context does not fit its data (other row counts, tensors that are not
/// matrices) is an `InvalidInput` naming the whole set's shapes, from `Dataset::check`,
/// from the NLL estimates (exact and SLQ, in chunks of 4 rows) and from the trainer
/// (training and validation sets). Before, the estimates called a scalar `x` "empty", a
/// scalar context one of "0 rows", and named a chunk's shape (`[4]` of a `[6]` vector).
#[test]
fn a_context_that_does_not_fit_the_data_is_refused_by_every_consumer() {
    let (flow, x, c) = conditional_flow();
    let dev = Device::Cpu;
    let scalar = Tensor::new(1.0f64, &dev).unwrap();
    let cases = [
        (
            x.clone(),
            c.narrow(0, 0, 4).unwrap(),
            "context has 4 rows but the data has 6",
        ),
        (
            x.clone(),
            Tensor::cat(&[&c, &c], 0).unwrap(),
            "context has 12 rows but the data has 6",
        ),
        (
            x.clone(),
            c.flatten_all().unwrap(),
            "got shape [6] (the data: [6, 2])",
        ),
        (
            x.clone(),
            c.reshape((6, 1, 1)).unwrap(),
            "got shape [6, 1, 1]",
        ),
        (x.clone(), scalar.clone(), "got shape [] (the data: [6, 2])"),
        (
            x.flatten_all().unwrap(),
            c.clone(),
            "data must be a (samples, features) matrix, got shape [12]",
        ),
        (
            scalar,
            c.clone(),
            "data must be a (samples, features) matrix, got shape []",
        ),
    ];
    let invalid = |r: Result<f64>, what: &str, want: &str| match r {
        Err(CpflowError::InvalidInput(m)) => assert!(m.contains(want), "{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    };
    for (x_bad, c_bad, want) in cases {
        let set = Dataset::with_context(x_bad, c_bad);
        invalid(set.check().map(|()| 0.0), "check", want);
        let mut rng = FlowRng::seed_from_u64(0);
        for est in [NllEstimator::Exact, NllEstimator::Slq(SlqConfig::default())] {
            let r = nll_estimate(&flow, &set, &est, 4, &mut rng).map(|e| e.mean);
            invalid(r, "nll_estimate", "evaluation data set: ");
            let r = nll_estimate(&flow, &set, &est, 4, &mut rng).map(|e| e.mean);
            invalid(r, "nll_estimate", want);
        }
        // The trainer checks both sets against the flow before its first step (its
        // messages are the flow's: "(batch, 2) matrix", not `check`'s).
        let cfg = TrainConfig {
            batch_size: 4,
            max_iterations: 2,
            ..TrainConfig::default()
        };
        let fresh = || Trainer::new(flow.try_clone().unwrap(), cfg.clone()).unwrap();
        let good = Dataset::with_context(x.clone(), c.clone());
        let r = fresh().fit(&set, None).map(|r| r.iterations as f64);
        invalid(r, "fit (training set)", "training set: ");
        let r = fresh().fit(&good, Some(&set)).map(|r| r.iterations as f64);
        invalid(r, "fit (validation set)", "validation set: ");
    }
}

/// The moments of `values` pushed in chunks of `chunk` rows.
fn moments(values: &[f64], chunk: usize) -> NllEstimate {
    let mut m = RunningMoments::default();
    values.chunks(chunk).for_each(|c| m.push_chunk(c));
    m.finish()
}

fn relative_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn huge_finite_values_have_a_finite_standard_error() {
    // [1e200, −1e200, 3e199] = 1e199·[10, −10, 3]: mean 1e199·1, sample variance
    // 1e398·(81 + 121 + 4)/2 = 1e398·103, standard error 1e199·√(103/3). Unscaled, the
    // squared deviations (~1e400) overflow to ∞.
    let values = [1e200, -1e200, 3e199];
    for chunk in [1, 2, 3] {
        let est = moments(&values, chunk);
        assert_eq!((est.n, est.non_finite), (3, 0));
        assert!(relative_error(est.mean, 1e199) < 1e-12, "{est:?}");
        let se = est.std_err.expect("three values");
        assert!(
            relative_error(se, 1e199 * (103f64 / 3.0).sqrt()) < 1e-12,
            "{est:?}"
        );
    }
    // Near the top of the range: values of ±f64::MAX/2 have a standard error of
    // f64::MAX/2 (spread √2·MAX/2 over √2), representable though their squares are not.
    let half = f64::MAX / 2.0;
    let est = moments(&[half, -half], 1);
    assert!(
        relative_error(est.std_err.unwrap(), half) < 1e-12,
        "{est:?}"
    );
    assert_eq!(est.mean, 0.0);
}

#[test]
fn ordinary_values_match_the_two_pass_formulas() {
    let values = [0.25, -1.5, 3.0, 1e3, 7.5, -2.0, 0.125];
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    for chunk in [1, 3, 7] {
        let est = moments(&values, chunk);
        assert!(relative_error(est.mean, mean) < 1e-14, "{est:?}");
        assert!(relative_error(est.std_err.unwrap(), (var / n).sqrt()) < 1e-14);
    }
    // Values below 1 in magnitude are not rescaled at all: the same bits as unscaled.
    let small = [0.5, -0.25, 0.125];
    let est = moments(&small, 3);
    assert_eq!(est.mean, small.iter().sum::<f64>() / 3.0);
    assert_eq!(moments(&[4.0], 1).std_err, None);
}

#[test]
fn non_finite_values_are_counted_and_make_the_mean_non_finite() {
    let est = moments(&[1.0, f64::INFINITY, 2.0, 1e200], 2);
    assert_eq!((est.n, est.non_finite), (4, 1));
    assert_eq!(est.first_non_finite, Some(1));
    assert_eq!(est.mean, f64::INFINITY);
    // The first is counted across chunks: rows 3 and 4 of chunks of 2.
    let est = moments(&[1.0, 3.0, 2.0, f64::NAN, f64::NAN], 2);
    assert_eq!((est.non_finite, est.first_non_finite), (2, Some(3)));
    assert!(est.mean.is_nan());
    assert_eq!(moments(&[1.0, 2.0], 1).first_non_finite, None);
}
