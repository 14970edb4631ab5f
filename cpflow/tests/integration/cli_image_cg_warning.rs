//! `cpflow train` of an image run warns when CG of the surrogate gradient stops above its
//! tolerance, as a vector run does (`training::cg_warnings`): the first such step at once,
//! later ones at most once per log period (`train.log_every`) with what happened since; a
//! run whose CG converges says nothing.

use crate::cli_common::{cpflow_out_and_log, read_json, shared_data, temp_dir, tiny_mnist_config};

/// The log's CG warnings (one line each).
fn cg_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("CG of the surrogate gradient"))
        .collect()
}

#[test]
fn an_image_run_whose_cg_stops_at_its_cap_warns_once_per_log_period() {
    let dir = temp_dir("image-cg-warning");
    let cfg = dir.join("img.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let run = dir.join("run");
    // One CG iteration never meets an absolute tolerance of 1e-12 on a 784-dimensional
    // system: every system of the 5 steps is left unconverged. Logging points at steps 2, 4
    // and 5 (the last).
    let (_, log) = cpflow_out_and_log(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--no-progress",
        "--set",
        "train.max_iterations=5",
        "--set",
        "train.log_every=2",
        "--set",
        "train.surrogate.cg_max_iters=1",
        "--set",
        "train.surrogate.cg_atol=1e-12",
        "--set",
        "train.surrogate.cg_rtol=0",
    ]);
    let warnings = cg_warnings(&log);
    assert_eq!(warnings.len(), 4, "{log}");
    for (w, part) in warnings.iter().zip([
        "at step 1:",
        "at step 2:",
        "in 2 steps (3 to 4):",
        "at step 5:",
    ]) {
        assert!(
            w.contains("WARN")
                && w.contains(part)
                && w.contains("stopped after train.surrogate.cg_max_iters = 1 iterations")
                && w.contains("(train.surrogate.cg_atol = 1e-12, cg_rtol = 0)")
                && w.contains("Raise train.surrogate.cg_max_iters or the tolerances"),
            "{part}: {w}"
        );
    }
    assert!(
        warnings[0].contains(
            "Later such steps are reported at most once per log period (train.log_every)"
        ),
        "{}",
        warnings[0]
    );
    assert!(!warnings[1].contains("Later such steps"), "{}", warnings[1]);
    let r = read_json(&run.join("report.json"));
    assert_eq!(r["cg_unconverged_steps"], 5, "{r}");
}

#[test]
fn an_image_run_whose_cg_converges_says_nothing_of_it() {
    let dir = temp_dir("image-cg-no-warning");
    let cfg = dir.join("img.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let run = dir.join("run");
    // The reference settings (atol = rtol = 1e-3, at most 784 iterations) on an f64 model.
    let (_, log) = cpflow_out_and_log(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--no-progress",
    ]);
    let r = read_json(&run.join("report.json"));
    assert_eq!(r["cg_unconverged_steps"], 0, "{r}");
    assert_eq!(r["cg_converged"], 1.0, "{r}");
    assert!(cg_warnings(&log).is_empty(), "{log}");
    assert!(!log.contains("CG of "), "{log}");
}
