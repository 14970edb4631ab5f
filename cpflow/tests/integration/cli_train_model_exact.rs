//! `report.json`'s `val_nll_exact` is the exact validation NLL of the weights in
//! `model.safetensors`, also when `train.restore_best` kept the weights of a validation
//! (`train.val_every`) where the exact curve (`run.eval_every`) has no point: it was `null`
//! then, which is most runs, and the final line named only the SLQ estimate.
//!
//! The test scores the saved model itself: the validation points are the toy's draws after
//! the training and test points from `data.seed` (`cli/data.rs`), and the library's exact
//! mean NLL of them under `Flow::load(model.safetensors)` must be the report's number.
//! Tolerance: the command and the test evaluate the same f32 function on the same points in
//! one chunk (200 rows), so they can differ only by the summation order of a GEMM on other
//! threads, ~1e-7 relative for f32; 1e-5 relative is above that and far below the change
//! of one training step (~1e-2 here), so the weights of another iteration would be seen.

use crate::cli_common::{cpflow, read_json, temp_dir};
use candle_core::{Device, Tensor};
use cpflow::toy::Toy;
use cpflow::{Dataset, Flow, FlowRng, NllEstimator, mean_nll};

/// With this seed and learning rate the best validation (every step) is at iteration 24,
/// between the curve's points (every 10).
const SEED: u64 = 2;
const N_TRAIN: usize = 500;
const N_TEST: usize = 50;
const N_VAL: usize = 200;

/// The run's validation points, drawn as `cpflow train` draws a toy's splits: training,
/// test, then validation points from one generator seeded with `data.seed`.
fn validation_points() -> Vec<f64> {
    let mut rng = FlowRng::seed_from_u64(SEED);
    let _train = Toy::EightGaussians.sample(N_TRAIN, &mut rng);
    let _test = Toy::EightGaussians.sample(N_TEST, &mut rng);
    Toy::EightGaussians.sample(N_VAL, &mut rng).into_flattened()
}

#[test]
fn val_nll_exact_scores_the_kept_weights_off_the_curve() {
    let dir = temp_dir("train-model-exact");
    let out = dir.join("run");
    let (n_train, n_test, n_val) = (
        format!("data.n_train={N_TRAIN}"),
        format!("data.n_test={N_TEST}"),
        format!("data.n_val={N_VAL}"),
    );
    let line = cpflow(&[
        "train",
        "--data",
        "8gaussians",
        "--iters",
        "30",
        "--batch-size",
        "32",
        "--seed",
        &SEED.to_string(),
        "--lr",
        "0.05",
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        &n_train,
        "--set",
        &n_test,
        "--set",
        &n_val,
        "--set",
        "train.val_every=1",
        "--set",
        "run.eval_every=10",
        "--set",
        "run.plots=false",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = read_json(&out.join("report.json"));
    // The case of the fix: the kept weights are those of a validation off the curve.
    let model_iteration = r["model_iteration"].as_u64().unwrap() as usize;
    assert_eq!(r["val_iteration"], r["model_iteration"], "{r}");
    let curve: Vec<usize> = r["val_nll_curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap() as usize)
        .collect();
    assert!(
        !curve.contains(&model_iteration),
        "the seed no longer keeps weights off the curve {curve:?}: {r}"
    );

    let got = r["val_nll_exact"]
        .as_f64()
        .unwrap_or_else(|| panic!("no val_nll_exact: {r}"));
    let flow = Flow::load(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    let x = Tensor::from_vec(validation_points(), (N_VAL, 2), &Device::Cpu)
        .unwrap()
        .to_dtype(flow.dtype())
        .unwrap();
    let mut rng = FlowRng::seed_from_u64(0);
    let want = mean_nll(
        &flow,
        &Dataset::new(x),
        &NllEstimator::Exact,
        1024,
        &mut rng,
    )
    .unwrap();
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "val_nll_exact {got}, the saved model's exact validation NLL {want}"
    );
    // The final line prints it, for the kept weights.
    let kept = format!(
        "kept the weights of iteration {model_iteration} (validation exact NLL {:.4})",
        got
    );
    assert!(line.contains(&kept), "{line}");
}
