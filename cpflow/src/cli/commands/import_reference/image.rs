//! `cpflow import-reference` with an image config: the reference's `MultiscaleFlow`
//! (`train_img.py`) as the image-flow model directory of `cpflow train` (`config.toml` with
//! the data root made absolute, `model.safetensors` written by [`ImageFlow::save`]), which
//! `cpflow sample` reads.
//!
//! The flow is the one `cpflow train` builds from the same config
//! ([`crate::image::ImageExperimentConfig::flow_config`]: the image shape and default logit
//! offset of `data.dataset`, the `[model]` table); [`KeyMapping::for_multiscale`] renames the
//! reference's keys and [`load_reference_state_dict`] checks every key and shape (an error
//! names the key) before anything is written.

use crate::image::ImageFlow;
use crate::reference_weights::{KeyMapping, load_reference_state_dict};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

use super::{ImportReferenceArgs, read_state_dict};
use crate::cli::run_config::{Overrides, resolve_image};
use crate::cli::run_dir::{TRAIN_RUN, absolute, take_run_dir, write_config};

/// The reference key of the first ActNorm (after the logit layer) of every `MultiscaleFlow`
/// that `ImageExperimentConfig` describes: where a state_dict under a prefix is recognised.
const FIRST_ACTNORM: &str = "transforms.0.flows.1.b";

/// Imports the reference `MultiscaleFlow` of `a.state_dict` into `a.out`.
pub fn import_image(a: &ImportReferenceArgs) -> Result<()> {
    if a.dim.is_some() {
        bail!(
            "--dim does not apply to an image flow: its shape comes from data.dataset in {}",
            a.config.display()
        );
    }
    let ov = Overrides {
        dtype: a.dtype,
        ..Overrides::default()
    };
    let cfg = resolve_image(&a.config, &ov).with_context(|| {
        format!(
            "reading the image config {} (a `cpflow train` config: its [train] table is not \
             used by the import but must be valid, e.g. `max_iterations = 1`)",
            a.config.display()
        )
    })?;
    if cfg.model.baseline {
        bail!(
            "{} sets model.baseline = true (no CP-Flow blocks): the reference's \
             MultiscaleFlow always has them; remove the key",
            a.config.display()
        );
    }
    // What config.toml keeps: the data root resolved against the current directory, as
    // `cpflow train` saves it.
    let mut saved = cfg.clone();
    saved.data.root = absolute(&saved.data.root)?;
    let state_dict = read_state_dict(&a.state_dict, a.prefix.as_deref())?.tensors;
    check_prefix(&state_dict)?;
    let flow = ImageFlow::new(cfg.flow_config()?, &Device::Cpu)?;
    let mapping = KeyMapping::for_multiscale(flow.config())?;
    let report = load_reference_state_dict(&flow.named_vars(), &state_dict, &mapping)
        .with_context(|| {
            format!(
                "loading {} into the {} image flow of {} (check data.dataset and [model] arch, \
                 width, depth, nblocks, actnorm, factor_out against the reference model)",
                a.state_dict.display(),
                cfg.data.dataset.name(),
                a.config.display()
            )
        })?;
    // Written once everything has loaded: a failed import leaves `--out` as it was. The
    // directory's lock is held while the files are written (the old ones removed with
    // --overwrite): a `train` or `vae` that runs there refuses it.
    let _lock = take_run_dir(&a.out, &TRAIN_RUN, a.overwrite)?;
    write_config(&a.out, &saved, false)?;
    let model = a.out.join("model.safetensors");
    flow.save(&model)
        .with_context(|| format!("writing {}", model.display()))?;
    let image = flow.image();
    println!(
        "imported {} tensors ({} parameters, {}x{}x{} image flow, {} CP-Flow blocks, {:?}) from \
         {} into {}",
        report.loaded,
        flow.num_parameters(),
        image.channels,
        image.height,
        image.width,
        flow.blocks().count(),
        flow.float(),
        a.state_dict.display(),
        model.display()
    );
    Ok(())
}

/// Refuses a state_dict that holds the reference's keys under a prefix (e.g. `model.`),
/// naming the `--prefix` to pass, or that is a `SequentialFlow`'s; any other difference is
/// left to [`load_reference_state_dict`], which names the keys.
fn check_prefix(state_dict: &HashMap<String, Tensor>) -> Result<()> {
    if state_dict.contains_key(FIRST_ACTNORM) {
        return Ok(());
    }
    if let Some(p) = state_dict
        .keys()
        .filter_map(|k| k.strip_suffix(FIRST_ACTNORM))
        .min()
    {
        bail!(
            "the state_dict has no {FIRST_ACTNORM} but has {p}{FIRST_ACTNORM}: pass --prefix {p}"
        );
    }
    if !state_dict.keys().any(|k| k.starts_with("transforms."))
        && state_dict.keys().any(|k| k.starts_with("flows."))
    {
        bail!(
            "the state_dict holds `flows.…` keys (a SequentialFlow of train_tabular.py or \
             train_toy.py), not the `transforms.…` keys of train_img.py's MultiscaleFlow: \
             import it with a tabular or toy config"
        );
    }
    Ok(())
}
