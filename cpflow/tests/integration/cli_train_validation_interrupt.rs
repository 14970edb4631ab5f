//! Ctrl-C while `cpflow train` scores the kept weights on the validation rows after training
//! (weights of a validation between the exact curve's points: their exact NLL is
//! `val_nll_exact`). The stop message names that score as not done and, on a run without
//! test rows, neither lists a test score nor suggests `cpflow eval --model OUT -n 0` for a
//! split that does not exist; `--resume` then does the rest. The old code reused the test
//! split's message: "not done: the test score, report.json. `cpflow eval --model … -n 0`
//! scores the test split".

use crate::cli_common::{cpflow, interrupt_after_log, read_json, temp_dir, tiny_toy_args};

#[test]
fn an_interrupt_of_the_validation_score_names_it_and_no_test_split() {
    let dir = temp_dir("train-validation-interrupt");
    let run = dir.join("run");
    // lr 0.3, seed 1: validation NLL ≈ 4.45 after step 1, ≈ 5.5 after step 2, so the weights
    // of iteration 1 are kept while the curve (run.eval_every = 0) has only iteration 2.
    // 500,000 validation rows take about a second to score: the signal comes during it.
    let sets = [
        "data.n_train=256",
        "data.n_test=0",
        "data.n_val=500000",
        "train.val_every=1",
        "run.eval_every=0",
    ];
    let mut args = tiny_toy_args(&run, "2", "16", &sets);
    args.extend(["--seed", "1", "--lr", "0.3"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, log) = interrupt_after_log(
        &args,
        "scoring the kept weights on validation",
        std::time::Duration::ZERO,
    );
    assert!(!ok, "{log}");
    assert!(log.contains("iteration=1 rows=500000"), "{log}");
    let parts = [
        "interrupted after training (iteration 2)",
        "model.safetensors",
        "not done: the exact validation score of the kept weights, report.json. ",
        "--resume` does all of it",
    ];
    for part in parts {
        assert!(log.contains(part), "no `{part}` in\n{log}");
    }
    for absent in ["the test score", "cpflow eval", "-n 0", "step in progress"] {
        assert!(!log.contains(absent), "`{absent}` in\n{log}");
    }
    assert!(!run.join("report.json").exists());

    let config = run.join("config.toml");
    cpflow(&["train", "--config", config.to_str().unwrap(), "--resume"]);
    let r = read_json(&run.join("report.json"));
    assert_eq!(
        (r["iterations"].as_u64(), r["model_iteration"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert!(r["val_nll_exact"].is_f64(), "{r}");
}
