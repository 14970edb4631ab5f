//! What the CLI says to a new user who gives it something it cannot do as asked: an option
//! that the chosen estimator does not take, a run directory of another command, another
//! command's configuration, a run whose data file is gone, a diverging run, a zero-sized
//! network. Each message names the problem and what to do (each was a silent success, or an
//! error that named neither).

use std::path::Path;

use crate::cli_common::{cpflow, cpflow_fails, shared_data, temp_dir, tiny_csv_train_args};

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
    // Named with the probes and steps used, as report.json names its estimators.
    assert!(
        out.contains("\"estimator\":\"slq(2 probes, 3 steps)\""),
        "{out}"
    );
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

/// Runs `cpflow` in the working directory `cwd`, expecting a failure; returns stderr.
fn cpflow_fails_in(cwd: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "cpflow {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A diverging image run and a diverging VAE said only "non-finite loss … at training step
/// 2" (the vector flow's runs said what to do). Each names its own settings: the image
/// run's `--lr` / train.adam.lr, warm-up and clip, the VAE's train.optimizer.lr (it has no
/// `--lr` flag and no clipping). A learning rate of 1e300 (1e30 for the VAE) leaves the
/// first step finite and the second not, in a fraction of a second.
#[test]
fn image_and_vae_divergence_name_their_own_settings() {
    let dir = temp_dir("audit-diverge-kinds");
    let cfg = dir.join("mnist.toml");
    std::fs::write(&cfg, crate::cli_common::tiny_mnist_config(&shared_data())).unwrap();
    let out = dir.join("image");
    let err = cpflow_fails(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--lr",
        "1e300",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("non-finite")
            && err.contains("--overwrite")
            && err.contains("`--lr`, train.adam.lr, now 1e300")
            && err.contains("train.warmup_iterations")
            && err.contains("train.clip_grad_norm"),
        "{err}"
    );
    // The VAE's configuration names its data root relative to the working directory (as
    // the shipped configs do); `--set data.root=DIR` gives the folder that holds the data.
    let vae = dir.join("vae.toml");
    std::fs::write(
        &vae,
        "[data]\ndataset = \"frey-faces\"\nroot = \"../shared/data\"\n\
         [model]\nposterior = \"gaussian\"\nlatent_dim = 2\n\
         architecture = { channels = 2, feature_dim = 4, head_channels = 4 }\n\
         [train]\nepochs = 1\nbatch_size = 8\noptimizer = { lr = 1e30 }\n",
    )
    .unwrap();
    let root = format!("data.root={}", shared_data().display());
    let out = dir.join("vae");
    let err = cpflow_fails_in(
        &dir,
        &[
            "vae",
            "--config",
            vae.to_str().unwrap(),
            "--set",
            &root,
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("non-finite")
            && err.contains("--overwrite")
            && err.contains("`--set train.optimizer.lr=<smaller>`, now 1e30"),
        "{err}"
    );
    assert!(!err.contains("--lr"), "{err}");
}

/// `cpflow vae --config configs/vae-frey-cpu.toml` run outside the repository read
/// `data.root = "../shared/data"` against the working directory, and the missing file's
/// message said only to copy it. It says that the root is read from the working directory,
/// where it looked, and how to give another root; a root given with `--set` (absolute) is
/// named as such.
#[test]
fn a_missing_vae_data_file_names_data_root_and_how_to_set_it() {
    let dir = temp_dir("audit-vae-root");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vae-frey-cpu.toml");
    let out = dir.join("run");
    let (c, o) = (config.to_str().unwrap(), out.to_str().unwrap());
    let err = cpflow_fails_in(&dir, &["vae", "--config", c, "--out", o, "--no-progress"]);
    assert!(
        err.contains("frey_faces_uint8.npy not found")
            && err.contains(
                "data.root = \"../shared/data\" is read relative to the working directory"
            )
            && err.contains(&dir.display().to_string())
            && err.contains("`--set data.root=DIR`"),
        "{err}"
    );
    let nowhere = dir.join("nowhere");
    let set = format!("data.root={}", nowhere.display());
    let err = cpflow_fails_in(
        &dir,
        &[
            "vae",
            "--config",
            c,
            "--set",
            &set,
            "--out",
            o,
            "--no-progress",
        ],
    );
    assert!(
        err.contains(&format!("data.root is {}", nowhere.display()))
            && err.contains("`--set data.root=DIR`"),
        "{err}"
    );
    assert!(!out.exists(), "the refused run wrote {}", out.display());
}

/// Ctrl-C during `cpflow plot` ended it with status 130 and no word, possibly between
/// figures. It stops between figures (here: in the million samples' inversion), says which
/// figures it wrote and which not, and leaves no partial file: every PNG there is whole, no
/// temporary file and no `plots.json`.
#[cfg(unix)]
#[test]
fn an_interrupted_plot_names_what_it_wrote_and_leaves_no_partial_file() {
    let dir = temp_dir("audit-plot-interrupt");
    let csv = dir.join("d.csv");
    write_csv(&csv, 200);
    let run = dir.join("run");
    train_tiny(&csv, &run);
    let plots = dir.join("plots");
    // A million samples take seconds to invert: far longer than the wait before the
    // interrupt, which comes once the figures' directory is there (the drawing has begun).
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(["plot", "--model", run.to_str().unwrap(), "--out"])
        .arg(&plots)
        .args(["--samples", "1000000"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !plots.is_dir() {
        assert!(t0.elapsed().as_secs() < 60, "no plot directory was made");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let (ok, stdout, log) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!ok, "{log}");
    assert!(
        stdout.is_empty(),
        "figures were listed after the interrupt: {stdout}"
    );
    assert!(
        log.contains("interrupted: ")
            && log.contains("not written: ")
            && log.contains("samples.png")
            && log.contains("plots.json"),
        "{log}"
    );
    assert!(!plots.join("plots.json").exists());
    for entry in std::fs::read_dir(&plots).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".png"), "left {name}");
        assert!(log.contains(&name), "{name} is not named: {log}");
        let bytes = std::fs::read(&path).unwrap();
        // A whole PNG ends with its IEND chunk (length 0, type, CRC).
        assert!(
            bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]),
            "{name} is not a whole PNG"
        );
    }
}

/// `cpflow ot --out` a `train` run's directory and `cpflow train` / `cpflow vae --out` an
/// OT experiment's directory wrote one kind's files beside the other's. Both are refused,
/// naming what the directory holds and what to do; `--overwrite` replaces the other kind's
/// files, so that none is left beside the new run.
#[test]
fn ot_and_train_runs_do_not_share_a_directory() {
    let dir = temp_dir("audit-ot-mix");
    let csv = dir.join("d.csv");
    write_csv(&csv, 200);
    let run = dir.join("run");
    train_tiny(&csv, &run);
    let ot_cfg = dir.join("ot.toml");
    std::fs::write(
        &ot_cfg,
        "n_train = 512\nn_test = 128\nn_eval_curve = 64\neval_every = 2\n\
         [potential]\nwidth = 4\ndepth = 2\n",
    )
    .unwrap();
    let (r, c) = (run.to_str().unwrap(), ot_cfg.to_str().unwrap());
    let ot = [
        "ot", "--config", c, "--dims", "2", "--iters", "2", "--out", r,
    ];
    let err = cpflow_fails(&ot);
    assert!(
        err.contains("holds a flow on vectors")
            && err.contains("another --out")
            && err.contains("--overwrite"),
        "{err}"
    );
    assert!(!run.join("ot_table.md").exists());
    cpflow(&[&ot[..], &["--overwrite"]].concat());
    assert!(run.join("ot_table.md").exists());
    for f in ["checkpoint.safetensors", "model.safetensors", "report.json"] {
        assert!(!run.join(f).exists(), "{f} stayed beside the OT results");
    }

    // Now an OT directory: `train` and `vae` refuse it, `train --overwrite` replaces it.
    let mut train = tiny_csv_train_args(&csv, &run, "3", "32");
    let args: Vec<&str> = train.iter().map(String::as_str).collect();
    let err = cpflow_fails(&args);
    assert!(
        err.contains("holds the results of an OT experiment")
            && err.contains("another --out")
            && err.contains("--overwrite"),
        "{err}"
    );
    let vae = dir.join("vae.toml");
    std::fs::write(
        &vae,
        "[data]\ndataset = \"frey-faces\"\nroot = \"nowhere\"\n[model]\nposterior = \"gaussian\"\n",
    )
    .unwrap();
    let err = cpflow_fails(&["vae", "--config", vae.to_str().unwrap(), "--out", r]);
    assert!(
        err.contains("holds the results of an OT experiment"),
        "{err}"
    );
    train.push("--overwrite".into());
    let args: Vec<&str> = train.iter().map(String::as_str).collect();
    cpflow(&args);
    assert!(run.join("model.safetensors").exists());
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ot_"))
        .collect();
    assert!(left.is_empty(), "OT files stayed beside the run: {left:?}");
}
