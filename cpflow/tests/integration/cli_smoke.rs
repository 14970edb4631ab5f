//! Smoke test of the `cpflow` binary: train a tiny model a few iterations on a toy, then
//! `eval`, `sample` and `plot` it, and run a tiny `ot`.

use crate::cli_common::{
    cpflow, cpflow_fails, cpflow_log, non_empty, read_json, temp_dir, tiny_csv_train_args,
};
#[cfg(unix)]
use crate::cli_common::{interrupt_tiny_toy_training, interrupted_iteration};

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
        "data.n_val=64",
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
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["iterations"], 6);
    assert!(report["test_nll"].as_f64().unwrap().is_finite());
    assert_eq!(report["val_nll_curve"].as_array().unwrap().len(), 2);
    assert_eq!(
        (report["n_val"].as_u64(), report["n_test"].as_u64()),
        (Some(64), Some(64))
    );
    // The splits say what each number was computed on (a toy's validation points are fresh
    // draws; the label said "from the training data" for every source).
    assert!(
        report["splits"]["val_nll"]
            .as_str()
            .unwrap()
            .contains("fresh draws"),
        "{report}"
    );

    // Resume for two more iterations. The log goes to stderr as plain text when stderr is
    // not a terminal (a file, a pipe): no colour escape codes.
    let log = cpflow_log(&[
        "train",
        "--config",
        run.join("config.toml").to_str().unwrap(),
        "--iters",
        "8",
        "--resume",
        "--no-progress",
    ]);
    assert!(log.contains("resuming"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
    // The training lines give values, not Rust's `Some(..)`/`None` (it logged
    // `cg_converged=Some(1.0) train_nll_slq=None val_nll=None`).
    assert!(log.contains("iteration=8"), "{log}");
    assert!(!log.contains("Some(") && !log.contains("None"), "{log}");

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

/// A CSV run: validation rows come from the file (10 %), early stopping ends the run and
/// the report and the final line give the iterations actually run; without test rows there
/// is no test score (no `NaN`, no entropy); a resume with a larger batch size works.
#[test]
fn file_run_validates_on_its_own_split_and_reports_what_ran() {
    let dir = temp_dir("csv");
    let csv = dir.join("d.csv");
    let mut text = String::from("a,b\n");
    for i in 0..200 {
        let t = i as f64 * 0.37;
        text.push_str(&format!(
            "{},{}\n",
            t.sin() * 2.0,
            (t * 1.3).cos() + 0.1 * t.sin()
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let run = dir.join("run");
    let args = |iters: &'static str, batch: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut v = tiny_csv_train_args(&csv, &run, iters, batch);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // lr 0 and the exact validation NLL: nothing improves after the first validation (the
    // default SLQ estimate draws new probes each time and may "improve" by chance); patience
    // 0 stops at the second.
    let a = args(
        "50",
        "16",
        &[
            "--set",
            "train.val_estimator=\"exact\"",
            "--set",
            "train.val_every=1",
            "--set",
            "train.early_stopping=0",
            "--set",
            "train.adam.lr=0",
            "--set",
            "train.adam.weight_decay=0",
        ],
    );
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = cpflow(&refs);
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["iterations"], 2, "{report}");
    assert_eq!(report["max_iterations"], 50);
    assert_eq!(report["stop_reason"], "early_stopping");
    assert_eq!(
        (report["n_train"].as_u64(), report["n_val"].as_u64()),
        (Some(180), Some(20))
    );
    assert!(report["test_nll"].is_null() && report["data_entropy"].is_null());
    assert!(
        report["splits"]["val_nll"]
            .as_str()
            .unwrap()
            .contains("held out of the shuffled file"),
        "{report}"
    );
    assert!(
        out.contains("trained 2 iterations (early stopping)"),
        "{out}"
    );
    assert!(out.contains("no test score"), "{out}");
    assert!(!out.contains("NaN") && !out.contains("entropy"), "{out}");

    // A fresh run of 3 steps replacing that one, then a resume at batch size 128 (the old epoch position
    // 3 × 128 lies past the 180 training rows).
    let a = args("3", "16", &["--set", "train.val_every=0", "--overwrite"]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    cpflow(&refs);
    let a = args("5", "128", &["--set", "train.val_every=0", "--resume"]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = cpflow(&refs);
    assert!(out.contains("trained 5 iterations"), "{out}");
}

/// Unknown keys are errors that name the key and its table, in every table.
#[test]
fn unknown_config_keys_are_rejected() {
    let dir = temp_dir("keys");
    for (text, key, table) in [
        ("[train]\nbatchsize = 3\n", "batchsize", "train"),
        ("[train.adam]\nlrr = 0.1\n", "lrr", "train.adam"),
        ("[data]\nn_tset = 5\n", "n_tset", "data"),
        (
            "[train]\nlr_schedule = { step = { step_size = 5, gama = 0.5 } }\n",
            "gama",
            "train.lr_schedule",
        ),
    ] {
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, text).unwrap();
        let err = cpflow_fails(&["train", "--config", cfg.to_str().unwrap(), "--no-progress"]);
        assert!(err.contains(key), "{text}: {err}");
        assert!(err.contains(table), "{text}: {err}");
    }
}

/// An error prints its message and its cause, exit status 1, and no stack backtrace under
/// `RUST_BACKTRACE=1` (panics' setting); `RUST_LIB_BACKTRACE=1` asks for the backtrace.
#[test]
fn errors_print_their_causes_and_a_backtrace_only_when_asked() {
    let dir = temp_dir("error-report");
    let missing = dir.join("missing.npy");
    let run = |lib_backtrace: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cpflow"));
        cmd.args(["train", "--no-progress", "--data"])
            .arg(&missing)
            .arg("--out")
            .arg(dir.join("run"))
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE");
        if let Some(v) = lib_backtrace {
            cmd.env("RUST_LIB_BACKTRACE", v);
        }
        let out = cmd.output().expect("running cpflow");
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(None);
    let expected = format!(
        "Error: I/O error on {}: No such file or directory",
        missing.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
    assert_eq!(run(Some("0")), err);
    let err = run(Some("1"));
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("Stack backtrace:"), "{err}");
}

#[test]
fn zero_counts_are_refused_with_the_argument_named() {
    // Refused while the arguments are read (the model path is never opened).
    for (args, flag) in [
        (&["eval", "--model", "nowhere", "-n", "0"][..], "-n"),
        (
            &["eval", "--model", "nowhere", "--batch-size", "0"][..],
            "--batch-size",
        ),
        (
            &["eval", "--model", "nowhere", "--probes", "0"][..],
            "--probes",
        ),
        (
            &["sample", "--model", "nowhere", "-n", "0", "-o", "s.npy"][..],
            "-n",
        ),
        (
            &["plot", "--model", "nowhere", "--samples", "0"][..],
            "--samples",
        ),
        (&["plot", "--model", "nowhere", "--grid", "1"][..], "--grid"),
    ] {
        let err = cpflow_fails(args);
        assert!(
            err.contains(flag) && err.contains("must be at least"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("nowhere"), "{args:?}: {err}");
    }
    // No training step means no data-initialised flow to evaluate or save.
    let dir = temp_dir("zero-iters");
    let err = cpflow_fails(&[
        "train",
        "--data",
        "8gaussians",
        "--iters",
        "0",
        "--no-progress",
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert!(err.contains("max_iterations must be at least 1"), "{err}");
}

/// Ctrl-C during `cpflow train` stops after the step in progress, writes the checkpoint and
/// says how to continue (no model, no report: the run is not finished); `--resume` goes on.
#[cfg(unix)]
#[test]
fn an_interrupted_training_run_is_saved_and_resumes() {
    let dir = temp_dir("interrupt");
    let run = dir.join("run");
    let err = interrupt_tiny_toy_training(&run);
    assert!(err.contains("--resume"), "{err}");
    non_empty(&run.join("checkpoint.safetensors"));
    assert!(!run.join("report.json").exists());
    let done = interrupted_iteration(&err);
    assert!(done >= 3, "{err}");

    let config = run.join("config.toml");
    let more = (done + 2).to_string();
    let args = [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--iters",
        &more,
    ];
    cpflow(&[&args[..], &["--resume", "--no-progress"]].concat());
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["iterations"], done + 2);
    assert_eq!(report["resumed_at"], done);
    std::fs::remove_dir_all(&dir).ok();
}

/// Ctrl-C once training has ended (here delivered twice at once) stops the test score between
/// chunks (a million test points: seconds to score): the process fails, says what is saved and which commands do the rest,
/// never claims that a training step is in progress, and writes no report. `--resume` of the
/// finished run then does the rest; its report keeps the training time of the run (the
/// checkpoint's), not the ~0 s of an invocation that ran no step.
#[cfg(unix)]
#[test]
fn an_interrupt_after_training_stops_the_evaluation_and_resume_finishes_it() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let dir = temp_dir("eval-interrupt");
    let run = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(["train", "--data", "8gaussians", "--iters", "40"])
        .args(["--batch-size", "16", "--set", "model.width=4"])
        .args(["--set", "model.depth=2", "--set", "data.n_train=256"])
        .args(["--set", "data.n_val=32", "--set", "data.n_test=1000000"])
        .args(["--no-progress", "--out"])
        .arg(&run)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("scoring the test split") {
        let read = stderr.read_line(&mut log).unwrap();
        assert!(read > 0, "the test split was not scored:\n{log}");
    }
    // Delivered twice, 50 ms apart, as GNU `timeout` can (the command, then its process
    // group): still one graceful interrupt. (This small run usually ends within the 50 ms, so
    // the window's logic itself is tested in `interrupt.rs`.)
    let pid = child.id().to_string();
    let kill = Command::new("sh")
        .args([
            "-c",
            &format!("kill -INT {pid}; sleep 0.05; kill -INT {pid}"),
        ])
        .status()
        .unwrap();
    assert!(kill.success());
    stderr.read_to_string(&mut log).unwrap();
    assert!(!child.wait().unwrap().success(), "{log}");
    let parts = [
        "interrupted after training (iteration 40)",
        "model.safetensors",
        "checkpoint.safetensors",
        "not done: the test score, the plots, report.json",
        "`cpflow eval --model",
        "-n 1000000` scores the test split",
        "`cpflow plot --model",
        "--resume` does all of it",
    ];
    for part in parts {
        assert!(log.contains(part), "no `{part}` in\n{log}");
    }
    assert!(!log.contains("step in progress"), "{log}");
    assert!(!run.join("report.json").exists());
    non_empty(&run.join("model.safetensors"));

    let config = run.join("config.toml");
    cpflow(&["train", "--config", config.to_str().unwrap(), "--resume"]);
    let report = read_json(&run.join("report.json"));
    let device = candle_core::Device::Cpu;
    let ck = cpflow::load_checkpoint(&run.join("checkpoint.safetensors"), &device);
    let trained = ck.unwrap().meta.state.unwrap().train_time_s;
    assert!(trained > 0.0);
    assert_eq!(report["iterations"], 40);
    assert_eq!(report["train_time_s"], trained);
    assert_eq!(report["invocation_train_time_s"], 0.0);
    let wall = report["wall_time_s"].as_f64().unwrap();
    assert!(wall >= trained, "{report}");
    assert!(report["test_nll"].is_number() && run.join("plots").is_dir());
    std::fs::remove_dir_all(&dir).ok();
}
