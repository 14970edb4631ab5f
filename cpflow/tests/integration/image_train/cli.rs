//! The CLI path: `cpflow train` on an image config (fabricated MNIST files), its refusals to
//! replace or mis-resume a run, and `cpflow sample --grid`.

use std::path::Path;

use super::temp_dir;

/// Writes raw (not gzipped) MNIST IDX files with `n_train` / `n_test` images.
fn fabricate_mnist(root: &Path, n_train: usize, n_test: usize) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, n: usize, salt: usize| {
        let mut img = vec![0, 0, 8, 3];
        for v in [n as u32, 28, 28] {
            img.extend(v.to_be_bytes());
        }
        for i in 0..n {
            for y in 0..28usize {
                for x in 0..28usize {
                    let r2 = (x as i64 - 14).pow(2) + (y as i64 - 14).pow(2);
                    let ring = (r2 - (6 + (i + salt) % 4) as i64 * 10).abs() < 12;
                    img.push(if ring {
                        200 + ((i * 7 + x) % 50) as u8
                    } else {
                        0
                    });
                }
            }
        }
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), img).unwrap();
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), lab).unwrap();
    };
    write("train", n_train, 0);
    write("t10k", n_test, 3);
}

#[test]
fn cli_trains_an_image_config_and_samples_a_grid() {
    let dir = temp_dir("cli");
    fabricate_mnist(&dir, 10, 3);
    let cfg = dir.join("img.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndataset = \"mnist\"\nroot = {:?}\nn_val = 2\n\
             [model]\nwidth = 4\ndepth = 2\nnblocks = [1]\n\
             [train]\nmax_iterations = 2\nbatch_size = 4\n\
             test = {{ exact_images = 1 }}\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let run = dir.join("run");
    use crate::cli_common::cpflow;
    let out = cpflow(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(out.contains("test bpd"), "{out}");
    for f in [
        "config.toml",
        "checkpoint.safetensors",
        "model.safetensors",
        "metrics.jsonl",
        "report.json",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    // The run is not replaced by a new one, nor resumed with another model.
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    let err = crate::cli_common::cpflow_fails(&args);
    assert!(err.contains("already holds a run"), "{err}");
    let resume = [&args[..], &["--resume", "--set", "model.width=8"]].concat();
    let err = crate::cli_common::cpflow_fails(&resume);
    assert!(
        err.contains("model.width: 8 (requested) vs 4 (the run)"),
        "{err}"
    );
    let png = dir.join("s.png");
    let out = cpflow(&[
        "sample",
        "--model",
        run.to_str().unwrap(),
        "--grid",
        "2x3",
        "--temperature",
        "0.8",
        "--output",
        png.to_str().unwrap(),
    ]);
    assert!(out.contains("6 of 6 converged"), "{out}");
    let img = cpflow::image_file::read_rgb8(&png).unwrap();
    let (w, h) = cpflow::image::grid_size(2, 3, 28, 28);
    assert_eq!((img.width as usize, img.height as usize), (w, h));
    // A grid is a PNG: another name is refused (it wrote PNG bytes into `g.npy`).
    let npy = dir.join("g.npy");
    let args = ["sample", "--model", run.to_str().unwrap(), "--grid", "2x2"];
    let err =
        crate::cli_common::cpflow_fails(&[&args[..], &["-o", npy.to_str().unwrap()]].concat());
    assert!(err.contains("PNG") && err.contains("g.npy"), "{err}");
    assert!(!npy.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
