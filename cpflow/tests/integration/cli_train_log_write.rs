//! `cpflow train` whose `metrics.jsonl` or `report.json` cannot be written (a directory at
//! the file's path, as a full disk would fail it): the message names the file, the
//! iteration, the intact last checkpoint and the command that continues the run, which then
//! ends it as an uninterrupted run.

use std::path::Path;

use crate::cli_common::{
    cpflow, cpflow_fails, read_json, shared_data, temp_dir, tiny_csv_train_args, tiny_mnist_config,
};

/// A CSV file of 120 2-D rows at `path`.
fn write_csv(path: &Path) {
    let text: String = (0..120)
        .map(|i| {
            let t = i as f64 * 0.37;
            format!("{},{}\n", t.sin() * 2.0, (t * 1.3).cos())
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// Trains `iters` steps of 16 rows of `csv` into `out`.
fn train(csv: &Path, out: &Path, iters: &str) {
    let args = tiny_csv_train_args(csv, out, iters, "16");
    cpflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The end of the message of a failed write in run `r` saved at iteration `it`.
fn saved_and_resume(r: &str, it: usize) -> String {
    format!(
        "the run is saved at iteration {it} (the last checkpoint, {r}/checkpoint.safetensors). \
         Free disk space (or fix what the error names) and continue the run with \
         `cpflow train --out {r} --resume`"
    )
}

/// The report's numbers that an uninterrupted run has too: times and `resumed_at` aside,
/// and of the validation curve its last point (the run that ended at 2 steps has a point
/// there).
fn numbers(r: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = [
        "iterations",
        "final_loss",
        "mean_cg_iterations",
        "cg_converged",
        "cg_unconverged_steps",
        "val_nll",
        "validation",
        "parameters",
    ]
    .iter()
    .map(|k| r[k].clone())
    .collect();
    v.push(
        r["val_nll_curve"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone(),
    );
    v
}

/// A run of 2 steps given 4 on resume cannot cut back `metrics.jsonl` (a directory there);
/// the next resume trains to 4 and cannot write `report.json`: each message names the file
/// and the checkpoint to continue from; the command it gives ends the run as the
/// uninterrupted run of 4 steps.
#[test]
fn failed_train_log_and_report_writes_say_how_to_continue_and_the_resume_ends_the_run() {
    let dir = temp_dir("train-log-write");
    let csv = dir.join("d.csv");
    write_csv(&csv);
    let full = dir.join("full");
    train(&csv, &full, "4");
    let run = dir.join("run");
    train(&csv, &run, "2");
    let r = run.to_str().unwrap();

    let metrics = run.join("metrics.jsonl");
    let kept = run.join("metrics.kept");
    std::fs::rename(&metrics, &kept).unwrap();
    std::fs::create_dir(&metrics).unwrap();
    let more = [
        "train",
        "--out",
        r,
        "--resume",
        "--iters",
        "4",
        "--no-progress",
    ];
    let stderr = cpflow_fails(&more);
    let want = format!(
        "Error: writing metrics.jsonl at iteration 2 failed (I/O error on {}: ",
        metrics.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&saved_and_resume(r, 2)),
        "{stderr}"
    );
    std::fs::remove_dir(&metrics).unwrap();
    std::fs::rename(&kept, &metrics).unwrap();

    let report = run.join("report.json");
    std::fs::remove_file(&report).unwrap();
    std::fs::create_dir(&report).unwrap();
    let stderr = cpflow_fails(&more);
    let want = format!(
        "Error: writing report.json at iteration 4 failed (I/O error on {}: ",
        report.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&saved_and_resume(r, 4)),
        "{stderr}"
    );
    std::fs::remove_dir(&report).unwrap();

    // The command the message gives.
    let line = cpflow(&["train", "--out", r, "--resume", "--no-progress"]);
    assert!(line.starts_with("trained 4 iterations"), "{line}");
    assert_eq!(
        numbers(&read_json(&report)),
        numbers(&read_json(&full.join("report.json")))
    );
    let iterations = |d: &Path| -> Vec<u64> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["iteration"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(iterations(&run).last(), Some(&4));
    let mut once = iterations(&run);
    once.dedup();
    assert_eq!(once, iterations(&run), "a line written twice");
}

/// An image run (tiny MNIST, 2 steps) given a third on resume, with a directory at
/// `metrics.jsonl`'s path: the message names the file, iteration 2, the checkpoint and the
/// command that continues the run, which then trains the third step.
#[test]
fn a_failed_image_log_write_says_how_to_continue() {
    let dir = temp_dir("image-log-write");
    let cfg = dir.join("img.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let c = cfg.to_str().unwrap();
    cpflow(&["train", "--config", c, "--out", r, "--no-progress"]);
    let metrics = run.join("metrics.jsonl");
    let kept = run.join("metrics.kept");
    std::fs::rename(&metrics, &kept).unwrap();
    std::fs::create_dir(&metrics).unwrap();
    let resume = ["train", "--out", r, "--resume", "--no-progress"];
    let stderr = cpflow_fails(&[&resume[..], &["--iters", "3"]].concat());
    let want = format!(
        "Error: writing metrics.jsonl at iteration 2 failed (I/O error on {}: ",
        metrics.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&saved_and_resume(r, 2)),
        "{stderr}"
    );
    std::fs::remove_dir(&metrics).unwrap();
    std::fs::rename(&kept, &metrics).unwrap();
    let out = cpflow(&[&resume[..], &["--iters", "3"]].concat());
    assert!(out.contains("for 3 iterations"), "{out}");
}
