//! A VAE of `cpflow vae` as a model for the other commands: `eval` repeats the run's test
//! scores, `sample` writes the decoder's pixel means or draws of prior latents (checked
//! against the library on the same latents), and `import-reference --vae` turns the
//! reference's `state_dict` into a model directory that scores as the original.

use crate::cli_common::{cpflow, cpflow_fails, shared_data, temp_dir};
use candle_core::{Device, Tensor};
use cpflow::FlowRng;
use cpflow::vae::{load_vae, reference_vae_key_mapping};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A tiny VAE config: one epoch of a 2-D latent model with 2-channel networks on the first
/// 200 training images of `dataset`, importance sampling with 2 samples on 2 test images.
fn tiny_config(dataset: &str, posterior: &str) -> String {
    format!(
        "[data]\ndataset = \"{dataset}\"\nroot = {:?}\nn_train = 200\n\
         [model]\nposterior = \"{posterior}\"\nlatent_dim = 2\nblocks = 1\nwidth = 4\ndepth = 2\n\
         architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
         [train]\nepochs = 1\nbatch_size = 100\n\
         [eval]\nis_samples = 2\nis_chunk = 2\nis_images = 2\n",
        shared_data()
    )
}

/// A trained run of `tiny_config`: `(config file, run directory)`, made once per dataset.
fn trained(dataset: &'static str, posterior: &'static str) -> (PathBuf, PathBuf) {
    static RUNS: OnceLock<std::sync::Mutex<HashMap<&'static str, (PathBuf, PathBuf)>>> =
        OnceLock::new();
    let runs = RUNS.get_or_init(Default::default);
    let mut runs = runs.lock().unwrap_or_else(|e| e.into_inner());
    runs.entry(dataset)
        .or_insert_with(|| {
            // Shared by this file's tests for the rest of the process: kept.
            let dir = temp_dir(&format!("vae-model-{dataset}")).keep();
            let cfg = dir.join("vae.toml");
            std::fs::write(&cfg, tiny_config(dataset, posterior)).unwrap();
            let out = dir.join("run");
            let (c, o) = (cfg.to_str().unwrap(), out.to_str().unwrap());
            cpflow(&["vae", "--config", c, "--out", o, "--no-progress"]);
            (cfg, out)
        })
        .clone()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn report(run: &Path) -> serde_json::Value {
    json(&std::fs::read_to_string(run.join("report.json")).unwrap())
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `a` and `b` agree to 1e-12 relative: the same computation on the same weights, data and
/// seed in two processes (a different RNG stream or image set moves them by far more).
fn same(a: &serde_json::Value, b: &serde_json::Value) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
}

/// `eval` on a VAE run repeats report.json's test −ELBO and importance-sampled NLL (both
/// likelihoods: Caltech's Bernoulli with the Gaussian posterior, Frey Faces' 256-way with the
/// CP-Flow one, in bits per dimension too); `-n`, `--is-samples` and `--seed` change what
/// is scored; options that do not apply to a VAE are refused by name.
#[test]
fn eval_on_a_vae_run_repeats_its_report() {
    for (dataset, posterior) in [("caltech101", "gaussian"), ("frey-faces", "cp-flow")] {
        let (_, run) = trained(dataset, posterior);
        let r = report(&run);
        let run_s = run.to_str().unwrap();
        let e = json(&cpflow(&["eval", "--model", run_s]));
        assert_eq!(e["weights"], "best", "{e}");
        assert_eq!(e["data"], dataset);
        assert_eq!(e["images"], r["split_sizes"][2], "{e}");
        same(&e["neg_elbo"], &r["test_neg_elbo"]["mean"]);
        same(&e["neg_elbo_std_err"], &r["test_neg_elbo"]["std_err"]);
        same(&e["is_nll"], &r["test_is_nll"]["mean"]);
        assert_eq!(
            (e["is_samples"].as_u64(), e["is_images"].as_u64()),
            (Some(2), Some(2))
        );
        if dataset == "frey-faces" {
            same(&e["neg_elbo_bpd"], &r["test_neg_elbo_bpd"]["mean"]);
            let bpd = e["neg_elbo"].as_f64().unwrap() / (560.0 * std::f64::consts::LN_2);
            same(&e["neg_elbo_bpd"], &serde_json::json!(bpd));
        } else {
            assert!(e.get("neg_elbo_bpd").is_none(), "{e}");
        }

        // The first 3 images without importance sampling; another seed draws other noise.
        let few_args = [
            "eval",
            "--model",
            run_s,
            "-n",
            "3",
            "--is-samples",
            "0",
            "--no-progress",
        ];
        let few = json(&cpflow(&few_args));
        assert_eq!(
            (few["images"].as_u64(), few["is_samples"].as_u64()),
            (Some(3), Some(0))
        );
        assert!(few.get("is_nll").is_none(), "{few}");
        let other = json(&cpflow(&[&few_args[..], &["--seed", "9"]].concat()));
        assert_ne!(few["neg_elbo"], other["neg_elbo"]);
    }
    let (_, run) = trained("caltech101", "gaussian");
    let run_s = run.to_str().unwrap();
    for (extra, named) in [
        (&["--estimator", "slq"][..], "--estimator slq"),
        (&["--probes", "2"], "--probes"),
        (&["--dtype", "f32"], "--dtype"),
    ] {
        let err = cpflow_fails(&[&["eval", "--model", run_s][..], extra].concat());
        assert!(err.contains(named) && err.contains("VAE"), "{err}");
    }
    let err = cpflow_fails(&["eval", "--model", run_s, "--data", "mnist"]);
    assert!(
        err.contains("caltech101") && err.contains("`mnist`"),
        "{err}"
    );
    // `plot` takes 2-D flows only, and names what reads a VAE.
    let err = cpflow_fails(&["plot", "--model", run_s]);
    assert!(
        err.contains("cpflow eval") && err.contains("cpflow sample"),
        "{err}"
    );
}

/// `sample` on a VAE: rows of the decoder's pixel means for the prior latents of the seed
/// (equal to the library's `decoded_means` of `prior_latents` from the same RNG), binary
/// draws with `--pixels draw`, a PNG grid of the grid's size, and `--reconstruct`: test
/// images' reconstructions equal to the library's from the same seed.
#[test]
fn sample_from_a_vae_decodes_prior_latents() {
    let (_, run) = trained("caltech101", "gaussian");
    let dir = run.parent().unwrap();
    let run_s = run.to_str().unwrap();
    let means = dir.join("means.npy");
    let args = [
        "sample",
        "--model",
        run_s,
        "-n",
        "5",
        "--temperature",
        "0.7",
    ];
    cpflow(&[&args[..], &["--seed", "4", "-o", means.to_str().unwrap()]].concat());
    let got = cpflow::datasets::read_npy_file(&means).unwrap();
    assert_eq!((got.rows(), got.cols()), (5, 784));
    let (vae, _) = load_vae(&run, &Device::Cpu).unwrap();
    let mut rng = FlowRng::seed_from_u64(4);
    let z = vae.prior_latents(5, 0.7, &mut rng).unwrap();
    let want = vae.decoded_means(&z).unwrap().flatten_all().unwrap();
    let want = want.to_vec1::<f64>().unwrap();
    let worst = max_abs_diff(got.data(), &want);
    assert!(worst < 1e-15, "{worst}");

    let draws = dir.join("draws.csv");
    let args = [
        "sample",
        "--model",
        run_s,
        "-n",
        "3",
        "--pixels",
        "draw",
        "--no-progress",
    ];
    cpflow(&[&args[..], &["-o", draws.to_str().unwrap()]].concat());
    let text = std::fs::read_to_string(&draws).unwrap();
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split(',').map(|v| v.trim().parse::<f64>().unwrap()))
        .collect();
    assert_eq!(values.len(), 3 * 784);
    assert!(values.iter().all(|&v| v == 0.0 || v == 1.0));

    let png = dir.join("grid.png");
    cpflow(&[
        "sample",
        "--model",
        run_s,
        "--grid",
        "2x3",
        "-o",
        png.to_str().unwrap(),
    ]);
    let img = cpflow::image_file::read_rgb8(&png).unwrap();
    let (w, h) = cpflow::image::grid::grid_size(2, 3, 28, 28);
    assert_eq!((img.width, img.height), (w as u32, h as u32));

    // Reconstructions of the first 4 test images, as the library makes them from the same
    // seed: the test batch, then one posterior sample per image, decoded into pixel means.
    let recon = dir.join("recon.npy");
    let args = [
        "sample",
        "--model",
        run_s,
        "--reconstruct",
        "-n",
        "4",
        "--seed",
        "2",
    ];
    cpflow(&[&args[..], &["-o", recon.to_str().unwrap()]].concat());
    let got = cpflow::datasets::read_npy_file(&recon).unwrap();
    assert_eq!((got.rows(), got.cols()), (4, 784));
    let (vae, cfg) = load_vae(&run, &Device::Cpu).unwrap();
    let data = cpflow::vae::load_vae_data(cfg.data.dataset, &cfg.data.root, cfg.data.seed).unwrap();
    let mut rng = FlowRng::seed_from_u64(2);
    let split = cpflow::vae::VaeSplit::Test;
    let batch = cpflow::vae::make_batch(&vae, &data, split, &[0, 1, 2, 3], &mut rng).unwrap();
    let want = vae.reconstructed_means(&batch, &mut rng).unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let worst = max_abs_diff(got.data(), &want);
    assert!(worst < 1e-15, "{worst}");
    // A grid: images above their reconstructions (an even number of rows).
    let rpng = dir.join("recon.png");
    let args = ["sample", "--model", run_s, "--reconstruct", "--grid", "4x3"];
    cpflow(&[&args[..], &["-o", rpng.to_str().unwrap()]].concat());
    let img = cpflow::image_file::read_rgb8(&rpng).unwrap();
    let (w, h) = cpflow::image::grid::grid_size(4, 3, 28, 28);
    assert_eq!((img.width, img.height), (w as u32, h as u32));
    let args = ["sample", "--model", run_s, "--reconstruct", "--grid", "3x3"];
    let err = cpflow_fails(&[&args[..], &["-o", rpng.to_str().unwrap()]].concat());
    assert!(err.contains("even number of rows"), "{err}");
    let args = [
        "sample",
        "--model",
        run_s,
        "--reconstruct",
        "--temperature",
        "0.5",
    ];
    let err = cpflow_fails(&[&args[..], &["-o", recon.to_str().unwrap()]].concat());
    assert!(err.contains("--temperature"), "{err}");
}

/// The trained VAE's weights under the reference's key names (as train_vae.py's state_dict
/// names them) are imported with `--vae` into a directory that `eval` scores exactly as the
/// original run; a config that does not describe them is refused before `--out` is made.
#[test]
fn import_reference_vae_scores_as_the_original() {
    let (cfg, run) = trained("frey-faces", "cp-flow");
    let dir = run.parent().unwrap();
    let (vae, vae_cfg) = load_vae(&run, &Device::Cpu).unwrap();
    let mapping = reference_vae_key_mapping(&vae_cfg.model).unwrap();
    let state_dict: HashMap<String, Tensor> = vae
        .weight_tensors()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(k, t)| (mapping.reference_key(&k).expect("a reference key"), t))
        .collect();
    let w = dir.join("reference.safetensors");
    candle_core::safetensors::save(&state_dict, &w).unwrap();
    let imported = dir.join("imported");
    let (w_s, cfg_s, imp_s) = (
        w.to_str().unwrap(),
        cfg.to_str().unwrap(),
        imported.to_str().unwrap(),
    );
    let import = |weights: &str, config: &str, out: &str| -> Vec<String> {
        let args = ["import-reference", "--vae", "--state-dict", weights];
        [&args[..], &["--config", config, "--out", out]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let printed = cpflow(&strs(&import(w_s, cfg_s, imp_s)));
    assert!(printed.contains("imported"), "{printed}");
    let score = |model: &str| json(&cpflow(&["eval", "--model", model, "--is-samples", "0"]));
    let (a, b) = (score(run.to_str().unwrap()), score(imp_s));
    same(&a["neg_elbo"], &b["neg_elbo"]);
    assert_eq!(a["images"], b["images"]);

    // Another latent size: the key whose shape differs is named and nothing is written.
    let wrong = dir.join("wrong.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&wrong, text.replace("latent_dim = 2", "latent_dim = 3")).unwrap();
    let other = dir.join("other");
    let (wrong_s, other_s) = (wrong.to_str().unwrap(), other.to_str().unwrap());
    let err = cpflow_fails(&strs(&import(w_s, wrong_s, other_s)));
    assert!(err.contains("shape") || err.contains("latent"), "{err}");
    assert!(!other.exists());
    // A cpflow model is not a reference state_dict; one under a prefix names the prefix.
    let best = run.join("best.safetensors");
    let err = cpflow_fails(&strs(&import(best.to_str().unwrap(), cfg_s, other_s)));
    assert!(err.contains("is a cpflow model"), "{err}");
    let prefixed: HashMap<String, Tensor> = state_dict
        .iter()
        .map(|(k, t)| (format!("model.{k}"), t.clone()))
        .collect();
    let wp = dir.join("prefixed.safetensors");
    candle_core::safetensors::save(&prefixed, &wp).unwrap();
    let err = cpflow_fails(&strs(&import(wp.to_str().unwrap(), cfg_s, other_s)));
    assert!(err.contains("--prefix model."), "{err}");
    assert!(!other.exists());
    // The Gaussian posterior's config for a CP-Flow posterior's weights: the setting is named.
    let gaussian = dir.join("gaussian.toml");
    std::fs::write(&gaussian, text.replace("\"cp-flow\"", "\"gaussian\"")).unwrap();
    let err = cpflow_fails(&strs(&import(w_s, gaussian.to_str().unwrap(), other_s)));
    assert!(err.contains("posterior = \"cp-flow\""), "{err}");
    assert!(!other.exists());
}

/// Ctrl-C during `eval` of a VAE stops the scoring after the batch or image in progress,
/// says how far it got and prints no score (SIGINT once the log says the scoring started).
#[cfg(unix)]
#[test]
fn an_interrupted_vae_eval_prints_no_score() {
    let (_, run) = trained("caltech101", "gaussian");
    let (ok, stdout, log) = crate::cli_common::interrupt_after_log(
        &[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "-n",
            "2000",
            "--is-samples",
            "4000",
        ],
        "scoring the test split",
        std::time::Duration::from_millis(500),
    );
    assert!(!ok, "{log}");
    assert!(stdout.is_empty(), "a score was printed");
    assert!(
        log.contains("interrupted after") && log.contains("test images: no score"),
        "{log}"
    );
}

/// An absurd width or number of posterior blocks is refused before anything is built or
/// written, naming the model's size (channels 10⁵ asked for 10¹³ parameters) and the key.
#[test]
fn an_absurd_vae_is_refused_before_training() {
    let dir = temp_dir("vae-absurd");
    let cfg = dir.join("vae.toml");
    std::fs::write(&cfg, tiny_config("caltech101", "cp-flow")).unwrap();
    let out = dir.join("run");
    let (c, o) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    for (set, needle) in [
        (
            "model.architecture.channels=100000",
            "model.architecture.channels = 100000 makes a VAE of",
        ),
        (
            "model.blocks=1000000000000000",
            "model.blocks = 1000000000000000 makes a VAE of",
        ),
    ] {
        let err = cpflow_fails(&[
            "vae",
            "--config",
            c,
            "--out",
            o,
            "--no-progress",
            "--set",
            set,
        ]);
        assert!(
            err.contains(needle) && err.contains("a model may have at most"),
            "{set}: {err}"
        );
        assert!(!out.exists(), "{set} wrote {}", out.display());
    }
}
