//! `cpflow train`'s report after resumes: the loss and CG statistics cover the whole run
//! (a checkpoint from before they were kept says what they cover), the final line names the
//! steps whose CG did not converge, the data path reads the same before and after a resume,
//! and the final validation of kept last weights is logged.

use std::path::Path;
use std::process::Command;

use crate::cli_common::temp_dir;

/// Runs `cpflow` in `cwd` with info-level logging, asserting success: `(stdout, stderr)`.
fn cpflow_in(cwd: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .output()
        .expect("running cpflow");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "cpflow {args:?} failed:\n{so}\n{se}");
    (so, se)
}

/// A 2-D CSV file `d.csv` of 200 rows in `dir`.
fn write_csv(dir: &Path) {
    let mut text = String::from("a,b\n");
    for i in 0..200 {
        let t = i as f64 * 0.37;
        text.push_str(&format!(
            "{},{}\n",
            t.sin() * 2.0,
            (t * 1.3).cos() + 0.1 * t.sin()
        ));
    }
    std::fs::write(dir.join("d.csv"), text).unwrap();
}

/// `train` on `d.csv` (given relative to the run's directory's parent) into `out`: a tiny
/// model whose CG is capped at one iteration, so that some steps leave systems unconverged.
fn train_args<'a>(out: &'a str, iters: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        "d.csv",
        "--iters",
        iters,
        "--batch-size",
        "32",
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        "data.test_fraction=0",
        "--set",
        "run.plots=false",
        "--set",
        "train.val_every=10",
        "--set",
        "train.surrogate.cg_max_iters=1",
        "--no-progress",
        "--out",
        out,
    ]
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The report's step statistics and data source.
fn stats(r: &serde_json::Value) -> Vec<serde_json::Value> {
    [
        "iterations",
        "final_loss",
        "mean_cg_iterations",
        "cg_converged",
        "cg_unconverged_steps",
        "step_stats_since_iteration",
        "data",
    ]
    .iter()
    .map(|k| r[k].clone())
    .collect()
}

/// An uninterrupted run and the same run trained in two invocations (`--iters` extended on
/// resume) report the same loss and CG statistics (the same steps: the same sums) and the
/// same data path; resuming the finished run keeps them. The final line counts the steps
/// whose CG did not converge.
#[test]
fn a_resumed_run_reports_the_whole_runs_statistics() {
    let dir = temp_dir("resume-stats");
    write_csv(&dir);
    let (line, _) = cpflow_in(&dir, &train_args("whole", "40"));
    let whole = report(&dir.join("whole"));
    let unconverged = whole["cg_unconverged_steps"].as_u64().unwrap();
    assert!(unconverged > 0, "{whole}");
    assert!(
        line.contains(&format!("; CG unconverged in {unconverged} of 40 steps;")),
        "{line}"
    );
    assert!(
        whole["final_loss"].as_f64().is_some() && whole["mean_cg_iterations"].as_f64() > Some(0.0)
    );
    // The file's absolute path, before and after a resume.
    let data = whole["data"].as_str().unwrap();
    assert!(
        Path::new(data).is_absolute() && data.ends_with("d.csv"),
        "{data}"
    );
    cpflow_in(&dir, &train_args("split", "15"));
    let resume = ["train", "--out", "split", "--resume", "--no-progress"];
    cpflow_in(&dir, &[&resume[..], &["--iters", "40"]].concat());
    assert_eq!(stats(&report(&dir.join("split"))), stats(&whole));
    // A resume of the finished run trains nothing and keeps them.
    let (line, _) = cpflow_in(&dir, &resume);
    assert_eq!(stats(&report(&dir.join("split"))), stats(&whole));
    assert!(
        line.contains(&format!("CG unconverged in {unconverged} of 40 steps")),
        "{line}"
    );
}

/// A checkpoint written before the statistics were kept (its training state has none)
/// resumes; the report then says that its statistics cover the steps after the resume.
#[test]
fn an_old_checkpoint_reports_what_its_statistics_cover() {
    let dir = temp_dir("resume-stats-old");
    write_csv(&dir);
    cpflow_in(&dir, &train_args("old", "15"));
    let path = dir.join("old/checkpoint.safetensors");
    let mut ck = cpflow::load_checkpoint(&path, &candle_core::Device::Cpu).unwrap();
    ck.meta.state.as_mut().unwrap().step_stats = Default::default();
    cpflow::checkpoint::save_checkpoint(&path, &ck.meta, ck.tensors.into_iter().collect()).unwrap();
    let (line, _) = cpflow_in(
        &dir,
        &[
            "train",
            "--out",
            "old",
            "--resume",
            "--no-progress",
            "--iters",
            "40",
        ],
    );
    let r = report(&dir.join("old"));
    assert_eq!(r["step_stats_since_iteration"], 15, "{r}");
    let unconverged = r["cg_unconverged_steps"].as_u64().unwrap();
    assert!((1..=25).contains(&unconverged), "{r}");
    assert!(
        line.contains(&format!(
            "CG unconverged in {unconverged} of 25 steps since iteration 15"
        )),
        "{line}"
    );
}

/// When the run keeps its last weights, their final validation (at an iteration that is
/// not a validation point) is logged, as the restore of the best ones is.
#[test]
fn the_final_validation_of_kept_last_weights_is_logged() {
    let dir = temp_dir("kept-last");
    write_csv(&dir);
    let (_, log) = cpflow_in(&dir, &train_args("run", "35"));
    let r = report(&dir.join("run"));
    // Validations at 1, 11, 21 and 31; the run ends at 35, validated by the trainer's end.
    assert_eq!(
        r["val_iteration"], 35,
        "this test needs the last weights kept: {r}"
    );
    let val = r["val_nll"].as_f64().unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("kept the last weights"))
        .unwrap_or_else(|| panic!("no log line of the kept weights:\n{log}"));
    assert!(
        line.contains("iteration=35") && line.contains(&format!("last_val_nll={val}")),
        "{line}"
    );
}
