//! Runs killed (`kill -9`) before their first checkpoint, the directories built by hand as a
//! robustness audit found them: a `vae` (`config.toml`, `metrics.jsonl`, best weights of an
//! older cpflow and a checkpoint's temporary file), a flow `train` (`config.toml`,
//! `metrics.jsonl`) and an image `train`. `--resume`, and a new run that would not restart
//! them as they were, say what they are, with the command that starts them again. (A `vae`
//! killed between its checkpoint and its best weights: `vae::tests_best_weights`.)

use std::path::Path;

use crate::cli_common::{
    cpflow, cpflow_fails, cpflow_log, shared_data, temp_dir, tiny_csv_train_args, tiny_vae_config,
};

/// The first line of the `config.toml` that cpflow writes for a run
/// (`cli::run_dir::CONFIG_HEADER`).
const CONFIG_HEADER: &str = "# Written by cpflow: the run's configuration as resolved \
     (overrides applied, paths absolute); `--resume` reads it.\n";

/// Copies `names` from `from` into `to` (created).
fn copy(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for n in names {
        std::fs::copy(from.join(n), to.join(n)).unwrap();
    }
}

/// The id of a process that has ended.
fn ended_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

/// `vae` killed while writing its first checkpoint, by an older cpflow that wrote the best
/// weights before the checkpoint: `config.toml` (the run's, as cpflow writes it),
/// `metrics.jsonl`, `best.safetensors` and the checkpoint's temporary file. `--resume` said
/// to start the run without it, and a new run said to replace it with `--overwrite`
/// (pointing at each other); now both give the command that starts it again, which trains
/// the run and removes the temporary file.
#[test]
fn a_vae_killed_before_its_first_checkpoint_restarts_from_its_config() {
    let dir = temp_dir("vae-killed-first");
    let killed = dir.join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let k = killed.to_str().unwrap();
    let config = format!(
        "{CONFIG_HEADER}{}",
        tiny_vae_config("frey-faces", &shared_data())
    );
    std::fs::write(killed.join("config.toml"), config).unwrap();
    // What the killed run wrote before its checkpoint (the restart reads neither).
    std::fs::write(killed.join("metrics.jsonl"), "{\"epoch\":1}\n").unwrap();
    std::fs::write(killed.join("best.safetensors"), b"epoch 1's weights").unwrap();
    let temp = killed.join(format!(".checkpoint.safetensors.tmp-{}", ended_pid()));
    std::fs::write(&temp, b"half a checkpoint").unwrap();
    let restart = format!("`cpflow vae --config {k}/config.toml --out {k} --overwrite`");
    let stopped = format!(
        "the run in {k} was stopped before it wrote its first checkpoint (config.toml, \
         metrics.jsonl, best.safetensors is there, no checkpoint.safetensors): nothing was \
         saved that --resume could continue. Start it again from its own configuration with \
         {restart}"
    );
    let other = dir.join("vae.toml");
    std::fs::write(&other, tiny_vae_config("frey-faces", &shared_data())).unwrap();
    for args in [
        vec!["vae", "--out", k, "--resume", "--no-progress"],
        vec!["vae", "--config", other.to_str().unwrap(), "--out", k],
    ] {
        let err = cpflow_fails(&args);
        assert!(err.contains(&stopped), "{args:?}: {err}");
        assert!(
            !err.contains("without --resume") && !err.contains("already holds a model"),
            "{args:?}: {err}"
        );
    }
    let config = killed.join("config.toml");
    let config = config.to_str().unwrap();
    let printed = cpflow(&[
        "vae",
        "--config",
        config,
        "--out",
        k,
        "--overwrite",
        "--no-progress",
    ]);
    assert!(printed.contains(": 1 epoch (max-epochs)"), "{printed}");
    assert!(killed.join("checkpoint.safetensors").exists());
    assert!(!temp.exists(), "{} is left", temp.display());
    let log = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
}

/// An image run killed before its first checkpoint (its `config.toml` alone): `--resume`
/// gives the command that starts it again (nothing is trained here).
#[test]
fn an_image_run_killed_before_its_first_checkpoint_is_told_how_to_restart() {
    let dir = temp_dir("image-killed-first");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/mnist-cpu.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let root = format!("root = {:?}", shared_data());
    let text = text.replace("root = \"../shared/data\"", &root);
    std::fs::write(dir.join("config.toml"), format!("{CONFIG_HEADER}{text}")).unwrap();
    let d = dir.to_str().unwrap();
    let restart = format!("`cpflow train --config {d}/config.toml --out {d} --overwrite`");
    let err = cpflow_fails(&["train", "--out", d, "--resume", "--no-progress"]);
    assert!(
        err.contains("was stopped before it wrote its first checkpoint (config.toml is there")
            && err.contains(&restart),
        "{err}"
    );
}

/// A 2-column CSV of `rows` rows (a fixed, irregular cloud: no RNG needed).
fn write_csv(path: &Path, rows: usize) {
    let text: String = (0..rows)
        .map(|i| {
            let t = i as f64 * 0.37;
            format!("{:.6},{:.6}\n", t.sin() * 2.0, (1.3 * t).cos())
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// `train` killed before its first checkpoint (`config.toml` and `metrics.jsonl`):
/// `--resume` said to start the run without it, and `train --out DIR` without `--config`
/// then silently trained the defaults and flags there. `--resume` now gives the command that
/// starts the run again from its own configuration, which ends with the uninterrupted run's
/// model, byte for byte; a new run without `--config` warns that it replaces the stopped
/// run, with that command.
#[test]
fn a_flow_killed_before_its_first_checkpoint_restarts_from_its_config() {
    let dir = temp_dir("train-killed-first");
    let csv = dir.join("d.csv");
    write_csv(&csv, 64);
    let (full, killed, other) = (dir.join("full"), dir.join("killed"), dir.join("other"));
    let args = tiny_csv_train_args(&csv, &full, "4", "16");
    cpflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
    copy(&full, &killed, &["config.toml", "metrics.jsonl"]);
    copy(&full, &other, &["config.toml", "metrics.jsonl"]);
    let k = killed.to_str().unwrap();
    let restart = format!("`cpflow train --config {k}/config.toml --out {k} --overwrite`");
    let err = cpflow_fails(&["train", "--out", k, "--resume", "--no-progress"]);
    assert!(
        err.contains("was stopped before it wrote its first checkpoint") && err.contains(&restart),
        "{err}"
    );
    let config = killed.join("config.toml");
    let config = config.to_str().unwrap();
    cpflow(&[
        "train",
        "--config",
        config,
        "--out",
        k,
        "--overwrite",
        "--no-progress",
    ]);
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&killed) == model(&full), "the models differ");
    // Without --config: the flags' run replaces the stopped one, and says so.
    let args = tiny_csv_train_args(&csv, &other, "1", "16");
    let log = cpflow_log(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let o = other.to_str().unwrap();
    let restart = format!("`cpflow train --config {o}/config.toml --out {o} --overwrite`");
    assert!(
        log.contains(
            "holds a run stopped before its first checkpoint (config.toml, metrics.jsonl)"
        ) && log.contains(&restart),
        "{log}"
    );
}
