//! `cpflow eval` and `sample --reconstruct` of a VAE run read the run's settings from its
//! `config.toml`, which a resume may change (`[eval]`, `data.root`), not the configuration
//! saved in the best weights of an earlier epoch; a PNG output without `--grid` says that a
//! PNG needs one.

use crate::cli_common::{
    cpflow, cpflow_fails, cpflow_out_and_log, shared_data, temp_dir, tiny_vae_config,
};
use std::path::Path;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap()
}

/// A copy of the Frey Faces file in `root/frey-faces`.
fn copy_frey(root: &Path) {
    let dir = root.join("frey-faces");
    std::fs::create_dir_all(&dir).unwrap();
    let file = "frey_faces_uint8.npy";
    std::fs::copy(shared_data().join("frey-faces").join(file), dir.join(file)).unwrap();
}

/// A finished run resumed with other `[eval]` settings and another data root (the first one
/// then removed): `eval` repeats the new report.json's numbers with the new settings, and
/// `sample --reconstruct` reads the test images under the new root.
#[test]
fn eval_and_reconstruct_follow_a_resumes_settings() {
    let dir = temp_dir("vae-run-settings");
    let (ds1, ds2) = (dir.join("ds1"), dir.join("ds2"));
    copy_frey(&ds1);
    copy_frey(&ds2);
    let cfg = dir.join("vae.toml");
    std::fs::write(&cfg, tiny_vae_config("frey-faces", &ds1)).unwrap();
    let run = dir.join("run");
    let (c, r) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    cpflow(&["vae", "--config", c, "--out", r, "--no-progress"]);
    let root2 = format!("data.root={}", ds2.display());
    cpflow(&[
        "vae",
        "--out",
        r,
        "--resume",
        "--set",
        "eval.is_samples=5",
        "--set",
        "eval.is_chunk=3",
        "--set",
        "eval.is_images=4",
        "--set",
        &root2,
        "--no-progress",
    ]);
    std::fs::remove_dir_all(&ds1).unwrap();
    let report = json(&std::fs::read_to_string(run.join("report.json")).unwrap());
    assert_eq!(report["is_samples"], 5);
    assert_eq!(report["test_is_nll"]["n"], 4);

    let (out, log) = cpflow_out_and_log(&["eval", "--model", r, "--no-progress"]);
    assert!(
        log.contains(
            "the importance-sampled NLL of the first 4 of 200 test images (K = 5, 3 at a time)"
        ),
        "{log}"
    );
    let e = json(&out);
    assert_eq!((&e["is_samples"], &e["is_images"]), (&5.into(), &4.into()));
    assert_eq!(e["is_nll"], report["test_is_nll"]["mean"]);
    assert_eq!(e["neg_elbo"], report["test_neg_elbo"]["mean"]);

    let png = dir.join("r.png");
    let p = png.to_str().unwrap();
    let out = cpflow(&[
        "sample",
        "--model",
        r,
        "--reconstruct",
        "--grid",
        "2x2",
        "-o",
        p,
    ]);
    assert!(out.starts_with("wrote 4 images (reconstructions"), "{out}");
    assert!(png.is_file());
    // `--data-root` overrides the run's root for `--reconstruct` (data moved again: here, to
    // a folder without them, which the error names); prior samples read no data.
    let gone = dir.join("ds3");
    let gone_root = gone.to_str().unwrap();
    let r2 = dir.join("r2.png");
    let r2 = r2.to_str().unwrap();
    let err = cpflow_fails(&[
        "sample",
        "--model",
        r,
        "--reconstruct",
        "--grid",
        "2x2",
        "--data-root",
        gone_root,
        "-o",
        r2,
    ]);
    assert!(
        err.contains(gone_root) && err.contains("not found"),
        "{err}"
    );
    let err = cpflow_fails(&[
        "sample",
        "--model",
        r,
        "--grid",
        "2x2",
        "--data-root",
        gone_root,
        "-o",
        r2,
    ]);
    assert!(
        err.contains("--data-root applies to --reconstruct"),
        "{err}"
    );

    // A PNG without --grid: the hint, for a VAE's samples and its reconstructions.
    let s = dir.join("s.png");
    let s = s.to_str().unwrap();
    for extra in [&[][..], &["--reconstruct"][..]] {
        let mut args = vec!["sample", "--model", r, "-n", "3", "-o", s];
        args.extend(extra);
        let err = cpflow_fails(&args);
        assert!(
            err.contains(&format!(
                "{s}: a PNG is written with --grid ROWSxCOLS (e.g. `--grid 8x8`, a grid of \
                 images); without --grid, samples are written as rows to .npy or .csv"
            )),
            "{err}"
        );
    }
}

/// A `config.toml` beside the weights that is not theirs (another model) is refused,
/// naming the key; the weights copied out of that directory are scored with the
/// configuration saved in them.
#[test]
fn a_config_toml_of_another_model_is_refused() {
    let dir = temp_dir("vae-run-settings-other");
    let cfg = dir.join("vae.toml");
    std::fs::write(&cfg, tiny_vae_config("frey-faces", &shared_data())).unwrap();
    let run = dir.join("run");
    let (c, r) = (cfg.to_str().unwrap(), run.to_str().unwrap());
    cpflow(&["vae", "--config", c, "--out", r, "--no-progress"]);
    let toml = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let other = toml.replace("latent_dim = 2", "latent_dim = 3");
    assert_ne!(other, toml);
    std::fs::write(run.join("config.toml"), other).unwrap();
    let err = cpflow_fails(&["eval", "--model", r, "--no-progress"]);
    assert!(
        err.contains("config.toml is not the configuration of")
            && err.contains("model.latent_dim = 3 there, 2 in the weights"),
        "{err}"
    );
    let loose = dir.join("best.safetensors");
    std::fs::copy(run.join("best.safetensors"), &loose).unwrap();
    let e = json(&cpflow(&[
        "eval",
        "--model",
        loose.to_str().unwrap(),
        "--no-progress",
    ]));
    let report = json(&std::fs::read_to_string(run.join("report.json")).unwrap());
    assert_eq!(e["is_nll"], report["test_is_nll"]["mean"]);
}
