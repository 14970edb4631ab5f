//! `cpflow train` with an image configuration into a directory that holds a 2-D toy run:
//! the new run was told to "continue it with `cpflow train --out T2 --resume`" (the toy run,
//! not the image run it asked for), and `--resume` said "`cpflow train` cannot continue it
//! (`cpflow train --out T2 --resume` does)", which reads as a contradiction (it meant:
//! without --config). Now both name the toy run; the resume says that the configuration is
//! what differs and that `--resume` without `--config` continues the toy.

use crate::cli_common::{cpflow_fails, temp_dir, tiny_mnist_config, tiny_trained_run};

#[test]
fn an_image_config_over_a_toy_run_names_the_toy_and_what_continues_it() {
    let dir = temp_dir("run-kind-messages");
    let (toy, _) = tiny_trained_run(&dir, 1.0, &[]);
    // The image config is refused before its data are read: no data root needed.
    let cfg = dir.join("image.toml");
    std::fs::write(&cfg, tiny_mnist_config(&dir.join("no-data"))).unwrap();
    let (c, t) = (cfg.to_str().unwrap(), toy.to_str().unwrap());
    let resume = format!("cpflow train --out {t} --resume");
    let before = std::fs::read(toy.join("config.toml")).unwrap();

    // A new image run: the toy run is named and refused as another kind's
    // (`check_new_run_of(Image)`).
    let err = cpflow_fails(&["train", "--config", c, "--out", t, "--no-progress"]);
    assert!(err.contains("a flow on vectors"), "{err}");
    assert!(
        err.contains("--overwrite") && err.contains("another `--out`"),
        "{err}"
    );
    // Refused as another kind's run, not pointed to `--resume` (which continues the toy).
    assert!(
        err.contains("not an image-flow run") && !err.contains("--resume"),
        "{err}"
    );

    // `--resume` with the image config: the configuration differs; `--resume` without
    // `--config` continues the toy.
    let err = cpflow_fails(&[
        "train",
        "--config",
        c,
        "--out",
        t,
        "--resume",
        "--no-progress",
    ]);
    assert!(
        err.contains("holds a flow on vectors")
            && err.contains("not an image-flow run")
            && err.contains("as the given configuration makes")
            && err.contains(&format!("`{resume}` without --config continues it")),
        "{err}"
    );
    assert!(!err.contains("cannot continue it"), "{err}");
    assert_eq!(std::fs::read(toy.join("config.toml")).unwrap(), before);
}
