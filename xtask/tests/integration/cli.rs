//! The `cargo xtask` binary end to end: `bench-tabular` and `reproduce` refusing bad
//! arguments and missing data, and (in [`download`]) `download` against a local test server
//! serving fabricated archives (and, for MNIST and BSDS300, the real files from
//! ../shared/data); in [`download_unloadable`], archives whose files the loaders cannot read
//! and `--force`; in [`download_mirror`], local mirror directories and the documented mirror
//! layout.

mod download;
mod download_installed;
mod download_mirror;
mod download_unloadable;

use std::path::Path;
use std::process::{Command, Output};

use crate::common::tempdir;

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env_remove("CPFLOW_DATA_MIRROR")
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn download(name: &str, dir: &Path, mirror: &str) -> Output {
    download_with(name, dir, mirror, &[])
}

/// [`download`] with `extra` arguments after the others (`--force`).
fn download_with(name: &str, dir: &Path, mirror: &str, extra: &[&str]) -> Output {
    let args = [
        "download",
        name,
        "--dir",
        dir.to_str().unwrap(),
        "--mirror",
        mirror,
        "--no-progress",
        "--retries",
        "1",
        "--retry-delay-ms",
        "1",
    ];
    xtask(&[&args[..], extra].concat())
}

/// `args` then `--data-dir data --out out --no-progress` (for `bench-tabular` and
/// `reproduce`).
fn xtask_with_folders(args: &[&str], data: &Path, out: &Path) -> Output {
    let folders = [
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    xtask(&[args, &folders[..]].concat())
}

/// Asserts that the command succeeded, showing its log if not.
fn assert_succeeded(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

/// Asserts that the command's log contains `needle`.
fn assert_logged(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

/// Asserts that the command failed; returns its log.
fn failed_log(o: &Output) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "{err}");
    err
}

/// Asserts that the command failed and that its log contains `needle`.
fn assert_failed_saying(o: &Output, needle: &str) {
    let err = failed_log(o);
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

/// Budgets too large for a `Duration` are refused with a message, not a panic.
#[test]
fn huge_minutes_are_an_error_not_a_panic() {
    let data = tempdir();
    let out = tempdir();
    for cmd in ["bench-tabular", "reproduce"] {
        let res = xtask_with_folders(&[cmd, "--minutes", "1e300"], data.path(), out.path());
        let err = stderr(&res);
        assert_eq!(res.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains("--minutes") && !err.contains("panicked"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn bench_tabular_skips_a_missing_dataset_with_the_download_command_and_fails_if_none_ran() {
    let data = tempdir();
    let out = tempdir();
    let res = xtask_with_folders(
        &["bench-tabular", "--datasets", "power"],
        data.path(),
        out.path(),
    );
    // Nothing can run (the only dataset is missing): refused before anything is written (it
    // wrote an empty bench-tabular.md, then failed), with the download command and a pointer
    // at --data-dir (a mistyped one exited 0 with an empty table).
    assert_failed_saying(&res, "no dataset ran");
    assert_logged(&res, "--data-dir");
    assert_logged(&res, "cargo xtask download power");
    assert_logged(&res, "nothing was written");
    let written: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(written.is_empty(), "{written:?}\n{}", stderr(&res));
    // An --out that does not exist yet is not created either.
    let fresh = out.path().join("new");
    let res = xtask_with_folders(
        &["bench-tabular", "--datasets", "power"],
        data.path(),
        &fresh,
    );
    assert_failed_saying(&res, "cargo xtask download power");
    assert!(!fresh.exists());

    let bad = xtask(&["bench-tabular", "--datasets", "imagenet"]);
    assert_failed_saying(&bad, "unknown dataset");

    for (cmd, flags) in [
        (
            "bench-tabular",
            &[
                "--datasets",
                "--data-dir",
                "--minutes",
                "--quick",
                "--device",
                "--out",
            ][..],
        ),
        (
            "reproduce",
            &[
                "--quick",
                "--out",
                "--minutes",
                "--device",
                "--vae-data-dir",
                "--vae-datasets",
                "--no-vae",
            ][..],
        ),
    ] {
        let help = xtask(&[cmd, "--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        for flag in flags {
            assert!(text.contains(flag), "{cmd}: {flag} missing from\n{text}");
        }
    }
}

/// `reproduce --overwrite` removes the old reproduction only once every argument is valid: a
/// typo in `--vae-datasets` or `--image-datasets` emptied `--out` before it was rejected.
#[test]
fn reproduce_overwrite_checks_its_arguments_before_removing_anything() {
    let out = tempdir();
    for d in ["toys", "tabular"] {
        std::fs::create_dir_all(out.path().join(d)).unwrap();
    }
    std::fs::write(out.path().join("report.md"), "# earlier").unwrap();
    std::fs::write(
        out.path().join("reproduce-run.json"),
        r#"{"preset":"quick","minutes":null,"device":"cpu"}"#,
    )
    .unwrap();
    for bad in [
        ["--vae-datasets", "bogus"],
        ["--image-datasets", "imagenet"],
        ["--device", "tpu"],
    ] {
        let mut args = vec![
            "reproduce",
            "--quick",
            "--overwrite",
            "--no-progress",
            "--out",
            out.path().to_str().unwrap(),
        ];
        args.extend(bad);
        let res = xtask(&args);
        assert!(!res.status.success(), "{bad:?}");
        assert!(
            stderr(&res).contains("unknown"),
            "{bad:?}: {}",
            stderr(&res)
        );
        for kept in ["toys", "tabular", "report.md", "reproduce-run.json"] {
            assert!(
                out.path().join(kept).exists(),
                "{bad:?} removed {kept}: {}",
                stderr(&res)
            );
        }
    }
}

/// Counts below 1 are refused in words (clap's range check printed
/// `0 is not in 1..18446744073709551615`).
#[test]
fn a_zero_count_is_refused_in_words() {
    for flag in ["--val-every", "--test-rows", "--blocks"] {
        let res = xtask(&["bench-tabular", flag, "0"]);
        assert!(!res.status.success());
        let err = stderr(&res);
        assert!(
            err.contains("must be at least 1") && !err.contains("18446744073709551615"),
            "{flag}: {err}"
        );
    }
}
