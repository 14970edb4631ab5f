//! The TOML configuration of an image run of `cpflow train` (a `[data]` table with a
//! `dataset`: [`crate::image::ImageExperimentConfig`], e.g. `configs/mnist.toml`), told from
//! the tabular/toy one and read with the command line's overrides.

use anyhow::{Context, Result, bail};
use std::path::Path;

use super::{Overrides, apply_sets, set_training_flags, table_has_key};

/// A `cpflow vae` configuration given to `cpflow train` (its `[model]` names a `posterior`):
/// refused with the command that runs it (it failed as "unknown variant `frey-faces`" of the
/// image datasets, read as a typo).
fn refuse_vae_config(file: &Path, table: &toml::Table) -> Result<()> {
    if table_has_key(table, "model", "posterior") {
        bail!(
            "{} configures the VAE experiment (its [model] names a posterior): `cpflow train` \
             trains flows; run it with `cpflow vae --config {}`",
            file.display(),
            file.display()
        );
    }
    Ok(())
}

/// Whether `file` describes an image run: a `[data]` table with a `dataset` key
/// (`crate::image::ImageExperimentConfig`, e.g. `configs/mnist.toml`) rather than the
/// tabular/toy `source`.
pub fn is_image_config(file: Option<&Path>) -> Result<bool> {
    let Some(p) = file else { return Ok(false) };
    let text =
        std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
    let table = toml::from_str::<toml::Table>(&text)
        .with_context(|| format!("parsing config {}", p.display()))?;
    Ok(table_has_key(&table, "data", "dataset"))
}

/// Reads an image-run file and applies the overrides: `--set`, then `--iters`
/// (`train.max_iterations`), `--batch-size`, `--lr` (`train.adam.lr`), `--dtype`
/// (`model.float`), `--seed` (`data.seed`, `train.seed`, `model.init_seed`). `--data` is
/// refused (the dataset is `data.dataset`); `--device` and `--out` are not config keys here.
pub fn resolve_image(file: &Path, ov: &Overrides) -> Result<crate::image::ImageExperimentConfig> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading config {}", file.display()))?;
    let mut table = toml::from_str::<toml::Table>(&text)
        .with_context(|| format!("parsing config {}", file.display()))?;
    refuse_vae_config(file, &table)?;
    apply_sets(&mut table, &ov.set)?;
    if ov.data.is_some() {
        bail!("--data does not apply to an image run: set data.dataset (mnist or cifar10)");
    }
    set_training_flags(&mut table, ov)?;
    let cfg: crate::image::ImageExperimentConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(super::serde_messages::image_config_error)?;
    // The library names what it refuses by its key (e.g. model.nblocks: too many scales,
    // the most the images allow and their sizes); the dataset that sets the images is named
    // here.
    // The network's own check said "width must be at least 1", naming no key.
    for (key, v) in [
        ("model.width", cfg.model.width),
        ("model.depth", cfg.model.depth),
    ] {
        if v == 0 {
            bail!("{key} must be at least 1 (got 0)");
        }
    }
    let (dataset, image) = (cfg.data.dataset, cfg.data.dataset.image_shape());
    cfg.validate().with_context(|| {
        format!(
            "checking the settings for the {}×{}×{} images of {} (data.dataset)",
            image.channels,
            image.height,
            image.width,
            dataset.name()
        )
    })?;
    Ok(cfg)
}
