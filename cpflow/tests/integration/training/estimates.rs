//! The quantities training relies on: the surrogate's gradient is the exact NLL gradient in
//! expectation, a trained 2-D model's density integrates to one, and `nll_estimate`'s mean
//! and standard error match the two-pass formulas for any chunking.

use crate::flow_common::*;
use candle_core::{DType, Device, Tensor};
use cpflow::{
    Dataset, FloatType, Flow, FlowConfig, GaussianPrior, LrSchedule, NllEstimator, TrainConfig,
    Trainer,
};
use rand::SeedableRng;

/// For d ≤ 10 the probe-averaged gradient of the surrogate loss equals the gradient of the
/// exact NLL. With P probes per sample the Hutchinson error is O(1/√(B·P)); with B = 8,
/// P = 4000 it is ≈ 0.5 % of the log-det gradient here, so a 3 % tolerance leaves margin while
/// the log-det part of the gradient is large (checked: dropping it moves the gradient by far
/// more than the tolerance).
#[test]
fn surrogate_gradient_matches_exact_nll_gradient() {
    let flow = two_block_flow(3, 21);
    let x = data(8, 3, 22);
    let pair = surrogate_and_exact_gradients(&flow, &x, 23);
    assert_eq!(pair.cg_converged, 2 * 8 * 4000); // two blocks
    let exact = pair.exact.clone();
    let rel = pair.relative_error();
    println!("surrogate vs exact NLL gradient: relative error {rel:.4}");
    assert!(rel < 0.03, "relative gradient error {rel}");
    // Without the log-det terms (prior term only) the gradient is far from the exact one.
    let (z, _) = {
        let mut h = x.clone();
        for l in flow.layers() {
            h = match l {
                cpflow::Layer::ActNorm(a) => a.forward(&h).unwrap().0,
                cpflow::Layer::Cpf(b) => b.forward(&h, None).unwrap(),
            };
        }
        (h, ())
    };
    let prior_only = grads_of(
        &flow,
        &flow
            .prior()
            .log_prob(&z)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap(),
    );
    let mut padded = Vec::new();
    for (k, g) in &exact {
        let p = prior_only
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or(vec![0.0; g.len()]);
        padded.push((k.clone(), p));
    }
    let rel_prior = diff_norm(&padded, &exact) / norm(&exact);
    println!("prior-only gradient vs exact: relative difference {rel_prior:.4}");
    assert!(rel_prior > 0.2);
}

/// A trained 2-D model's density integrates to 1 ± 0.01 over a grid (midpoint rule, spacing
/// 0.08 on [−10, 10]²; the mass outside is < 1e-6 for the standard prior after ActNorm).
#[test]
fn trained_density_integrates_to_one() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let pts = cpflow::toy::Toy::EightGaussians.sample(4096, &mut rng);
    let train =
        Dataset::new(cpflow::toy::points_to_tensor(&pts, DType::F64, &Device::Cpu).unwrap());
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 16, 3))
        .with_float(FloatType::F64)
        .with_prior(GaussianPrior::standard());
    let tc = TrainConfig {
        batch_size: 128,
        max_iterations: 150,
        lr_schedule: LrSchedule::Constant,
        adam: cpflow::AdamParams {
            lr: 5e-3,
            ..Default::default()
        },
        val_every: 0,
        train_slq_every: 0,
        ..TrainConfig::default()
    };
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    tr.fit(&train, None).unwrap();
    let flow = tr.into_flow();
    let (lo, hi, h) = (-10.0f64, 10.0f64, 0.08f64);
    let n = ((hi - lo) / h).round() as usize;
    let mut g = Vec::with_capacity(n * n * 2);
    for i in 0..n {
        for j in 0..n {
            g.push(lo + (i as f64 + 0.5) * h);
            g.push(lo + (j as f64 + 0.5) * h);
        }
    }
    let grid = Tensor::from_vec(g, (n * n, 2), &Device::Cpu).unwrap();
    let lp = flow
        .log_prob_exact(&grid)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let mass: f64 = lp.iter().map(|l| l.exp()).sum::<f64>() * h * h;
    assert!((mass - 1.0).abs() < 0.01, "∫ p = {mass}");
    // The model learned something: its NLL on the data is well below the initial one.
    let mut r = rand::rngs::StdRng::seed_from_u64(0);
    let nll = cpflow::mean_nll(&flow, &train, &NllEstimator::Exact, 1024, &mut r).unwrap();
    assert!(nll < 3.6, "train NLL {nll}");
}

/// `nll_estimate`'s mean and standard error equal the two-pass formulas over the rows'
/// exact log-densities, whatever the chunking (1, 5, 37 or 1,000 rows per chunk: the pairwise
/// merge of chunk moments is exact up to rounding, 1e-12 relative), on data shifted by 1e3 so
/// that a naive `Σx² − n·mean²` would lose ~6 digits. A single row has no standard error.
#[test]
fn nll_estimate_matches_two_pass_formulas_for_any_chunking() {
    let cfg = FlowConfig::tabular(3, 2, icnn3(3, 8, 2)).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x = data(37, 3, 71);
    flow.initialize(&x).unwrap();
    let x = (x + 1e3).unwrap();
    let nll: Vec<f64> = flow
        .log_prob_exact(&x)
        .unwrap()
        .neg()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let std_err = (var / n).sqrt();
    let set = Dataset::new(x.clone());
    for chunk in [1, 5, 37, 1000] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let est = cpflow::nll_estimate(&flow, &set, &NllEstimator::Exact, chunk, &mut rng).unwrap();
        assert_eq!(est.n, 37);
        assert!(
            (est.mean - mean).abs() <= 1e-12 * mean.abs(),
            "{chunk}: {est:?} vs {mean}"
        );
        let se = est.std_err.unwrap();
        assert!(
            (se - std_err).abs() <= 1e-10 * std_err,
            "{chunk}: {se} vs {std_err}"
        );
    }
    let one = Dataset::new(x.narrow(0, 0, 1).unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let est = cpflow::nll_estimate(&flow, &one, &NllEstimator::Exact, 8, &mut rng).unwrap();
    assert_eq!((est.n, est.std_err), (1, None));
    assert!((est.mean - nll[0]).abs() <= 1e-12 * nll[0].abs());
}
