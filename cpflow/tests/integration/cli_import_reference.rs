//! `cpflow import-reference`: the authors' weights (the committed fixture
//! `tests/fixtures/reference/tabular_icnn2.safetensors`, see `reference_parity`) imported
//! through the CLI give the reference's log-densities, as a model that `eval` reads; a
//! state_dict that lacks a key, is not safetensors or holds a NaN is refused by name.
//!
//! Tolerance: as in `reference_parity` (`|ours − theirs| ≤ 1e-10·(1 + |theirs|)`, measured
//! differences ~1e-14 on that scale): the import writes the f64 weights unchanged, so the
//! written model must reproduce the reference as closely as the library path does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cpflow::{FloatType, Flow};

use crate::cli_common::{cpflow, cpflow_fails, temp_dir};
use crate::reference_parity::{Fixture, TOL, differences, host};

/// The committed fixture (written by `benchmarks/reference_parity/export_fixtures.py`).
fn fixture_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/tabular_icnn2.safetensors")
}

/// The `[model]` of the fixture's metadata (`arch = icnn2`, d = 6, `dimh = 16`,
/// `nhidden = 3`, `nblocks = 2`, plain softplus, no zero shift, no symmetric first
/// activation: `train_tabular.py`'s layout), with 6-D data (POWER, never read here: the
/// tests pass `--data`).
const CONFIG: &str = r#"
[data]
source = "power"

[model]
arch = "icnn2"
layout = "tabular"
blocks = 2
width = 16
depth = 3
activation = "softplus"
zero_shift = false
symm_act_first = false
float = "f64"
"#;

fn write_state_dict(path: &Path, sd: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(sd, path).unwrap();
}

/// The fixture file itself records the reference's activation flags in its metadata: a
/// config with another activation or zero shift is refused naming the key (the weights alone
/// cannot tell; it imported and scored other log-densities); the right config imports.
#[test]
fn recorded_activation_flags_must_match_the_config() {
    let dir = temp_dir("import-reference-flags");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let w = fixture_file();
    for (from, to, key) in [
        (
            "activation = \"softplus\"",
            "activation = \"gaussian_softplus\"",
            "model.activation",
        ),
        (
            "zero_shift = false",
            "zero_shift = true",
            "model.zero_shift",
        ),
    ] {
        let cfg = dir.join("wrong.toml");
        std::fs::write(&cfg, CONFIG.replace(from, to)).unwrap();
        let out = dir.join("wrong");
        let args = [
            "import-reference",
            "--state-dict",
            &s(&w),
            "--prefix",
            "model.",
            "--config",
            &s(&cfg),
            "--out",
            &s(&out),
        ];
        let e = cpflow_fails(&args);
        assert!(
            e.contains(key) && e.contains("records how its weights were trained"),
            "{e}"
        );
        assert!(!out.exists());
    }
    let cfg = dir.join("right.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.join("right");
    cpflow(&[
        "import-reference",
        "--state-dict",
        &s(&w),
        "--prefix",
        "model.",
        "--config",
        &s(&cfg),
        "--out",
        &s(&out),
    ]);
    assert!(out.join("model.safetensors").is_file());
}

#[test]
fn imported_reference_model_gives_the_reference_log_densities() {
    let dir = temp_dir("import-reference");
    let fx = Fixture::load("tabular_icnn2");
    let (w, cfg) = (dir.join("W.safetensors"), dir.join("model.toml"));
    write_state_dict(&w, &fx.state_dict());
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.join("imported");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "import-reference",
        "--state-dict",
        &s(&w),
        "--config",
        &s(&cfg),
        "--out",
        &s(&out),
    ];
    let line = cpflow(&args);
    let n_keys = fx.state_dict().len();
    assert!(
        line.contains(&format!("imported {n_keys} tensors")),
        "{line}"
    );

    // The library reads the written model; its log p is the reference's.
    let flow = Flow::load(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!((flow.dim(), flow.float()), (6, FloatType::F64));
    assert!(flow.is_initialized().unwrap());
    let x = fx.tensor("in.x");
    let theirs = fx.values("out.logp");
    let ours = host(&flow.log_prob_exact(&x).unwrap());
    let w64 = differences(&ours, &theirs).2;
    eprintln!("import-reference f64: |log p − reference|/(1 + |ref|) ≤ {w64:.3e}");
    assert!(w64 <= TOL, "log p differs from the reference by {w64:.3e}");

    // `cpflow eval --model DIR` accepts it: its NLL on the fixture's inputs is −mean log p.
    let csv = dir.join("x.csv");
    let xs = host(&x);
    let text: String = xs
        .chunks(6)
        .map(|r| {
            let cells: Vec<String> = r.iter().map(|v| format!("{v}")).collect();
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(&csv, text).unwrap();
    let json = cpflow(&["eval", "--model", &s(&out), "--data", &s(&csv)]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let nll = v["nll"].as_f64().unwrap();
    let expect = -theirs.iter().sum::<f64>() / theirs.len() as f64;
    assert!(
        (nll - expect).abs() <= TOL * (1.0 + expect.abs()),
        "eval NLL {nll} vs reference {expect}"
    );

    // `cpflow sample --model DIR` draws from it.
    let samples = dir.join("s.csv");
    cpflow(&["sample", "--model", &s(&out), "-n", "5", "-o", &s(&samples)]);
    let rows = std::fs::read_to_string(&samples).unwrap();
    assert_eq!(
        rows.lines().filter(|l| l.contains(',')).count(),
        5,
        "{rows}"
    );

    // An existing model is not replaced without --overwrite.
    // There is no checkpoint to continue: the message does not suggest `--resume`.
    let e = cpflow_fails(&args);
    assert!(e.contains("--overwrite") && !e.contains("--resume"), "{e}");

    // --dtype f32: the same weights rounded to f32. Tolerance 1e-4·(1 + |log p|): f32 carries
    // ~1e-7 relative per operation, and the log-det's Cholesky and the two blocks' inverse
    // maps amplify it by the Hessians' conditioning; a wrong weight moves log p by O(1).
    let out32 = dir.join("imported32");
    let mut a32 = args.to_vec();
    let o32 = s(&out32);
    a32[6] = &o32;
    a32.extend(["--dtype", "f32"]);
    cpflow(&a32);
    let flow32 = Flow::load(&out32.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(flow32.float(), FloatType::F32);
    let x32 = x.to_dtype(DType::F32).unwrap();
    let w32 = differences(&host(&flow32.log_prob_exact(&x32).unwrap()), &theirs).2;
    eprintln!("import-reference f32: |log p − reference|/(1 + |ref|) ≤ {w32:.3e}");
    assert!(
        w32 <= 1e-4,
        "f32 log p differs from the reference by {w32:.3e}"
    );

    // The fixture itself (state_dict under `model.`, inputs and outputs beside it) with
    // --prefix: the same tensors are read.
    let line = cpflow(&[
        "import-reference",
        "--state-dict",
        &s(&fixture_file()),
        "--prefix",
        "model.",
        "--config",
        &s(&cfg),
        "--out",
        &s(&dir.join("prefixed")),
    ]);
    assert!(
        line.contains(&format!("imported {n_keys} tensors")),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_state_dicts_are_refused_by_name() {
    let dir = temp_dir("import-reference-bad");
    let fx = Fixture::load("tabular_icnn2");
    let cfg = dir.join("model.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |w: &Path, out: &str| -> [String; 7] {
        let (w, c, o) = (s(w), s(&cfg), s(&dir.join(out)));
        [
            "import-reference",
            "--state-dict",
            &w,
            "--config",
            &c,
            "--out",
            &o,
        ]
        .map(String::from)
    };
    let run = |w: &Path, out: &str| cpflow_fails(&args(w, out).each_ref().map(String::as_str));
    // A key removed: named as the reference names it, and nothing is written.
    let mut sd = fx.state_dict();
    sd.remove("flows.3.w1").unwrap();
    let w = dir.join("missing.safetensors");
    write_state_dict(&w, &sd);
    let e = run(&w, "missing");
    assert!(e.contains("flows.3.w1"), "{e}");
    assert!(!dir.join("missing").exists());
    // Not a safetensors file.
    let w = dir.join("model.pt");
    std::fs::write(&w, b"PK\x03\x04 a torch zip archive").unwrap();
    let e = run(&w, "notsafetensors");
    assert!(e.contains("is not a safetensors file"), "{e}");
    // A NaN weight.
    let mut sd = fx.state_dict();
    sd.insert(
        "flows.1.w0".into(),
        Tensor::new(&[f64::NAN], &Device::Cpu).unwrap(),
    );
    let w = dir.join("nan.safetensors");
    write_state_dict(&w, &sd);
    let e = run(&w, "nan");
    assert!(
        e.contains("flows.1.w0 holds a NaN or infinite value"),
        "{e}"
    );
    // The fixture without --prefix: its state_dict sits under `model.`.
    let e = run(&fixture_file(), "unprefixed");
    assert!(e.contains("pass --prefix model."), "{e}");
    // A config without [data]: its default toy is 2-D, the model 6-D; `eval` and `plot`
    // would have refused the directory later.
    let w = dir.join("ok-nodata.safetensors");
    write_state_dict(&w, &fx.state_dict());
    std::fs::write(&cfg, CONFIG.replace("[data]\nsource = \"power\"\n", "")).unwrap();
    let e = run(&w, "nodata");
    assert!(e.contains("is 2-D but the model is 6-D"), "{e}");
    assert!(!dir.join("nodata").exists());
    // Another architecture in the config: the extra block's keys are missing.
    std::fs::write(&cfg, CONFIG.replace("blocks = 2", "blocks = 3")).unwrap();
    let w = dir.join("ok.safetensors");
    write_state_dict(&w, &fx.state_dict());
    let e = run(&w, "three");
    assert!(e.contains("flows.5.icnn") && e.contains("more"), "{e}");
    // A model that cpflow wrote is not a state_dict: named as one (its keys are cpflow's).
    std::fs::write(&cfg, CONFIG).unwrap();
    cpflow(&args(&w, "good").each_ref().map(String::as_str));
    let e = run(&dir.join("good").join("model.safetensors"), "again");
    assert!(e.contains("is a cpflow model"), "{e}");
    assert!(!dir.join("again").exists());
    // Flags at fault are named as flags: a --dim that flows.0.b contradicts (it read
    // "data.source = `power` is 6-D but the model is 7-D"); without flows.0.b (no ActNorm to
    // confirm it) --dim and data.source both; --dtype f16, by clap with the values it takes
    // (it read "invalid configuration at `model.float`").
    let mut no_actnorm = fx.state_dict();
    no_actnorm.remove("flows.0.b").unwrap();
    let w_single = dir.join("single.safetensors");
    write_state_dict(&w_single, &no_actnorm);
    for (w, extra, wanted) in [
        (
            &w,
            ["--dim", "7"],
            "--dim 7 differs from the state_dict's data dimension 6",
        ),
        (
            &w_single,
            ["--dim", "7"],
            "--dim 7 differs from the dimension of data.source",
        ),
        (
            &w,
            ["--dtype", "f16"],
            "invalid value 'f16' for '--dtype <DTYPE>'\n  [possible values: f32, f64]",
        ),
    ] {
        let mut a = args(w, "flag").to_vec();
        a.extend(extra.map(String::from));
        let e = cpflow_fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(e.contains(wanted), "{extra:?}: {e}");
        assert!(!dir.join("flag").exists());
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ------------------------------------------------------------------------------------------
// Image flows (train_img.py's MultiscaleFlow)

/// An image config matching the MNIST fixture `image_convicnn` (its metadata: 1×28×28,
/// `--icnn 1` = ConvICNN, `--dimh 8`, `--num_hidden_layers 2`, `--nblocks 1-1-1`, ActNorms,
/// no factor-out, no fc_end, logit α = 1e-6 = MNIST's default), in f64. `root` is not read by
/// the import (it is kept, made absolute, in config.toml).
fn image_config(root: &Path) -> String {
    format!(
        r#"
[data]
dataset = "mnist"
root = "{}"

[model]
arch = "conv_icnn"
width = 8
depth = 2
nblocks = [1, 1, 1]
actnorm = true
factor_out = false
float = "f64"

[train]
max_iterations = 1
"#,
        root.display()
    )
}

/// The fixture's `out.bpd`: `train_img.py:compute_loss`, the batch mean of per-image bits/dim.
fn mean_bpd(logp: &[f64], dim: usize) -> f64 {
    logp.iter()
        .map(|&l| cpflow::image::bits_per_dim(l, dim))
        .sum::<f64>()
        / logp.len() as f64
}

#[test]
fn imported_reference_image_flow_gives_the_reference_outputs() {
    use cpflow::image::{ImageExperimentConfig, ImageFlow};
    let dir = temp_dir("import-reference-image");
    let fx = Fixture::load("image_convicnn");
    let (w, cfg) = (dir.join("W.safetensors"), dir.join("mnist.toml"));
    write_state_dict(&w, &fx.state_dict());
    std::fs::write(&cfg, image_config(Path::new("data"))).unwrap();
    let out = dir.join("imported");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "import-reference",
        "--state-dict",
        &s(&w),
        "--config",
        &s(&cfg),
        "--out",
        &s(&out),
    ];
    let line = cpflow(&args);
    let n_keys = fx.state_dict().len();
    assert!(
        line.contains(&format!("imported {n_keys} tensors"))
            && line.contains("1x28x28 image flow, 3 CP-Flow blocks"),
        "{line}"
    );

    // The directory of an image `cpflow train` run: its config (data root absolute) and the
    // model file that `ImageFlow::load` (hence `cpflow sample`) reads.
    let saved: ImageExperimentConfig =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    let written: ImageExperimentConfig = toml::from_str(&image_config(Path::new("data"))).unwrap();
    assert_eq!(saved.model, written.model);
    assert!(saved.data.root.is_absolute() && saved.data.root.ends_with("data"));
    let flow = ImageFlow::load(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!((flow.dim(), flow.float()), (784, FloatType::F64));
    assert!(flow.is_initialized().unwrap());

    // Same outputs as the authors' code on the fixture's images (tolerance: module docs).
    let x = fx.tensor("in.x");
    let (z, logdet) = flow.transform(&x).unwrap();
    let logp = host(&flow.log_prob_exact(&x).unwrap());
    let theirs_lp = fx.values("out.logp");
    for (what, ours, theirs) in [
        ("z", host(&z), fx.values("out.z")),
        ("log-det", host(&logdet), fx.values("out.logdet")),
        ("log p", logp.clone(), theirs_lp.clone()),
        ("bpd", vec![mean_bpd(&logp, 784)], fx.values("out.bpd")),
    ] {
        let (abs, _, worst) = differences(&ours, &theirs);
        eprintln!("import-reference image {what}: max abs {abs:.3e}, scaled {worst:.3e}");
        assert!(
            worst <= TOL,
            "{what} differs from the reference by {worst:.3e}"
        );
    }

    // `cpflow sample` draws a PNG grid from it.
    let png = dir.join("s.png");
    let line = cpflow(&[
        "sample",
        "--model",
        &s(&out),
        "--grid",
        "1x2",
        "-o",
        &s(&png),
    ]);
    assert!(line.contains("wrote 2 image samples"), "{line}");
    let img = cpflow::image_file::read_rgb8(&png).unwrap();
    let (gw, gh) = cpflow::image::grid_size(1, 2, 28, 28);
    assert_eq!((img.width as usize, img.height as usize), (gw, gh));
    // `cpflow eval` scores it on MNIST's test split, read under the config's data root
    // (`data`, absent here): the error names the download command.
    let e = cpflow_fails(&["eval", "--model", &s(&out)]);
    assert!(e.contains("cargo xtask download mnist"), "{e}");

    // An existing model is not replaced without --overwrite; with it, it is.
    // There is no checkpoint to continue: the message does not suggest `--resume`.
    let e = cpflow_fails(&args);
    assert!(e.contains("--overwrite") && !e.contains("--resume"), "{e}");
    let line = cpflow(&[&args[..], &["--overwrite"]].concat());
    assert!(
        line.contains(&format!("imported {n_keys} tensors")),
        "{line}"
    );

    // The fixture file itself: the state_dict sits under `model.`; --prefix reads it.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/image_convicnn.safetensors");
    let from_fixture = |extra: &[&str], out: &str| {
        let mut v = vec![
            "import-reference".to_string(),
            "--state-dict".into(),
            s(&fixture),
            "--config".into(),
            s(&cfg),
            "--out".into(),
            s(&dir.join(out)),
        ];
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    let a = from_fixture(&[], "unprefixed");
    let e = cpflow_fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("pass --prefix model."), "{e}");
    let a = from_fixture(&["--prefix", "model."], "prefixed");
    let line = cpflow(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        line.contains(&format!("imported {n_keys} tensors")),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Negative controls: a config whose model is not the fixture's is refused with an error that
/// names a reference key, and nothing is written.
#[test]
fn image_import_with_another_architecture_is_refused_by_key() {
    let dir = temp_dir("import-reference-image-bad");
    let fx = Fixture::load("image_convicnn");
    let w = dir.join("W.safetensors");
    write_state_dict(&w, &fx.state_dict());
    let base = image_config(Path::new("data"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |config: String, name: &str| {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let out = dir.join(name);
        let e = cpflow_fails(&[
            "import-reference",
            "--state-dict",
            &s(&w),
            "--config",
            &s(&cfg),
            "--out",
            &s(&out),
        ]);
        assert!(!out.exists(), "{name}: {} was written", out.display());
        e
    };
    // Hidden width 16 instead of 8: the first mis-shaped key is named with both shapes.
    let e = run(base.replace("width = 8", "width = 16"), "width16");
    assert!(
        e.contains("reference key transforms.") && e.contains("has shape"),
        "{e}"
    );
    // Two blocks on the first scale: the second block's keys are missing.
    let e = run(
        base.replace("nblocks = [1, 1, 1]", "nblocks = [2, 1, 1]"),
        "nblocks",
    );
    assert!(
        e.contains("the state_dict has no transforms.0.flows."),
        "{e}"
    );
    // CIFAR-10's 3×32×32 images: the shape comes from the dataset, and the keys disagree.
    let e = run(
        base.replace("dataset = \"mnist\"", "dataset = \"cifar10\""),
        "cifar",
    );
    assert!(
        e.contains("reference key transforms.") && e.contains("has shape"),
        "{e}"
    );
    // A config without a stop condition in [train] (unused, but a train config's) is named.
    let e = run(base.replace("max_iterations = 1", ""), "notrain");
    assert!(
        e.contains("[train] table") && e.contains("max_iterations"),
        "{e}"
    );
    // The other kind of state_dict: each config names the one it needs.
    let tabular = dir.join("tabular.safetensors");
    write_state_dict(&tabular, &Fixture::load("tabular_icnn2").state_dict());
    let (image_cfg, tabular_cfg) = (dir.join("image.toml"), dir.join("tabular.toml"));
    std::fs::write(&image_cfg, &base).unwrap();
    std::fs::write(&tabular_cfg, CONFIG).unwrap();
    for (sd, cfg, expect) in [
        (
            &tabular,
            &image_cfg,
            "import it with a tabular or toy config",
        ),
        (&w, &tabular_cfg, "import it with an image config"),
    ] {
        let out = dir.join("crossed");
        let e = cpflow_fails(&[
            "import-reference",
            "--state-dict",
            &s(sd),
            "--config",
            &s(cfg),
            "--out",
            &s(&out),
        ]);
        assert!(e.contains(expect) && !out.exists(), "{e}");
    }
    // --dim is for tabular flows.
    let cfg = dir.join("dim.toml");
    std::fs::write(&cfg, &base).unwrap();
    let e = cpflow_fails(&[
        "import-reference",
        "--state-dict",
        &s(&w),
        "--config",
        &s(&cfg),
        "--out",
        &s(&dir.join("dim")),
        "--dim",
        "784",
    ]);
    assert!(e.contains("--dim does not apply to an image flow"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
