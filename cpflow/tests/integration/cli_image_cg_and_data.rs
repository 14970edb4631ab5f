//! `cpflow train` of an image run: its CG convergence in `report.json` and the summary line
//! as a vector run has them (`cg_converged`, `cg_unconverged_steps`, "CG unconverged in U
//! of N steps"), and a resume on a data root holding another number of training images is
//! refused naming both, before `config.toml` takes the new root.

use std::path::Path;

use crate::cli_common::{
    cpflow, cpflow_fails, read_json, shared_data, temp_dir, tiny_mnist_config,
};

#[test]
fn an_image_run_whose_cg_does_not_converge_says_so() {
    let dir = temp_dir("image-cg-unconverged");
    let cfg = dir.join("img.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let run = dir.join("run");
    // One CG iteration never meets an absolute tolerance of 1e-12 on a 784-dimensional
    // system: every system of the 2 steps is left unconverged.
    let out = cpflow(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--no-progress",
        "--set",
        "train.surrogate.cg_max_iters=1",
        "--set",
        "train.surrogate.cg_atol=1e-12",
        "--set",
        "train.surrogate.cg_rtol=0",
    ]);
    assert!(out.contains("; CG unconverged in 2 of 2 steps;"), "{out}");
    let r = read_json(&run.join("report.json"));
    assert_eq!(r["cg_converged"], 0.0, "{r}");
    assert_eq!(r["cg_unconverged_steps"], 2, "{r}");
    assert_eq!(r["max_cg_iterations"], 1, "{r}");
}

/// Raw MNIST IDX files with `n_train` training and 3 test images under `root/mnist`.
fn fabricate_mnist(root: &Path, n_train: usize) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, n) in [("train", n_train), ("t10k", 3)] {
        let mut img = vec![0, 0, 8, 3];
        for v in [n as u32, 28, 28] {
            img.extend(v.to_be_bytes());
        }
        img.extend((0..n * 784).map(|i| ((i * 37) % 256) as u8));
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), img).unwrap();
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), lab).unwrap();
    }
}

#[test]
fn an_image_resume_on_another_number_of_training_images_is_refused() {
    let dir = temp_dir("image-resume-other-images");
    let (a, b) = (dir.join("a"), dir.join("b"));
    // 10 and 8 images, 2 held out for validation: 8 and 6 training images.
    fabricate_mnist(&a, 10);
    fabricate_mnist(&b, 8);
    let cfg = dir.join("img.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndataset = \"mnist\"\nroot = {:?}\nn_val = 2\n\
             [model]\nwidth = 4\ndepth = 2\nnblocks = [1]\n\
             [train]\nmax_iterations = 1\nbatch_size = 4\n\
             test = {{ images = 2, exact_images = 1 }}\n",
            a.display().to_string()
        ),
    )
    .unwrap();
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let train = ["train", "--config", cfg.to_str().unwrap(), "--out", run_s];
    cpflow(&[&train[..], &["--no-progress"]].concat());
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let root_b = format!("data.root={}", b.display());
    let resume = [
        "train",
        "--out",
        run_s,
        "--resume",
        "--no-progress",
        "--iters",
        "2",
    ];
    let err = cpflow_fails(&[&resume[..], &["--set", &root_b]].concat());
    assert!(
        err.contains("trained on 8 training images")
            && err.contains("the data now hold 6")
            && err.contains(&b.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        config,
        "a refused resume leaves config.toml as it was"
    );
    // The same images under another root (moved data) resume.
    let c = dir.join("c");
    fabricate_mnist(&c, 10);
    let root_c = format!("data.root={}", c.display());
    let out = cpflow(&[&resume[..], &["--set", &root_c]].concat());
    assert!(out.contains("for 2 iterations"), "{out}");
}
