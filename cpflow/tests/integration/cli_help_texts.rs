//! What `--help` and the exit status say, as the README says it:
//! - `eval -n`'s default on a run without `--data` is the run's `data.n_test` (the help said
//!   10,000 whatever the run), checked against what `eval` scores;
//! - `import-reference` names `--vae` and VAEs in `cpflow --help` and its own help (it said
//!   "a tabular, toy or image flow" only);
//! - a usage error exits with status 2, any other error with 1.

use std::process::Command;

use crate::cli_common::{cpflow, temp_dir};

/// `cpflow args` run to its end: (exit status, stdout, stderr).
fn status_of(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The help's text with its line breaks and indentation folded into single spaces.
fn help(args: &[&str]) -> String {
    let (code, stdout, stderr) = status_of(args);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    stdout.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn eval_n_help_names_the_runs_n_test_and_eval_scores_that_many() {
    let text = help(&["eval", "--help"]);
    assert!(
        text.contains("without `--data`, the run's `data.n_test`"),
        "{text}"
    );
    // And that is what eval does: a toy run with n_test = 37 is scored on 37 points.
    let dir = temp_dir("help-eval-n");
    let run = dir.join("run");
    let out = run.to_str().unwrap();
    cpflow(&[
        "train",
        "--data",
        "8gaussians",
        "--iters",
        "2",
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        "data.n_train=64",
        "--set",
        "data.n_val=16",
        "--set",
        "data.n_test=37",
        "--set",
        "run.plots=false",
        "--no-progress",
        "--out",
        out,
    ]);
    let stdout = cpflow(&["eval", "--model", out, "--no-progress"]);
    assert!(
        stdout.contains("\"points\":37") || stdout.contains("\"points\": 37"),
        "{stdout}"
    );
}

#[test]
fn import_reference_help_names_vaes() {
    let top = help(&["--help"]);
    let line = top
        .split("import-reference")
        .nth(1)
        .unwrap_or_else(|| panic!("{top}"));
    assert!(line.contains("--vae a VAE"), "{line}");
    let own = help(&["import-reference", "--help"]);
    assert!(own.contains("--vae a VAE"), "{own}");
    assert!(own.contains("with `--vae`: `best.safetensors`"), "{own}");
}

/// README: "A usage error ... exit status 2; any other error ... exit status 1".
#[test]
fn usage_errors_exit_2_and_other_errors_1() {
    // A `--set` without `=`, or with nothing before it, is a malformed value (it was refused
    // only once the configuration was built, with exit status 1).
    let sets = [
        &["train", "--set", "foo", "--out", "/no/such/dir/x"][..],
        &["train", "--set", "=3", "--out", "/no/such/dir/x"],
        &["vae", "--set", "train.epochs", "--out", "/no/such/dir/x"],
        // A dimension 0 is a malformed `--dims` value too (one listed twice is not: exit 1).
        &["ot", "--dims", "2,0", "--out", "/no/such/dir/x"],
    ];
    for args in [&["bake"][..], &["train", "--iters", "abc"], &["eval"]]
        .into_iter()
        .chain(sets)
    {
        let (code, _, stderr) = status_of(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = status_of(&["eval", "--model", "/no/such/run"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/no/such/run"), "{stderr}");
}
