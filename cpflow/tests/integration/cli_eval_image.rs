//! `cpflow eval` on image flows: a tiny MNIST flow trained through the binary on the offline
//! MNIST copy (`../shared/data/mnist`, the official idx files), then scored on the test split.
//! The exact and SLQ scores must repeat the run's own report.json test numbers (same seed →
//! same dequantisation noise and probes), SLQ must agree with exact within its probe noise,
//! and a missing dataset or another dataset's `--data` must be refused with what to do.

use crate::cli_common::{cpflow, cpflow_fails, shared_data, temp_dir, tiny_mnist_config};
use candle_core::Device;
use cpflow::image::train::{TEST_SEED_SALT, exact_bpd_per_image};
use cpflow::image::{
    ImageDataConfig, ImageDataset, ImageExperimentConfig, ImageFlow, load_image_data,
};
use std::path::Path;

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not one JSON line ({e}): {line}"))
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn eval_repeats_the_runs_test_score_and_slq_agrees_with_exact() {
    let dir = temp_dir("eval-image");
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, tiny_mnist_config(&shared_data())).unwrap();
    let run = dir.join("run");
    cpflow(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&run),
        "--no-progress",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let test = &report["test"];
    let report_exact = test["exact"]["exact"]["bpd"].as_f64().unwrap();
    let report_slq = test["slq"]["bpd"].as_f64().unwrap();

    // (1) The defaults are the run's test settings (seed 3, batch 4, the first 3 images
    // exact): the same computation on the same dequantised images as the run's exact
    // subset. Tolerance: f64 round-off only (the JSON numbers round-trip exactly; a
    // different summation order could move the last bits of a log-det of ~1,700 nats,
    // ~1e-13 relative).
    let exact = json(&cpflow(&["eval", "--model", s(&run)]));
    assert_eq!(exact["images"], 3, "{exact}");
    assert_eq!(
        (exact["data"].as_str(), exact["split"].as_str()),
        (Some("mnist"), Some("test"))
    );
    assert_eq!(exact["test_images"], 10_000, "{exact}");
    assert_eq!(
        (exact["seed"].as_u64(), exact["batch_size"].as_u64()),
        (Some(3), Some(4))
    );
    let bpd = num(&exact, "bpd");
    assert!(
        (bpd - report_exact).abs() <= 1e-9,
        "eval exact {bpd} vs report.json {report_exact}"
    );
    // The NLL in nats is the same number on the 8-bit scale: bpd·D·ln 2.
    let nats = bpd * 784.0 * std::f64::consts::LN_2;
    assert!((num(&exact, "nll") - nats).abs() <= 1e-9 * nats, "{exact}");

    // The SLQ score (2 probes, 10 steps, 8 images) repeats the run's SLQ test number: same
    // noise, same probes drawn per pass of 4 images.
    let slq = json(&cpflow(&["eval", "--model", s(&run), "--estimator", "slq"]));
    assert_eq!(slq["images"], 8, "{slq}");
    assert_eq!(slq["slq"]["probes"], 2, "{slq}");
    let slq_bpd = num(&slq, "bpd");
    assert!(
        (slq_bpd - report_slq).abs() <= 1e-9,
        "eval SLQ {slq_bpd} vs report.json {report_slq}"
    );

    // (2) SLQ with other settings on the exact score's 3 images (same seed → same noise; the
    // probes come from their own stream): an estimate, not the exact number, within 4 of its
    // probe standard errors of it (`probe_std_err` is the RMS of the images' probe standard
    // errors, so the mean's is that over √3). 30 Lanczos steps leave no visible quadrature
    // bias on this near-identity block.
    let more = json(&cpflow(&[
        "eval",
        "--model",
        s(&run),
        "--estimator",
        "slq",
        "--probes",
        "8",
        "--steps",
        "30",
        "-n",
        "3",
    ]));
    let (m, probe_se) = (num(&more, "bpd"), num(&more, "probe_std_err"));
    let se = probe_se / 3f64.sqrt();
    eprintln!(
        "exact {bpd} (report {report_exact}), SLQ 8 probes 30 steps {m}: {:.2} probe SE ({se:.2e})",
        (m - bpd).abs() / se
    );
    assert!(
        m != bpd && (m - bpd).abs() <= 4.0 * se,
        "SLQ {m} vs exact {bpd}: {:.2} probe standard errors ({se:.2e})",
        (m - bpd).abs() / se
    );
    // The probe error is far below the images' spread (the data standard error), so the
    // check above would catch SLQ on other images (another noise draw).
    assert!(se < 0.01 * num(&more, "bpd_std_err"), "{more}");

    // --seed and the checkpoint's averaged weights: the library's exact score of the first
    // test image with the same noise stream, on the model file's weights (the run ends with
    // model.safetensors = the checkpoint's EMA weights).
    let ck = json(&cpflow(&[
        "eval",
        "--model",
        s(&run.join("checkpoint.safetensors")),
        "-n",
        "1",
        "--seed",
        "7",
    ]));
    assert_eq!(ck["weights"], "ema", "{ck}");
    assert!(
        ck["bpd_std_err"].is_null(),
        "one image has no standard error: {ck}"
    );
    let flow = ImageFlow::load(&run.join("model.safetensors"), &Device::Cpu).unwrap();
    let data = load_image_data(&ImageDataConfig {
        dataset: ImageDataset::Mnist,
        root: shared_data(),
        n_val: 4,
        n_train: Some(16),
        seed: 0,
    })
    .unwrap();
    let lib = exact_bpd_per_image(&flow, &data.test, 1, 4, 7 ^ TEST_SEED_SALT).unwrap();
    let ck_bpd = num(&ck, "bpd");
    assert!(
        (ck_bpd - lib[0]).abs() <= 1e-9,
        "eval {ck_bpd} vs library {}",
        lib[0]
    );
    assert!(
        (ck_bpd - bpd).abs() > 1e-6,
        "--seed 7 drew the seed-3 noise"
    );

    // A directory as `import-reference` writes it (config.toml and model.safetensors, no
    // report.json), in f32, with a data root that holds MNIST's two test files only (scoring
    // reads no training file): the SLQ test number again, to f32 rounding (log p ≈ 1,700
    // nats summed in f32: ~1e-3 nats, ~2e-6 bits/dim).
    let imported = dir.join("imported");
    std::fs::create_dir_all(&imported).unwrap();
    for f in ["config.toml", "model.safetensors"] {
        std::fs::copy(run.join(f), imported.join(f)).unwrap();
    }
    let test_only = dir.join("test-only-data");
    std::fs::create_dir_all(test_only.join("mnist")).unwrap();
    for entry in std::fs::read_dir(shared_data().join("mnist")).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().starts_with("t10k-") {
            std::fs::copy(
                shared_data().join("mnist").join(&name),
                test_only.join("mnist").join(&name),
            )
            .unwrap();
        }
    }
    let f32_slq = json(&cpflow(&[
        "eval",
        "--model",
        s(&imported),
        "--estimator",
        "slq",
        "--dtype",
        "f32",
        "--data",
        "mnist",
        "--data-root",
        s(&test_only),
    ]));
    assert_eq!(f32_slq["float"], "f32", "{f32_slq}");
    let v = num(&f32_slq, "bpd");
    assert!(
        v != report_slq && (v - report_slq).abs() <= 1e-4,
        "f32 SLQ {v} vs f64 {report_slq}"
    );

    // Ctrl-C stops the score before its next chunk and says how far it got (the whole split,
    // one image per chunk, would take minutes).
    #[cfg(unix)]
    {
        // Wait for the log line that scoring has begun, then for a few chunks.
        let (ok, stdout, log) = crate::cli_common::interrupt_after_log(
            &[
                "eval",
                "--model",
                s(&run),
                "--estimator",
                "slq",
                "-n",
                "10000",
                "--batch-size",
                "1",
            ],
            "scoring the test split",
            std::time::Duration::from_millis(300),
        );
        assert!(!ok, "{log}");
        assert!(stdout.is_empty(), "a score was printed after the interrupt");
        assert!(
            log.contains("interrupted after") && log.contains("of 10000 test images"),
            "{log}"
        );
    }

    // `plot` still refuses an image flow, naming `eval` and `sample`.
    let e = cpflow_fails(&["plot", "--model", s(&run)]);
    assert!(
        e.contains("is an image flow") && e.contains("cpflow eval") && e.contains("cpflow sample"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// (3) A data root without MNIST names the download command, as training does; (4) `--data`
/// naming another dataset, or data that are not an image dataset, is refused before anything
/// is read; so are SLQ without `-n` on a run that scored no test image, and too many scales.
/// The model is an untrained tiny flow saved by the library (at most 2 images are scored).
#[test]
fn eval_image_names_the_download_and_refuses_other_data() {
    let dir = temp_dir("eval-image-errors");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let empty_root = dir.join("no-data");
    std::fs::write(run.join("config.toml"), tiny_mnist_config(&empty_root)).unwrap();
    let cfg: ImageExperimentConfig = toml::from_str(&tiny_mnist_config(&empty_root)).unwrap();
    let flow = ImageFlow::new(cfg.flow_config().unwrap(), &Device::Cpu).unwrap();
    flow.save(&run.join("model.safetensors")).unwrap();

    let e = cpflow_fails(&["eval", "--model", s(&run)]);
    assert!(
        e.contains("cargo xtask download mnist") && e.contains(s(&empty_root)),
        "{e}"
    );
    // The model file alone (no config.toml beside it) with --data-root: the data are read
    // there (the shared MNIST copy: the 3 default exact images are scored), and a
    // --data-root without MNIST is named.
    let lone = dir.join("lone.safetensors");
    let levels: Vec<f64> = (0..2 * 784)
        .map(|i| ((i * 37 % 256) as f64 + 0.5) / 256.0)
        .collect();
    let x = candle_core::Tensor::from_vec(levels, (2, 1, 28, 28), &Device::Cpu).unwrap();
    flow.initialize(&x).unwrap();
    flow.save(&lone).unwrap();
    let shared = shared_data();
    let out = json(&cpflow(&[
        "eval",
        "--model",
        s(&lone),
        "--data-root",
        s(&shared),
        "-n",
        "2",
    ]));
    assert_eq!(out["images"], 2, "{out}");
    assert!(num(&out, "bpd").is_finite(), "{out}");
    let e = cpflow_fails(&["eval", "--model", s(&lone), "--data-root", s(&empty_root)]);
    assert!(e.contains(s(&empty_root)), "{e}");
    // A run with `train.test.images = 0` (its test score skipped): SLQ without -n has no
    // image count to repeat and is refused naming the key and -n (it printed a null bpd and
    // exited 0); with -n it scores. --no-progress as `train` takes it.
    let no_test = dir.join("no-test");
    std::fs::create_dir_all(&no_test).unwrap();
    let config = tiny_mnist_config(&shared).replace("images = 8", "images = 0");
    assert_ne!(config, tiny_mnist_config(&shared));
    std::fs::write(no_test.join("config.toml"), config).unwrap();
    flow.save(&no_test.join("model.safetensors")).unwrap();
    let slq = ["eval", "--model", s(&no_test), "--estimator", "slq"];
    let e = cpflow_fails(&slq);
    assert!(
        e.contains("train.test.images = 0") && e.contains("-n N"),
        "{e}"
    );
    let out = json(&cpflow(
        &[&slq[..], &["-n", "2", "--no-progress"][..]].concat(),
    ));
    assert_eq!(out["images"], 2, "{out}");
    assert!(num(&out, "bpd").is_finite(), "{out}");
    // Too many scales for 28×28 images: named by the key, with the most allowed (it was
    // "layer 10: cannot squeeze a 7×7 image").
    let e = cpflow_fails(&[
        "train",
        "--config",
        s(&no_test.join("config.toml")),
        "--set",
        "model.nblocks=[1,1,1,1]",
        "--out",
        s(&dir.join("four-scales")),
    ]);
    assert!(
        e.contains("model.nblocks = [1, 1, 1, 1] has 4 scales") && e.contains("at most 3"),
        "{e}"
    );
    // Another image dataset (another shape) and a tabular benchmark are refused, naming the
    // model's own dataset.
    let e = cpflow_fails(&["eval", "--model", s(&run), "--data", "cifar10"]);
    assert!(
        e.contains("3×32×32") && e.contains("1×28×28") && e.contains("--data mnist"),
        "{e}"
    );
    let e = cpflow_fails(&["eval", "--model", s(&run), "--data", "power"]);
    assert!(
        e.contains("--data power") && e.contains("mnist") && e.contains("flows on vectors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
