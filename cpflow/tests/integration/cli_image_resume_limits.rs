//! `cpflow train --resume` of an image run refuses a limit below what the run has done, as
//! the vector `train` and `vae` do: `--iters` below its steps, `train.epochs` below its
//! epochs (counted in training images seen). Before, the resume was accepted, evaluated the
//! run again and wrote the lower limit into `config.toml`.

use crate::cli_common::{cpflow, cpflow_fails, shared_data, temp_dir, tiny_mnist_config};

#[test]
fn an_image_resume_below_the_steps_or_epochs_done_is_refused() {
    let dir = temp_dir("image-resume-limits");
    let cfg = dir.join("img.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    // 3 steps of 8 of the 16 training images: 1.5 epochs.
    let out = cpflow(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run_s,
        "--iters",
        "3",
        "--no-progress",
    ]);
    assert!(out.contains("for 3 iterations (1.50 epochs"), "{out}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let resume = ["train", "--out", run_s, "--resume", "--no-progress"];
    let err = cpflow_fails(&[&resume[..], &["--iters", "2"]].concat());
    assert!(
        err.contains("train.max_iterations (--iters) = 2 is below the 3")
            && err.contains("give at least 3"),
        "{err}"
    );
    let err = cpflow_fails(&[&resume[..], &["--set", "train.epochs=1"]].concat());
    assert!(
        err.contains("train.epochs = 1 is below the 1.50 epochs")
            && err.contains("24 training images seen, of 16")
            && err.contains("give at least 2"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        config,
        "a refused resume leaves config.toml as it was"
    );
    // The limits the run has reached are fine: it is evaluated again.
    let out = cpflow(&[&resume[..], &["--iters", "3", "--set", "train.epochs=2"]].concat());
    assert!(out.contains("for 3 iterations (1.50 epochs"), "{out}");
}
