//! What the CLI says to a new user who gives it something it cannot do as asked: an option
//! that the chosen estimator does not take, a run directory of another command, another
//! command's configuration, a run whose data file is gone, a diverging run, a zero-sized
//! network. Each message names the problem and what to do (each was a silent success, or an
//! error that named neither).

use std::path::Path;

use crate::cli_common::{cpflow, cpflow_fails, temp_dir, tiny_csv_train_args};

/// A 2-column CSV of `rows` rows (a fixed, irregular cloud: no RNG needed).
fn write_csv(path: &Path, rows: usize) {
    let text: String = (0..rows)
        .map(|i| {
            let t = i as f64 * 0.37;
            format!(
                "{:.6},{:.6}\n",
                t.sin() * 2.0 + 0.1 * t.cos(),
                (1.3 * t).cos()
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// Trains the tiny 2-D model of `tiny_csv_train_args` on `csv` into `out` (3 steps).
fn train_tiny(csv: &Path, out: &Path) {
    let args = tiny_csv_train_args(csv, out, "3", "32");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cpflow(&args);
}

/// `eval --probes` / `--steps` without `--estimator slq` were ignored: the exact score was
/// printed as if they had been used. They are refused, naming the flag that makes them count;
/// with `--estimator slq` they are taken.
#[test]
fn slq_settings_need_the_slq_estimator() {
    let dir = temp_dir("audit-slq-flags");
    let csv = dir.join("d.csv");
    write_csv(&csv, 200);
    let run = dir.join("run");
    train_tiny(&csv, &run);
    let r = run.to_str().unwrap();
    // The tiny run keeps no test rows: the file is scored whole.
    let c = csv.to_str().unwrap();
    let err = cpflow_fails(&["eval", "--model", r, "--data", c, "--probes", "4"]);
    assert!(
        err.contains("--probes") && err.contains("--estimator slq"),
        "{err}"
    );
    let err = cpflow_fails(&[
        "eval", "--model", r, "--data", c, "--probes", "4", "--steps", "3",
    ]);
    assert!(err.contains("--probes and --steps"), "{err}");
    let out = cpflow(&[
        "eval",
        "--model",
        r,
        "--data",
        c,
        "--estimator",
        "slq",
        "--probes",
        "2",
        "--steps",
        "3",
    ]);
    assert!(out.contains("\"estimator\":\"slq\""), "{out}");
}

/// `cpflow vae --resume` without `--config` read a `cpflow train` run's `config.toml` as a
/// VAE's and failed on "unknown field `n_test`"; into a directory without a run it failed on
/// reading `config.toml`. Now: the kind of run and the command that continues it, or that
/// there is no run. `cpflow vae --config` of a `train` configuration names it as one.
#[test]
fn vae_resume_of_a_train_run_names_the_command_that_continues_it() {
    let dir = temp_dir("audit-vae-resume");
    let csv = dir.join("d.csv");
    write_csv(&csv, 200);
    let run = dir.join("run");
    train_tiny(&csv, &run);
    let r = run.to_str().unwrap();
    let err = cpflow_fails(&["vae", "--out", r, "--resume", "--no-progress"]);
    assert!(
        err.contains("holds a flow on vectors")
            && err.contains(&format!("cpflow train --out {r} --resume")),
        "{err}"
    );
    assert!(!err.contains("unknown field"), "{err}");

    let none = dir.join("no-run");
    let err = cpflow_fails(&["vae", "--out", none.to_str().unwrap(), "--resume"]);
    assert!(err.contains("there is no run"), "{err}");

    let cfg = run.join("config.toml");
    let other = dir.join("vae-run");
    let err = cpflow_fails(&[
        "vae",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(
        err.contains("configures a flow of `cpflow train`")
            && err.contains("cpflow train --config"),
        "{err}"
    );
    assert!(!other.exists(), "the refused run wrote {}", other.display());
}

/// `cpflow train --resume` without `--config` on a VAE run's directory named `cpflow vae
/// --config …` without the `--out` and `--resume` that continue it. The kind of run is read
/// from the checkpoint's metadata alone, so a header is enough here.
#[test]
fn train_resume_of_a_vae_run_names_the_command_that_continues_it() {
    let dir = temp_dir("audit-train-resume-vae");
    let run = dir.join("vae-run");
    std::fs::create_dir_all(&run).unwrap();
    let header = br#"{"__metadata__":{"cpflow-vae":"{}"}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(run.join("checkpoint.safetensors"), bytes).unwrap();
    std::fs::write(
        run.join("config.toml"),
        "[data]\ndataset = \"frey-faces\"\n[model]\nposterior = \"gaussian\"\n",
    )
    .unwrap();
    let r = run.to_str().unwrap();
    let err = cpflow_fails(&["train", "--out", r, "--resume", "--no-progress"]);
    assert!(
        err.contains("holds a VAE run") && err.contains(&format!("cpflow vae --out {r} --resume")),
        "{err}"
    );
}

/// A run whose data file was removed: `eval` (its test split), `plot` (data.png) and
/// `train --resume` said only "No such file or directory". They name the run's setting and
/// what to do. A model file without its run directory and without `--data` says how to pass
/// the data.
#[test]
fn a_run_whose_data_file_is_gone_says_what_to_do() {
    let dir = temp_dir("audit-gone-data");
    let csv = dir.join("gone.csv");
    write_csv(&csv, 200);
    let run = dir.join("run");
    train_tiny(&csv, &run);
    std::fs::remove_file(&csv).unwrap();
    let r = run.to_str().unwrap();
    let err = cpflow_fails(&["eval", "--model", r]);
    assert!(
        err.contains("is not there any more") && err.contains("--data <file.npy"),
        "{err}"
    );
    let plots = dir.join("plots");
    let err = cpflow_fails(&[
        "plot",
        "--model",
        r,
        "--out",
        plots.to_str().unwrap(),
        "--grid",
        "4",
        "--samples",
        "4",
    ]);
    assert!(
        err.contains("is not there any more") && err.contains("--data <file.npy"),
        "{err}"
    );
    let err = cpflow_fails(&[
        "train",
        "--out",
        r,
        "--resume",
        "--iters",
        "5",
        "--no-progress",
    ]);
    assert!(
        err.contains("is not there any more") && err.contains("--overwrite"),
        "{err}"
    );

    let lone = dir.join("lone.safetensors");
    std::fs::copy(run.join("model.safetensors"), &lone).unwrap();
    let err = cpflow_fails(&["eval", "--model", lone.to_str().unwrap()]);
    assert!(err.contains("`--data <file.npy"), "{err}");
}

/// A zero width or depth was refused as "layer 1: width must be at least 1", naming no key;
/// a diverging run ended with "non-finite loss (NaN) at training step 2" and no advice.
#[test]
fn zero_sizes_and_divergence_name_the_settings() {
    let dir = temp_dir("audit-sizes");
    let csv = dir.join("d.csv");
    write_csv(&csv, 200);
    let c = csv.to_str().unwrap();
    for key in ["model.width", "model.depth"] {
        let out = dir.join(key);
        let set = format!("{key}=0");
        let err = cpflow_fails(&[
            "train",
            "--data",
            c,
            "--set",
            &set,
            "--iters",
            "2",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(err.contains(&format!("{key} must be at least 1")), "{err}");
    }
    // The same for an image run (refused before its data are read).
    for key in ["width", "depth"] {
        let cfg = dir.join(format!("image-{key}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[data]\ndataset = \"mnist\"\nroot = \"no-data\"\n[model]\n{key} = 0\n[train]\nmax_iterations = 1\n"
            ),
        )
        .unwrap();
        let out = dir.join(format!("image-{key}"));
        let err = cpflow_fails(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            err.contains(&format!("model.{key} must be at least 1")),
            "{err}"
        );
    }
    let out = dir.join("diverged");
    let mut args = tiny_csv_train_args(&csv, &out, "20", "32");
    args.extend(["--lr", "1e12"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = cpflow_fails(&args);
    assert!(
        err.contains("non-finite") && err.contains("--lr") && err.contains("--overwrite"),
        "{err}"
    );
}
