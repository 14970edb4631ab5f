//! Runs that cannot go on stop or refuse with a clear error: a NaN stops training and keeps
//! (or says there is no) last good checkpoint; non-finite or wrong-width data and NLL curves
//! that do not fit are refused before the first step, naming the set; batch size 0 is refused.

use crate::flow_common::*;
use candle_core::{DType, Device, Tensor};
use cpflow::{
    CpflowError, Dataset, FloatType, Flow, FlowConfig, NllEstimator, RunOptions, TrainConfig,
    Trainer,
};
use rand::SeedableRng;

use super::{small_train_config, tmpdir};

/// A trainer of a 2-D f64 flow (ICNN width 8) that ran `steps` steps of `tc` (without
/// validation) on `train` under `opts`, then had its first `w1` weight set to NaN, so that
/// the next loss is NaN. Returns it and the name of that weight.
fn trainer_with_a_nan_weight(
    train: &Dataset,
    mut tc: TrainConfig,
    opts: RunOptions,
    steps: usize,
) -> (Trainer, String) {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    tc.val_every = 0;
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc)
        .unwrap()
        .with_options(opts);
    tr.fit_steps(train, None, steps).unwrap();
    let (name, var) = tr
        .flow()
        .named_vars()
        .into_iter()
        .find(|(k, _)| k.ends_with("w1"))
        .unwrap();
    var.set(&Tensor::new(&[f64::NAN], &Device::Cpu).unwrap())
        .unwrap();
    (tr, name)
}

/// A NaN in the weights makes the loss NaN: training stops with `NonFinite` and the
/// checkpoint on disk is the last good one.
#[test]
fn nan_stops_training_and_keeps_last_good_checkpoint() {
    let train = Dataset::new(data(64, 2, 41));
    let dir = tmpdir("nan");
    let opts = RunOptions {
        out_dir: Some(dir.clone()),
        progress_bar: false,
        ..RunOptions::default()
    };
    let mut tc = small_train_config(100);
    tc.checkpoint_every = 3;
    let (mut tr, name) = trainer_with_a_nan_weight(&train, tc, opts, 3);
    match tr.fit(&train, None) {
        Err(e @ CpflowError::NonFinite { .. }) => {
            let msg = e.to_string();
            let CpflowError::NonFinite {
                what,
                step,
                checkpoint,
            } = e
            else {
                unreachable!()
            };
            assert!(what.contains("loss"), "{what}");
            // Steps 1-3 went well; the 4th (1-based, as metrics.jsonl counts) failed.
            assert_eq!(step, 4);
            assert!(msg.contains("at training step 4"), "{msg}");
            let ck = dir.join("checkpoint.safetensors");
            assert_eq!(checkpoint.as_deref(), Some(ck.as_path()));
            assert!(msg.contains(&ck.display().to_string()), "{msg}");
        }
        other => panic!("expected NonFinite, got {:?}", other.map(|r| r.iterations)),
    }
    let ck = cpflow::load_checkpoint(&dir.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ck.meta.state.unwrap().iteration, 3);
    let w1 = ck.tensors.get(&name).unwrap().to_vec1::<f64>().unwrap();
    assert!(w1[0].is_finite());
    std::fs::remove_dir_all(&dir).ok();
}

/// Without an output directory no checkpoint exists: the error says so instead of promising
/// one.
#[test]
fn nan_without_checkpoint_says_there_is_none() {
    let train = Dataset::new(data(64, 2, 42));
    let (mut tr, _) =
        trainer_with_a_nan_weight(&train, small_train_config(10), RunOptions::default(), 1);
    match tr.fit(&train, None) {
        Err(e @ CpflowError::NonFinite { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no checkpoint"), "{msg}");
            assert!(!msg.contains("is kept"), "{msg}");
        }
        other => panic!("expected NonFinite, got {:?}", other.map(|r| r.iterations)),
    }
}

/// Non-finite training data is rejected before training starts.
#[test]
fn bad_training_data_is_rejected() {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tr =
        Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), small_train_config(5)).unwrap();
    let bad =
        Dataset::new(Tensor::new(&[[0.0f64, 1.0], [f64::INFINITY, 0.0]], &Device::Cpu).unwrap());
    assert!(matches!(
        tr.fit(&bad, None),
        Err(CpflowError::InvalidInput(_))
    ));
    let wrong = Dataset::new(Tensor::zeros((8, 3), DType::F64, &Device::Cpu).unwrap());
    assert!(matches!(
        tr.fit(&wrong, None),
        Err(CpflowError::InvalidInput(_))
    ));
}

/// An NLL curve whose data set does not fit the flow (3 columns for a 2-D flow, or a
/// context with fewer rows than the data) is refused before the first step, naming the
/// curve. Before, the run trained until the curve's first point (iteration 4) and then
/// failed with the flow's message alone.
#[test]
fn an_nll_curve_on_data_that_does_not_fit_is_refused_before_training() {
    let train = Dataset::new(data(64, 2, 3));
    let bad_sets = [
        Dataset::new(data(16, 3, 4)),
        Dataset::with_context(data(16, 2, 4), data(8, 1, 5)),
    ];
    for bad in bad_sets {
        let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
        let mut tr =
            Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), small_train_config(8)).unwrap();
        let mut curve = cpflow::observer::NllCurve::new(bad, NllEstimator::Exact, 4);
        let err = tr
            .fit_observed(&train, None, &mut [&mut curve])
            .unwrap_err();
        assert!(
            matches!(&err, CpflowError::InvalidInput(m) if m.starts_with("NLL curve on the validation set: ")),
            "{err}"
        );
        assert_eq!(tr.state().iteration, 0);
        assert!(curve.points().is_empty());
    }
}

/// A training or validation set of the wrong width is named in the error (it said "data has 3
/// columns" for either); an evaluation batch size of 0 is an error (it was taken as 1).
#[test]
fn wrong_sets_are_named_and_batch_size_zero_is_refused() {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let train = Dataset::new(data(32, 2, 41));
    let wide = Dataset::new(data(8, 3, 42));
    let mut tr =
        Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), small_train_config(2)).unwrap();
    let e = tr.fit(&train, Some(&wide)).unwrap_err().to_string();
    assert!(e.contains("validation set: data has 3 columns"), "{e}");
    let e = tr.fit(&wide, None).unwrap_err().to_string();
    assert!(e.contains("training set: data has 3 columns"), "{e}");
    tr.fit(&train, None).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let e = cpflow::mean_nll(tr.flow(), &train, &NllEstimator::Exact, 0, &mut rng).unwrap_err();
    assert!(
        e.to_string().contains("batch size must be at least 1"),
        "{e}"
    );
}
