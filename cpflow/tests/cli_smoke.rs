//! Smoke test of the `cpflow` binary: train a tiny model a few iterations on a toy, then
//! `eval`, `sample` and `plot` it, and run a tiny `ot`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cpflow(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running cpflow");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "cpflow {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn non_empty(p: &Path) {
    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(len > 0, "{} missing or empty", p.display());
}

#[test]
fn train_eval_sample_plot_round_trip() {
    let dir = temp_dir("toy");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    cpflow(&[
        "train",
        "--data",
        "8gaussians",
        "--iters",
        "6",
        "--batch-size",
        "32",
        "--seed",
        "1",
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        "data.n_train=256",
        "--set",
        "data.n_test=64",
        "--set",
        "run.eval_every=3",
        "--set",
        "run.plots=false",
        "--no-progress",
        "--out",
        run_s,
    ]);
    for f in [
        "model.safetensors",
        "checkpoint.safetensors",
        "config.toml",
        "report.json",
        "metrics.jsonl",
    ] {
        non_empty(&run.join(f));
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["iterations"], 6);
    assert!(report["test_nll"].as_f64().unwrap().is_finite());
    assert_eq!(report["test_nll_curve"].as_array().unwrap().len(), 2);

    // Resume for two more iterations.
    cpflow(&[
        "train",
        "--config",
        run.join("config.toml").to_str().unwrap(),
        "--iters",
        "8",
        "--resume",
        "--no-progress",
    ]);

    let out = cpflow(&["eval", "--model", run_s, "-n", "50"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["nll"].as_f64().unwrap().is_finite());
    assert!(v["kl_estimate"].as_f64().is_some());
    let out = cpflow(&[
        "eval",
        "--model",
        run_s,
        "--data",
        "moons",
        "-n",
        "40",
        "--estimator",
        "slq",
    ]);
    assert!(out.contains("\"points\":40"), "{out}");

    let npy = dir.join("s.npy");
    cpflow(&[
        "sample",
        "--model",
        run_s,
        "-n",
        "20",
        "--output",
        npy.to_str().unwrap(),
        "--seed",
        "2",
    ]);
    non_empty(&npy);
    let csv = dir.join("s.csv");
    cpflow(&[
        "sample",
        "--model",
        run_s,
        "-n",
        "5",
        "--output",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 5);
    // The sampled .npy file is valid input data.
    let out = cpflow(&["eval", "--model", run_s, "--data", npy.to_str().unwrap()]);
    assert!(out.contains("\"points\":20"), "{out}");

    let plots = dir.join("plots");
    cpflow(&[
        "plot",
        "--model",
        run_s,
        "--out",
        plots.to_str().unwrap(),
        "--grid",
        "20",
        "--samples",
        "30",
    ]);
    for f in [
        "data.png",
        "density.png",
        "samples.png",
        "latent.png",
        "potential.png",
        "gradient_mesh.png",
        "gradient_field.png",
        "plots.json",
    ] {
        non_empty(&plots.join(f));
    }
}

#[test]
fn ot_subcommand_writes_table_and_figures() {
    let dir = temp_dir("ot");
    let cfg = dir.join("ot.toml");
    std::fs::write(
        &cfg,
        "n_train = 512\nn_test = 128\nn_eval_curve = 64\neval_every = 2\n[potential]\nwidth = 8\ndepth = 2\n",
    )
    .unwrap();
    let out = cpflow(&[
        "ot",
        "--config",
        cfg.to_str().unwrap(),
        "--dims",
        "2,3",
        "--iters",
        "4",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.contains("| 3 |"), "{out}");
    for f in [
        "ot_table.md",
        "ot_reports.json",
        "ot_d2_cost_vs_kl.png",
        "ot_d3_cost_vs_iter.png",
        "ot_d3_curve.csv",
    ] {
        non_empty(&dir.join(f));
    }
}
