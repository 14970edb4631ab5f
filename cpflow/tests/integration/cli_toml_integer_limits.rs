//! Integers that the command line writes into a TOML configuration are refused above TOML's
//! range (`i64::MAX`), naming the flag and the limit: a `--seed 18446744073709551615` came
//! back as "invalid value: integer `-1`" (wrapped by an `as i64`), and a `--set` of such a
//! value as "invalid type: string". Each flag of `train` (flow and image runs) and `vae`
//! that goes through the configuration, and `--set`, is checked; nothing is written.

use crate::cli_common::*;

const TOO_LARGE: &str = "18446744073709551615";

/// Asserts that `cpflow args` fails naming `flag`'s value as too large, with the limit, and
/// wrote nothing into `out`.
fn refused(args: &[&str], flag: &str, out: &std::path::Path) {
    let err = cpflow_fails(args);
    assert!(
        err.contains(&format!("{flag} {TOO_LARGE} is too large"))
            && err.contains("at most 9223372036854775807"),
        "{args:?}: {err}"
    );
    assert!(!err.contains("`-1`"), "{err}");
    assert!(!out.exists(), "the refused command wrote {}", out.display());
}

/// Asserts that `cpflow args` fails saying that the `--set` value is out of TOML's range.
fn set_refused(args: &[&str], key: &str, out: &std::path::Path) {
    let err = cpflow_fails(args);
    assert!(
        err.contains(&format!(
            "--set {key}={TOO_LARGE}: {TOO_LARGE} is out of range"
        )) && err.contains("9223372036854775807"),
        "{args:?}: {err}"
    );
    assert!(!err.contains("invalid type: string"), "{err}");
    assert!(!out.exists(), "the refused command wrote {}", out.display());
}

#[test]
fn flow_run_flags_and_set_above_the_toml_range_are_refused() {
    let dir = temp_dir("toml-int-flow");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let base = ["train", "--data", "8gaussians", "--no-progress", "--out", o];
    for flag in ["--seed", "--iters", "--batch-size"] {
        let args: Vec<&str> = base.iter().copied().chain([flag, TOO_LARGE]).collect();
        refused(&args, flag, &out);
    }
    let set = format!("data.seed={TOO_LARGE}");
    let args: Vec<&str> = base.iter().copied().chain(["--set", &set]).collect();
    set_refused(&args, "data.seed", &out);
    // The largest value TOML holds is taken: the run is refused on its model (width 0,
    // checked before any data are drawn), not on the seed.
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--seed", "9223372036854775807", "--set", "model.width=0"])
        .collect();
    let err = cpflow_fails(&args);
    assert!(err.contains("model.width must be at least 1"), "{err}");
}

#[test]
fn image_run_flags_and_set_above_the_toml_range_are_refused() {
    let dir = temp_dir("toml-int-image");
    let cfg = dir.join("mnist.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let out = dir.join("run");
    let (c, o) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let base = ["train", "--config", c, "--no-progress", "--out", o];
    for flag in ["--seed", "--iters", "--batch-size"] {
        let args: Vec<&str> = base.iter().copied().chain([flag, TOO_LARGE]).collect();
        refused(&args, flag, &out);
    }
    let set = format!("train.seed={TOO_LARGE}");
    let args: Vec<&str> = base.iter().copied().chain(["--set", &set]).collect();
    set_refused(&args, "train.seed", &out);
}

#[test]
fn vae_epochs_and_set_above_the_toml_range_are_refused() {
    let dir = temp_dir("toml-int-vae");
    let cfg = dir.join("vae.toml");
    let text = format!(
        "[data]\ndataset = \"frey-faces\"\nroot = {:?}\n[train]\nepochs = 1\n",
        shared_data()
    );
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join("run");
    let (c, o) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let base = ["vae", "--config", c, "--no-progress", "--out", o];
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--epochs", TOO_LARGE])
        .collect();
    refused(&args, "--epochs", &out);
    let set = format!("train.seed={TOO_LARGE}");
    let args: Vec<&str> = base.iter().copied().chain(["--set", &set]).collect();
    set_refused(&args, "train.seed", &out);
}
