//! `cpflow vae` whose checkpoint cannot be written (its temporary file's name taken by a
//! directory, as a full disk would fail it): the message names the epoch, the intact last
//! checkpoint and the command that continues the run, which then ends it from that
//! checkpoint.

use crate::cli_common::{cpflow, shared_data, temp_dir, tiny_vae_config};
use std::process::{Command, Stdio};

/// `run`'s report.json, parsed.
fn report(run: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
}

/// After a first epoch, the second's checkpoint cannot be written: the error's message, and
/// the resume it names.
#[test]
fn a_failed_vae_checkpoint_write_says_how_to_continue_and_the_resume_ends_the_run() {
    let dir = temp_dir("vae-ckpt-write");
    let cfg = dir.join("vae.toml");
    std::fs::write(&cfg, tiny_vae_config("frey-faces", &shared_data())).unwrap();
    let run = dir.join("run");
    let (c, r) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    cpflow(&["vae", "--config", c, "--out", r, "--no-progress"]);
    let first = report(&run)["val_curve"][0].clone();
    // The second epoch's checkpoint: its temporary file's name is taken as soon as the
    // process that writes it is known, long before that epoch ends (data load, an epoch).
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args([
            "vae",
            "--out",
            r,
            "--resume",
            "--epochs",
            "2",
            "--no-progress",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let blocker = run.join(format!(".checkpoint.safetensors.tmp-{}", child.id()));
    std::fs::create_dir(&blocker).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let want = format!(
        "Error: writing the checkpoint at epoch 2 failed (I/O error on {}: ",
        blocker.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    let want = format!(
        "the run is saved after epoch 1 (the last checkpoint, {r}/checkpoint.safetensors). \
         Free disk space (or fix what the error names) and continue the run with \
         `cpflow vae --out {r} --resume`"
    );
    assert!(stderr.trim_end().ends_with(&want), "{stderr}");
    std::fs::remove_dir(&blocker).unwrap();
    let resumed = cpflow(&["vae", "--out", r, "--resume", "--no-progress"]);
    assert!(
        resumed.starts_with("Gaussian posterior") && resumed.contains(": 2 epochs (max-epochs)"),
        "{resumed}"
    );
    // The second epoch follows the first, the intact checkpoint's (the same validation
    // −ELBO, to the last digit).
    let curve = report(&run)["val_curve"].clone();
    assert_eq!((curve.as_array().unwrap().len(), &curve[0]), (2, &first));
}
