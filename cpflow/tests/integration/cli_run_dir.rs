//! The run directory of `cpflow train` and `cpflow vae`: a run is never silently replaced
//! (`--overwrite` replaces it, plots included), `--resume` needs a checkpoint and refuses
//! changed settings, naming them, the validation curve of a resumed run covers the whole run,
//! `config.toml` keeps absolute paths (a run resumes and evaluates from any directory), and
//! the messages name the right step and key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli_common::{cpflow, cpflow_fails, temp_dir};

/// Runs `cpflow` in `cwd`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running cpflow")
}

/// Runs `cpflow` in `cwd`, asserting success; returns stdout.
fn ok_in(cwd: &Path, args: &[&str]) -> String {
    let out = run_in(cwd, args);
    assert!(
        out.status.success(),
        "cpflow {args:?} in {} failed:\n{}",
        cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cpflow` in `cwd`, asserting failure; returns stderr.
fn fails_in(cwd: &Path, args: &[&str]) -> String {
    let out = run_in(cwd, args);
    assert!(!out.status.success(), "cpflow {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn curve_iterations(run: &Path) -> Vec<u64> {
    json(&run.join("report.json"))["val_nll_curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect()
}

/// A 2-column CSV of `n` rows in `dir`.
fn write_csv(dir: &Path, name: &str, n: usize) -> PathBuf {
    let mut text = String::from("a,b\n");
    for i in 0..n {
        let t = i as f64 * 0.37;
        text.push_str(&format!("{},{}\n", t.sin() * 2.0, (t * 1.3).cos()));
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A tiny, quick model.
const TINY: [&str; 8] = [
    "--set",
    "model.width=4",
    "--set",
    "model.depth=2",
    "--set",
    "run.plots=false",
    "--batch-size",
    "32",
];

#[test]
fn train_run_directories_are_kept_resumed_as_made_and_portable() {
    let dir = temp_dir("rundir");
    let elsewhere = temp_dir("rundir-elsewhere");
    write_csv(&dir, "d.csv", 200);
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    // A relative data file, from the run's own directory.
    let first = [
        &["train", "--data", "d.csv", "--iters", "6", "--no-progress"][..],
        &TINY,
        &["--set", "run.eval_every=3", "--out", "run"],
    ]
    .concat();
    ok_in(&dir, &first);
    // config.toml keeps absolute paths.
    let config = run.join("config.toml");
    let saved: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for (table, key) in [("data", "source"), ("data", "root"), ("run", "out")] {
        let v = saved[table][key].as_str().unwrap();
        assert!(Path::new(v).is_absolute(), "{table}.{key} = {v}");
    }
    let before = std::fs::read(&config).unwrap();
    let report = std::fs::read(run.join("report.json")).unwrap();

    // A new run into it is refused, nothing changed.
    let err = fails_in(&dir, &first);
    assert!(
        err.contains("run already holds a run") && err.contains("--resume"),
        "{err}"
    );
    assert!(err.contains("--overwrite"), "{err}");
    // A resume that changes the model, optimiser, float type or data is refused with each key
    // and both values, before config.toml is rewritten.
    let changed = [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--resume",
        "--iters",
        "8",
        "--set",
        "model.width=16",
        "--lr",
        "0.1",
        "--dtype",
        "f32",
        "--data",
        "moons",
        "--no-progress",
    ];
    let err = fails_in(&elsewhere, &changed);
    for line in [
        "model.width: 16 (requested) vs 4 (the run)",
        "train.adam.lr: 0.1 (requested)",
        "model.float: \"f32\" (requested) vs \"f64\" (the run)",
        "data.source: \"moons\" (requested)",
    ] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(!err.contains("max_iterations:"), "{err}");
    assert_eq!(std::fs::read(&config).unwrap(), before);
    assert_eq!(std::fs::read(run.join("report.json")).unwrap(), report);

    // Resumed from another directory with the saved config (absolute paths), twice: the
    // curve covers the whole run, the end point 8 of the first resume included.
    let args = ["train", "--config", config.to_str().unwrap(), "--resume"];
    ok_in(
        &elsewhere,
        &[&args[..], &["--iters", "8", "--no-progress"]].concat(),
    );
    assert_eq!(curve_iterations(&run), vec![3, 6, 8]);
    // Without --config, --resume reads the run's own config.toml.
    let args = ["train", "--out", run_s, "--resume", "--iters", "10"];
    ok_in(&elsewhere, &[&args[..], &["--no-progress"]].concat());
    assert_eq!(curve_iterations(&run), vec![3, 6, 8, 9, 10]);
    // ... and says so when it is missing (not a diff against the built-in defaults).
    let aside = dir.join("config.aside");
    std::fs::rename(&config, &aside).unwrap();
    let err = fails_in(&elsewhere, &["train", "--out", run_s, "--resume"]);
    assert!(err.contains("config.toml, which is missing"), "{err}");
    std::fs::rename(&aside, &config).unwrap();
    // `eval` of the run from elsewhere reads the data file by its absolute path.
    let line = ok_in(&elsewhere, &["eval", "--model", run_s]);
    assert!(line.contains("\"nll\""), "{line}");

    // --resume without a checkpoint leaves no directory behind.
    let empty = dir.join("empty");
    let err = fails_in(
        &dir,
        &["train", "--data", "d.csv", "--resume", "--out", "empty"],
    );
    assert!(
        err.contains("checkpoint.safetensors does not exist"),
        "{err}"
    );
    assert!(!empty.exists());

    // A model setting that cannot be built fails before --overwrite removes anything (and a
    // new --out is not created).
    let bad = [
        &["train", "--data", "d.csv", "--iters", "2", "--no-progress"][..],
        &TINY,
        &["--set", "model.width=0", "--out", "run", "--overwrite"],
    ]
    .concat();
    let kept = std::fs::read(run.join("report.json")).unwrap();
    let err = fails_in(&dir, &bad);
    assert!(err.contains("width"), "{err}");
    assert_eq!(std::fs::read(run.join("report.json")).unwrap(), kept);
    assert!(run.join("checkpoint.safetensors").is_file());
    let fresh = [&bad[..bad.len() - 3], &["--out", "fresh"]].concat();
    fails_in(&dir, &fresh);
    assert!(!dir.join("fresh").exists());
    // So is validation asked for without validation rows.
    let no_val = [
        &["train", "--data", "d.csv", "--iters", "2", "--no-progress"][..],
        &TINY,
        &["--set", "train.val_every=1", "--set", "data.val_fraction=0"],
        &["--out", "no-val"],
    ]
    .concat();
    let err = fails_in(&dir, &no_val);
    assert!(err.contains("needs validation rows"), "{err}");
    assert!(!dir.join("no-val").exists());

    // --overwrite replaces the run: the old files and plots go.
    // (the figures as a 2-D run writes them: listed in plots/plots.json)
    std::fs::create_dir_all(run.join("plots")).unwrap();
    std::fs::write(run.join("plots/density.png"), b"old").unwrap();
    let listed = r#"[{"file": "density.png", "shows": "old"}]"#;
    std::fs::write(run.join("plots/plots.json"), listed).unwrap();
    let again = [
        &["train", "--data", "d.csv", "--iters", "2", "--no-progress"][..],
        &TINY,
        &["--set", "train.log_every=1", "--out", "run", "--overwrite"],
    ]
    .concat();
    ok_in(&dir, &again);
    assert!(!run.join("plots").exists());
    assert_eq!(json(&run.join("report.json"))["iterations"], 2);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&elsewhere).ok();
}

/// The non-finite-loss error names the step as `metrics.jsonl` counts them: the steps before
/// it are logged, finite.
#[test]
fn non_finite_loss_names_the_step_metrics_count() {
    let dir = temp_dir("nonfinite");
    let run = dir.join("run");
    let args = [
        &[
            "train",
            "--data",
            "8gaussians",
            "--iters",
            "20",
            "--lr",
            "1e10",
        ][..],
        &TINY,
        &["--set", "train.log_every=1", "--set", "data.n_train=256"],
        &["--no-progress", "--out", run.to_str().unwrap()],
    ]
    .concat();
    let err = cpflow_fails(&args);
    let step: usize = err
        .split("at training step ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in {err}"));
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(step >= 2, "{err}");
    assert_eq!(logged.len(), step - 1, "{err}");
    assert_eq!(logged.last().unwrap()["iteration"], step - 1);
    assert!(logged.iter().all(|r| r["loss"].as_f64().is_some()));
}

/// Without test rows the final line names the key that sets them.
#[test]
fn no_test_rows_names_the_key_that_sets_them() {
    let dir = temp_dir("notest");
    let (toy_run, file_run) = (dir.join("toy"), dir.join("file"));
    let toy = [
        &["train", "--data", "8gaussians", "--iters", "2"][..],
        &TINY,
        &[
            "--set",
            "data.n_test=0",
            "--set",
            "data.n_train=64",
            "--set",
            "data.n_val=32",
        ],
        &["--no-progress", "--out", toy_run.to_str().unwrap()],
    ]
    .concat();
    let out = cpflow(&toy);
    assert!(out.contains("no test rows: data.n_test = 0"), "{out}");
    // 4 rows: a test fraction of 0.1 rounds to no row.
    let csv = write_csv(&dir, "small.csv", 4);
    let file = [
        &["train", "--data", csv.to_str().unwrap(), "--iters", "2"][..],
        &TINY,
        &["--set", "train.val_every=0", "--set", "run.eval_every=0"],
        &["--no-progress", "--out", file_run.to_str().unwrap()],
    ]
    .concat();
    let out = cpflow(&file);
    assert!(
        out.contains("data.test_fraction = 0.1 of the 4 rows") && out.contains("rounds to 0"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `cpflow vae`: missing data or a `--resume` without checkpoint leave no directory; a run
/// keeps an absolute data root, prints its stop reason as the report names it, is not
/// replaced by a new run, refuses a resume with another learning rate and resumes from
/// another directory with its saved config.
#[test]
fn vae_run_directories_are_kept_and_resumed_as_made() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = temp_dir("vae-rundir");
    let cfg = dir.join("vae.toml");
    std::fs::write(
        &cfg,
        "[data]\ndataset = \"caltech101\"\nroot = \"../shared/data\"\nn_train = 200\n\
         [model]\nposterior = \"gaussian\"\nlatent_dim = 2\n\
         architecture = { channels = 2, feature_dim = 4, head_channels = 4 }\n\
         [train]\nepochs = 1\nbatch_size = 100\n\
         [eval]\nis_samples = 2\nis_chunk = 2\nis_images = 2\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let vae = |extra: &[&str]| -> Vec<String> {
        ["vae", "--config", cfg_s, "--out", out_s, "--no-progress"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };

    let missing = dir.join("missing");
    let args = ["vae", "--config", cfg_s, "--out", missing.to_str().unwrap()];
    let err = fails_in(
        &repo,
        &[&args[..], &["--set", "data.root=\"nowhere\""]].concat(),
    );
    assert!(err.contains("nowhere"), "{err}");
    assert!(
        !missing.exists(),
        "a run without data left {}",
        missing.display()
    );
    let err = fails_in(&repo, &strs(&vae(&["--resume"])));
    assert!(
        err.contains("checkpoint.safetensors does not exist"),
        "{err}"
    );
    assert!(!out.exists());

    let printed = ok_in(&repo, &strs(&vae(&[])));
    assert!(printed.contains(": 1 epoch (max-epochs),"), "{printed}");
    let config = out.join("config.toml");
    let saved: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let root = saved["data"]["root"].as_str().unwrap();
    assert!(Path::new(root).is_absolute(), "{root}");
    let before = std::fs::read(&config).unwrap();

    let err = fails_in(&repo, &strs(&vae(&[])));
    assert!(
        err.contains("already holds a run") && err.contains("--overwrite"),
        "{err}"
    );
    let err = fails_in(
        &repo,
        &strs(&vae(&["--resume", "--set", "train.optimizer.lr=0.1"])),
    );
    assert!(
        err.contains("train.optimizer.lr: 0.1 (requested) vs 0.0005 (the run)"),
        "{err}"
    );
    // --overwrite with data that cannot be read keeps the old run.
    let err = fails_in(
        &repo,
        &strs(&vae(&["--overwrite", "--set", "data.root=\"nowhere\""])),
    );
    assert!(err.contains("nowhere"), "{err}");
    assert!(out.join("checkpoint.safetensors").exists());
    assert_eq!(std::fs::read(&config).unwrap(), before);
    // The resume command of the messages works from any directory.
    let config_s = config.to_str().unwrap();
    let args = [
        "vae",
        "--config",
        config_s,
        "--out",
        out_s,
        "--resume",
        "--no-progress",
    ];
    let printed = ok_in(&dir, &args);
    assert!(printed.contains("1 epoch (max-epochs)"), "{printed}");
    // Without --config, --resume reads the run's own config.toml (as `train --resume` does;
    // --config was required); without either, a new run is refused by the parser.
    let args = ["vae", "--out", out_s, "--resume", "--no-progress"];
    let printed = ok_in(&dir, &args);
    assert!(printed.contains("1 epoch (max-epochs)"), "{printed}");
    let err = fails_in(&dir, &["vae", "--out", out_s]);
    assert!(err.contains("--config"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
