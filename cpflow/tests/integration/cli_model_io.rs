//! `cpflow eval`, `sample` and `plot` on a tiny trained run: size limits, output paths,
//! data of the wrong dimension, the float type of `.npy` samples, runs they cannot read.

use crate::cli_common::{
    cpflow, cpflow_fails, npy_descr, read_json, temp_dir, tiny_trained_run, train_tiny_toy,
};
use std::path::{Path, PathBuf};

/// A 2-D model trained 3 steps on a CSV file with no test rows (`data.test_fraction = 0`).
fn tiny_run(dir: &Path) -> PathBuf {
    tiny_trained_run(dir, 1.0, &[]).0
}

/// Sizes that allocate in proportion are refused with their limit while the arguments are
/// read (`plot --grid 100000` grew to 22 GB); a zero, NaN or infinite half-width is refused
/// in words (it was a `Debug` dump of the window).
#[test]
fn size_arguments_are_bounded_and_the_window_is_checked() {
    for (args, flag, limit) in [
        (
            &["plot", "-m", "nowhere", "--grid", "100000"][..],
            "--grid",
            "1000",
        ),
        (
            &["plot", "-m", "nowhere", "--samples", "2000000"][..],
            "--samples",
            "1000000",
        ),
        (
            &["eval", "-m", "nowhere", "-n", "2000000"][..],
            "-n",
            "1000000",
        ),
        (
            &[
                "sample", "-m", "nowhere", "--grid", "100x100", "-o", "g.png",
            ][..],
            "--grid",
            "4096",
        ),
        (
            &[
                "sample",
                "-m",
                "nowhere",
                "-n",
                "18446744073709551615",
                "-o",
                "s.npy",
            ][..],
            "-n",
            "100000000",
        ),
    ] {
        let err = cpflow_fails(args);
        assert!(
            err.contains(flag) && err.contains(limit) && err.contains("at most"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("nowhere"), "{args:?}: {err}");
    }
    for hw in ["0", "nan", "-1", "inf"] {
        let arg = format!("--half-width={hw}");
        let err = cpflow_fails(&["plot", "-m", "nowhere", &arg]);
        assert!(
            err.contains("--half-width") && err.contains("finite number above 0"),
            "{hw}: {err}"
        );
        assert!(!err.contains("Bounds {"), "{err}");
    }
    // A window so wide that the window's squared norms overflow (it wrote four blank or
    // partial figures, then failed on the density) is refused with its limit.
    let err = cpflow_fails(&["plot", "-m", "nowhere", "--half-width=1e300"]);
    assert!(
        err.contains("--half-width") && err.contains("at most 1e6"),
        "{err}"
    );
}

/// Output paths under a regular file, and figure files that cannot be written, are errors
/// naming the path and what was being done; 3-column data for a 2-D model are an error (no
/// `data.png` was written, silently); an empty test split says to pass `--data`; `--dtype
/// f32` samples are written as `<f4`, in chunks that do not change them.
#[test]
fn outputs_data_and_dtypes_of_eval_sample_and_plot() {
    let dir = temp_dir("model-io");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    let afile = dir.join("afile");
    std::fs::write(&afile, b"x").unwrap();
    let quick = ["--grid", "10", "--samples", "10"];

    let err = cpflow_fails(
        &[
            &["plot", "-m", run_s, "--out", afile.to_str().unwrap()][..],
            &quick,
        ]
        .concat(),
    );
    assert!(
        err.contains("afile") && err.contains("not a directory"),
        "{err}"
    );
    let under_file = afile.join("x.npy");
    let err = cpflow_fails(&["sample", "-m", run_s, "-o", under_file.to_str().unwrap()]);
    assert!(
        err.contains("afile") && err.contains("not a directory"),
        "{err}"
    );
    // A figure that cannot be replaced (a directory in its place) names the file.
    let plots = dir.join("plots");
    std::fs::create_dir_all(plots.join("plots.json")).unwrap();
    let err = cpflow_fails(
        &[
            &["plot", "-m", run_s, "--out", plots.to_str().unwrap()][..],
            &quick,
        ]
        .concat(),
    );
    assert!(
        err.contains("plots.json") && err.contains("writing"),
        "{err}"
    );
    // A window where the density underflows everywhere is an error before any figure is
    // written (it drew a blank density.png and three other figures first).
    let far = dir.join("far-plots");
    let err = cpflow_fails(
        &[
            &["plot", "-m", run_s, "--out", far.to_str().unwrap()][..],
            &quick,
            &["--half-width", "1e5"],
        ]
        .concat(),
    );
    assert!(
        err.contains("misses where the model puts its mass") && err.contains("--center X,Y"),
        "{err}"
    );
    let written: Vec<_> = std::fs::read_dir(&far)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "figures written: {written:?}");

    // 3-D data for a 2-D model.
    let d3 = dir.join("d3.csv");
    std::fs::write(&d3, "1,2,3\n4,5,6\n7,8,9\n").unwrap();
    let p3 = dir.join("p3");
    let args = ["plot", "-m", run_s, "--data", d3.to_str().unwrap(), "--out"];
    let err = cpflow_fails(&[&args[..], &[p3.to_str().unwrap()], &quick].concat());
    assert!(err.contains("the data are 3-D, the model 2-D"), "{err}");
    assert!(!p3.join("data.png").exists());

    // The run's file has no test rows.
    let err = cpflow_fails(&["eval", "-m", run_s]);
    assert!(
        err.contains("--data") && err.contains("test_fraction"),
        "{err}"
    );

    // Float types of the samples; 4097 rows are drawn in two chunks and the first 4096
    // are those of `-n 4096`.
    let s32 = dir.join("s32.npy");
    cpflow(&[
        "sample",
        "-m",
        run_s,
        "-n",
        "5",
        "--dtype",
        "f32",
        "-o",
        s32.to_str().unwrap(),
    ]);
    assert_eq!(npy_descr(&s32), "<f4");
    let m = cpflow::datasets::read_npy_file(&s32).unwrap();
    assert_eq!((m.rows(), m.cols()), (5, 2));
    let big = dir.join("big.npy");
    cpflow(&[
        "sample",
        "-m",
        run_s,
        "-n",
        "4097",
        "-o",
        big.to_str().unwrap(),
    ]);
    assert_eq!(npy_descr(&big), "<f8");
    let small = dir.join("small.npy");
    cpflow(&[
        "sample",
        "-m",
        run_s,
        "-n",
        "4096",
        "-o",
        small.to_str().unwrap(),
    ]);
    let (big, small) = (
        cpflow::datasets::read_npy_file(&big).unwrap(),
        cpflow::datasets::read_npy_file(&small).unwrap(),
    );
    assert_eq!(big.rows(), 4097);
    assert_eq!(&big.into_data()[..4096 * 2], &small.into_data()[..]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A VAE run directory is named as one by `plot`, with the commands that read it (it was
/// "not a cpflow checkpoint"); `eval` and `sample` read VAEs, and refuse one whose metadata
/// is not a VAE's, naming the file.
#[test]
fn vae_runs_are_named_with_the_command_that_reads_them() {
    let dir = temp_dir("vae-run");
    let t =
        candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let meta = std::collections::HashMap::from([("cpflow-vae".to_string(), "{}".to_string())]);
    let bytes = safetensors::serialize(vec![("w".to_string(), t)], Some(meta)).unwrap();
    std::fs::write(dir.join("checkpoint.safetensors"), bytes).unwrap();
    let d = dir.to_str().unwrap();
    let err = cpflow_fails(&["plot", "-m", d]);
    assert!(
        err.contains("VAE") && err.contains("cpflow eval") && err.contains("cpflow sample"),
        "{err}"
    );
    for args in [
        &["eval", "-m", d][..],
        &["sample", "-m", d, "-o", "s.npy"][..],
    ] {
        let err = cpflow_fails(args);
        assert!(
            err.contains("checkpoint.safetensors") && err.contains("not that of a cpflow VAE"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// An interrupted `sample` stops between chunks, says how far it got and leaves neither the
/// output nor its temporary file (the default SIGINT left `.s.npy.tmp-<pid>` behind).
#[cfg(unix)]
#[test]
fn an_interrupted_sample_leaves_no_files() {
    use std::process::{Command, Stdio};
    let dir = temp_dir("sample-interrupt");
    let run = tiny_run(&dir);
    let out_dir = dir.join("samples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join("s.npy");
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args([
            "sample",
            "-m",
            run.to_str().unwrap(),
            "-n",
            "100000000",
            "-o",
        ])
        .arg(&output)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the temporary file: sampling has begun.
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&out_dir).unwrap().next().is_none() {
        assert!(t0.elapsed().as_secs() < 60, "no output file was opened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (ok, err) = crate::cli_common::interrupt_and_wait(child);
    assert!(!ok, "{err}");
    assert!(
        err.contains("interrupted after") && err.contains("of 100000000 samples"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "files left: {left:?}");
}

/// An interrupted `eval` stops between chunks, says how far it got and prints no score.
#[cfg(unix)]
#[test]
fn an_interrupted_eval_prints_no_score() {
    let dir = temp_dir("eval-interrupt");
    let run = tiny_run(&dir);
    // A million points one at a time: far longer than the wait before the interrupt.
    let (ok, stdout, log) = crate::cli_common::interrupt_after_log(
        &[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "--data",
            "8gaussians",
            "-n",
            "1000000",
            "--batch-size",
            "1",
        ],
        "scoring 1000000 points",
        std::time::Duration::from_millis(300),
    );
    assert!(!ok, "{log}");
    assert!(stdout.is_empty(), "a score was printed after the interrupt");
    assert!(
        log.contains("interrupted after") && log.contains("of 1000000 points: no score"),
        "{log}"
    );
}

/// Without `-n`, `eval` of a toy run scores as many points as the run's own test score did,
/// so it reproduces report.json's number (it drew 10,000 and disagreed); points where the
/// model has no finite density are an error naming how many (it printed `"nll": null`).
#[test]
fn eval_reproduces_the_report_and_refuses_non_finite_densities() {
    let dir = temp_dir("eval-report");
    let run = dir.join("run");
    train_tiny_toy(
        &run,
        &["data.n_train=256", "data.n_val=32", "data.n_test=1500"],
    );
    let report = read_json(&run.join("report.json"));
    let line = cpflow(&["eval", "--model", run.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["points"].as_u64(), Some(1500), "{v}");
    // The CG surrogate's convergence is reported (a fraction of the systems).
    let converged = report["cg_converged"].as_f64().expect("cg_converged");
    assert!((0.0..=1.0).contains(&converged), "{report}");
    assert!(
        report["cg_unconverged_steps"].as_u64().is_some(),
        "{report}"
    );
    let (ours, theirs) = (
        v["nll"].as_f64().unwrap(),
        report["test_nll"].as_f64().unwrap(),
    );
    // Same points, weights and code; only the chunking may differ (1e-9 relative).
    assert!(
        (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0),
        "{ours} vs {theirs}"
    );

    let far = dir.join("far.csv");
    std::fs::write(&far, "1e200,1e200\n0.1,0.2\n-1e200,3\n").unwrap();
    let err = cpflow_fails(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        far.to_str().unwrap(),
    ]);
    assert!(
        err.contains("2 of the 3 points")
            && err.contains("no finite log-density")
            && err.contains("the first at row 0 (line 1 of far.csv; rows counted from 0)"),
        "{err}"
    );
    // A value that overflows the Hessian (not only `z`): NaN for that point alone, the same
    // message (it was "matrix of system 1 is not positive definite"), naming the point.
    std::fs::write(
        &far,
        "0.1,0.2
0.3,0.1
1e308,0.5
",
    )
    .unwrap();
    for estimator in ["exact", "slq"] {
        let err = cpflow_fails(&[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "--data",
            far.to_str().unwrap(),
            "--estimator",
            estimator,
        ]);
        assert!(
            err.contains("1 of the 3 points")
                && err.contains("the first at row 2 (line 3 of far.csv; rows counted from 0)"),
            "{estimator}: {err}"
        );
    }
}
