//! What the commands that read a run say and write, beside the run's own commands:
//! - `eval` and `plot` of a run do not repeat the warnings of its configuration's inert data
//!   keys (they came from the shared data loader); `train` and `train --resume` give them;
//! - `plot` into a run directory holds the run's lock: refused while a `train` runs there
//!   (it wrote figures beside a live run, which a resume or an `--overwrite` then replaced or
//!   removed under it); `--out` elsewhere is not refused;
//! - the VAE's resume command in `plot`'s refusal is the one of the other messages, and runs;
//! - `import-reference` checks `--out` before it reads the configuration and the weights.

use std::path::Path;
use std::process::Command;

use crate::cli_common::{
    cpflow, cpflow_fails, cpflow_log, shared_data, snapshot, temp_dir, tiny_toy_args,
};

/// What the warning of an inert data key says (`cli::data::inert_keys`).
const INERT: &str = "has no effect: the toy `8gaussians` draws fresh points";

/// `args` as `&str`s.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `train` warns once of `data.val_fraction` on a toy, a resume too (it reads the
/// configuration again); `eval` and `plot` of the run say nothing of it.
#[test]
fn eval_and_plot_of_a_run_do_not_repeat_its_inert_data_keys() {
    let dir = temp_dir("readers-inert");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let sets = ["data.val_fraction=0.5", "data.n_train=64", "data.n_test=16"];
    let log = cpflow_log(&strs(&tiny_toy_args(&run, "1", "16", &sets)));
    assert_eq!(log.matches(INERT).count(), 1, "train: {log}");
    let log = cpflow_log(&["train", "--out", run_s, "--resume", "--iters", "2"]);
    assert_eq!(log.matches(INERT).count(), 1, "train --resume: {log}");
    let log = cpflow_log(&["eval", "--model", run_s]);
    assert!(!log.contains("has no effect"), "eval: {log}");
    let args = ["plot", "--model", run_s, "--grid", "8", "--samples", "16"];
    let log = cpflow_log(&args);
    assert!(!log.contains("has no effect"), "plot: {log}");
    assert!(run.join("plots/plots.json").is_file());
}

/// The lock a running `train` holds on `dir`, held by this test until dropped.
fn hold_lock(dir: &Path) -> std::fs::File {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".cpflow.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    lock
}

/// `plot` into a run directory whose lock another process holds is refused and writes
/// nothing there, the default `plots/` and an `--out` inside the run (spelt through `..`)
/// alike; `--out` elsewhere draws; once the lock is released the same command draws.
#[test]
fn plot_into_a_run_in_use_is_refused() {
    let dir = temp_dir("readers-plot-lock");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    cpflow(&strs(&tiny_toy_args(&run, "1", "16", &["data.n_train=64"])));
    // Every file but the lock's (which `train` left and `plot` opens).
    let files = || {
        let mut files = snapshot(&run);
        files.remove(Path::new(".cpflow.lock"));
        files
    };
    let before = files();
    let lock = hold_lock(&run);
    let plot = |out: Option<&Path>| -> Vec<String> {
        let mut a: Vec<String> = ["plot", "--model", run_s, "--grid", "8", "--samples", "16"]
            .map(String::from)
            .to_vec();
        if let Some(o) = out {
            a.extend(["--out".to_string(), o.to_str().unwrap().to_string()]);
        }
        a
    };
    let inside = dir.join("elsewhere/../run/figures");
    for out in [None, Some(inside.as_path())] {
        let err = cpflow_fails(&strs(&plot(out)));
        assert!(
            err.contains("drawing the figures into")
                && err.contains("in use by another cpflow process"),
            "{out:?}: {err}"
        );
        assert!(files() == before, "{out:?}: plot wrote into the run in use");
    }
    let elsewhere = dir.join("elsewhere");
    cpflow(&strs(&plot(Some(&elsewhere))));
    assert!(elsewhere.join("plots.json").is_file());
    lock.unlock().unwrap();
    drop(lock);
    cpflow(&strs(&plot(None)));
    assert!(run.join("plots/plots.json").is_file());
}

/// The command in backquotes after `before` in `message`.
fn quoted_after<'a>(message: &'a str, before: &str) -> &'a str {
    message
        .split(before)
        .nth(1)
        .and_then(|s| s.split('`').nth(1))
        .unwrap_or_else(|| panic!("no `{before}` command in {message}"))
}

/// `plot` of a VAE run names the same resume command as `train --resume` into it (the
/// shared `resume_command`; it gave `--config RUN/config.toml` too), and that command, run
/// through `sh` from another directory, continues the run.
#[cfg(unix)]
#[test]
fn a_vae_run_is_resumed_by_the_command_the_messages_name() {
    let dir = temp_dir("readers-vae-resume");
    let cfg = dir.join("vae.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndataset = \"caltech101\"\nroot = {:?}\nn_train = 200\n\
             [model]\nposterior = \"gaussian\"\nlatent_dim = 2\n\
             architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
             [train]\nepochs = 1\nbatch_size = 100\n\
             [eval]\nis_samples = 2\nis_chunk = 2\nis_images = 2\n",
            shared_data()
        ),
    )
    .unwrap();
    let run = dir.join("vae run");
    let (c, o) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    cpflow(&["vae", "--config", c, "--out", o, "--no-progress"]);
    let err = cpflow_fails(&["plot", "--model", o]);
    let from_plot = quoted_after(&err, "draws from it, and");
    let err = cpflow_fails(&["train", "--out", o, "--resume"]);
    let from_train = quoted_after(&err, "cannot continue it;");
    assert_eq!(from_plot, from_train, "plot and train name other commands");
    assert!(from_plot.ends_with("--resume"), "{from_plot}");
    // The printed command, with `cpflow` this binary, from another directory.
    let script =
        format!("cpflow() {{ \"$CPFLOW_BIN\" \"$@\"; }}; cd / && {from_plot} --no-progress");
    let out = Command::new("sh")
        .args(["-c", &script])
        .env("CPFLOW_BIN", env!("CARGO_BIN_EXE_cpflow"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 epoch (max-epochs)"),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `import-reference` into a directory that holds a model (no `--overwrite`) or that is a
/// file says so before it reads the configuration or the state dict (a missing weights file
/// was reported first: reading real weights can take long, and the import was refused
/// after), for vector flows, image flows and VAEs.
#[test]
fn import_reference_checks_out_before_reading_anything() {
    let dir = temp_dir("readers-import-order");
    let held = dir.join("held");
    std::fs::create_dir_all(&held).unwrap();
    // The weights and report of an imported model (`report.json` marks a VAE's run too).
    std::fs::write(held.join("model.safetensors"), b"a model").unwrap();
    std::fs::write(held.join("report.json"), b"{}").unwrap();
    let file = dir.join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let missing = dir.join("missing.safetensors");
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let flow_cfg = dir.join("flow.toml");
    std::fs::write(&flow_cfg, "[model]\nfloat = \"f64\"\n").unwrap();
    let cases = [
        (flow_cfg.clone(), false),
        (configs.join("mnist.toml"), false),
        (configs.join("vae-frey-cpu.toml"), true),
    ];
    for (config, vae) in &cases {
        for (out, wanted) in [
            (&held, "already holds a model"),
            (&file, "is a file, not a directory"),
        ] {
            let mut args = vec![
                "import-reference",
                "--state-dict",
                missing.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ];
            if *vae {
                args.push("--vae");
            }
            let err = cpflow_fails(&args);
            assert!(err.contains(wanted), "{args:?}: {err}");
            assert!(!err.contains("missing.safetensors"), "{args:?}: {err}");
        }
    }
    // The state dict is still read when `--out` is free: the same missing file is named.
    let free = dir.join("free");
    let err = cpflow_fails(&[
        "import-reference",
        "--state-dict",
        missing.to_str().unwrap(),
        "--config",
        flow_cfg.to_str().unwrap(),
        "--out",
        free.to_str().unwrap(),
    ]);
    assert!(err.contains("missing.safetensors"), "{err}");
}
