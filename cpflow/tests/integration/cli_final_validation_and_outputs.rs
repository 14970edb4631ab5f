//! What a run's log, `eval` and `sample` say about their numbers: the log line of kept
//! last weights called the *worse* earlier validation "best" (`best_val_nll=26.51` beside
//! `last_val_nll=21.96`), and metrics.jsonl lacked that final validation; the vector-flow
//! `eval` line did not name its float type (the image one does, as `"float"`); `sample`
//! printed a max residual without the tolerance it was judged by.

use std::path::Path;

use crate::cli_common::{cpflow, cpflow_out_and_log, temp_dir, tiny_toy_args};

/// A 2-D CSV file `d.csv` of 200 rows in `dir`.
fn write_csv(dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("a,b\n");
    for i in 0..200 {
        let t = i as f64 * 0.37;
        text.push_str(&format!(
            "{},{}\n",
            t.sin() * 2.0,
            (t * 1.3).cos() + 0.1 * t.sin()
        ));
    }
    let path = dir.join("d.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The value of `key=` in a log line (tracing's `key=value` fields).
fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// Validations at 1, 11, 21 and 31, the end at 35 (the last weights kept, as
/// `cli_train_resume_stats` sets up): the log says the kept last weights have the lowest
/// validation NLL, names the earlier lowest as such (not "best") and it is not lower; the
/// final validation is in metrics.jsonl at 35, the report's `val_nll`.
#[test]
fn kept_last_weights_are_logged_as_the_lowest_and_their_validation_is_in_the_metrics() {
    let dir = temp_dir("final-val-log");
    let csv = write_csv(&dir);
    let out = dir.join("run");
    let (csv_s, out_s) = (csv.to_str().unwrap(), out.to_str().unwrap());
    let (_, log) = cpflow_out_and_log(&[
        "train",
        "--data",
        csv_s,
        "--iters",
        "35",
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
        out_s,
    ]);
    let r = json(&std::fs::read_to_string(out.join("report.json")).unwrap());
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
        line.contains("kept the last weights: their validation NLL is the lowest of the run"),
        "{line}"
    );
    assert!(
        !line.contains("best"),
        "the earlier, higher one is not the best: {line}"
    );
    assert_eq!(field(line, "last_val_nll"), Some(val), "{line}");
    let earlier = field(line, "earlier_lowest_val_nll").unwrap();
    assert!(earlier >= val, "{line}");
    let recs = cpflow::metrics::read_metrics(&out.join("metrics.jsonl")).unwrap();
    let vals: Vec<(usize, f64)> = recs
        .iter()
        .filter_map(|r| r.val_nll.map(|v| (r.iteration, v)))
        .collect();
    let at: Vec<usize> = vals.iter().map(|v| v.0).collect();
    assert_eq!(at, [1, 11, 21, 31, 35], "{vals:?}");
    assert_eq!(vals[4].1, val);
    assert!(vals[..4].iter().any(|v| v.1 == earlier), "{vals:?} {line}");
}

/// `eval` of a vector flow names the float type it scored in: the model's (f64 here) or
/// `--dtype`'s; `sample` prints the tolerance its residuals were judged by: f64's 1e-9,
/// f32's 2e-5 + 2e-5·‖y‖∞ with the largest per-sample value, at least the max residual
/// when every sample converged.
#[test]
fn eval_names_its_float_and_sample_its_tolerance() {
    let dir = temp_dir("eval-float-sample-tol");
    let run = dir.join("run");
    let args = tiny_toy_args(
        &run,
        "20",
        "64",
        &["model.float=\"f64\"", "data.n_test=200"],
    );
    cpflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let run_s = run.to_str().unwrap();
    for (dtype, want) in [(None, "f64"), (Some("f32"), "f32"), (Some("f64"), "f64")] {
        let mut a = vec!["eval", "--model", run_s, "--no-progress"];
        if let Some(d) = dtype {
            a.extend(["--dtype", d]);
        }
        let e = json(&cpflow(&a));
        assert_eq!(e["float"], want, "{a:?}: {e}");
    }
    for (dtype, rule) in [
        ("f64", "tolerance 1e-9)"),
        ("f32", "tolerance 2e-5 + 2e-5·‖y‖∞, at most "),
    ] {
        let o = dir.join(format!("s_{dtype}.npy"));
        let line = cpflow(&[
            "sample",
            "--model",
            run_s,
            "-n",
            "300",
            "-o",
            o.to_str().unwrap(),
            "--dtype",
            dtype,
            "--no-progress",
        ]);
        assert!(
            line.contains(", 0 not converged; ") && line.contains(rule),
            "{line}"
        );
        if dtype == "f32" {
            let tail = &line[line.find("at most ").unwrap() + 8..];
            let most: f64 = tail.trim_end().trim_end_matches(')').parse().unwrap();
            let resid: f64 = {
                let at = line.find("max residual ").unwrap() + 13;
                line[at..].split(',').next().unwrap().parse().unwrap()
            };
            // Every sample converged, so its residual is within its tolerance; the largest
            // tolerance is 2e-5·(1 + ‖y‖∞) over the blocks' targets, a few units here.
            assert!(
                resid <= most * 1.01 && (2e-5..1e-2).contains(&most),
                "{line}"
            );
        }
    }
}

/// `eval --help` says that few `--steps` bias an SLQ score outside its standard error, and
/// how `--batch-size` changes a vector flow's SLQ probes.
#[test]
fn eval_help_tells_the_slq_bias_and_the_batch_size_probes() {
    let help = cpflow(&["eval", "--help"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        "Too few steps bias the estimate",
        "`nll_std_err` does not include that bias",
        "one seed per group of 256 consecutive points of a chunk",
    ] {
        assert!(help.contains(want), "{want:?} not in:\n{help}");
    }
}
