//! A robustness audit's CLI findings: a non-UTF-8 `train --out`, outputs that are a run's own
//! files, a damaged safetensors header, a plot window below the float's resolution, seeds
//! beyond TOML's integers, and a metrics file cut short before a resume.

use crate::cli_common::{cpflow, cpflow_fails, temp_dir, tiny_trained_run};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `cpflow` with `args` (any bytes) and `RUST_LOG=warn`.
fn run_os(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// stderr of `out`.
fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `train --out` with a non-UTF-8 name is refused by the argument parser, naming why,
/// before anything is written (it trained into `nu\u{FFFD}` and resumed from the defaults);
/// a run moved to such a directory is read there by `eval`, `sample` and `plot`.
#[cfg(unix)]
#[test]
fn a_non_utf8_train_out_is_refused_and_such_a_run_dir_is_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = temp_dir("robust-utf8");
    let bad = dir.join(OsStr::from_bytes(b"nu\xff"));
    let args: Vec<&OsStr> = ["train", "--data", "8gaussians", "--iters", "1", "--out"]
        .iter()
        .map(OsStr::new)
        .chain([bad.as_os_str()])
        .collect();
    let out = run_os(&args);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("is not valid UTF-8"), "{}", err(&out));
    assert!(!dir.join("nu\u{FFFD}").exists() && !bad.exists());
    // A run renamed to a non-UTF-8 directory: eval, sample and plot read it there.
    let (run, _) = tiny_trained_run(&dir, 1.0, &[]);
    std::fs::rename(&run, &bad).unwrap();
    let (samples, csv) = (dir.join("s.csv"), dir.join("d.csv"));
    for cmd in [
        vec![
            OsStr::new("eval"),
            OsStr::new("--model"),
            bad.as_os_str(),
            OsStr::new("--data"),
            csv.as_os_str(),
        ],
        vec![
            OsStr::new("sample"),
            OsStr::new("--model"),
            bad.as_os_str(),
            OsStr::new("-n"),
            OsStr::new("3"),
            OsStr::new("-o"),
            samples.as_os_str(),
        ],
        vec![
            OsStr::new("plot"),
            OsStr::new("--model"),
            bad.as_os_str(),
            OsStr::new("--grid"),
            OsStr::new("4"),
            OsStr::new("--samples"),
            OsStr::new("8"),
        ],
    ] {
        let out = run_os(&cmd);
        assert!(out.status.success(), "{cmd:?}: {}", err(&out));
    }
    assert!(samples.is_file() && bad.join("plots/density.png").is_file());
}

/// `sample -o` (and `--log-prob`) naming the run's training data or one of its files is
/// refused, saying what the file is, and the file is left as it was (the data were
/// replaced by samples, after which `eval` and `--resume` refused the run).
#[test]
fn sample_refuses_to_overwrite_the_runs_own_files() {
    let dir = temp_dir("robust-sample-out");
    let (run, _) = tiny_trained_run(&dir, 1.0, &[]);
    let model = run.to_str().unwrap();
    let data = dir.join("d.csv");
    for (target, what) in [
        (data.clone(), "the run's training data"),
        (run.join("metrics.jsonl"), "the run's training metrics"),
        (run.join("model.safetensors"), "the model being sampled"),
        (run.join("config.toml"), "the run's configuration"),
    ] {
        let before = std::fs::read(&target).unwrap();
        let t = target.to_str().unwrap();
        let e = cpflow_fails(&["sample", "--model", model, "-n", "5", "-o", t]);
        assert!(e.contains(what) && e.contains("--output"), "{t}: {e}");
        let e = cpflow_fails(&[
            "sample",
            "--model",
            model,
            "-n",
            "5",
            "-o",
            dir.join("s.npy").to_str().unwrap(),
            "--log-prob",
            t,
        ]);
        assert!(e.contains(what) && e.contains("--log-prob"), "{t}: {e}");
        assert_eq!(std::fs::read(&target).unwrap(), before, "{t} changed");
    }
    // The run is intact: eval scores it; a new file in the run directory is written.
    cpflow(&["eval", "--model", model, "--data", data.to_str().unwrap()]);
    let fresh = run.join("samples.csv");
    cpflow(&[
        "sample",
        "--model",
        model,
        "-n",
        "5",
        "-o",
        fresh.to_str().unwrap(),
    ]);
    assert!(fresh.is_file());
}

/// A changed byte in the `__metadata__` key of a model's safetensors header is named as
/// damage (it read "has no cpflow metadata: not a model written by `cpflow train`"); a
/// foreign file with a valid header and no cpflow metadata keeps that message.
#[test]
fn a_damaged_header_is_not_called_a_foreign_file() {
    let dir = temp_dir("robust-header");
    let (run, _) = tiny_trained_run(&dir, 1.0, &[]);
    let model = run.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + header_len]).into_owned();
    let at = 8 + header.find("__metadata__").expect("a metadata table") + 10;
    bytes[at] ^= 0x01; // `__metadat^_`
    let damaged = dir.join("damaged.safetensors");
    std::fs::write(&damaged, &bytes).unwrap();
    for cmd in ["eval", "plot"] {
        let e = cpflow_fails(&[cmd, "--model", damaged.to_str().unwrap()]);
        assert!(
            e.contains("is damaged or not a cpflow model") && e.contains("damaged.safetensors"),
            "{cmd}: {e}"
        );
    }
    // Not JSON at all (a changed brace).
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[8] = b'[';
    std::fs::write(&damaged, &bytes).unwrap();
    let e = cpflow_fails(&["eval", "--model", damaged.to_str().unwrap()]);
    assert!(e.contains("is damaged or not a cpflow model"), "{e}");
    // A valid safetensors file of another program.
    let foreign = dir.join("foreign.safetensors");
    write_foreign(&foreign);
    let e = cpflow_fails(&["eval", "--model", foreign.to_str().unwrap()]);
    assert!(e.contains("has no cpflow metadata"), "{e}");
    assert!(!e.contains("damaged"), "{e}");
}

/// A safetensors file with one f32 tensor and the metadata `{"format": "pt"}`.
fn write_foreign(path: &Path) {
    let header =
        r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(path, bytes).unwrap();
}

/// `plot --half-width 1e-300` is refused (it drew one value everywhere), naming the smallest
/// half-width the model's float can draw; 1e-3 is drawn.
#[test]
fn plot_refuses_a_window_below_the_floats_resolution() {
    let dir = temp_dir("robust-plot-window");
    let (run, _) = tiny_trained_run(&dir, 1.0, &["--dtype", "f64"]);
    let model = run.to_str().unwrap();
    let out = dir.join("plots");
    let o = out.to_str().unwrap();
    let small = ["--grid", "4", "--samples", "8", "--out", o];
    let e = cpflow_fails(
        &[
            &["plot", "--model", model, "--half-width", "1e-300"],
            &small[..],
        ]
        .concat(),
    );
    assert!(
        e.contains("too small") && e.contains("--half-width at least"),
        "{e}"
    );
    assert!(!out.join("density.png").exists());
    cpflow(
        &[
            &["plot", "--model", model, "--half-width", "1e-3"],
            &small[..],
        ]
        .concat(),
    );
    assert!(out.join("density.png").is_file());
}

/// Every command takes a seed up to 2^63 − 1 and refuses 2^63 where the arguments are read
/// (exit 2, naming the range; `train` failed later, `sample`, `eval` and `ot` took it), and
/// `--help` gives the range.
#[test]
fn seeds_have_one_range_checked_at_parse_time() {
    let dir = temp_dir("robust-seed");
    let (run, _) = tiny_trained_run(&dir, 1.0, &[]);
    let model = run.to_str().unwrap();
    let too_big = "9223372036854775808";
    let seed = ["--seed", too_big];
    let s = dir.join("s.csv");
    let (t, o) = (dir.join("t"), dir.join("ot"));
    let (t, o) = (t.to_str().unwrap(), o.to_str().unwrap());
    for args in [
        vec!["train", "--data", "8gaussians", "--iters", "1", "--out", t],
        vec![
            "sample",
            "--model",
            model,
            "-n",
            "2",
            "-o",
            s.to_str().unwrap(),
        ],
        vec!["eval", "--model", model],
        vec!["plot", "--model", model],
        vec!["ot", "--dims", "2", "--iters", "1", "--out", o],
    ] {
        let args: Vec<&OsStr> = args.iter().chain(&seed).map(OsStr::new).collect();
        let out = run_os(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", err(&out));
        assert!(
            err(&out).contains("is too large") && err(&out).contains("at most 9223372036854775807"),
            "{args:?}: {}",
            err(&out)
        );
    }
    cpflow(&[
        "sample",
        "--model",
        model,
        "-n",
        "2",
        "-o",
        s.to_str().unwrap(),
        "--seed",
        "9223372036854775807",
    ]);
    let help = cpflow(&["sample", "--help"]);
    assert!(help.contains("2^63 − 1"), "{help}");
}

/// A `metrics.jsonl` cut off in the middle (its last line torn, the records after it gone)
/// is reported on resume, naming the file and the line, instead of being cut back silently;
/// a torn line after the checkpoint's records (the usual kill) is dropped without a warning.
#[test]
fn a_metrics_file_cut_short_is_reported_on_resume() {
    let dir = temp_dir("robust-metrics");
    let (run, _) = tiny_trained_run(&dir, 1.0, &["--set", "train.log_every=1"]);
    let metrics = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let resume = |iters: &str| {
        run_os(
            &[
                "train",
                "--resume",
                "--no-progress",
                "--iters",
                iters,
                "--out",
            ]
            .iter()
            .map(OsStr::new)
            .chain([run.as_os_str()])
            .collect::<Vec<_>>(),
        )
    };
    // Cut in the middle of line 2: line 1 whole, line 2 torn, line 3 gone.
    let cut = lines[0].len() + 1 + lines[1].len() / 2;
    std::fs::write(&metrics, &text[..cut]).unwrap();
    let out = resume("4");
    assert!(out.status.success(), "{}", err(&out));
    let e = err(&out);
    assert!(
        e.contains("metrics.jsonl: line 2, its last, is cut short")
            && e.contains("the last record kept is at iteration 1, the checkpoint at iteration 3"),
        "{e}"
    );
    // A partial line after the checkpoint's last record: the resume writes it again.
    let text = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, format!("{text}{{\"iterat")).unwrap();
    let out = resume("5");
    assert!(out.status.success(), "{}", err(&out));
    assert!(!err(&out).contains("cut short"), "{}", err(&out));
}
