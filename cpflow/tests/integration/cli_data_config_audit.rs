//! The `cpflow train` messages of a user audit about data and configuration: drawn data too
//! large for the memory (it aborted, exit 134), `#` comment lines in a CSV file (refused),
//! the file line of a bad CSV row, settings accepted and then inert (no word), and serde's
//! configuration errors (no valid forms, the key twice, floats in 301 digits).

use std::process::Command;

use crate::cli_common::{cpflow_fails, temp_dir};

/// `cpflow train` on a tiny toy model (1 step, width 4, depth 2, 64 points) into `out`, with
/// `extra` arguments after; `(exit code, stderr)` with warnings logged.
fn tiny_toy_train(out: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args: Vec<&str> = vec![
        "train",
        "--iters",
        "1",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ];
    for set in [
        "model.width=4",
        "model.depth=2",
        "data.n_train=64",
        "data.n_val=16",
        "data.n_test=16",
        "run.plots=false",
        "train.val_every=0",
    ] {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running cpflow");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 10¹² toy points (16 TB) are refused before a point is drawn, naming the key, the bytes
/// and the limit, with exit code 1 and nothing written; the same for the test points.
#[test]
fn drawn_data_larger_than_the_memory_are_refused_up_front() {
    let dir = temp_dir("data-config-big");
    let out = dir.join("run");
    for (key, lower) in [
        ("data.n_train=1000000000000", "lower data.n_train"),
        ("data.n_test=1000000000000", "lower data.n_test"),
    ] {
        let (code, err) = tiny_toy_train(&out, &["--set", key]);
        assert_eq!(code, Some(1), "{key}: {err}");
        assert!(
            err.contains("the 8gaussians points (data.n_train = ")
                && err.contains("need at least 16000.0 GB of memory before any training")
                && err.contains(lower),
            "{key}: {err}"
        );
        assert!(!out.exists(), "{key}: the run directory was created");
    }
}

/// A CSV file that `numpy.savetxt(f, a, header="x y")` writes (`# x y` above the rows) trains;
/// a non-finite value is named by its row (from 0) and its file line (from 1).
#[test]
fn csv_comments_train_and_bad_rows_name_their_line() {
    let dir = temp_dir("data-config-csv");
    let csv = dir.join("f.csv");
    let rows: String = (0..40)
        .map(|i| {
            format!(
                "{:.3} {:.3}\n",
                (i as f64 * 0.37).sin(),
                (i as f64 * 0.71).cos()
            )
        })
        .collect();
    std::fs::write(&csv, format!("# x y\n{rows}")).unwrap();
    let out = dir.join("run");
    let args = crate::cli_common::tiny_csv_train_args(&csv, &out, "1", "16");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::cli_common::cpflow(&args);
    let bad = dir.join("n.csv");
    std::fs::write(&bad, "x,y\n0.1,0.2\nnan,0.4\n0.3,0.3\n").unwrap();
    let args = crate::cli_common::tiny_csv_train_args(&bad, &dir.join("run2"), "1", "16");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = cpflow_fails(&args);
    assert!(
        err.contains(
            "non-finite value NaN in row 1 (line 3 of n.csv), column 0 (rows and columns \
             counted from 0)"
        ),
        "{err}"
    );
}

/// Settings that cannot act are warned of on stderr, once each, naming the key and why; the
/// run still trains.
#[test]
fn inert_settings_are_warned_of() {
    let dir = temp_dir("data-config-inert");
    let (code, err) = tiny_toy_train(
        &dir.join("run"),
        &[
            "--set",
            "train.lr_schedule=plateau",
            "--set",
            "train.early_stopping=3",
            "--set",
            "data.val_fraction=0.5",
            "--batch-size",
            "100",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    for warning in [
        "train.lr_schedule = \"plateau\" has no effect with train.val_every = 0",
        "train.early_stopping = 3 has no effect with train.val_every = 0",
        "train.batch_size = 100 is more than the 64 training rows",
        "data.val_fraction = 0.5 has no effect: the toy `8gaussians` draws fresh points",
    ] {
        assert_eq!(err.matches(warning).count(), 1, "{warning:?} in {err}");
    }
    assert!(err.contains("WARN"), "{err}");
}

/// Configuration errors say the valid forms of an enum key, name the key once, and print a
/// float in its short form.
#[test]
fn config_errors_say_the_forms_once_and_short_floats() {
    let dir = temp_dir("data-config-errors");
    let out = dir.join("run");
    let (code, err) = tiny_toy_train(&out, &["--set", "train.lr_schedule=3"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("{ cosine = { t_max = N } }") && err.contains("\"plateau\""),
        "{err}"
    );
    assert_eq!(err.matches("train.lr_schedule").count(), 2, "{err}");
    let (code, err) = tiny_toy_train(&out, &["--set", "model.prior_log_var=1e300"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("model.prior_log_var must be finite and within ±80")
            && err.contains("got 1e300"),
        "{err}"
    );
    assert!(!err.contains("00000000000"), "{err}");
}

/// The VAE's and the image flow's configuration errors name the key once too (toml's own
/// message added "in `KEY`" on a line of its own after "at `KEY`").
#[test]
fn vae_and_image_config_errors_name_the_key_once() {
    let dir = temp_dir("data-config-errors-vae-image");
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let cases = [
        (
            "vae",
            "vae-frey-cpu.toml",
            "train.epochs=abc",
            "invalid VAE configuration",
        ),
        (
            "train",
            "mnist.toml",
            "train.ema=3",
            "invalid image configuration",
        ),
    ];
    for (command, config, set, what) in cases {
        let config = configs.join(config);
        let out = dir.join(command);
        let err = cpflow_fails(&[
            command,
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            set,
        ]);
        let key = set.split('=').next().unwrap();
        assert!(err.contains(&format!("{what} at `{key}`")), "{err}");
        assert_eq!(err.matches(key).count(), 1, "{err}");
        assert!(!out.exists(), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
