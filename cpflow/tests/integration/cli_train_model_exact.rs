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

use crate::cli_common::{cpflow_out_and_log, read_json, temp_dir, tiny_toy_args};
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

/// `cpflow train` of the 8-Gaussians toy (`SEED`, 30 steps of 32, lr 0.05) into `out`,
/// validated every step with the exact curve every 10; `extra` adds `--set` overrides.
/// Returns `(stdout, stderr)` (info-level log).
fn train(out: &std::path::Path, extra: &[&str]) -> (String, String) {
    let splits = [
        format!("data.n_train={N_TRAIN}"),
        format!("data.n_test={N_TEST}"),
        format!("data.n_val={N_VAL}"),
    ];
    let sets: Vec<&str> = splits.iter().map(String::as_str).collect();
    let validation = ["train.val_every=1", "run.eval_every=10"];
    let mut args = tiny_toy_args(out, "30", "32", &[&sets[..], &validation, extra].concat());
    let seed = SEED.to_string();
    args.extend(["--seed", &seed, "--lr", "0.05"].map(String::from));
    cpflow_out_and_log(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The kept weights' iteration in report `r`, asserted to be a validation's between the
/// curve's points (the case of the fix).
fn model_iteration_off_the_curve(r: &serde_json::Value) -> usize {
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
    model_iteration
}

#[test]
fn val_nll_exact_scores_the_kept_weights_off_the_curve() {
    let dir = temp_dir("train-model-exact");
    let out = dir.join("run");
    let (line, log) = train(&out, &[]);
    assert!(
        log.contains("scoring the kept weights on validation"),
        "{log}"
    );
    let r = read_json(&out.join("report.json"));
    let model_iteration = model_iteration_off_the_curve(&r);

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

/// With an exact trainer (`train.val_estimator = "exact"`) the kept weights' `val_nll` is
/// their exact NLL on the validation rows: it is `val_nll_exact`, the same number (the
/// trainer's chunks are the curve's 1024 rows by default), and they are not scored again.
/// The old code scored them a second time after training.
#[test]
fn an_exact_trainers_val_nll_is_val_nll_exact_without_a_second_pass() {
    let dir = temp_dir("train-model-exact-trainer");
    let out = dir.join("run");
    let (line, log) = train(&out, &["train.val_estimator=\"exact\""]);
    let r = read_json(&out.join("report.json"));
    let model_iteration = model_iteration_off_the_curve(&r);
    assert_eq!(r["val_nll_estimator"], "exact", "{r}");
    assert!(r["val_nll_exact"].is_f64(), "{r}");
    assert_eq!(r["val_nll_exact"], r["val_nll"], "{r}");
    assert!(
        !log.contains("scoring the kept weights on validation"),
        "scored again:\n{log}"
    );
    let kept = format!(
        "kept the weights of iteration {model_iteration} (validation exact NLL {:.4})",
        r["val_nll"].as_f64().unwrap()
    );
    assert!(line.contains(&kept), "{line}");
}
