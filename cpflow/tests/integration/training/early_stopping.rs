//! Early stopping and kept weights: training stops after `patience` non-improving
//! validations and restores the best weights, and an NLL curve does not label restored
//! weights with the last iteration.

use crate::flow_common::*;
use candle_core::{DType, Device};
use cpflow::{Dataset, FloatType, Flow, FlowConfig, LrSchedule, NllEstimator, Trainer};
use rand::SeedableRng;

use super::small_train_config;

/// Early stopping: with a zero learning rate nothing improves after the first validation, so
/// training stops after `patience + 1` non-improving validations and the best weights (those
/// of the first validation) are restored.
#[test]
fn early_stopping_stops_and_restores_best() {
    let train = Dataset::new(data(64, 2, 51));
    let val = Dataset::new(data(32, 2, 52));
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tc = small_train_config(1000);
    tc.val_every = 1;
    tc.early_stopping = Some(3);
    tc.lr_schedule = LrSchedule::Plateau;
    tc.adam.lr = 1e-2;
    let mut frozen = tc.clone();
    frozen.adam.lr = 0.0;
    frozen.adam.weight_decay = 0.0;
    let mut tr0 = Trainer::new(Flow::new(cfg.clone(), &Device::Cpu).unwrap(), frozen).unwrap();
    let rep0 = tr0.fit(&train, Some(&val)).unwrap();
    // Validations after steps 0..=4: the first sets the best, the next four do not improve.
    assert!(rep0.stopped_early);
    assert_eq!(rep0.iterations, 5);
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    let rep = tr.fit(&train, Some(&val)).unwrap();
    // Whatever happened, the final weights are the best ones: re-evaluating gives best_val_nll.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let nll = cpflow::mean_nll(tr.flow(), &val, &NllEstimator::Exact, 1024, &mut rng).unwrap();
    assert!(
        (nll - rep.best_val_nll.unwrap()).abs() < 1e-12,
        "{nll} vs {:?}",
        rep.best_val_nll
    );
}

/// When the end of a run keeps an earlier iteration's weights (`restore_best`), a validation
/// curve does not score them as a point of the last iteration: it ends at the trajectory's
/// last periodic point.
#[test]
fn a_curve_does_not_label_kept_weights_with_the_last_iteration() {
    // Training on the ring of 8 Gaussians, validating at its empty centre: the flow starts
    // about Gaussian (densest at the centre) and learns the ring, so the validation NLL rises,
    // the best validation is the first, and the end restores it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let pts = cpflow::toy::Toy::EightGaussians.sample(256, &mut rng);
    let train =
        Dataset::new(cpflow::toy::points_to_tensor(&pts, DType::F64, &Device::Cpu).unwrap());
    let val = Dataset::new((data(32, 2, 52) * 0.02).unwrap());
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tc = small_train_config(30);
    tc.val_every = 2;
    tc.early_stopping = None;
    tc.val_estimator = NllEstimator::Exact;
    tc.adam.lr = 1e-2;
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    let mut curve = cpflow::observer::NllCurve::new(val.clone(), NllEstimator::Exact, 4);
    let rep = tr
        .fit_observed(&train, Some(&val), &mut [&mut curve])
        .unwrap();
    let kept = rep.best_iteration.unwrap();
    assert!(kept < rep.iterations, "no restore: {rep:?}");
    assert_eq!(tr.weights_iteration(), kept);
    let last = curve.points().last().unwrap().0;
    assert_eq!(last, 28, "{:?}", curve.points());
}
