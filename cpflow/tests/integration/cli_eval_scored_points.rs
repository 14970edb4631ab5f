//! `cpflow eval` says which points it scored: a vector flow's JSON printed
//! `"data":"8gaussians","points":10000` both for the run's test split and for fresh draws of
//! the toy; it now has `split` (as image and VAE evals do), `scored` and, for draws, their
//! `draw_seed`. The point without a finite log-density is counted from 0, as the data
//! messages count rows (it said "point 2" for row 1). A VAE scored with one importance
//! sample per image has no Monte-Carlo error of its estimate (`null`; it printed 0.0).

use crate::cli_common::{cpflow, cpflow_fails, read_json, shared_data, temp_dir, train_tiny_toy};
use std::path::Path;

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn eval(run: &Path, extra: &[&str]) -> serde_json::Value {
    let run = run.to_str().unwrap();
    json(&cpflow(
        &[&["eval", "--model", run, "--no-progress"][..], extra].concat(),
    ))
}

#[test]
fn a_vector_eval_names_the_points_it_scored() {
    let dir = temp_dir("eval-scored-points");
    let run = dir.join("run");
    train_tiny_toy(
        &run,
        &["data.n_train=200", "data.n_test=50", "data.n_val=20"],
    );
    let report = read_json(&run.join("report.json"));

    // The run's test split: the report's number, named as the test split.
    let own = eval(&run, &[]);
    assert_eq!(
        (own["split"].as_str(), own["points"].as_u64()),
        (Some("test"), Some(50)),
        "{own}"
    );
    assert!(
        own["scored"]
            .as_str()
            .unwrap()
            .contains("the run's test split"),
        "{own}"
    );
    assert!(own.get("draw_seed").is_none(), "{own}");
    assert_eq!(own["nll"], report["test_nll"], "{own}");

    // Fresh draws of the same toy: another split, with the seed of its draws.
    let fresh = eval(&run, &["--data", "8gaussians", "-n", "50"]);
    assert_eq!(fresh["data"], own["data"]);
    assert_eq!(fresh["split"], "fresh draws", "{fresh}");
    assert_eq!(fresh["draw_seed"], 1_000_003, "{fresh}");
    assert!(
        fresh["scored"].as_str().unwrap().contains("fresh draws"),
        "{fresh}"
    );
    let other = eval(&run, &["--data", "8gaussians", "-n", "50", "--seed", "4"]);
    assert_eq!(other["draw_seed"], 1_000_007, "{other}");
    assert_ne!(other["nll"], fresh["nll"]);

    // A file: every row.
    let csv = dir.join("p.csv");
    std::fs::write(&csv, "x,y\n0,0\n0.5,0.5\n").unwrap();
    let file = eval(&run, &["--data", csv.to_str().unwrap()]);
    assert_eq!(
        (file["split"].as_str(), file["points"].as_u64()),
        (Some("file"), Some(2)),
        "{file}"
    );
    assert!(file.get("draw_seed").is_none(), "{file}");

    // A row without a finite log-density: row 1 (0-based), the file's line 3 (after the
    // header), as the data messages count them.
    std::fs::write(&csv, "x,y\n0,0\n1e200,0\n0.5,0.5\n").unwrap();
    let run_s = run.to_str().unwrap();
    let err = cpflow_fails(&["eval", "--model", run_s, "--data", csv.to_str().unwrap()]);
    assert!(
        err.contains("the first at row 1 (line 3 of p.csv; rows counted from 0)"),
        "{err}"
    );
    assert!(!err.contains("point 2"), "{err}");
    let npy = dir.join("p.npy");
    let m = cpflow::datasets::Matrix::new(2, 2, vec![0.0, 0.0, 1e200, 0.0]).unwrap();
    std::fs::write(&npy, cpflow::datasets::write_npy_f64(&m)).unwrap();
    let err = cpflow_fails(&["eval", "--model", run_s, "--data", npy.to_str().unwrap()]);
    assert!(err.contains("the first at row 1 (counted from 0)"), "{err}");
}

/// `--is-samples 1`: one importance weight per image has no spread, so the Monte-Carlo error
/// of the estimate is `null` (it was 0.0); with 3 it is a positive number, without
/// importance sampling the field is absent.
#[test]
fn one_importance_sample_has_a_null_monte_carlo_error() {
    let dir = temp_dir("eval-vae-one-sample");
    let cfg = dir.join("vae.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndataset = \"caltech101\"\nroot = {:?}\nn_train = 200\n\
             [model]\nposterior = \"gaussian\"\nlatent_dim = 2\nblocks = 1\nwidth = 4\ndepth = 2\n\
             architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
             [train]\nepochs = 1\nbatch_size = 100\n\
             [eval]\nis_samples = 1\nis_chunk = 1\nis_images = 2\n",
            shared_data()
        ),
    )
    .unwrap();
    let run = dir.join("run");
    cpflow(&[
        "vae",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--no-progress",
    ]);
    // The run's own test score, with K = 1.
    let report = read_json(&run.join("report.json"));
    assert!(report["test_is_nll"]["mean"].is_f64(), "{report}");
    assert!(
        report["test_is_mc_std_err"].is_null(),
        "{}",
        report["test_is_mc_std_err"]
    );

    let one = eval(&run, &["-n", "2", "--is-samples", "1"]);
    assert!(one["is_nll"].is_f64(), "{one}");
    assert!(
        one.get("is_mc_std_err").is_some_and(|v| v.is_null()),
        "{one}"
    );
    let three = eval(&run, &["-n", "2", "--is-samples", "3"]);
    assert!(
        three["is_mc_std_err"].as_f64().is_some_and(|e| e > 0.0),
        "{three}"
    );
    let none = eval(&run, &["-n", "2", "--is-samples", "0"]);
    assert!(none.get("is_mc_std_err").is_none(), "{none}");
}
