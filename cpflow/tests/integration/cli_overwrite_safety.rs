//! `cpflow train --overwrite` / `cpflow vae --overwrite` replace the old run only once the new
//! one has passed every check made before training: a refused run leaves the old files
//! byte-identical and adds no `config.orig*.toml`. `cpflow train --resume` refuses a data
//! file whose contents changed since the run started, and resumes a run made before the data
//! were recorded (with a warning).

use std::path::{Path, PathBuf};

use crate::cli_common::{
    cpflow, cpflow_fails, cpflow_log, shared_data, snapshot, temp_dir, tiny_mnist_config,
    tiny_vae_config,
};

/// A 2-column CSV of `n` rows; `shift` moves the first column (same shape, other contents).
fn write_csv(path: &Path, n: usize, shift: f64) {
    let mut text = String::from("a,b\n");
    for i in 0..n {
        let t = i as f64 * 0.37;
        text.push_str(&format!("{},{}\n", t.sin() * 2.0 + shift, (t * 1.3).cos()));
    }
    std::fs::write(path, text).unwrap();
}

/// `cpflow train` of a tiny model (width 4, depth 2, 5 steps of 32 rows) on `data` into
/// `out`, plus `extra` (a later `--set` overrides these).
fn train_args(data: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--data",
        data,
        "--set",
        "data.n_train=200",
        "--set",
        "data.n_val=50",
        "--set",
        "data.n_test=50",
        "--iters",
        "5",
        "--set",
        "train.batch_size=32",
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        "run.plots=false",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn no_orig_configs(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with("config.orig"),
            "{name} in {}",
            dir.display()
        );
    }
}

/// A failing `train --overwrite` (a setting only the trainer or the model checks, a split,
/// a first batch too small for ActNorm, a file that cannot be read) leaves the old run as it
/// was; a successful one replaces it. A `config.toml` that cpflow wrote for a run that did not
/// get to its first checkpoint is replaced, not kept as `config.orig.toml`.
#[test]
fn a_refused_train_overwrite_leaves_the_old_run_untouched() {
    let dir = temp_dir("overwrite-train");
    let good = dir.join("good.csv");
    write_csv(&good, 100, 0.0);
    let good_s = good.to_str().unwrap();
    let out = dir.join("q1");
    cpflow(&strs(&train_args("8gaussians", &out, &[])));
    let before = snapshot(&out);
    assert!(before.contains_key(Path::new("report.json")), "{before:?}");
    let missing = dir.join("missing.csv");
    let refused: [(&str, &[&str], &str); 11] = [
        (
            "8gaussians",
            &["--set", "train.surrogate.cg_atol=-1"],
            "cg_atol",
        ),
        (good_s, &["--set", "data.val_fraction=1.5"], "val_fraction"),
        ("8gaussians", &["--set", "data.n_train=1"], "at least 2"),
        ("8gaussians", &["--set", "train.batch_size=1"], "at least 2"),
        ("8gaussians", &["--set", "train.adam.lr=nan"], "lr"),
        ("8gaussians", &["--set", "train.adam.beta1=1.5"], "beta1"),
        (
            "8gaussians",
            &["--set", "train.val_estimator={slq={probes=0,steps=10}}"],
            "val_estimator",
        ),
        ("8gaussians", &["--set", "model.blocks=0"], "model.blocks"),
        // Absurd sizes are refused by their count before anything is built.
        (
            "8gaussians",
            &["--set", "model.blocks=1000000000000000"],
            "a model may have at most",
        ),
        (
            "8gaussians",
            &["--set", "model.depth=1000000000"],
            "a model may have at most",
        ),
        (missing.to_str().unwrap(), &[], "missing.csv"),
    ];
    for (data, extra, needle) in refused {
        let extra = [extra, &["--overwrite"][..]].concat();
        let err = cpflow_fails(&strs(&train_args(data, &out, &extra)));
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            snapshot(&out) == before,
            "{extra:?} changed the old run in {}",
            out.display()
        );
        no_orig_configs(&out);
    }
    // A run that can start replaces the old one.
    cpflow(&strs(&train_args(good_s, &out, &["--overwrite"])));
    assert!(snapshot(&out) != before);
    no_orig_configs(&out);

    // The configuration of a run that stopped before its first checkpoint (as cpflow wrote
    // it: here the old run's, alone in a directory) is replaced by the next run's.
    let left = dir.join("left");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("config.toml"), &before[Path::new("config.toml")]).unwrap();
    cpflow(&strs(&train_args(good_s, &left, &[])));
    no_orig_configs(&left);
    std::fs::remove_dir_all(&dir).ok();
}

/// `train --resume` refuses a data file changed in place (same shape), naming it and the ways
/// on, and leaves the run as it was; with the file restored it resumes. A run without the
/// record (made before cpflow kept it) resumes with a warning and is recorded from then on.
#[test]
fn train_resume_refuses_a_changed_data_file() {
    let dir = temp_dir("resume-data");
    let data = dir.join("mydata.csv");
    write_csv(&data, 100, 0.0);
    let original = std::fs::read(&data).unwrap();
    let out = dir.join("rr");
    cpflow(&strs(&train_args(data.to_str().unwrap(), &out, &[])));
    let record = out.join("data_record.json");
    assert!(record.is_file());
    let before = snapshot(&out);
    let resume = |iters: &str| -> Vec<String> {
        [
            "train",
            "--out",
            out.to_str().unwrap(),
            "--resume",
            "--iters",
            iters,
            "--no-progress",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    write_csv(&data, 100, 0.25);
    assert_ne!(std::fs::read(&data).unwrap(), original);
    let err = cpflow_fails(&strs(&resume("8")));
    assert!(
        err.contains(data.to_str().unwrap()) && err.contains("changed"),
        "{err}"
    );
    assert!(
        err.contains("--overwrite") && err.contains("restore"),
        "{err}"
    );
    assert!(snapshot(&out) == before, "a refused resume changed the run");
    std::fs::write(&data, &original).unwrap();
    cpflow(&strs(&resume("8")));
    // A run made before the record: resumed with a warning, recorded from then on.
    std::fs::remove_file(&record).unwrap();
    let log = cpflow_log(&strs(&resume("10")));
    assert!(
        log.contains("data_record.json is missing") && log.contains("could not be checked"),
        "{log}"
    );
    assert!(record.is_file());
    std::fs::remove_dir_all(&dir).ok();
}

/// A tiny Gaussian-posterior VAE run on the offline Caltech silhouettes (one epoch), written
/// as `dir/vae.toml`.
fn tiny_vae_config_file(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = dir.join("vae.toml");
    // The data root relative to the repository: the tests run in the crate's directory.
    let root = repo.join("../shared/data");
    std::fs::write(&cfg, tiny_vae_config("caltech101", &root)).unwrap();
    cfg
}

/// `vae --overwrite` with a setting the new run refuses (an optimiser's, the model's) leaves
/// the old run untouched.
#[test]
fn a_refused_vae_overwrite_leaves_the_old_run_untouched() {
    let dir = temp_dir("overwrite-vae");
    let cfg = tiny_vae_config_file(&dir);
    let out = dir.join("v6");
    let vae = |extra: &[&str]| -> Vec<String> {
        let base = [
            "vae",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    cpflow(&strs(&vae(&[])));
    let before = snapshot(&out);
    for set in [
        "train.optimizer.lr=nan",
        "model.latent_dim=0",
        "model.architecture={channels=0,feature_dim=4,head_channels=4}",
    ] {
        let err = cpflow_fails(&strs(&vae(&["--overwrite", "--set", set])));
        let key = set.split('=').next().unwrap();
        let key = key.rsplit('.').next().unwrap();
        assert!(err.contains(key), "{set}: {err}");
        assert!(snapshot(&out) == before, "{set} changed the old run");
        no_orig_configs(&out);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// An image run that `--overwrite` would replace survives a new run whose network cannot be
/// built (width or depth 0): those were checked only when the trainer built the flow, after
/// the old run was removed (QA: the checkpoint, model, metrics and report were lost).
#[test]
fn a_refused_image_overwrite_leaves_the_old_run_untouched() {
    let dir = temp_dir("overwrite-image");
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let train = ["train", "--config", cfg, "--out", out_s, "--no-progress"];
    cpflow(&train);
    let before = snapshot(&out);
    assert!(before.contains_key(Path::new("report.json")), "{before:?}");
    for bad in ["model.width=0", "model.depth=0"] {
        let err = cpflow_fails(&[&train[..], &["--set", bad, "--overwrite"]].concat());
        assert!(err.contains("at least 1"), "{bad}: {err}");
        assert!(snapshot(&out) == before, "{bad} changed the old run");
        no_orig_configs(&out);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// While a process holds a run directory (here: this test, holding the lock a running
/// `train` holds), a second `train` on it, `--resume` or `--overwrite`, is refused and
/// changes nothing; once the lock is released it goes ahead. (QA: two processes wrote into
/// the same run, `metrics.jsonl` holding an iteration twice.)
#[test]
fn a_run_directory_in_use_is_refused() {
    let dir = temp_dir("locked");
    let out = dir.join("run");
    cpflow(&strs(&train_args("8gaussians", &out, &[])));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(out.join(".cpflow.lock"))
        .expect("a run directory holds its lock file");
    lock.try_lock().unwrap();
    let before = snapshot(&out);
    for extra in [&["--resume"][..], &["--overwrite"][..]] {
        let err = cpflow_fails(&strs(&train_args("8gaussians", &out, extra)));
        assert!(
            err.contains("in use by another cpflow process"),
            "{extra:?}: {err}"
        );
        assert!(snapshot(&out) == before, "{extra:?} changed the run");
    }
    lock.unlock().unwrap();
    // A resume of the finished run scores it again.
    cpflow(&strs(&train_args("8gaussians", &out, &["--resume"])));
    std::fs::remove_dir_all(&dir).ok();
}

/// A run directory of one kind met by a command of another (`--resume` or a new run) is
/// refused naming both kinds, instead of failing on the first key the other configuration
/// does not know (QA: "unknown field `n_test`", "unknown variant `frey-faces`", "has no
/// `cpflow` metadata").
#[test]
fn a_run_of_another_kind_is_named() {
    let dir = temp_dir("kinds");
    let (toy, vae_run) = (dir.join("toy"), dir.join("vae"));
    cpflow(&strs(&train_args("8gaussians", &toy, &[])));
    let vae_cfg = tiny_vae_config_file(&dir);
    let img_cfg = dir.join("tiny.toml");
    std::fs::write(&img_cfg, tiny_mnist_config(&shared_data())).unwrap();
    let (vae_cfg, img_cfg) = (vae_cfg.to_str().unwrap(), img_cfg.to_str().unwrap());
    let vae = |out: &Path, extra: &[&str]| -> Vec<String> {
        let base = [
            "vae",
            "--config",
            vae_cfg,
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    cpflow(&strs(&vae(&vae_run, &[])));
    let image = |out: &Path| -> Vec<String> {
        [
            "train",
            "--config",
            img_cfg,
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
            "--resume",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let cases: [(Vec<String>, &str); 5] = [
        (vae(&toy, &["--resume"]), "holds a flow on vectors"),
        (vae(&toy, &[]), "holds a flow on vectors"),
        (image(&toy), "holds a flow on vectors"),
        (image(&vae_run), "holds a VAE run"),
        (train_args("8gaussians", &vae_run, &[]), "holds a VAE run"),
    ];
    for (args, needle) in cases {
        let err = cpflow_fails(&strs(&args));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
