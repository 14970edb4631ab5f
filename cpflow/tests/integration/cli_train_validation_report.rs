//! `report.json` of `cpflow train` names the estimator of each validation number and has the
//! exact one the final line prints: `val_nll` (the trainer's `train.val_estimator`, by
//! default a 1-probe SLQ estimate) and `val_nll_curve` (exact) gave two "validation" numbers
//! for the same weights (3.1795 and 3.1707) while the console printed "validation exact NLL
//! 3.1707"; with `train.val_every = 0` `val_nll` is null and the console still printed one.
//! With `train.restore_best = false` the console said it kept the best validated weights of
//! an earlier iteration, while the model file holds the last ones.

use crate::cli_common::{cpflow, temp_dir, tiny_toy_args};
use std::path::Path;

/// Trains a tiny 8-Gaussians model 30 steps with `extra` settings; returns the final line and
/// report.json.
fn train(dir: &Path, name: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let out = dir.join(name);
    let splits = ["data.n_train=500", "data.n_test=100", "data.n_val=200"];
    let args = tiny_toy_args(&out, "30", "32", &[&splits[..], extra].concat());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = cpflow(&args);
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    (line, serde_json::from_str(&text).unwrap())
}

fn exact_text(r: &serde_json::Value) -> String {
    format!(
        "validation exact NLL {:.4}",
        r["val_nll_exact"].as_f64().unwrap()
    )
}

#[test]
fn validation_numbers_name_their_estimators() {
    let dir = temp_dir("train-validation-report");

    // The audit's run: SLQ validations, the exact curve's point at the end.
    let (line, r) = train(&dir, "slq", &["train.val_every=10"]);
    assert_eq!(r["val_nll_estimator"], "slq(1 probe, 10 steps)", "{r}");
    assert_eq!(r["val_nll_curve_estimator"], "exact", "{r}");
    assert_eq!(r["model_iteration"], r["val_iteration"], "{r}");
    if r["model_iteration"] == 30 {
        // The last weights kept (as in the audit's run): the curve's end is their exact NLL,
        // which the console prints; `val_nll` is the SLQ estimate of the same weights.
        let curve = r["val_nll_curve"].as_array().unwrap();
        let last = curve.last().unwrap();
        assert_eq!(last[0], 30, "{r}");
        assert_eq!(last[1], r["val_nll_exact"], "{r}");
        assert_ne!(r["val_nll"], r["val_nll_exact"], "{r}");
        assert!(line.contains(&exact_text(&r)), "{line}\n{r}");
    } else {
        // Weights of an earlier validation, where the curve has no point: scored exactly
        // after training (cli_train_model_exact checks the number against the saved model).
        assert!(r["val_nll_exact"].is_f64(), "{r}");
        let kept = format!("kept the weights of iteration {}", r["model_iteration"]);
        assert!(
            line.contains(&kept) && line.contains(&exact_text(&r)),
            "{line}\n{r}"
        );
    }
    assert_eq!(r["splits"]["val_nll_exact"], r["splits"]["val_nll"], "{r}");

    // No validation: no val_nll nor its estimator, the console's exact number has its field.
    let (line, r) = train(&dir, "none", &["train.val_every=0"]);
    assert!(
        r["val_nll"].is_null() && r["val_nll_estimator"].is_null(),
        "{r}"
    );
    assert_eq!(r["model_iteration"], 30, "{r}");
    assert!(line.contains(&exact_text(&r)), "{line}\n{r}");

    // The exact validation estimator names itself.
    let (_, r) = train(
        &dir,
        "exact",
        &["train.val_every=10", "train.val_estimator=\"exact\""],
    );
    assert_eq!(r["val_nll_estimator"], "exact", "{r}");

    // restore_best = false: the model holds the last weights, whichever validation was best.
    let (line, r) = train(
        &dir,
        "last",
        &["train.val_every=7", "train.restore_best=false"],
    );
    assert_eq!(r["model_iteration"], 30, "{r}");
    assert!(!line.contains("kept the weights"), "{line}");
    assert!(line.contains(&exact_text(&r)), "{line}\n{r}");
}
