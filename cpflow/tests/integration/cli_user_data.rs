//! The CLI on data of one's own (a `.csv` file): the figures' window follows the data, a
//! figure that cannot be drawn keeps the run's report, `eval` refuses a data file changed
//! since training and `-n` for files (before reading anything), finite values beyond
//! `--dtype f32` are named as such, negative option values reach their checks, and a resume
//! after editing the run's `config.toml` says that file is what differs.

use crate::cli_common::{cpflow, cpflow_fails, read_json, temp_dir};
use std::path::Path;

/// 120 points of a curve around `(cx, cy)`.
fn write_curve(path: &Path, (cx, cy): (f64, f64)) {
    let text: String = (0..120)
        .map(|i| {
            let t = i as f64 * 0.37;
            format!("{},{}\n", cx + t.sin() * 2.0, cy + (t * 1.3).cos())
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// `cpflow train` of a tiny 2-D model (width 4, depth 2), `iters` steps on `csv` into `out`,
/// a tenth of the rows held out for the test score, plus `extra` arguments.
fn train_tiny(csv: &Path, out: &Path, iters: &str, extra: &[&str]) -> String {
    let args = [
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--iters",
        iters,
        "--batch-size",
        "16",
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        "data.test_fraction=0.1",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ];
    cpflow(&[&args[..], extra].concat())
}

/// Data centred at (100, 50), far outside the reference's `[−4, 4]²`: the figures are drawn
/// around the data (the run exited 1 after training, without its report, as the density
/// underflowed in `[−4, 4]²`); `plot --half-width` draws a square around `--center`; a
/// figure that cannot be written costs the figures only: the report is written and says why.
#[test]
fn figures_follow_the_data_and_a_failed_figure_keeps_the_report() {
    let dir = temp_dir("user-data-plots");
    let csv = dir.join("far.csv");
    write_curve(&csv, (100.0, 50.0));
    let run = dir.join("run");
    train_tiny(&csv, &run, "3", &[]);
    let report = read_json(&run.join("report.json"));
    assert!(report.get("plot_error").is_none(), "{report}");
    let figures = read_json(&run.join("plots/plots.json"));
    let density = figures
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "density.png")
        .expect("density.png in plots.json");
    let (x, y) = (&density["x_range"], &density["y_range"]);
    // The data span x in [98, 102], y in [49, 51]; a tenth more on every side.
    let (x0, x1) = (x[0].as_f64().unwrap(), x[1].as_f64().unwrap());
    let (y0, y1) = (y[0].as_f64().unwrap(), y[1].as_f64().unwrap());
    assert!(
        (97.0..98.0).contains(&x0) && (102.0..103.0).contains(&x1),
        "{x0} {x1}"
    );
    assert!(
        (48.5..49.0).contains(&y0) && (51.0..51.5).contains(&y1),
        "{y0} {y1}"
    );

    let square = dir.join("square");
    let run_s = run.to_str().unwrap();
    let quick = ["--grid", "10", "--samples", "10"];
    let out = ["--out", square.to_str().unwrap()];
    let window = ["--center", "100,50", "--half-width", "3"];
    cpflow(&[&["plot", "-m", run_s][..], &out, &quick, &window].concat());
    let figures = read_json(&square.join("plots.json"));
    assert_eq!(figures[0]["x_range"], serde_json::json!([97.0, 103.0]));
    assert_eq!(figures[0]["y_range"], serde_json::json!([47.0, 53.0]));
    // A negative centre is a value, not an option.
    let err = cpflow_fails(
        &[
            &["plot", "-m", run_s][..],
            &out,
            &quick,
            &["--center", "-1,x"],
        ]
        .concat(),
    );
    assert!(err.contains("`x` is not a number"), "{err}");

    // `plots` taken by a file: the figures fail, the run and its report do not.
    let blocked = dir.join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("plots"), b"not a directory").unwrap();
    let log = train_tiny(&csv, &blocked, "3", &[]);
    let report = read_json(&blocked.join("report.json"));
    let why = report["plot_error"]
        .as_str()
        .expect("plot_error in report.json");
    assert!(why.contains("not a directory"), "{why}");
    assert!(report["test_nll"].is_number(), "{report}");
    assert!(log.contains("trained 3 iterations"), "{log}");
}

/// `eval` of a run without `--data` scores the run's test split only while its data file is
/// the one it was trained on (it re-split the changed file and printed its score as the
/// run's), refused before the file is read; `-n` is refused for a file (it was silently ignored); finite values beyond f32 are
/// named as such under `--dtype f32` (they read "NaN or infinite values").
#[test]
fn eval_scores_the_runs_own_file_only_unchanged() {
    let dir = temp_dir("user-data-eval");
    let csv = dir.join("d.csv");
    write_curve(&csv, (0.0, 0.0));
    let run = dir.join("run");
    train_tiny(&csv, &run, "3", &["--set", "run.plots=false"]);
    let run_s = run.to_str().unwrap();
    // `--no-progress` as `train` takes it (eval had no such flag: an argument error).
    let first: serde_json::Value =
        serde_json::from_str(cpflow(&["eval", "-m", run_s, "--no-progress"]).trim()).unwrap();
    let report = read_json(&run.join("report.json"));
    assert_eq!(first["nll"], report["test_nll"]);

    let err = cpflow_fails(&["eval", "-m", run_s, "-n", "5"]);
    assert!(err.contains("-n 5 draws points of a toy"), "{err}");
    let err = cpflow_fails(&[
        "eval",
        "-m",
        run_s,
        "-n",
        "5",
        "--data",
        csv.to_str().unwrap(),
    ]);
    assert!(err.contains("-n 5 draws points of a toy"), "{err}");
    // Refused before the model and the data are read: a file that is not there, a benchmark
    // under a root without it, and a model file that cannot be loaded give the `-n` message,
    // not their loading errors.
    let root = dir.join("no-data");
    let missing = dir.join("missing.csv");
    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::copy(run.join("config.toml"), corrupt.join("config.toml")).unwrap();
    // The run's weights with the last byte of their data changed: refused as corrupt.
    let mut weights = std::fs::read(run.join("model.safetensors")).unwrap();
    *weights.last_mut().unwrap() ^= 0x55;
    std::fs::write(corrupt.join("model.safetensors"), weights).unwrap();
    for args in [
        vec!["-m", run_s, "--data", missing.to_str().unwrap()],
        vec![
            "-m",
            run_s,
            "--data",
            "power",
            "--data-root",
            root.to_str().unwrap(),
        ],
        vec!["-m", corrupt.to_str().unwrap()],
    ] {
        let mut full = vec!["eval", "-n", "5"];
        full.extend(&args);
        let err = cpflow_fails(&full);
        assert!(
            err.contains("-n 5 draws points of a toy"),
            "{args:?}: {err}"
        );
    }

    let big = dir.join("big.csv");
    std::fs::write(&big, "0.1,0.2\n1e100,0.5\n-0.3,0.1\n").unwrap();
    let err = cpflow_fails(&[
        "eval",
        "-m",
        run_s,
        "--dtype",
        "f32",
        "--data",
        big.to_str().unwrap(),
    ]);
    assert!(
        err.contains("finite values too large for the model's F32")
            && err.contains("1 of them, up to |x| = 1e100")
            && err.contains("--dtype f64"),
        "{err}"
    );

    // Checked before the file is read and split: a file changed so that it no longer
    // parses (a NaN) gives the changed-file message, not the reader's error.
    std::fs::write(&csv, "1,2\n3,nan\n").unwrap();
    let err = cpflow_fails(&["eval", "-m", run_s]);
    assert!(
        err.contains("has changed since the run started") && !err.contains("non-finite"),
        "{err}"
    );
    write_curve(&csv, (3.0, 0.0));
    let err = cpflow_fails(&["eval", "-m", run_s]);
    assert!(
        err.contains("has changed since the run started") && err.contains("--data"),
        "{err}"
    );
    // Every row of the file as it is now, on request.
    let now: serde_json::Value = serde_json::from_str(
        cpflow(&["eval", "-m", run_s, "--data", csv.to_str().unwrap()]).trim(),
    )
    .unwrap();
    assert_eq!(now["points"], 120);
}

/// Negative values of numeric options reach their checks (the parser said "unexpected
/// argument '-0'"); a resume whose `config.toml` was edited after the run started says that
/// file is what differs (it advised resuming with that very file).
#[test]
fn negative_values_and_an_edited_run_config() {
    let dir = temp_dir("user-data-resume");
    let csv = dir.join("d.csv");
    write_curve(&csv, (0.0, 0.0));
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let args = [
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--out",
        run_s,
        "--lr",
        "-0.01",
    ];
    let err = cpflow_fails(&args);
    assert!(err.contains("must be finite and ≥ 0, got -0.01"), "{err}");
    // `--dtype f16` is named as the flag, with the values it takes, by clap (train named the
    // config key `model.float`).
    let mut f16 = args;
    f16[5..].copy_from_slice(&["--dtype", "f16"]);
    let err = cpflow_fails(&f16[..]);
    assert!(
        err.contains("invalid value 'f16' for '--dtype <DTYPE>'")
            && err.contains("[possible values: f32, f64]")
            && !err.contains("model.float"),
        "{err}"
    );

    train_tiny(&csv, &run, "3", &["--set", "run.plots=false"]);
    let config = run.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let edited = text.replace("width = 4", "width = 6");
    assert_ne!(text, edited, "{text}");
    std::fs::write(&config, edited).unwrap();
    let err = cpflow_fails(&["train", "--out", run_s, "--resume", "--iters", "6"]);
    assert!(
        err.contains("config.toml itself no longer matches the run's checkpoint"),
        "{err}"
    );
    // Restored, the resume runs.
    std::fs::write(&config, text).unwrap();
    cpflow(&[
        "train",
        "--out",
        run_s,
        "--resume",
        "--iters",
        "6",
        "--no-progress",
    ]);
}
