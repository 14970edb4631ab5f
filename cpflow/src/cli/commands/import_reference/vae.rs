//! `cpflow import-reference --vae`: the VAE of the authors' `train_vae.py` (`VAE` with the
//! Gaussian posterior or `CPFVAE` with the CP-Flow one) as the model directory of a
//! `cpflow vae` run (`config.toml` with the data root made absolute, `best.safetensors`),
//! which `cpflow eval` scores on the test split and `cpflow sample` draws from.
//!
//! The model is the one `cpflow vae` builds from the same config (`[data] dataset` sets the
//! image size and likelihood, `[model]` the widths and the posterior);
//! [`load_reference_vae_state_dict`] renames the reference's keys and checks every key and
//! shape (an error names the key) before anything is written.

use crate::vae::{
    PosteriorKind, Vae, VaeCheckpointMeta, load_reference_vae_state_dict, save_vae_checkpoint,
};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

use super::{ImportReferenceArgs, read_state_dict};
use crate::cli::commands::vae::read_vae_config;
use crate::cli::run_dir::{VAE_RUN, absolute, take_run_dir, write_config};

/// The weights file of an imported VAE (what a `cpflow vae` run keeps as its best weights).
const WEIGHTS: &str = "best.safetensors";

/// Imports the reference VAE of `a.state_dict` into `a.out`.
pub fn import_vae(a: &ImportReferenceArgs) -> Result<()> {
    if a.dim.is_some() || a.dtype.is_some() {
        bail!(
            "--dim and --dtype do not apply to a VAE: its image size comes from data.dataset \
             and its float types from model.network_float and model.posterior_float in {}",
            a.config.display()
        );
    }
    let mut cfg = read_vae_config(&a.config, |_| Ok(())).with_context(|| {
        format!(
            "reading the VAE config {} (a `cpflow vae` config, e.g. configs/vae-frey.toml)",
            a.config.display()
        )
    })?;
    // What config.toml keeps: the data root resolved against the current directory, as
    // `cpflow vae` saves it.
    cfg.data.root = absolute(&cfg.data.root)?;
    let state_dict = read_state_dict(&a.state_dict, a.prefix.as_deref())?.tensors;
    check_posterior(&state_dict, cfg.model.posterior, &a.config)?;
    let ds = cfg.data.dataset;
    let vae = Vae::new(&cfg.model, ds.likelihood(), ds.image_size(), &Device::Cpu)?;
    let report = load_reference_vae_state_dict(&vae, &state_dict).with_context(|| {
        format!(
            "loading {} into the VAE of {} (check [model] posterior, latent_dim, \
             architecture, blocks, width and depth against the reference model)",
            a.state_dict.display(),
            a.config.display()
        )
    })?;
    // Written once everything has loaded: a failed import leaves `--out` as it was. The
    // directory's lock is held while the files are written (the old ones removed with
    // --overwrite): a `train` or `vae` that runs there refuses it.
    let _lock = take_run_dir(&a.out, &VAE_RUN, a.overwrite)?;
    write_config(&a.out, &cfg, false)?;
    let path = a.out.join(WEIGHTS);
    let meta = VaeCheckpointMeta {
        config: cfg.clone(),
        state: None,
        optimizer: None,
    };
    let weights = vae
        .weight_tensors()
        .into_iter()
        .map(|(k, t)| (format!("model.{k}"), t))
        .collect();
    save_vae_checkpoint(&path, &meta, weights)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "imported {} tensors ({} parameters, {} posterior, {ds} {}×{} images) from {} into {}",
        report.loaded,
        vae.num_parameters(),
        cfg.model.posterior,
        ds.image_size().0,
        ds.image_size().1,
        a.state_dict.display(),
        path.display()
    );
    Ok(())
}

/// Refuses a state_dict without train_vae.py's encoder keys (naming a prefix it sits under),
/// and a config whose posterior is not the state_dict's, naming the setting: train_vae.py's
/// CP-Flow posterior (`-f cpflow`, `CPFVAE`) keeps its flow under `flow.…`, the Gaussian one
/// (`-f no_flow`, `VAE`) has no such key (the key-by-key error lists hundreds of keys).
fn check_posterior(
    state_dict: &HashMap<String, Tensor>,
    posterior: PosteriorKind,
    config: &Path,
) -> Result<()> {
    // Their encoder's first gated convolution: every train_vae.py VAE has it.
    if !state_dict.keys().any(|k| k.starts_with("q_z_nn.")) {
        if let Some(p) = state_dict
            .keys()
            .filter_map(|k| k.find("q_z_nn.").map(|i| &k[..i]))
            .min()
        {
            bail!("the state_dict has no q_z_nn.… keys but has {p}q_z_nn.…: pass --prefix {p}");
        }
        bail!(
            "the state_dict has no q_z_nn.… keys (the encoder of train_vae.py's VAE): it is \
             not that model's state_dict"
        );
    }
    let has_flow = state_dict.keys().any(|k| k.starts_with("flow."));
    let want = match (posterior, has_flow) {
        (PosteriorKind::CpFlow, false) => "gaussian",
        (PosteriorKind::Gaussian, true) => "cp-flow",
        _ => return Ok(()),
    };
    let what = if has_flow {
        "a CP-Flow posterior (`flow.…` keys: train_vae.py -f cpflow)"
    } else {
        "a Gaussian posterior (no `flow.…` key: train_vae.py -f no_flow)"
    };
    bail!(
        "the state_dict holds the VAE with {what}, but {} sets another posterior: set \
         [model] posterior = \"{want}\" there",
        config.display()
    )
}
