//! The command line as a library (`cpflow::cli::run`) with a network registered by the
//! program: a `[model] arch = "custom"` run trains, is scored, sampled and loaded with its
//! settings; without the registration, or with a half-written `[model]`, it is refused.

use std::collections::BTreeMap;

use candle_core::Device;
use cpflow::{CustomPotentialConfig, Flow, LayerConfig, PotentialConfig};
use icnn::{Icnn3, Icnn3Config};

use crate::cli_common::temp_dir;

/// `icnn`'s Icnn3 sized by the run's `[model.custom] settings` (width, depth).
fn register_icnn3_by_settings(name: &str) {
    cpflow::register_potential(name, |vb, cfg, rng| {
        let get = |k: &str| cfg.settings.get(k).map_or(4, |v| *v as usize);
        let config = Icnn3Config {
            dim: cfg.dim,
            width: get("width"),
            depth: get("depth"),
            ..Default::default()
        };
        Ok(Box::new(Icnn3::new(vb, &config, rng)?))
    });
}

/// A tiny 8-Gaussians run whose `[model]` ends with `model` (an `arch` line, and a
/// `[model.custom]` table when given), no plots.
fn config(model: &str) -> String {
    format!(
        "[data]\nsource = \"8gaussians\"\nn_train = 512\nn_val = 128\nn_test = 256\nseed = 0\n\
         [model]\nlayout = \"toy\"\nfloat = \"f64\"\n{model}\n\
         [train]\nbatch_size = 64\nmax_iterations = 30\nval_every = 0\ntrain_slq_every = 0\nseed = 0\n\
         [run]\nplots = false\nprogress = false\n"
    )
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    cpflow::cli::run(std::iter::once("cpflow").chain(args.iter().copied()))
}

#[test]
fn a_registered_network_runs_through_the_command_line() {
    let dir = temp_dir("cli-custom");
    register_icnn3_by_settings("cli-icnn3");
    let toml = dir.join("custom.toml");
    std::fs::write(
        &toml,
        config(
            "arch = \"custom\"\n[model.custom]\nname = \"cli-icnn3\"\n\
             settings = { width = 6, depth = 2 }",
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let (toml_s, out_s) = (toml.to_str().unwrap(), out.to_str().unwrap());
    run(&["train", "--config", toml_s, "--out", out_s, "--no-progress"]).unwrap();

    // The model file records the network by name and settings; loading it rebuilds it.
    let flow = Flow::load(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    let custom: Vec<&CustomPotentialConfig> = flow
        .config()
        .layers
        .iter()
        .filter_map(|l| match l {
            LayerConfig::Cpf(b) => match &b.potential {
                PotentialConfig::Custom(c) => Some(c),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let want = BTreeMap::from([("depth".to_string(), 2.0), ("width".to_string(), 6.0)]);
    assert_eq!(custom.len(), 1);
    assert_eq!(
        (custom[0].name.as_str(), custom[0].dim, &custom[0].settings),
        ("cli-icnn3", 2, &want)
    );
    let report = |out: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
    };
    let first = report(&out);
    assert!(first["test_nll"].as_f64().unwrap().is_finite(), "{first}");
    assert_eq!(first["iterations"], 30, "{first}");

    // The other commands read the run: eval, sample (a file of finite 2-D rows), resume.
    run(&["eval", "--model", out_s]).unwrap();
    let samples = dir.join("s.npy");
    run(&[
        "sample",
        "--model",
        out_s,
        "-n",
        "50",
        "--no-progress",
        "-o",
        samples.to_str().unwrap(),
    ])
    .unwrap();
    let m = cpflow::datasets::read_npy_file(&samples).unwrap();
    assert_eq!((m.rows(), m.cols()), (50, 2));
    assert!(m.data().iter().all(|v| v.is_finite()));
    run(&[
        "train",
        "--config",
        toml_s,
        "--out",
        out_s,
        "--resume",
        "--iters",
        "40",
        "--no-progress",
    ])
    .unwrap();
    // The resume rebuilt the network from the checkpoint and went on to 40 iterations.
    let resumed = report(&out);
    assert_eq!(
        (
            resumed["iterations"].as_u64(),
            resumed["resumed_at"].as_u64()
        ),
        (Some(40), Some(30)),
        "{resumed}"
    );

    // Refusals: a name not registered (naming the call and the example), `arch = "custom"`
    // without its table, and the table beside another arch.
    for (model, needle) in [
        (
            "arch = \"custom\"\n[model.custom]\nname = \"cli-never-registered\"",
            "cpflow::register_potential(\"cli-never-registered\"",
        ),
        ("arch = \"custom\"", "needs a [model.custom] table"),
        (
            "arch = \"icnn3\"\n[model.custom]\nname = \"cli-icnn3\"",
            "only read with model.arch = \"custom\"",
        ),
    ] {
        std::fs::write(&toml, config(model)).unwrap();
        let bad = dir.join("bad");
        let err = run(&["train", "--config", toml_s, "--out", bad.to_str().unwrap()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(needle), "{model}: {msg}");
        assert!(!bad.join("model.safetensors").exists(), "{model}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `cpflow vae` with `[model.custom_posterior]`: the CP-Flow posterior's blocks are a
/// conditional network the program registered (icnn's PICNN sized by the settings); the run
/// trains, `eval` repeats its test −ELBO, and `sample` decodes from it. A name not
/// registered is refused before the run directory is made.
#[test]
fn a_registered_conditional_network_is_the_vae_posterior_through_the_command_line() {
    cpflow::register_conditional_potential("cli-vae-picnn", |vb, cfg, rng| {
        let get = |k: &str| cfg.settings.get(k).map_or(4, |v| *v as usize);
        let config = icnn::PicnnConfig {
            dim: cfg.dim,
            context_dim: cfg.context_dim,
            width: get("width"),
            depth: get("depth"),
            ..Default::default()
        };
        Ok(Box::new(icnn::Picnn::new(vb, &config, rng)?))
    });
    let dir = temp_dir("cli-vae-custom");
    let toml = dir.join("vae.toml");
    let write = |name: &str| {
        std::fs::write(
            &toml,
            format!(
                "[data]\ndataset = \"caltech101\"\nroot = {:?}\nn_train = 200\n\
                 [model]\nposterior = \"cp-flow\"\nlatent_dim = 2\nblocks = 1\n\
                 architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
                 [model.custom_posterior]\nname = \"{name}\"\nsettings = {{ width = 5, depth = 2 }}\n\
                 [train]\nepochs = 1\nbatch_size = 100\n\
                 [eval]\nis_samples = 2\nis_chunk = 2\nis_images = 2\n",
                crate::cli_common::shared_data()
            ),
        )
        .unwrap()
    };
    write("cli-vae-picnn");
    let out = dir.join("run");
    let (toml_s, out_s) = (toml.to_str().unwrap(), out.to_str().unwrap());
    run(&["vae", "--config", toml_s, "--out", out_s, "--no-progress"]).unwrap();
    let (vae, cfg) = cpflow::vae::load_vae(&out, &Device::Cpu).unwrap();
    let custom = cfg.model.custom_posterior.as_ref().unwrap();
    assert_eq!(custom.name, "cli-vae-picnn");
    assert_eq!(vae.posterior().blocks().count(), 1);
    run(&["eval", "--model", out_s]).unwrap();
    let png = dir.join("grid.png");
    run(&[
        "sample",
        "--model",
        out_s,
        "--grid",
        "2x2",
        "-o",
        png.to_str().unwrap(),
    ])
    .unwrap();
    assert!(png.is_file());

    write("cli-vae-never-registered");
    let bad = dir.join("bad");
    let err = run(&["vae", "--config", toml_s, "--out", bad.to_str().unwrap()]).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cli-vae-never-registered"), "{msg}");
    assert!(!bad.exists(), "{}", bad.display());
    std::fs::remove_dir_all(&dir).ok();
}
