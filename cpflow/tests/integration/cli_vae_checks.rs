//! `cpflow vae` and `cpflow eval` on a VAE: an absurd latent size is refused before anything
//! is written, naming the key, and `eval` logs its settings in words.

use std::path::Path;

use crate::cli_common::{cpflow_fails, cpflow_log, shared_data, temp_dir};
use cpflow::vae::PosteriorKind;

/// A latent size whose exact `log q` cannot fit anywhere (16 images' 200,000 × 200,000
/// Jacobians: 5 TB) is refused before anything is built or written, naming
/// `model.latent_dim`; it passed the check (its weights are small), trained, and aborted in
/// an allocation. Only where the machine's memory is known (`/proc/meminfo`): elsewhere
/// nothing is refused by size and the run would start.
#[test]
fn an_absurd_latent_size_is_refused_naming_the_key() {
    if !Path::new("/proc/meminfo").exists() {
        return;
    }
    let dir = temp_dir("vae-latent");
    let cfg = dir.join("vae.toml");
    let text = format!(
        "[data]\ndataset = \"frey-faces\"\nroot = {:?}\n\
         [model]\nlatent_dim = 200000\nblocks = 1\nwidth = 4\ndepth = 2\n\
         architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
         [train]\nepochs = 1\n",
        shared_data()
    );
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join("run");
    let (c, o) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let err = cpflow_fails(&["vae", "--config", c, "--out", o, "--no-progress"]);
    assert!(err.contains("lower model.latent_dim"), "{err}");
    assert!(!out.exists(), "the refused run wrote {}", out.display());
}

/// `eval` on a VAE logs what it scores as a person reads it: it logged
/// `dataset="frey-faces" params=VaeTestParams { seed: 1, images: Some(2), … }`.
#[test]
fn eval_on_a_vae_logs_its_settings_in_words() {
    let dir = temp_dir("vae-eval-log");
    // A tiny untrained VAE with the Gaussian posterior (nothing to initialise), saved as
    // `cpflow vae` saves its best weights.
    let file = dir.join("best.safetensors");
    crate::checkpoint_header_files::save_tiny_vae(
        &file,
        shared_data(),
        PosteriorKind::Gaussian,
        |t| t,
    );
    let log = cpflow_log(&[
        "eval",
        "--model",
        file.to_str().unwrap(),
        "-n",
        "2",
        "--is-samples",
        "2",
    ]);
    let line = log
        .lines()
        .find(|l| l.contains("scoring the"))
        .unwrap_or_else(|| panic!("no scoring line: {log}"));
    assert!(
        line.contains("scoring the test split of frey-faces")
            && line.contains("the first 2 of 200 test images")
            && line.contains("K = 2"),
        "{line}"
    );
    for debug in ["Some(", "None", "VaeTestParams", "{", "\""] {
        assert!(!line.contains(debug), "`{debug}` in {line}");
    }
}
